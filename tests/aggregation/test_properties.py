"""Properties every aggregation stage must have, checked with hypothesis.

Stages: WeightedMean (weighted and not), Clipped, DPMean with no noise (z=0),
Median, TrimmedMean, Krum. Secure-sum exactness is tested with secure
aggregation. Example counts are modest so the file runs in seconds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedactors.aggregation.base import Aggregator, PlainContributions, RoundContext
from fedactors.aggregation.clipping import Clipped, clip_l2, l2_norm
from fedactors.aggregation.fedavg import WEIGHT, WEIGHTED_DELTA, WeightedMean
from fedactors.aggregation.robust import Krum, Median, TrimmedMean
from fedactors.privacy.dp_mean import DPMean

CLIP = 3.0
#: name -> factory(cohort size) -> stage.
STAGES: dict[str, Callable[[int], Aggregator]] = {
    "weighted_mean": lambda n: WeightedMean(),
    "unweighted_mean": lambda n: WeightedMean(weighted=False),
    "clipped_mean": lambda n: Clipped(CLIP, WeightedMean()),
    "dp_mean_z0": lambda n: DPMean.fixed(CLIP, 0.0, expected_count=n),
    "median": lambda n: Median(),
    "clipped_median": lambda n: Clipped(CLIP, Median()),
    "trimmed_mean": lambda n: TrimmedMean(0.2),
    "krum": lambda n: Krum(f=1),
    "multi_krum": lambda n: Krum(f=1, m=3),
}
#: Stages whose result is a mean of vectors each within CLIP (so its norm is too).
MEAN_OF_CLIPPED = {"clipped_mean", "dp_mean_z0"}
#: Robust stages reduce by sorting: bit-for-bit independent of row order.
EXACTLY_ORDER_FREE = {"median", "clipped_median", "trimmed_mean", "krum", "multi_krum"}
ROBUST = EXACTLY_ORDER_FREE

values = st.floats(-100.0, 100.0, allow_nan=False, allow_subnormal=False, width=32)


@st.composite
def cohorts(draw, max_n: int = 7) -> tuple[np.ndarray, list[int]]:
    n = draw(st.integers(1, max_n))
    dim = draw(st.integers(1, 5))
    deltas = draw(hnp.arrays(np.float32, (n, dim), elements=values))
    examples = draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n))
    return deltas, examples


def run(stage: Aggregator, deltas: np.ndarray, examples: list[int], order=None):
    n, dim = deltas.shape
    order = range(n) if order is None else order
    rng = np.random.default_rng(0)
    params = stage.client_params(stage.initial_state(dim))
    rows = [stage.encode(params, deltas[i], examples[i], rng) for i in order]
    ctx = RoundContext(1, n, n, np.random.default_rng(1))
    return stage.aggregate(stage.initial_state(dim), PlainContributions(rows), ctx).delta


@pytest.mark.parametrize("name", sorted(STAGES))
@settings(max_examples=25, deadline=None)
@given(cohort=cohorts(), seed=st.integers(0, 2**32 - 1))
def test_the_order_of_updates_does_not_matter(name: str, cohort, seed: int) -> None:
    deltas, examples = cohort
    stage = STAGES[name](len(examples))
    perm = np.random.default_rng(seed).permutation(len(examples))
    a, b = run(stage, deltas, examples), run(stage, deltas, examples, perm)
    if name in EXACTLY_ORDER_FREE:
        np.testing.assert_array_equal(a, b)
    else:  # float64 sums in another order: equal up to float32 rounding
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", sorted(STAGES))
@settings(max_examples=20, deadline=None)
@given(delta=hnp.arrays(np.float32, st.integers(1, 5), elements=values),
       examples=st.lists(st.integers(1, 1000), min_size=1, max_size=6))
def test_the_aggregate_of_identical_updates_is_that_update(name: str, delta, examples) -> None:
    n = len(examples)
    stage = STAGES[name](n)
    expected = clip_l2(delta, CLIP)[0] if name.startswith(("clipped", "dp")) else delta
    out = run(stage, np.tile(delta, (n, 1)), examples)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(cohort=cohorts())
def test_weighted_mean_weights_each_device_by_its_examples_exactly(cohort) -> None:
    deltas, examples = cohort
    n = np.asarray(examples, np.float64)
    expected = (deltas.astype(np.float64) * n[:, None]).sum(0) / n.sum()
    np.testing.assert_allclose(run(WeightedMean(), deltas, examples), expected, rtol=1e-5, atol=1e-4)
    unweighted = deltas.astype(np.float64).mean(0)
    np.testing.assert_allclose(run(WeightedMean(weighted=False), deltas, examples), unweighted,
                               rtol=1e-5, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(cohort=cohorts())
def test_dp_mean_without_noise_is_the_clipped_sum_over_the_expected_count(cohort) -> None:
    deltas, examples = cohort
    m = len(examples) + 2  # two devices "dropped": DP still divides by the expected count
    stage = DPMean.fixed(CLIP, 0.0, expected_count=m)
    params = stage.client_params(stage.initial_state(deltas.shape[1]))
    rng = np.random.default_rng(0)
    rows = [stage.encode(params, d, k, rng) for d, k in zip(deltas, examples)]
    out = stage.aggregate(stage.initial_state(deltas.shape[1]), PlainContributions(rows),
                          RoundContext(1, m, m, rng)).delta
    expected = sum(clip_l2(d, CLIP)[0].astype(np.float64) for d in deltas) / m
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(ROBUST))
@settings(max_examples=20, deadline=None)
@given(cohort=cohorts())
def test_robust_stages_ignore_the_example_counts(name: str, cohort) -> None:
    deltas, examples = cohort
    stage = STAGES[name](len(examples))
    np.testing.assert_array_equal(run(stage, deltas, examples), run(stage, deltas, [1] * len(examples)))


@pytest.mark.parametrize("name", sorted(STAGES))
@settings(max_examples=20, deadline=None)
@given(cohort=cohorts())
def test_robust_results_lie_within_each_coordinates_range(name: str, cohort) -> None:
    """Median, trimmed mean and Krum (and any mean) never leave the per-coordinate hull."""
    deltas, examples = cohort
    if name.startswith(("clipped", "dp")):
        deltas = np.stack([clip_l2(d, CLIP)[0] for d in deltas])
    stage = STAGES[name](len(examples))
    out = run(stage, deltas, examples).astype(np.float64)
    slack = 1e-5 * (1 + np.abs(deltas).max())
    assert np.all(out >= deltas.min(0) - slack) and np.all(out <= deltas.max(0) + slack)


big = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False, width=32)


@pytest.mark.parametrize("name", ["clipped_mean", "dp_mean_z0", "clipped_median"])
@settings(max_examples=25, deadline=None)
@given(deltas=hnp.arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 5)), elements=big))
def test_the_clipping_bound_holds_per_device_and_for_the_result(name: str, deltas) -> None:
    n, dim = deltas.shape
    stage = STAGES[name](n)
    params = stage.client_params(stage.initial_state(dim))
    rng = np.random.default_rng(0)
    for d in deltas:
        for value in stage.encode(params, d, 10, rng).values():
            if value.size == dim and name == "clipped_mean":
                # n * clipped delta, rounded to float32 once more after the clip.
                assert l2_norm(value) <= 10 * CLIP * (1 + 1e-6)
            elif value.size == dim:  # the delta-carrying key, not a weight or a bit
                assert l2_norm(value) <= CLIP
    out = run(stage, deltas, [10] * n)
    if name in MEAN_OF_CLIPPED:
        assert l2_norm(out) <= CLIP * (1 + 1e-6)
    else:  # a coordinate-wise median may exceed the norm bound, never a coordinate's
        assert np.all(np.abs(out) <= CLIP)


@pytest.mark.parametrize("name", ["clipped_mean", "dp_mean_z0", "clipped_median"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_delta_never_gets_through_a_clipping_stage(name: str, bad: float) -> None:
    stage = STAGES[name](2)
    deltas = np.array([[1.0, bad, 0.0], [0.5, 0.5, 0.5]], np.float32)
    params = stage.client_params(stage.initial_state(3))
    for value in stage.encode(params, deltas[0], 10, np.random.default_rng(0)).values():
        assert np.all(np.isfinite(value))
    assert np.all(np.isfinite(run(stage, deltas, [10, 10])))


@pytest.mark.parametrize("name", ["clipped_mean", "dp_mean_z0", "clipped_median"])
def test_clipping_leaves_a_zero_update_unchanged(name: str) -> None:
    out, norm = clip_l2(np.zeros(4, np.float32), CLIP)
    assert norm == 0.0 and np.array_equal(out, np.zeros(4, np.float32))
    stage = STAGES[name](3)
    with np.errstate(all="raise"):  # no 0/0 anywhere on the way
        result = run(stage, np.zeros((3, 4), np.float32), [5, 5, 5])
    np.testing.assert_array_equal(result, np.zeros(4, np.float32))


@pytest.mark.parametrize("name", ["weighted_mean", "unweighted_mean", "clipped_mean"])
@settings(max_examples=20, deadline=None)
@given(cohort=cohorts())
def test_zero_total_weight_is_no_update_never_nan(name: str, cohort) -> None:
    deltas, _ = cohort
    stage = STAGES[name](len(deltas))
    zero = [{WEIGHTED_DELTA: np.zeros(deltas.shape[1], np.float32), WEIGHT: np.zeros(1, np.float32)}
            for _ in deltas]
    ctx = RoundContext(1, len(deltas), len(deltas), np.random.default_rng(0))
    result = stage.aggregate(None, PlainContributions(zero), ctx)
    assert result.delta is None and result.measurements["total_weight"] == 0.0


@pytest.mark.parametrize("name", sorted(ROBUST | {"weighted_mean", "unweighted_mean", "clipped_mean"}))
def test_an_empty_cohort_is_no_update(name: str) -> None:
    stage = STAGES[name](1)
    ctx = RoundContext(1, 1, 1, np.random.default_rng(0))
    assert stage.aggregate(stage.initial_state(3), PlainContributions([]), ctx).delta is None
