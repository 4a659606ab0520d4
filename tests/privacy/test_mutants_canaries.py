"""Canaries (fedactors/privacy/canaries.py) without a run: the plan's estimate and summary
block, the canaries' records and the seed paths they come from, and how the insertion stage
forwards to the stage it wraps (found by mutation testing, docs/testing.md).

The end-to-end tests (tests/privacy/test_runtime_canaries.py) are slow and outside the
mutation selection, so ``CanaryPlan.estimate``, ``summary`` and ``EmpiricalEstimate.as_json``
were reached by no fast test: here they are checked against their definition (cosines of the
model's total change with canaries ``0 .. k-1`` and ``k .. k+k'-1``), and the summary against
the keys docs/privacy.md documents. No TensorFlow: a numpy ``WeightedMean`` that records what
it is given stands in for the DP stage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from scipy import integrate, stats

from fedactors.aggregation.base import (
    Aggregate,
    Contributions,
    PlainContributions,
    RoundContext,
)
from fedactors.aggregation.fedavg import WEIGHT, WEIGHTED_DELTA, WeightedMean
from fedactors.privacy.accounting import PrivacyLedger
from fedactors.privacy.canaries import (
    NOTE,
    OVERSIZE,
    CanaryInsertion,
    CanaryPlan,
    EmpiricalEstimate,
    _WithCanaries,
    canary_direction,
    canary_epsilon_bound,
    cosines,
    delta_between_gaussians,
    epsilon_between_gaussians,
    estimate_epsilon,
    joining_canaries,
)
from fedactors.seeding import SeedTree

#: The keys of summary.json's privacy.empirical block (docs/privacy.md, "Outputs").
SUMMARY_KEYS = {
    "epsilon", "delta", "epsilon_canary_bound", "canaries_inserted", "canaries_held_out",
    "participation_rate", "canary_participations", "parameters", "cosine_mean", "cosine_sd",
    "null_cosine_sd", "held_out_cosine_mean", "held_out_cosine_sd", "note",
}


class Recorder(WeightedMean):
    """An unweighted mean that broadcasts a clip norm and records every encode call."""

    def __init__(self, clip_norm: float = 1.0) -> None:
        super().__init__(weighted=False)
        self.clip_norm = clip_norm
        self.calls: list[dict[str, Any]] = []

    def client_params(self, state: Any) -> dict[str, float]:
        return {"clip_norm": self.clip_norm}

    def encode(self, params: Mapping[str, Any], delta: np.ndarray, num_examples: int,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
        self.calls.append({"params": params, "delta": delta, "num_examples": num_examples,
                           "rng": rng})
        return super().encode(params, delta, num_examples, rng)


class Stateful(Recorder):
    """A stage whose state moves on each aggregation, as adaptive clipping's does."""

    def aggregate(self, state: Any, contributions: Contributions,
                  ctx: RoundContext) -> Aggregate:
        result = super().aggregate(None, contributions, ctx)
        return Aggregate(result.delta, ("next", state), result.measurements)


def _ctx(round_: int = 2) -> RoundContext:
    return RoundContext(round=round_, expected_count=4, selected=4,
                        rng=np.random.default_rng(7))


