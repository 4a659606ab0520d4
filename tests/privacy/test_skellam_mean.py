"""DPMean.skellam: records on the grid, exact under SecAgg quantization, refusals, end to end."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from fedactors import DPMean, SecureAggregation
from fedactors.aggregation import PlainContributions, RoundContext, SummedContributions
from fedactors.errors import ConfigError
from fedactors.privacy import skellam
from fedactors.privacy.skellam_mean import SKELLAM_DELTA, SkellamDPMean, check_scenario
from fedactors.secagg import encoding
from fedactors.secagg.quantize import dequantize_sum, quantize

F = 8


def _agg(**kw) -> SkellamDPMean:
    args = dict(clip_norm=1.0, noise_multiplier=2.0, expected_count=4, min_survivors=3,
                scale_bits=F)
    args.update(kw)
    return DPMean.skellam(**args)


def test_records_are_on_the_grid_and_within_their_bound() -> None:
    agg, dim = _agg(), 50
    params = agg.client_params(agg.initial_state(dim))
    bound = agg.contribution_bounds(params, dim)[SKELLAM_DELTA]
    assert bound * 2**F == round(bound * 2**F)  # the bound itself is on the grid
    rng = np.random.default_rng(0)
    cal = agg.calibration(dim)
    for scale in (0.01, 1.0, 100.0):
        delta = (rng.normal(size=dim) * scale).astype(np.float32)
        x = agg.encode(params, delta, 1, rng)[SKELLAM_DELTA]
        ints = x * 2**F
        assert x.dtype == np.float64 and np.array_equal(ints, np.round(ints))
        assert np.all(np.abs(x) <= bound)
    # The rounded part of a record is within the L2 sensitivity the budget uses.
    no_noise = _agg(noise_multiplier=0.0)
    for _ in range(50):
        x = no_noise.encode(params, rng.normal(size=dim).astype(np.float32) * 10, 1, rng)
        assert np.linalg.norm(x[SKELLAM_DELTA] * 2**F) <= cal.l2


@pytest.mark.parametrize("stochastic", [False, True])
def test_a_value_on_the_grid_quantizes_exactly(stochastic: bool) -> None:
    agg, dim, m = _agg(), 20, 5
    params = agg.client_params(agg.initial_state(dim))
    bound = agg.contribution_bounds(params, dim)
    rng = np.random.default_rng(1)
    rows = [agg.encode(params, rng.normal(size=dim).astype(np.float32), 1, rng) for _ in range(m)]
    layout = encoding.make_layout({SKELLAM_DELTA: (dim,)}, bound, m, F)
    total = sum(encoding.encode(r, layout, rng if stochastic else None).astype(object)
                for r in rows)
    total = np.array([int(t) % (1 << layout.modulus_bits) for t in total], np.uint64)
    decoded = encoding.decode_sum(total, layout)[SKELLAM_DELTA]
    exact = sum(r[SKELLAM_DELTA] for r in rows)
    assert np.array_equal(decoded, exact)
    # The same for single values at the extremes of the grid.
    b = bound[SKELLAM_DELTA]
    for v in (b, -b, 2.0**-F, 0.0):
        q = quantize(np.array([v]), b, F, layout.modulus_bits, rng if stochastic else None)
        assert dequantize_sum(q, F, layout.modulus_bits)[0] == v


def test_the_summed_noise_has_the_variance_of_the_shares_summed() -> None:
    agg, dim = _agg(noise_multiplier=0.05), 4000
    cal = agg.calibration(dim)
    params = agg.client_params(agg.initial_state(dim))
    rng = np.random.default_rng(2)
    zero = np.zeros(dim, np.float32)
    rows = [agg.encode(params, zero, 1, rng) for _ in range(4)]  # 4 shares of v/3
    noise = sum(r[SKELLAM_DELTA] for r in rows) * 2**F
    assert np.array_equal(noise, np.round(noise))
    # Relative standard error of a variance from 4000 draws: ~2.2%; allow 8%.
    assert noise.var() == pytest.approx(cal.variance * 4 / 3, rel=0.08)


def test_aggregate_divides_by_m_and_refuses_too_few_shares() -> None:
    agg, dim = _agg(), 3
    state = agg.initial_state(dim)
    rng = np.random.default_rng(0)
    ctx = RoundContext(1, 4, 4, rng)
    summed = SummedContributions({SKELLAM_DELTA: np.array([4.0, -8.0, 2.0])}, count=3)
    out = agg.aggregate(state, summed, ctx)
    assert np.array_equal(out.delta, np.array([1.0, -2.0, 0.5], np.float32))
    cal = agg.calibration(dim)
    assert out.measurements["skellam_noise_stddev_on_mean"] == pytest.approx(
        math.sqrt(cal.variance) / 2**F / 4)
    few = SummedContributions({SKELLAM_DELTA: np.zeros(3)}, count=2)
    assert agg.aggregate(state, few, ctx).delta is None
    rows = [agg.encode(agg.client_params(state), np.ones(3, np.float32), 1, rng)] * 3
    assert agg.aggregate(state, PlainContributions(rows), ctx).delta is not None


@pytest.mark.parametrize("kw,field", [
    (dict(min_survivors=5), "min_survivors"), (dict(scale_bits=41), "scale_bits"),
    (dict(scale_bits=True), "scale_bits"), (dict(beta=1.0), "beta"), (dict(clip_norm=0.0),
                                                                       "clip_norm"),
])
def test_bad_parameters_are_refused_naming_the_field(kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        _agg(**kw)


def test_secure_aggregation_is_required_at_the_mechanisms_scale_bits() -> None:
    release = _agg().private_release()
    with pytest.raises(ConfigError, match="^secure_aggregation: is required"):
        check_scenario(release, None)
    with pytest.raises(ConfigError, match="^secure_aggregation.scale_bits: is 16"):
        check_scenario(release, SecureAggregation())
    check_scenario(release, SecureAggregation(scale_bits=F))


def _tiny(aggregator, secure, rounds: int = 3, privacy=None):
    import keras

    from fedactors import DeviceClass, LocalTraining, Rounds, Scenario
    from fedactors.data.federated import FederatedData

    def data(fleet, rng):
        w = np.array([1.0, -2.0, 0.5], np.float32)
        xs = [rng.normal(size=(int(n), 3)).astype(np.float32) for n in fleet.examples]
        xt = rng.normal(size=(40, 3)).astype(np.float32)
        return FederatedData.from_arrays([(x, (x @ w > 0).astype(np.int32)) for x in xs],
                                         (xt, (xt @ w > 0).astype(np.int32)))

    return Scenario(
        name="tiny-skellam", model=lambda: keras.Sequential([keras.Input((3,)),
                                                             keras.layers.Dense(2)]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), data=data,
        fleet=[DeviceClass("fast", count=8, compute=40.0, examples=20)],
        rounds=Rounds(count=rounds, cohort_size=4, deadline=60.0),
        training=LocalTraining(batch_size=10, optimizer=lambda: keras.optimizers.SGD(0.1)),
        aggregator=aggregator, secure_aggregation=secure, privacy=privacy)


def test_a_scenario_without_secure_aggregation_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match="^secure_aggregation: is required by DPMean.skellam"):
        _tiny(_agg(), None)
    with pytest.raises(ConfigError, match="^secure_aggregation.scale_bits"):
        _tiny(_agg(), SecureAggregation(scale_bits=F + 1))


def test_end_to_end_under_secure_aggregation_reports_the_skellam_epsilon() -> None:
    from fedactors.simulation import RunOptions, run_scenario

    agg = _agg(noise_multiplier=3.0)
    scenario = _tiny(agg, SecureAggregation(scale_bits=F), rounds=3)
    result = run_scenario(scenario, RunOptions(rounds=3, device_events=False))
    privacy = result.summary["privacy"]
    assert privacy["accounting"]["mechanism"] == "distributed-skellam"
    assert privacy["rounds_accounted"] == 3 and privacy["assumption_held"]
    dim = privacy["accounting"]["dim"]
    assert dim == 8
    # The figure is the composition of three releases at the shares actually summed.
    from fedactors.privacy.skellam_budget import SkellamBudget

    cal = agg.calibration(dim)
    budget = SkellamBudget(cal, privacy["delta"], None, agg.private_release(), 8)
    releases = tuple((round(v * cal.shares / cal.variance), n)
                     for v, n in privacy["accounting"]["variances_charged_integer"])
    assert privacy["epsilon"] == pytest.approx(budget._epsilon(releases))
    assert sum(n for _, n in releases) == 3 and all(s >= 3 for s, _ in releases)
    for row in result.records:
        assert row["applied"] and row["secagg_aborted"] == 0
        shares = row["secagg_survivors"]
        assert row["skellam_noise_stddev_on_mean"] == pytest.approx(
            math.sqrt(cal.share_variance * shares) / 2**F / 4)
    assert 0 < privacy["delta_truncation"] < 1e-20


@pytest.mark.parametrize("dim", [1, 1000])
def test_a_grid_too_fine_for_numpys_poisson_sampler_is_refused_naming_what_fits(dim) -> None:
    # scale_bits 40 is in range, but each share's Poisson mean would pass numpy's limit:
    # refused naming the field and the largest scale_bits that fits, which does fit.
    agg = _agg(scale_bits=40, min_survivors=4)
    with pytest.raises(ConfigError, match=r"^scale_bits: 40 .*Poisson.*at most (\d+) fits") as e:
        agg.calibration(dim)
    fits = int(re.search(r"at most (\d+) fits", str(e.value)).group(1))
    cal = _agg(scale_bits=fits, min_survivors=4).calibration(dim)
    assert cal.share_variance / 2 <= skellam.POISSON_MEAN_MAX
    skellam.sample_skellam(np.random.default_rng(0), cal.share_variance, 3)  # draws
    with pytest.raises(ConfigError, match="^scale_bits"):
        _agg(scale_bits=fits + 1, min_survivors=4).calibration(dim)


def test_a_grid_too_fine_is_refused_when_the_scenario_is_built() -> None:
    with pytest.raises(ConfigError, match="^scale_bits: 40 "):
        _tiny(_agg(scale_bits=40), SecureAggregation(scale_bits=40))
