"""SecAgg+ (k, t) from dropout / corruption assumptions: bounds, growth, monotonicity, protocol."""

import math

import numpy as np
import pytest
from scipy.stats import binom

from fedactors.errors import ConfigError
from fedactors.secagg.graph import harary_graph
from fedactors.secagg.messages import Abort, SecAggResult
from fedactors.secagg.option import SecureAggregation
from fedactors.secagg.parameters import plus_parameters
from fedactors.secagg.simulate import run_protocol

CASES = [(n, d, g) for n in (100, 1000, 10_000) for d, g in ((0.3, 0.1), (0.1, 0.05), (0.3, 0.0))]


def _bounds(n: int, k: int, t: int, d: float, g: float) -> tuple[float, float, float]:
    """The three union bounds, recomputed directly (not in log space) from their definitions."""
    abort = n * binom.cdf(t - 1, k + 1, 1 - d)
    collude = n * binom.sf(t - 1, k, g)
    q = 1 - (1 - d) * (1 - g)
    split = 0.0 if k >= n - 1 else math.comb(n, 2) * ((1 - q) * q ** (k // 2)) ** 2
    return abort, collude, split


@pytest.mark.parametrize("n, d, g", CASES)
def test_chosen_parameters_meet_both_tail_bounds_and_k_is_smallest(n, d, g):
    p = plus_parameters(n, d, g, 20, 40)
    assert p.meets_targets and p.degree % 2 == 0 and p.degree < n - 1
    abort, collude, split = _bounds(n, p.degree, p.threshold, d, g)
    assert abort <= 2.0**-20
    assert collude <= 2.0**-40 and split <= 2.0**-40
    # No smaller even degree has any threshold that meets all three.
    k = p.degree - 2
    if k >= 2:
        for t in range(1, k + 2):
            a, c, s = _bounds(n, k, t, d, g)
            assert not (a <= 2.0**-20 and c <= 2.0**-40 and s <= 2.0**-40)
    # t is the largest that still meets the abort bound.
    if p.threshold <= p.degree:
        assert _bounds(n, p.degree, p.threshold + 1, d, g)[0] > 2.0**-20


def test_degree_grows_logarithmically():
    k = {n: plus_parameters(n).degree for n in (100, 1000, 10_000, 65_536)}
    ratio = k[10_000] / k[1000]
    assert ratio < 1.5  # 10x the devices, far from 10x the degree
    assert k[65_536] / k[1000] < 1.5
    # Past the small-n regime k ~ a + b log n: the same slope per unit of log n.
    slope_a = (k[10_000] - k[1000]) / math.log(10)
    slope_b = (k[65_536] - k[10_000]) / math.log(6.5536)
    assert 0.5 < slope_a / slope_b < 2
    assert k[10_000] / k[100] < 2 < 10_000 / 100


def test_monotone_in_dropout_and_corruption():
    for n in (200, 1000, 10_000):
        ks = [plus_parameters(n, d, 0.05).degree for d in (0.0, 0.1, 0.2, 0.3, 0.4)]
        assert ks == sorted(ks)
        ks = [plus_parameters(n, 0.2, g).degree for g in (0.0, 0.02, 0.05, 0.1, 0.15)]
        assert ks == sorted(ks)


def test_complete_graph_fallback_says_so():
    p = plus_parameters(30, 0.3, 0.1)
    assert p.complete and p.degree == 29 and not p.meets_targets
    assert 1 <= p.threshold <= 30
    assert plus_parameters(100, 0.3, 0.1).meets_targets


@pytest.mark.parametrize("kwargs, field, shown", [
    (dict(max_dropout=1.0), "secure_aggregation.max_dropout", "1.0"),
    (dict(max_corrupt=-0.1), "secure_aggregation.max_corrupt", "-0.1"),
    (dict(failure_log2=0), "secure_aggregation.failure_log2", "0"),
    (dict(security_log2=float("nan")), "secure_aggregation.security_log2", "nan"),
    (dict(security_log2=5000), "secure_aggregation.security_log2", "5000"),
])
def test_bad_assumptions_name_field_and_value(kwargs, field, shown):
    with pytest.raises(ConfigError) as err:
        SecureAggregation(**kwargs)
    assert err.value.field == field and shown in str(err.value)


def test_option_accounts_for_over_selection():
    opt = SecureAggregation()
    assert opt.plus_parameters(1000, 1000) == plus_parameters(1000, 0.3, 0.1, 20.0, 40.0)
    # Admitting 800 of 1,000 selected is another 20% dropout to the graph.
    assert opt.plus_parameters(1000, 800).degree > opt.plus_parameters(1000, 1000).degree


def _run(n: int, drop: float, degree: int, threshold: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = list(range(1, n + 1))
    graph = harary_graph(ids, degree, rng, threshold)
    inputs = {u: rng.integers(0, 2**32, size=4, dtype=np.uint64) for u in ids}
    gone = rng.choice(ids, int(round(drop * n)), replace=False)
    drop_at = {int(u): int(rng.integers(0, 4)) for u in gone}
    return inputs, drop_at, run_protocol(inputs, graph, 32, rng, drop_at).result


@pytest.mark.slow
def test_protocol_exact_at_30_percent_dropout_on_1000_devices():
    p = plus_parameters(1000)
    inputs, drop_at, result = _run(1000, 0.3, p.degree, p.threshold)
    assert isinstance(result, SecAggResult), result
    assert result.contributors == {u for u in inputs if drop_at.get(u, 99) > 2}
    want = np.zeros(4, np.uint64)
    for u in result.contributors:
        want += inputs[u]
    assert (result.total == want & np.uint64(2**32 - 1)).all()


@pytest.mark.slow
def test_regression_old_default_aborted_where_new_one_completes():
    # The former default: degree 2*ceil(3 ln n / 2) = 22, majority threshold 12 of 23.
    _, _, old = _run(1000, 0.3, 22, 12)
    assert isinstance(old, Abort)