def _moved_model(plan: CanaryPlan, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Initial and final weights: the final ones moved along every inserted canary, plus noise."""
    rng = np.random.default_rng(3)
    initial = rng.normal(size=plan.dim).astype(np.float32)
    pull = sum(canary_direction(plan.seeds, i, plan.dim) for i in range(plan.inserted))
    final = initial + (pull + rng.normal(0.0, noise / math.sqrt(plan.dim), plan.dim))
    return initial, final.astype(np.float32)


# -- the seed paths ----------------------------------------------------------------------


def test_direction_is_the_normalised_normal_of_its_documented_path() -> None:
    # docs/privacy.md: canary i's direction is drawn from ("canary", "direction", i), so
    # anyone holding the seed can recompute it.
    seeds = SeedTree(5)
    for index in (0, 3):
        v = seeds.generator("canary", "direction", index).standard_normal(64)
        np.testing.assert_array_equal(canary_direction(seeds, index, 64), v / np.linalg.norm(v))
        assert canary_direction(seeds, index, 64).dtype == np.float64


def test_joins_come_from_their_own_path_one_uniform_per_canary() -> None:
    # ("canary", "joins", release): the run's other streams are untouched by canaries.
    seeds = SeedTree(9)
    for release in (1, 4):
        draws = seeds.generator("canary", "joins", release).random(200)
        np.testing.assert_array_equal(joining_canaries(seeds, release, 200, 0.3),
                                      np.flatnonzero(draws < 0.3))


def test_a_canary_joins_only_when_its_draw_is_strictly_below_the_rate() -> None:
    # P(U < q) = q exactly for U uniform on [0, 1); "<=" would let a canary join at rate 0
    # (with probability 2**-53). A rate equal to one canary's own draw shows the boundary.
    seeds = SeedTree(2)
    draws = seeds.generator("canary", "joins", 3).random(20)
    rate = float(draws[7])
    joined = joining_canaries(seeds, 3, 20, rate)
    assert 7 not in joined
    np.testing.assert_array_equal(joined, np.flatnonzero(draws < rate))


def test_each_record_gets_its_own_encode_generator_by_release_and_canary() -> None:
    # ("canary", "encode", release, i): a generator of the canary's own, as a device's.
    seeds = SeedTree(4)
    plan = CanaryPlan(seeds, inserted=6, held_out=2, rate=1.0, dim=16)
    stage = Recorder()
    firsts = {}
    for release in (1, 2):
        stage.calls.clear()
        plan.records(stage, stage.client_params(None), release)
        assert len(stage.calls) == 6
        for i, call in enumerate(stage.calls):
            rng = call["rng"]
            assert isinstance(rng, np.random.Generator)
            expected = seeds.generator("canary", "encode", release, i).random(4)
            got = rng.random(4)
            np.testing.assert_array_equal(got, expected)
            firsts[(release, i)] = float(got[0])
    # Distinct across canaries and across releases.
    assert len(set(firsts.values())) == len(firsts)


# -- the records ---------------------------------------------------------------------------


@pytest.mark.parametrize("clip", [0.5, 1.0, 3.0])
def test_a_canary_sends_its_direction_oversize_clip_norms_long_as_one_float32_example(
        clip: float) -> None:
    plan = CanaryPlan(SeedTree(1), inserted=5, held_out=5, rate=0.6, dim=12)
    stage = Recorder(clip)
    params = stage.client_params(None)
    records = plan.records(stage, params, 2)
    joined = plan.joining(2)
    assert 0 < len(joined) < 5 and len(records) == len(joined) == len(stage.calls)
    for i, call in zip(joined, stage.calls):
        raw = call["delta"]
        # The raw update is float32, as a device's delta, and 2C long: the stage clips it.
        assert raw.dtype == np.float32
        np.testing.assert_allclose(raw, OVERSIZE * clip * canary_direction(plan.seeds, int(i), 12),
                                   rtol=1e-6)
        assert np.linalg.norm(raw) == pytest.approx(OVERSIZE * clip, rel=1e-6)
        assert call["num_examples"] == 1 and call["params"] is params
    # A weighted mean therefore weighs each canary as one example.
    weighted = plan.records(WeightedMean(weighted=True), params, 2)
    assert all(r[WEIGHT][0] == 1.0 for r in weighted)


# -- the insertion stage -------------------------------------------------------------------


def test_insertion_encodes_as_the_inner_stage_does() -> None:
    # Devices never see the stage, but encode must still be the inner stage's, untouched.
    inner = Recorder(2.0)
    stage = CanaryInsertion(inner, CanaryPlan(SeedTree(0), 3, 3, 0.5, 4))
    params, delta = {"clip_norm": 2.0}, np.array([1.0, -2.0, 0.5, 0.0], np.float32)
    rng = np.random.default_rng(1)
    out = stage.encode(params, delta, 7, rng)
    call = inner.calls[-1]
    assert call["params"] is params and call["delta"] is delta
    assert call["num_examples"] == 7 and call["rng"] is rng
    np.testing.assert_array_equal(out[WEIGHTED_DELTA], delta)


def test_insertion_returns_the_inner_stages_next_state() -> None:
    inner = Stateful()
    stage = CanaryInsertion(inner, CanaryPlan(SeedTree(0), 4, 4, 1.0, 3))
    rows = [{WEIGHTED_DELTA: np.ones(3, np.float32), WEIGHT: np.ones(1, np.float32)}]
    result = stage.aggregate("s0", PlainContributions(rows), _ctx())
    assert result.state == ("next", "s0")
    assert result.measurements["canaries"] == 4


# -- the contributions with canaries -------------------------------------------------------


def test_canaries_alone_when_no_device_reported() -> None:
    plan = CanaryPlan(SeedTree(6), inserted=4, held_out=4, rate=1.0, dim=3)
    canaries = plan.records(Recorder(), {"clip_norm": 1.0}, 1)
    both = _WithCanaries(PlainContributions([]), canaries)
    assert both.count == 4
    expected = PlainContributions(canaries).sum()
    got = both.sum()
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    np.testing.assert_array_equal(both.stacked()[WEIGHTED_DELTA],
                                  PlainContributions(canaries).stacked()[WEIGHTED_DELTA])


def test_devices_alone_when_no_canary_joined() -> None:
    rows = [{WEIGHTED_DELTA: np.full(3, v, np.float32), WEIGHT: np.ones(1, np.float32)}
            for v in (1.0, 2.0)]
    alone = _WithCanaries(PlainContributions(rows), [])
    assert alone.count == 2
    stacked = alone.stacked()
    np.testing.assert_array_equal(stacked[WEIGHTED_DELTA], [[1.0] * 3, [2.0] * 3])
    np.testing.assert_array_equal(stacked[WEIGHT], [[1.0], [1.0]])
    np.testing.assert_array_equal(alone.sum()[WEIGHTED_DELTA], [3.0] * 3)


def test_devices_and_canaries_are_summed_in_float64_whatever_the_key_type() -> None:
    # The class promises a float64 sum; an integer key (a count) is summed exactly too.
    rows = [{"n": np.array([3], np.int64)}, {"n": np.array([4], np.int64)}]
    both = _WithCanaries(PlainContributions(rows), [{"n": np.array([5], np.int64)}])
    total = both.sum()["n"]
    assert total.dtype == np.float64
    np.testing.assert_array_equal(total, [12.0])


# -- the estimate ----------------------------------------------------------------------------


def _plan(inserted: int = 40, held_out: int = 30, dim: int = 1500) -> CanaryPlan:
    return CanaryPlan(SeedTree(8), inserted=inserted, held_out=held_out, rate=0.5, dim=dim)


def test_estimate_fits_inserted_and_held_out_canaries_of_the_models_total_change() -> None:
    plan = _plan()
    initial, final = _moved_model(plan)
    change = final.astype(np.float64) - initial.astype(np.float64)
    seen = cosines(change, [canary_direction(plan.seeds, i, plan.dim) for i in range(40)])
    unseen = cosines(change, [canary_direction(plan.seeds, i, plan.dim) for i in range(40, 70)])
    est = plan.estimate(initial, final, 1e-5)
    expected = estimate_epsilon(seen, unseen, plan.dim, 1e-5)
    assert est is not None
    assert (est.inserted, est.held_out, est.dim, est.delta) == (40, 30, 1500, 1e-5)
    assert est.mean == pytest.approx(expected.mean, rel=1e-9)
    assert est.sd == pytest.approx(expected.sd, rel=1e-9)
    assert est.held_out_mean == pytest.approx(expected.held_out_mean, rel=1e-9, abs=1e-15)
    assert est.held_out_sd == pytest.approx(expected.held_out_sd, rel=1e-9)
    assert est.epsilon == pytest.approx(expected.epsilon, rel=1e-7)
    # The model moved along the inserted canaries only: they stand out, the held-out do not.
    assert est.mean > 5 * est.null_sd and est.epsilon > 1.0
    assert abs(est.held_out_mean) < 3 * est.null_sd


def test_estimate_depends_on_the_change_not_on_where_the_model_started() -> None:
    plan = _plan()
    initial, final = _moved_model(plan)
    shift = np.random.default_rng(1).normal(size=plan.dim)
    a = plan.estimate(initial, final, 1e-5)
    b = plan.estimate(initial + shift, final + shift, 1e-5)
    assert a is not None and b is not None
    assert b.mean == pytest.approx(a.mean, rel=1e-5)
    # The delta reaches the ε: a larger δ gives a smaller ε.
    looser = plan.estimate(initial, final, 1e-2)
    assert looser is not None and looser.delta == 1e-2 and looser.epsilon < a.epsilon


def test_estimate_is_none_only_when_the_model_did_not_move() -> None:
    plan = _plan(inserted=3, held_out=3, dim=5)
    w = np.arange(5, dtype=np.float32)
    assert plan.estimate(w, w.copy(), 1e-5) is None
    moved = w.copy()
    moved[2] += 1.0  # one coordinate is enough
    assert plan.estimate(w, moved, 1e-5) is not None


# -- what summary.json reports ---------------------------------------------------------------


def test_summary_block_has_the_documented_keys_and_the_estimate() -> None:
    plan = _plan()
    initial, final = _moved_model(plan)
    # No noise: the canary bound is None (infinite ε), and no PLD is computed (slow).
    ledger = PrivacyLedger(40, 10, 0.0, "fixed_size").compose(1)
    block = plan.summary(initial, final, 1e-5, ledger, participations=np.int64(93))
    est = plan.estimate(initial, final, 1e-5)
    assert est is not None
    assert set(block) == SUMMARY_KEYS
    assert block["epsilon"] == est.epsilon
    for key, value in est.as_json().items():
        assert block[key] == value, key
    assert block["epsilon_canary_bound"] is None
    assert block["canaries_inserted"] == 40 and block["canaries_held_out"] == 30
    assert block["participation_rate"] == 0.5
    assert block["canary_participations"] == 93 and type(block["canary_participations"]) is int
    assert block["note"] == NOTE


def test_summary_without_an_estimate_still_names_the_canaries() -> None:
    plan = _plan(inserted=3, held_out=2, dim=4)
    ledger = PrivacyLedger(40, 10, 1.0, "fixed_size").compose(1)
    block = plan.summary(np.ones(4), np.ones(4), 1e-5, ledger, participations=0)
    assert set(block) == {"epsilon", "epsilon_canary_bound", "canaries_inserted",
                          "canaries_held_out", "participation_rate", "canary_participations",
                          "note"}
    assert block["epsilon"] is None and block["canaries_held_out"] == 2
    assert block["participation_rate"] == 0.5
    assert block["epsilon_canary_bound"] == canary_epsilon_bound(ledger, 1e-5)
    assert block["note"] != NOTE and "no release changed the model" in block["note"]


def test_as_json_names_every_statistic_as_documented() -> None:
    e = EmpiricalEstimate(epsilon=1.5, delta=1e-5, dim=10_000, inserted=1000, held_out=900,
                          mean=0.02, sd=0.011, held_out_mean=0.0003, held_out_sd=0.0101)
    assert e.as_json() == {
        "epsilon": 1.5, "delta": 1e-5, "canaries_inserted": 1000, "canaries_held_out": 900,
        "parameters": 10_000, "cosine_mean": 0.02, "cosine_sd": 0.011, "null_cosine_sd": 0.01,
        "held_out_cosine_mean": 0.0003, "held_out_cosine_sd": 0.0101,
    }


def test_canary_bound_uses_the_best_accountant_whatever_the_runs_method() -> None:
    # The bound is the accountant's tightest: a run accounted with RDP still gets the
    # Poisson "best" (min of RDP and PLD) ε for its canaries.
    rdp = PrivacyLedger(40, 10, 1.0, "fixed_size", method="rdp").compose(8)
    best = PrivacyLedger(40, 10, 1.0, "poisson", method="best").compose(8)
    rdp_poisson = PrivacyLedger(40, 10, 1.0, "poisson", method="rdp").compose(8)
    assert best.epsilon(1e-5) < rdp_poisson.epsilon(1e-5)
    assert canary_epsilon_bound(rdp, 1e-5) == pytest.approx(best.epsilon(1e-5), rel=1e-12)


# -- the maths' refusals and edges -----------------------------------------------------------


@pytest.mark.parametrize("position, name", [(1, "sd_a"), (3, "sd_b")])
@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_a_bad_standard_deviation_is_named_with_its_value(position: int, name: str,
                                                          bad: float) -> None:
    args = [0.0, 1.0, 1.0, 1.0]
    args[position] = bad
    for function, last in ((delta_between_gaussians, 1.0), (epsilon_between_gaussians, 1e-5)):
        with pytest.raises(ValueError) as err:
            function(*args, last)
        assert str(err.value) == f"{name} must be a finite number > 0, got {bad!r}"


def test_delta_at_epsilon_zero_is_the_total_variation_distance() -> None:
    # epsilon = 0 is allowed (the hockey-stick divergence at e**0 is the TV distance);
    # equal variances: 2 Phi(|mu| / 2 sigma) - 1.
    assert delta_between_gaussians(0.0, 1.0, 1.0, 1.0, 0.0) == pytest.approx(
        2 * stats.norm.cdf(0.5) - 1, rel=1e-9)
    for bad in (-0.1, math.nan):
        with pytest.raises(ValueError, match=rf"^epsilon must be >= 0, got {bad!r}$"):
            delta_between_gaussians(0.0, 1.0, 1.0, 1.0, bad)


def test_identical_gaussians_cannot_be_told_apart() -> None:
    # The loss is 0 everywhere: no region exceeds any epsilon >= 0, both ways.
    assert delta_between_gaussians(0.3, 2.0, 0.3, 2.0, 0.0) == 0.0
    assert delta_between_gaussians(0.3, 2.0, 0.3, 2.0, 1.0) == 0.0
    assert epsilon_between_gaussians(0.3, 2.0, 0.3, 2.0, 1e-9) == 0.0


def test_delta_is_zero_when_the_tails_underflow() -> None:
    assert delta_between_gaussians(0.0, 1.0, 1.0, 1.0, 2000.0) == 0.0


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5, 1.5])
def test_epsilon_refuses_a_delta_outside_zero_one_naming_it(delta: float) -> None:
    with pytest.raises(ValueError,
                       match=rf"^delta must be strictly between 0 and 1, got {delta!r}$"):
        epsilon_between_gaussians(0.0, 1.0, 1.0, 1.0, delta)


def test_epsilon_of_absurdly_separated_gaussians_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^no ε below 1\.04858e\+06 reaches delta=1e-05$"):
        epsilon_between_gaussians(0.0, 1.0, 1e7, 1.0, 1e-5)


@pytest.mark.parametrize("args", [
    (0.0, 1.0, 0.2, 1.0, 1e-3),   # below 1: found without doubling
    (0.0, 1.0, 0.5, 1.0, 0.1),    # δ(0) (TV 0.197) only twice the target: a small ε > 0
    (0.0, 1.0, 3.0, 1.0, 1e-5),   # several doublings
    (0.0, 1.0, 0.5, 0.6, 1e-4),   # narrower alternative
    (0.0, 0.02, 0.03, 0.05, 1e-6),  # wider alternative, small scale
])
def test_epsilon_is_where_delta_of_epsilon_meets_the_target(args: tuple) -> None:
    *gaussians, delta = args
    eps = epsilon_between_gaussians(*gaussians, delta)
    assert eps > 0
    assert delta_between_gaussians(*gaussians, eps) == pytest.approx(delta, rel=1e-6)
    assert delta_between_gaussians(*gaussians, eps * 0.99) > delta


def test_cosines_are_taken_against_the_deltas_direction() -> None:
    got = cosines(np.array([3.0, 4.0], np.float32),
                  (v for v in (np.array([1.0, 0.0]), np.array([0.0, 1.0]),
                               np.array([0.6, 0.8]))))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, [0.6, 0.8, 1.0], rtol=1e-12)
    for bad in (math.inf, math.nan):
        with pytest.raises(ValueError, match=rf"^the model delta has norm {bad}: "):
            cosines(np.array([bad, 1.0]), [np.array([1.0, 0.0])])


def test_estimate_fits_a_sample_gaussian_and_reports_the_held_out_fit() -> None:
    seen, unseen = [0.03, 0.05, 0.04, 0.06], [0.01, -0.02, 0.0]
    est = estimate_epsilon(seen, unseen, 2500, 1e-4)
    assert (est.inserted, est.held_out, est.dim, est.delta) == (4, 3, 2500, 1e-4)
    assert est.mean == pytest.approx(0.045) and est.sd == pytest.approx(np.std(seen, ddof=1))
    assert est.held_out_mean == pytest.approx(np.mean(unseen))
    assert est.held_out_sd == pytest.approx(np.std(unseen, ddof=1))
    assert est.null_sd == 0.02
    assert est.epsilon == pytest.approx(
        epsilon_between_gaussians(0.0, 0.02, est.mean, est.sd, 1e-4), rel=1e-9)


def test_identical_cosines_give_a_large_finite_estimate() -> None:
    # _TINY's docstring: sd 0 is floored at a fraction of the null's, "so ε is large and
    # finite rather than undefined".
    est = estimate_epsilon([0.01, 0.01, 0.01], [0.0, 0.01], 10_000, 1e-5)
    assert est.sd == 0.0
    assert math.isfinite(est.epsilon)
    assert est.epsilon > epsilon_between_gaussians(0.0, 0.01, 0.01, 1e-3, 1e-5)


def test_estimate_refusals_name_what_is_missing() -> None:
    for seen, unseen in (([0.1, 0.2], [0.0]), ([0.1], [0.0, 0.2])):
        with pytest.raises(ValueError, match=r"^need at least 2 inserted and 2 held-out "
                                             r"cosines to fit a Gaussian$"):
            estimate_epsilon(seen, unseen, 100, 1e-5)
    with pytest.raises(ValueError, match=r"^dim must be >= 1, got 0$"):
        estimate_epsilon([0.1, 0.2], [0.0, 0.1], 0, 1e-5)
    assert estimate_epsilon([0.1, 0.2], [0.0, 0.1], 1, 1e-5).null_sd == 1.0


def test_cosines_of_a_float32_delta_are_computed_in_float64() -> None:
    # A model delta arrives as float32; the docstring promises float64 cosines, so its norm
    # and dot products are taken in float64: the cosines are exactly those of the same delta
    # given in float64 (a float32 norm of 20,000 coordinates is off by ~1e-8 relative).
    delta = np.random.default_rng(0).normal(size=20_000).astype(np.float32)
    directions = [canary_direction(SeedTree(1), i, 20_000) for i in range(3)]
    np.testing.assert_allclose(cosines(delta, directions),
                               cosines(delta.astype(np.float64), directions), rtol=1e-13)


def test_estimate_of_float32_cosines_is_fitted_in_float64() -> None:
    # Cosines handed over as float32 are fitted as the float64 numbers they are: the mean
    # and standard deviations do not pick up float32 accumulation error.
    rng = np.random.default_rng(4)
    seen = rng.normal(0.02, 0.01, 3001).astype(np.float32)
    unseen = rng.normal(0.0, 0.01, 3001).astype(np.float32)
    low = estimate_epsilon(seen, unseen, 10_000, 1e-5)
    high = estimate_epsilon(seen.astype(np.float64), unseen.astype(np.float64), 10_000, 1e-5)
    for name in ("mean", "sd", "held_out_mean", "held_out_sd"):
        assert getattr(low, name) == pytest.approx(getattr(high, name), rel=1e-13, abs=0), name


def test_a_narrow_but_real_spread_is_used_as_fitted() -> None:
    # Only a degenerate sd (below a hundredth of the null's) is floored: with d = 10**6 a
    # fitted sd of 0.4 null standard deviations is kept as it is.
    seen, unseen = [0.0010, 0.0015, 0.0005, 0.0012], [0.0, 0.001]
    est = estimate_epsilon(seen, unseen, 1_000_000, 1e-5)
    assert est.sd < 0.5 * est.null_sd
    assert est.epsilon == pytest.approx(
        epsilon_between_gaussians(0.0, 1e-3, est.mean, float(np.std(seen, ddof=1)), 1e-5),
        rel=1e-9)


@pytest.mark.parametrize("mean_b, sd_b", [(0.436, 0.88), (1.0, 0.6), (0.2, 1.4)])
def test_delta_is_a_probability_that_falls_from_the_total_variation(mean_b: float,
                                                                    sd_b: float) -> None:
    # δ(0) is the total variation distance, computed here by quadrature; δ(ε) is in [0, 1]
    # and non-increasing in ε (the narrower Gaussian's region is then an interval).
    tv = 0.5 * integrate.quad(lambda x: abs(stats.norm.pdf(x, 0.0, 1.0)
                                            - stats.norm.pdf(x, mean_b, sd_b)),
                              -15, 15, points=[0.0, mean_b], limit=200)[0]
    assert delta_between_gaussians(0.0, 1.0, mean_b, sd_b, 0.0) == pytest.approx(tv, rel=1e-6)
    deltas = [delta_between_gaussians(0.0, 1.0, mean_b, sd_b, e)
              for e in (0.0, 0.05, 0.13, 0.3, 1.0, 3.0)]
    assert all(0.0 <= d <= 1.0 for d in deltas)
    assert all(later <= earlier for earlier, later in zip(deltas, deltas[1:]))
