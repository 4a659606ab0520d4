"""Canaries and the one-shot empirical ε (fedactors/privacy/canaries.py): the maths, the
insertion into a release, the option's validation and refusals.

The end-to-end behaviour (the estimate rises as the noise falls and stays below the
accountant's ε) is in test_runtime_canaries.py.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from dp_accounting.pld import privacy_loss_distribution, privacy_loss_mechanism
from scipy import integrate, stats

from fedactors import (
    DeviceClass,
    FedBuff,
    Privacy,
    Rounds,
    Scenario,
    SecureAggregation,
    WeightedMean,
)
from fedactors.aggregation.base import (
    IndividualUpdatesHidden,
    PlainContributions,
    PrivateRelease,
    RoundContext,
    SummedContributions,
    Wrapper,
)
from fedactors.aggregation.clipping import l2_norm
from fedactors.aggregation.fedavg import WEIGHT, WEIGHTED_DELTA
from fedactors.errors import ConfigError
from fedactors.privacy.accounting import PrivacyLedger
from fedactors.privacy.adaptive_clip import BELOW_CLIP
from fedactors.privacy.canaries import (
    NOTE,
    OVERSIZE,
    CanaryInsertion,
    CanaryPlan,
    canary_direction,
    canary_epsilon_bound,
    cosines,
    delta_between_gaussians,
    epsilon_between_gaussians,
    estimate_epsilon,
    joining_canaries,
)
from fedactors.privacy.dp_mean import DPMean
from fedactors.privacy.gaussian_mean import CLIPPED_DELTA
from fedactors.seeding import SeedTree

# -- ε between two Gaussians -------------------------------------------------------


@pytest.mark.parametrize("sd, sensitivity, epsilon", [
    (1.0, 1.0, 0.5), (2.0, 1.0, 1.0), (0.5, 1.0, 3.0), (1.0, 3.0, 2.0), (0.01, 0.02, 4.0),
])
def test_equal_variances_give_dp_accountings_gaussian_mechanism(sd: float, sensitivity: float,
                                                                 epsilon: float) -> None:
    exact = privacy_loss_mechanism.GaussianPrivacyLoss(sd, sensitivity=sensitivity)
    expected = exact.get_delta_for_epsilon(epsilon)
    assert delta_between_gaussians(0.0, sd, sensitivity, sd, epsilon) == pytest.approx(
        expected, rel=1e-9)
    # Symmetric: which Gaussian is "with the canary" does not matter.
    assert delta_between_gaussians(sensitivity, sd, 0.0, sd, epsilon) == pytest.approx(
        expected, rel=1e-9)


def _hockey_stick(ma: float, sa: float, mb: float, sb: float, eps: float) -> float:
    """max over both directions of the integral of (p - e^eps q)+, by quadrature."""
    lo, hi = min(ma - 14 * sa, mb - 14 * sb), max(ma + 14 * sa, mb + 14 * sb)
    out = []
    for (m1, s1), (m2, s2) in (((ma, sa), (mb, sb)), ((mb, sb), (ma, sa))):
        f = lambda x, m1=m1, s1=s1, m2=m2, s2=s2: max(  # noqa: E731
            0.0, stats.norm.pdf(x, m1, s1) - math.exp(eps) * stats.norm.pdf(x, m2, s2))
        out.append(integrate.quad(f, lo, hi, limit=500, points=[ma, mb])[0])
    return max(out)


@pytest.mark.parametrize("args", [
    (0.0, 1.0, 1.0, 1.3, 1.0),    # wider alternative: two tails
    (0.0, 1.0, 0.5, 0.7, 0.5),    # narrower alternative: an interval
    (0.0, 0.01, 0.02, 0.015, 2.0),
    (0.0, 1.0, 0.0, 2.0, 0.3),    # same mean, variance alone
    (0.3, 1.0, 0.0, 1.0 + 1e-9, 0.7),  # nearly equal variances: the stable roots
])
def test_unequal_variances_match_numerical_integration(args: tuple) -> None:
    assert delta_between_gaussians(*args) == pytest.approx(_hockey_stick(*args), rel=1e-6,
                                                           abs=1e-12)


def test_epsilon_inverts_delta_and_matches_the_gaussian_mechanism() -> None:
    for delta in (1e-2, 1e-5, 1e-10):
        eps = epsilon_between_gaussians(0.0, 1.0, 1.3, 1.2, delta)
        assert delta_between_gaussians(0.0, 1.0, 1.3, 1.2, eps) == pytest.approx(delta, rel=1e-6)
    # Equal variances: dp-accounting's PLD (pessimistic discretization, so a hair above).
    pld = privacy_loss_distribution.from_gaussian_mechanism(
        1.0, value_discretization_interval=1e-4)
    exact = epsilon_between_gaussians(0.0, 1.0, 1.0, 1.0, 1e-5)
    assert exact == pytest.approx(pld.get_epsilon_for_delta(1e-5), abs=1e-3)
    assert exact <= pld.get_epsilon_for_delta(1e-5)
    # The reference implementation's regression figure: mu = sigma = d^-1/2, d = 2000.
    s = 2000 ** -0.5
    assert epsilon_between_gaussians(0.0, s, s, s, 1e-2) == pytest.approx(2.317789, abs=1e-6)
    # Indistinguishable at this delta: 0, and never negative.
    assert epsilon_between_gaussians(0.0, 1.0, 1e-6, 1.0, 0.5) == 0.0
    with pytest.raises(ValueError, match="delta"):
        epsilon_between_gaussians(0.0, 1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="sd_b"):
        epsilon_between_gaussians(0.0, 1.0, 1.0, 0.0, 1e-5)


def test_epsilon_grows_with_the_signal_and_with_a_wider_alternative() -> None:
    by_mean = [epsilon_between_gaussians(0.0, 1.0, m, 1.0, 1e-5) for m in (0.25, 0.5, 1.0, 2.0)]
    assert np.all(np.diff(by_mean) > 0)
    by_sd = [epsilon_between_gaussians(0.0, 1.0, 1.0, s, 1e-5) for s in (1.0, 1.1, 1.2)]
    assert np.all(np.diff(by_sd) > 0)


# -- the canaries -----------------------------------------------------------------------


def test_directions_are_unit_deterministic_and_distinct() -> None:
    seeds = SeedTree(3)
    a, b = canary_direction(seeds, 0, 500), canary_direction(seeds, 1, 500)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-12)
    assert np.array_equal(a, canary_direction(SeedTree(3), 0, 500))  # same path, same vector
    assert abs(float(a @ b)) < 0.2
    assert not np.array_equal(a, canary_direction(SeedTree(4), 0, 500))


def test_each_canary_joins_a_release_at_the_rate() -> None:
    seeds = SeedTree(0)
    joins = [joining_canaries(seeds, r, 1000, 0.25) for r in range(1, 41)]
    fraction = sum(len(j) for j in joins) / (40 * 1000)
    assert fraction == pytest.approx(0.25, abs=0.01)
    assert np.array_equal(joins[0], joining_canaries(SeedTree(0), 1, 1000, 0.25))
    assert not np.array_equal(joins[0], joins[1])  # a fresh draw per release
    assert len(joining_canaries(seeds, 1, 50, 0.0)) == 0
    assert np.array_equal(joining_canaries(seeds, 1, 50, 1.0), np.arange(50))


def test_estimator_recovers_the_epsilon_of_a_gaussian_mechanism() -> None:
    """The paper's Gaussian-mechanism check: k canaries each inserted once into one release
    with noise sigma per coordinate; the estimate is the ε of that mechanism (sensitivity 1).

    The fitted mean is sharp (standard error 1/sqrt(k) in units of the null's sd); the ε at
    δ = 1e-5 is biased upward by the sd's sampling error. Over 16 seeds with k = 1000,
    d = 40,000 it was -2% to +32% (mean +8%) of the truth; asserted here: -10% to +35%."""
    seeds, dim, k, sigma, delta = SeedTree(11), 40_000, 1000, 1.0, 1e-5
    inserted = [canary_direction(seeds, i, dim) for i in range(k)]
    held_out = [canary_direction(seeds, i, dim) for i in range(k, k + 200)]  # only a check
    release = np.sum(inserted, axis=0) + np.random.default_rng(5).normal(0.0, sigma, dim)
    est = estimate_epsilon(cosines(release, inserted), cosines(release, held_out), dim, delta)
    root_d = math.sqrt(dim)
    # cosine = (1 + N(0, sigma^2 + (k-1)/d)) / |release|, |release|^2 ~ d sigma^2 + k.
    assert est.mean * root_d == pytest.approx(1 / math.sqrt(sigma**2 + k / dim), abs=3 / math.sqrt(k))
    assert est.sd * root_d == pytest.approx(1.0, abs=0.1)
    truth = epsilon_between_gaussians(0.0, sigma, 1.0, sigma, delta)
    assert 0.9 * truth <= est.epsilon <= 1.35 * truth
    # The null: held-out cosines have mean ~0 and standard deviation 1/sqrt(d).
    assert abs(est.held_out_mean) < 3 * est.null_sd / math.sqrt(200)
    assert est.held_out_sd == pytest.approx(est.null_sd, rel=0.15)
    # Ten times the noise: sensitivity 0.1, true ε ~0.3: a far smaller estimate.
    quiet = np.sum(inserted, axis=0) + np.random.default_rng(5).normal(0.0, 10 * sigma, dim)
    low = estimate_epsilon(cosines(quiet, inserted), cosines(quiet, held_out), dim, delta)
    assert low.epsilon < truth / 4


def test_estimate_needs_two_cosines_and_a_moving_model() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        estimate_epsilon([0.1], [0.0, 0.1], 100, 1e-5)
    with pytest.raises(ValueError, match="norm"):
        cosines(np.zeros(4), [np.ones(4) / 2])
    plan = CanaryPlan(SeedTree(0), inserted=3, held_out=3, rate=0.5, dim=4)
    assert plan.estimate(np.ones(4, np.float32), np.ones(4, np.float32), 1e-5) is None
    ledger = PrivacyLedger(40, 10, 1.0, "fixed_size").compose(3)
    block = plan.summary(np.ones(4), np.ones(4), 1e-5, ledger, participations=4)
    assert block["epsilon"] is None and block["note"].startswith("no estimate")
    assert block["canaries_inserted"] == 3 and block["canary_participations"] == 4


def test_canary_bound_is_the_ledger_poisson_sampled() -> None:
    fixed = PrivacyLedger(40, 10, 1.0, "fixed_size").compose(8)
    poisson = PrivacyLedger(40, 10, 1.0, "poisson").compose(8)
    assert canary_epsilon_bound(fixed, 1e-5) == pytest.approx(poisson.epsilon(1e-5), rel=1e-12)
    assert canary_epsilon_bound(poisson, 1e-5) == poisson.epsilon(1e-5)
    assert canary_epsilon_bound(PrivacyLedger(40, 10, 0.0, "poisson").compose(1), 1e-5) is None


# -- insertion into a release ---------------------------------------------------------


def _ctx(seed: int = 7, round_: int = 3, expected: int = 4) -> RoundContext:
    return RoundContext(round=round_, expected_count=expected, selected=expected,
                        rng=np.random.default_rng(seed))


@pytest.mark.parametrize("noise", [0.0, 1.5])
def test_canaries_are_clipped_by_encode_and_summed_before_the_noise(noise: float) -> None:
    dim, c = 50, 0.5
    agg = DPMean.fixed(c, noise, 4)
    plan = CanaryPlan(SeedTree(1), inserted=40, held_out=40, rate=0.3, dim=dim)
    stage = CanaryInsertion(agg, plan)
    state = agg.initial_state(dim)
    params = agg.client_params(state)
    rows = [agg.encode(params, np.full(dim, v, np.float32), 1, np.random.default_rng(0))
            for v in (1.0, -2.0, 0.1)]
    with_canaries = stage.aggregate(state, PlainContributions(rows), _ctx())
    without = agg.aggregate(state, PlainContributions(rows), _ctx())  # same server generator
    joined = plan.joining(3)
    assert 0 < len(joined) < 40 and with_canaries.measurements["canaries"] == len(joined)
    # Exactly the clipped canaries' sum, divided by m, on top of the same noised mean.
    expected = sum(c * canary_direction(plan.seeds, int(i), dim) for i in joined) / 4
    np.testing.assert_allclose(with_canaries.delta - without.delta, expected, atol=2e-6)
    records = plan.records(agg, params, 3)
    assert all(l2_norm(r[CLIPPED_DELTA]) == pytest.approx(c, rel=1e-5) for r in records)


def test_adaptive_clipping_counts_a_canary_as_clipped() -> None:
    agg = DPMean.adaptive_clipping(0.2, 1.0, 4)
    plan = CanaryPlan(SeedTree(1), inserted=10, held_out=10, rate=1.0, dim=8)
    params = agg.client_params(agg.initial_state(8))
    records = plan.records(agg, params, 1)
    assert len(records) == 10
    assert all(r[BELOW_CLIP][0] == -0.5 for r in records)  # OVERSIZE > 1: always clipped
    assert all(l2_norm(r[CLIPPED_DELTA]) == pytest.approx(params["clip_norm"], rel=1e-5)
               for r in records)
    assert OVERSIZE > 1


class Spy(WeightedMean):
    """Unweighted FedAvg that keeps what it was given and broadcasts a clip norm."""

    def __init__(self, stack: bool = True) -> None:
        super().__init__(weighted=False)
        self.stack = stack
        self.seen: dict = {}

    def client_params(self, state):
        return {"clip_norm": 1.0}

    def aggregate(self, state, contributions, ctx):
        self.seen = {"count": contributions.count, "sum": contributions.sum()}
        if self.stack:
            self.seen["stacked"] = contributions.stacked()
        return super().aggregate(state, contributions, ctx)


def test_contributions_with_canaries_sum_count_and_stack() -> None:
    plan = CanaryPlan(SeedTree(2), inserted=5, held_out=5, rate=1.0, dim=3)
    spy = Spy()
    rows = [{WEIGHTED_DELTA: np.ones(3, np.float32), WEIGHT: np.ones(1, np.float32)}] * 2
    canaries = plan.records(spy, spy.client_params(None), 1)
    CanaryInsertion(spy, plan).aggregate(None, PlainContributions(rows), _ctx(round_=1))
    assert spy.seen["count"] == 7
    np.testing.assert_allclose(spy.seen["sum"][WEIGHT], [7.0])
    np.testing.assert_allclose(spy.seen["sum"][WEIGHTED_DELTA],
                               2 + sum(r[WEIGHTED_DELTA].astype(np.float64) for r in canaries))
    assert spy.seen["stacked"][WEIGHTED_DELTA].shape == (7, 3)
    # Under secure aggregation the sums add up, and individual rows stay hidden.
    summed = SummedContributions({WEIGHTED_DELTA: np.full(3, 2.0), WEIGHT: np.array([2.0])}, 2)
    quiet = Spy(stack=False)
    CanaryInsertion(quiet, plan).aggregate(None, summed, _ctx(round_=1))
    np.testing.assert_allclose(quiet.seen["sum"][WEIGHTED_DELTA], spy.seen["sum"][WEIGHTED_DELTA])
    with pytest.raises(IndividualUpdatesHidden):
        CanaryInsertion(Spy(), plan).aggregate(None, summed, _ctx(round_=1))


# -- the option and its refusals -----------------------------------------------------------


@pytest.mark.parametrize("value, message", [
    (1, "at least 2"), (-1, ">= 0"), (True, "whole number"), (2.5, "whole number"),
])
def test_canaries_option_names_the_field(value, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^canaries: .*{message}"):
        Privacy(canaries=value)
    assert Privacy(canaries=0).canaries == 0 and Privacy(canaries=2).canaries == 2


def _scenario(**changes) -> Scenario:
    base = Scenario(
        name="canaries", model=lambda: None, loss="mse", data=lambda f, r: None,
        fleet=[DeviceClass("d", count=20)], rounds=Rounds(count=2, cohort_size=4),
        aggregator=DPMean.fixed(1.0, 1.0, 4), privacy=Privacy(canaries=100),
    )
    return dataclasses.replace(base, **changes)


class Forwarding(Wrapper):
    def encode(self, params, delta, num_examples, rng):
        return self.inner.encode(params, delta, num_examples, rng)


@dataclasses.dataclass(frozen=True)
class OtherRelease(PrivateRelease):
    """A declaration accounted some other way (as DP-FTRL's tree release is)."""


class OtherDP(WeightedMean):
    def private_release(self):
        return OtherRelease(1.0, 4)


class CustomDP(WeightedMean):
    def private_release(self):
        return PrivateRelease(1.0, 4)


def test_canaries_run_with_dp_mean_fixed_adaptive_and_wrapped() -> None:
    assert _scenario().privacy.canaries == 100
    _scenario(aggregator=DPMean.adaptive_clipping(0.5, 1.0, 4))
    _scenario(aggregator=Forwarding(DPMean.fixed(1.0, 1.0, 4)))
    _scenario(rounds=Rounds(count=2, cohort_size=4, sampling="poisson"))


@pytest.mark.parametrize("make_changes, reason", [
    (lambda: {"mode": FedBuff(buffer_size=4, concurrency=6), "rounds": Rounds(count=2)},
     "FedBuff"),
    (lambda: {"secure_aggregation": SecureAggregation()}, "secure_aggregation"),
    (lambda: {"aggregator": DPMean.fixed(1.0, 1.0, 4, distributed_noise=True)},
     "distributed_noise"),
    (lambda: {"aggregator": OtherDP()}, "needs a DPMean"),
    (lambda: {"aggregator": CustomDP()}, "needs a DPMean"),
])
def test_canaries_refused_where_the_estimate_would_not_be_honest(make_changes,
                                                                 reason: str) -> None:
    changes = make_changes()
    with pytest.raises(ConfigError, match=rf"^privacy\.canaries: .*{reason}") as info:
        _scenario(**changes)
    assert "\n" not in str(info.value)
    # Without canaries the same scenarios are not refused for them.
    try:
        _scenario(privacy=Privacy(), **changes)
    except ConfigError as exc:
        assert exc.field != "privacy.canaries"


def test_note_says_estimate_not_guarantee() -> None:
    assert "not a guarantee" in NOTE and "privacy.epsilon" in NOTE
