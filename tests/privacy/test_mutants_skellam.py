"""Distributed Skellam noise (``DPMean.skellam``): the promises the first Skellam tests left open.

Found by the mutation run of docs/testing.md over ``privacy/skellam.py``,
``privacy/skellam_budget.py`` and ``privacy/skellam_mean.py``: the Chernoff tail is the
optimum the docstring states (not just some upper bound), the truncation level is the
*smallest* integer meeting its target, conditional rounding retries exactly
``MAX_ROUNDING_TRIES`` times and rounds each coordinate independently, both branches of the
RDP bound's ``min``, every calibration field, the budget's boundaries (a target reached
exactly, a release over exactly k shares, an ε past ``exp``'s range), the summary.json block,
and each refusal naming its field with a message that says what to do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Optional

import numpy as np
import pytest
from scipy import optimize

from fedactors import DPMean, Privacy, SecureAggregation
from fedactors.aggregation import RoundContext, SummedContributions
from fedactors.errors import ConfigError
from fedactors.privacy import skellam
from fedactors.privacy.accounting import RDP_ORDERS, rdp_epsilon
from fedactors.privacy.claims import STOPPED_BY_BUDGET
from fedactors.privacy.participation import Participation
from fedactors.privacy.skellam_budget import SkellamBudget, skellam_budget
from fedactors.privacy.skellam_mean import (
    SKELLAM_DELTA,
    SkellamDPMean,
    calibration_for,
    check_scenario,
)
from tests.privacy.test_skellam_mean import _agg  # the same small Skellam stage (F = 8)

DIM, DELTA, F = 100, 1e-5, 8
SEEN = Participation(online=8, selected=4, contributors=(0, 1, 2, 3))


class ScriptedUniforms:
    """A stand-in generator whose ``random(shape)`` returns scripted uniforms, one row a call.

    Lets a test decide which coordinates round up on which try, so the retry limit and the
    strict ``<`` of randomized rounding can be checked exactly instead of by chance.
    """

    def __init__(self, rows: Sequence[Sequence[float]]) -> None:
        self.rows = [np.asarray(r, np.float64) for r in rows]
        self.calls = 0

    def random(self, shape: tuple[int, ...]) -> np.ndarray:
        row = self.rows[min(self.calls, len(self.rows) - 1)]
        self.calls += 1
        return row.reshape(shape)


# -- skellam.py: sampler, tail, truncation, rounding, RDP, calibration ---------------------


@pytest.mark.parametrize("variance", [-1.0, math.inf, math.nan])
def test_the_sampler_refuses_a_variance_that_is_not_finite_and_non_negative(
        variance: float) -> None:
    with pytest.raises(ValueError, match=r"^variance must be finite and >= 0, got"):
        skellam.sample_skellam(np.random.default_rng(0), variance, 3)


def test_the_sampler_accepts_a_variance_below_one() -> None:
    # Shares are Sk(v / k): a small model's share variance can be well below 1.
    x = skellam.sample_skellam(np.random.default_rng(0), 0.5, 20_000)
    assert x.dtype == np.int64 and x.shape == (20_000,)
    assert x.var() == pytest.approx(0.5, rel=0.05)


def _chernoff(variance: float, t: int) -> float:
    """min over s > 0 of 2 exp(2l (cosh s - 1) - s (t + 1)), found numerically, capped at 1."""
    lam, a = variance / 2.0, t + 1.0

    def exponent(s: float) -> float:
        return 2.0 * lam * (math.cosh(s) - 1.0) - s * a

    top = 2.0 * math.asinh(a / (2.0 * lam)) + 1.0
    best = optimize.minimize_scalar(exponent, bounds=(1e-12, top), method="bounded",
                                    options={"xatol": 1e-12})
    return min(1.0, 2.0 * math.exp(best.fun))


@pytest.mark.parametrize("variance,t", [
    (1.0, 0), (1.0, 5), (0.5, 2), (6.0, 3), (6.0, 20), (1e4, 300), (1e4, 600)])
def test_the_tail_bound_is_the_optimised_chernoff_bound(variance: float, t: int) -> None:
    # The docstring's promise is the *smallest* Chernoff bound (at sinh s = a / 2l), not
    # merely some valid one: a looser formula would truncate shares further out than needed.
    assert skellam.tail_bound(variance, t) == pytest.approx(_chernoff(variance, t), rel=1e-6)


def test_the_tail_bound_is_zero_without_noise_and_one_where_vacuous() -> None:
    assert skellam.tail_bound(0.0, 0) == 0.0 and skellam.tail_bound(0.0, 7) == 0.0
    # P(|X| >= 1) for a large variance: the Chernoff bound exceeds 1, reported as 1.0.
    assert skellam.tail_bound(1e6, 0) == 1.0


@pytest.mark.parametrize("probability", [0.0, 1.0, 1.5, -0.1])
def test_the_truncation_level_refuses_a_probability_outside_0_1(probability: float) -> None:
    with pytest.raises(ValueError, match=r"^probability must be in \(0, 1\), got"):
        skellam.truncation_level(6.0, probability)


@pytest.mark.parametrize("variance,probability", [
    (1e-40, skellam.TAIL_PROBABILITY),  # so little noise that no share ever leaves 0
    (1e-4, 1e-3),
    (0.05, 1e-3),
    (1.0, 0.5),
    (1.0, 1e-3),
    (1.0, skellam.TAIL_PROBABILITY),
    (6.0, 0.1),
    (37.0, 1e-9),
    (1e5, skellam.TAIL_PROBABILITY),
])
def test_the_truncation_level_is_the_smallest_integer_meeting_the_target(
        variance: float, probability: float) -> None:
    t = skellam.truncation_level(variance, probability)
    assert isinstance(t, int) and t >= 0
    assert skellam.tail_bound(variance, t) <= probability
    # Minimal: one less would not meet the target (t = 0 has nothing below it).
    assert t == 0 or skellam.tail_bound(variance, t - 1) > probability


@pytest.mark.parametrize("t", [4, 5])
def test_a_target_equal_to_the_bound_at_t_is_met_at_t(t: int) -> None:
    # "The smallest t with tail_bound(v, t) <= probability": equality meets the target.
    assert skellam.truncation_level(6.0, skellam.tail_bound(6.0, t)) == t


def test_the_truncation_levels_cover_0_and_small_answers() -> None:
    # The cases above include the smallest answers, where a search off by one shows.
    levels = {skellam.truncation_level(v, p) for v, p in [(1e-40, skellam.TAIL_PROBABILITY),
                                                         (1.0, 0.5), (0.05, 1e-3)]}
    assert 0 in levels and min(levels - {0}) <= 2
    assert skellam.truncation_level(0.0) == 0


@pytest.mark.parametrize("l2", [-1.0, math.inf, math.nan])
def test_the_rounding_bound_refuses_a_bad_norm(l2: float) -> None:
    with pytest.raises(ValueError, match=r"^l2 must be finite and >= 0, got"):
        skellam.rounded_l2_bound(l2, 4, 0.1)


@pytest.mark.parametrize("beta", [-0.1, 1.0, 1.5])
def test_the_rounding_bound_refuses_a_beta_outside_0_1(beta: float) -> None:
    with pytest.raises(ValueError, match=r"^beta must be in \[0, 1\), got"):
        skellam.rounded_l2_bound(10.0, 4, beta)


def test_the_rounding_bound_refuses_no_coordinates_but_takes_one() -> None:
    with pytest.raises(ValueError, match=r"^dim must be >= 1, got 0"):
        skellam.rounded_l2_bound(10.0, 0, 0.1)
    assert skellam.rounded_l2_bound(10.0, 1, 0.0) == 11.0


def test_the_rounding_bound_of_small_norms() -> None:
    # A zero or sub-unit norm is a valid input (a tiny clip times a coarse grid).
    assert skellam.rounded_l2_bound(0.0, 4, 0.0) == 2.0
    assert skellam.rounded_l2_bound(0.5, 4, 0.0) == 2.5
    c, d, beta = 0.5, 9, 0.2
    conditional = math.sqrt(c**2 + d / 4 + math.sqrt(2 * math.log(1 / beta)) * (c + 3 / 2))
    assert skellam.rounded_l2_bound(c, d, beta) == pytest.approx(min(c + 3, conditional),
                                                                  rel=1e-12)


@pytest.mark.parametrize("l2,dim", [(3.0, 100), (30.0, 4), (2.5, 9), (7.0, 49)])
def test_the_l1_bound_is_the_smaller_of_its_two_bounds(l2: float, dim: int) -> None:
    assert skellam.rounded_l1_bound(l2, dim) == l2 * min(math.sqrt(dim), l2)


def test_an_integral_vector_within_the_bound_is_kept_on_the_first_try() -> None:
    # Norm exactly at the bound is within it ("<= l2_bound"); integers never move.
    q, tries = skellam.conditional_round(np.random.default_rng(0), np.array([3.0, 4.0]), 5.0)
    assert tries == 1 and q.tolist() == [3, 4] and q.dtype == np.int64


def test_a_coordinate_rounds_up_only_below_its_fraction() -> None:
    # Up with probability equal to the fraction: u < frac. A uniform of exactly 0 must leave
    # an integer where it is (|q - x| < 1 always) and round every fraction up.
    rng = ScriptedUniforms([[0.0, 0.0, 0.0]])
    q, tries = skellam.conditional_round(rng, np.array([2.0, -3.0, 0.25]), 100.0)
    assert q.tolist() == [2, -3, 1] and tries == 1


def test_coordinates_are_rounded_independently() -> None:
    # One uniform per coordinate: two halves must sometimes round in opposite directions.
    rng = np.random.default_rng(7)
    outcomes = {tuple(skellam.conditional_round(rng, np.array([0.5, 0.5]), 10.0)[0])
                for _ in range(200)}
    assert {(0, 1), (1, 0)} <= outcomes


def test_rounding_retries_exactly_max_rounding_tries_times() -> None:
    # x = 1.5 with bound 1: rounding up (2) is rejected, rounding down (1) accepted.
    limit = skellam.MAX_ROUNDING_TRIES
    up, down = [0.0], [0.99]
    last_chance = ScriptedUniforms([up] * (limit - 1) + [down])
    q, tries = skellam.conditional_round(last_chance, np.array([1.5]), 1.0)
    assert q.tolist() == [1] and tries == limit and last_chance.calls == limit
    # Failing every allowed try gives the zero vector even if one more try would succeed.
    too_late = ScriptedUniforms([up] * limit + [down])
    q, tries = skellam.conditional_round(too_late, np.array([1.5]), 1.0)
    assert q.tolist() == [0] and tries == limit and too_late.calls == limit


def test_giving_up_returns_int64_zeros_of_the_input_shape() -> None:
    q, _ = skellam.conditional_round(np.random.default_rng(0), np.full(4, 1.5), 0.5)
    assert q.dtype == np.int64 and q.shape == (4,) and not q.any()


def test_rdp_refuses_orders_at_or_below_one() -> None:
    for orders in ([1.0], [2.0, 1.0], [0.5]):
        with pytest.raises(ValueError, match=r"^RDP orders must be > 1$"):
            skellam.skellam_rdp(np.array(orders), 100.0, 1.0, 1.0)


def test_rdp_without_noise_is_infinite_at_every_order() -> None:
    # One value per order, as with noise: the accountant composes vectors element-wise.
    rdp = skellam.skellam_rdp(RDP_ORDERS, 0.0, 1.0, 1.0)
    assert rdp.shape == RDP_ORDERS.shape and np.all(np.isinf(rdp))


def _paper(a: float, v: float, l1: float, l2: float) -> float:
    return a * l2**2 / (2 * v) + min(((2 * a - 1) * l2**2 + 6 * l1) / (4 * v**2),
                                     3 * l1 / (2 * v))


@pytest.mark.parametrize("a,v,l1,l2", [
    (4.0, 2.0, 30.0, 10.0),    # small variance: 3 l1 / (2 v) is the smaller term
    (4.0, 1.0, 2.0, 1.0),      # variance exactly 1
    (3.0, 50.0, 12.0, 3.0),    # ((2a - 1) l2^2 + 6 l1) / (4 v^2) is the smaller term
])
def test_skellam_rdp_is_the_papers_formula_in_both_branches(a: float, v: float, l1: float,
                                                            l2: float) -> None:
    got = skellam.skellam_rdp(np.array([a]), v, l1, l2)[0]
    assert np.isfinite(got) and got == pytest.approx(_paper(a, v, l1, l2), rel=1e-12)


def test_the_calibration_holds_every_field_with_conditional_rounding() -> None:
    cal = skellam.calibrate(0.5, 3.0, 10, 0.1, dim=16, shares=5)
    l2 = skellam.rounded_l2_bound(0.5 * 1024, 16, 0.1)
    assert (cal.dim, cal.scale, cal.shares) == (16, 1024.0, 5)
    assert cal.l2 == l2 < 0.5 * 1024 + 4  # the conditional bound is the tighter one here
    assert cal.l1 == l2 * min(4.0, l2)
    assert cal.variance == pytest.approx((3.0 * l2) ** 2, rel=1e-12)
    assert cal.share_variance == pytest.approx(cal.variance / 5, rel=1e-12)
    assert cal.share_tail == skellam.truncation_level(cal.share_variance)


# -- skellam_budget.py: charging, ε, δ from truncation, the summary -------------------------


def _budget(target: Optional[float] = None, z: float = 2.0, k: int = 3, m: int = 4,
            population: int = 8) -> SkellamBudget:
    release = DPMean.skellam(1.0, z, m, min_survivors=k, scale_bits=10).private_release()
    return skellam_budget(release, Privacy(target_epsilon=target, delta=DELTA), population,
                          False, DELTA, DIM)


def test_repeated_releases_are_counted_per_share_count() -> None:
    budget = _budget()
    state = budget.initial_state()
    for summed in (4, 3, 4, 3, 3):
        state = budget.charge(state, SEEN, summed)
    assert state.releases == ((3, 3), (4, 2)) and state.count == 5
    cal = budget.calibration
    expected = (3 * skellam.skellam_rdp(RDP_ORDERS, cal.variance, cal.l1, cal.l2)
                + 2 * skellam.skellam_rdp(RDP_ORDERS, cal.variance * 4 / 3, cal.l1, cal.l2))
    assert np.allclose(budget.rdp(state.releases), expected, rtol=1e-12, atol=0)


def test_a_release_over_exactly_k_shares_is_made() -> None:
    budget = _budget(k=3)
    state = budget.charge(budget.initial_state(), SEEN, 3)
    assert state.releases_not_made == 0
    assert state.truncation_probability == 3 * DIM * skellam.TAIL_PROBABILITY
    assert budget.shares_charged(3) == 3 and budget.shares_charged(3, aggregated=False) == 3
    assert budget.multiplier_charged(3) == pytest.approx(2.0)
    assert budget.multiplier_charged(2) == pytest.approx(2.0)  # not made: nominal


def test_nothing_released_is_epsilon_zero_and_no_truncation() -> None:
    budget = _budget()
    state = budget.initial_state()
    assert budget.epsilon(state) == 0.0 and budget.round_epsilon(state) == 0.0
    assert budget.delta_truncation(state) == 0.0
    assert np.array_equal(budget.rdp(state.releases), np.zeros(len(RDP_ORDERS)))
    assert budget.next_epsilon(state) == pytest.approx(rdp_epsilon(
        budget.rdp(((3, 1),)), DELTA))


def test_round_epsilon_is_the_epsilon_or_null_without_noise() -> None:
    budget = _budget()
    state = budget.charge(budget.initial_state(), SEEN, 4)
    assert budget.round_epsilon(state) == budget.epsilon(state) > 0
    noiseless = _budget(z=0.0)
    state = noiseless.charge(noiseless.initial_state(), SEEN, 4)
    assert math.isinf(noiseless.epsilon(state)) and noiseless.round_epsilon(state) is None


def test_without_a_target_nothing_would_exceed_it() -> None:
    budget = _budget(target=None)
    state = budget.initial_state()
    for _ in range(3):
        state = budget.charge(state, SEEN, 3)
    assert budget.would_exceed(state) is False


def test_a_target_equal_to_the_next_epsilon_may_still_be_reached() -> None:
    # "Stop before the round that would push ε *above* the target": reaching it is allowed,
    # at load (one release exactly at the target) and during the run.
    first = _budget().next_epsilon(_budget().initial_state())
    budget = _budget(target=first)
    state = budget.initial_state()
    assert not budget.would_exceed(state)
    state = budget.charge(state, SEEN, 3)
    assert budget.epsilon(state) == first and budget.would_exceed(state)


def test_the_target_refusal_says_what_a_release_costs_and_what_to_do() -> None:
    with pytest.raises(ConfigError) as err:
        _budget(target=0.01)
    assert err.value.field == "privacy.target_epsilon"
    text = str(err.value)
    assert text.startswith("privacy.target_epsilon: 0.01 is below the ε of a single Skellam "
                           "release (")
    assert "at δ=1e-05, without amplification): no release could run; raise the target or " \
           "the noise" in text


def test_delta_truncation_without_a_release_made_is_zero_even_without_noise() -> None:
    # Releases that were not made add no truncation, whatever ε is (here infinite).
    noiseless = _budget(z=0.0)
    state = noiseless.charge(noiseless.initial_state(), SEEN, 2)
    state = noiseless.charge(state, SEEN, 4, aggregated=False)
    assert state.truncation_probability == 0 and math.isinf(noiseless.epsilon(state))
    assert noiseless.delta_truncation(state) == 0.0


def test_delta_truncation_is_infinite_past_exps_range() -> None:
    # ε in the thousands: (1 + e^ε) overflows a float; the δ it adds is reported as inf.
    budget = _budget(z=0.01)
    state = budget.charge(budget.initial_state(), SEEN, 4)
    eps = budget.epsilon(state)
    assert math.isfinite(eps) and eps > 710
    assert budget.delta_truncation(state) == math.inf


def test_the_assumption_states_the_neighbours_the_threat_model_and_the_truncation() -> None:
    # summary.json's statement of what ε rests on, word for word (docs/privacy.md, "What the
    # ε means"): zero-out neighbours, no amplification, the server sees only the sum.
    assert _budget(k=3).assumption() == (
        "user-level ε at δ=1e-05 for distributed Skellam noise under secure aggregation: each "
        "release is the Skellam mechanism on the sum of at least 3 devices' rounded records "
        "(zero-out neighbours: one device's record replaced by zero, its noise share kept), "
        "composed with no amplification by sampling, so it holds whoever took part; it assumes "
        "the server sees only the securely aggregated sum (honest-but-curious) and each device "
        "contributes at most one clipped update per release; the shares' truncation adds "
        "delta_truncation to δ")


def test_the_summary_block_has_every_field_the_docs_list() -> None:
    budget = _budget(z=2.0, k=3, m=4, population=8)
    cal = budget.calibration
    state = budget.initial_state()
    for summed, made in ((4, True), (2, True), (4, False)):
        state = budget.charge(state, SEEN, summed, aggregated=made)
    block = budget.summary(state, "rounds")
    eps = budget.epsilon(state)
    assert block == {
        "epsilon": eps,
        "delta": DELTA,
        "delta_truncation": budget.delta_truncation(state),
        "target_epsilon": None,
        "rounds_accounted": 3,
        "releases": "rounds",
        "accounting": {
            "mechanism": "distributed-skellam",
            "population": 8,
            "expected_count": 4,
            "sampling": "none",
            "neighboring": "zero-out",
            "noise_multiplier": 2.0,
            "noise_multipliers_charged": [[2.0, 2], [pytest.approx(2.0 * math.sqrt(4 / 3)), 1]],
            "distributed_noise_min_survivors": 3,
            "clip_norm": 1.0,
            "scale_bits": 10,
            "beta": math.exp(-0.5),
            "dim": DIM,
            "l2_sensitivity_integer": cal.l2,
            "l1_sensitivity_integer": cal.l1,
            "variance_nominal_integer": cal.variance,
            "variances_charged_integer": [[cal.variance, 2],
                                          [pytest.approx(cal.variance * 4 / 3), 1]],
            "share_truncated_at_integer": cal.share_tail,
            "releases_not_made": 2,
            "method": "rdp",
        },
        "assumption": budget.assumption(),
        "assumption_held": True,
        "violations": [],
    }
    assert block["delta_truncation"] == pytest.approx(
        (1 + math.exp(eps)) * 4 * DIM * skellam.TAIL_PROBABILITY)


def test_the_summary_gives_the_next_rounds_epsilon_only_when_the_budget_stopped_the_run() -> None:
    budget = _budget(target=50.0)
    state = budget.charge(budget.initial_state(), SEEN, 3)
    assert "next_round_epsilon" not in budget.summary(state, "rounds")
    stopped = budget.summary(state, STOPPED_BY_BUDGET)
    assert stopped["next_round_epsilon"] == budget.next_epsilon(state) > budget.epsilon(state)
    assert stopped["target_epsilon"] == 50.0


def _release(**kw):
    return DPMean.skellam(1.0, 2.0, 4, scale_bits=10, **kw).private_release()


def _refusal(fedbuff: bool = False, dim: Optional[int] = DIM, **privacy) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        skellam_budget(_release(), Privacy(delta=DELTA, **privacy), 8, fedbuff, DELTA, dim)
    return err.value


def test_each_budget_refusal_names_its_field_and_says_why() -> None:
    assert str(_refusal(fedbuff=True)) == (
        "mode: DPMean.skellam needs secure aggregation, which FedBuff lacks")
    assert str(_refusal(dim=None)) == (
        "aggregator: DPMean.skellam's ε depends on the model size: the budget must be built "
        "with dim")
    assert str(_refusal(min_separation=2)) == (
        "privacy.min_separation: only applies to DP-FTRL (DPMean.tree)")
    assert str(_refusal(method="pld")) == (
        "privacy.method: 'pld' is not available for DPMean.skellam (no Skellam privacy-loss "
        "distribution): use 'rdp' or 'best'")


@pytest.mark.parametrize("method", ["rdp", "best"])
def test_the_rdp_and_best_methods_are_accepted(method: str) -> None:
    budget = skellam_budget(_release(), Privacy(delta=DELTA, method=method), 8, False, DELTA, 7)
    assert budget.calibration.dim == 7 and budget.population == 8 and budget.delta == DELTA


# -- skellam_mean.py: parameters, encode, bounds, aggregate, scenario checks -----------------


def test_the_constructors_defaults_are_the_documented_ones() -> None:
    agg = SkellamDPMean(1.0, 2.0, 5)
    assert agg.scale_bits == 16 and agg.min_survivors == 5 and agg.beta == math.exp(-0.5)
    assert DPMean.skellam(1.0, 2.0, 5).min_survivors == 5


@pytest.mark.parametrize("kw,field,quoted", [
    (dict(clip_norm=0.0), "clip_norm", "0.0"),
    (dict(noise_multiplier=-1.0), "noise_multiplier", "-1.0"),
    (dict(expected_count=0, min_survivors=None), "expected_count", "0"),
    (dict(min_survivors=0), "min_survivors", "0"),
    (dict(scale_bits=41), "scale_bits", "41"),
    (dict(scale_bits=8.0), "scale_bits", "8.0"),
    (dict(beta=1.0), "beta", "1.0"),
    (dict(beta=False), "beta", "False"),
    (dict(beta="0.5"), "beta", "'0.5'"),
])
def test_a_bad_parameter_is_refused_naming_the_field_and_the_value(kw: dict, field: str,
                                                                   quoted: str) -> None:
    with pytest.raises(ConfigError) as err:
        _agg(**kw)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ") and f"got {quoted}" in str(err.value)


def test_the_range_messages_state_the_range() -> None:
    with pytest.raises(ConfigError, match=r"^scale_bits: must be an int in \[0, 40\], got 41$"):
        _agg(scale_bits=41)
    with pytest.raises(ConfigError, match=r"^beta: must be a number in \[0, 1\), got 1\.0$"):
        _agg(beta=1.0)
    with pytest.raises(ConfigError, match=r"^min_survivors: 5 is more than expected_count 4: "
                                          r"no release could be made$"):
        _agg(min_survivors=5)


def test_the_edges_of_each_range_are_accepted() -> None:
    assert _agg(scale_bits=0).scale_bits == 0 and _agg(scale_bits=40).scale_bits == 40
    assert _agg(beta=0.0).beta == 0.0 and _agg(beta=0).beta == 0.0
    assert _agg(min_survivors=4).min_survivors == 4  # k = m: every device must survive
    assert _agg(noise_multiplier=0.0).noise_multiplier == 0.0


def test_the_declaration_carries_every_parameter() -> None:
    release = _agg(clip_norm=0.5, noise_multiplier=1.5, beta=0.25).private_release()
    assert (release.noise_multiplier, release.expected_count, release.min_survivors,
            release.clip_norm, release.scale_bits, release.beta) == (1.5, 4, 3, 0.5, F, 0.25)
    assert release.distributed_noise


def test_the_clip_norm_is_what_devices_are_sent() -> None:
    agg = _agg(clip_norm=0.5)
    assert agg.client_params(agg.initial_state(3)) == {"clip_norm": 0.5}


def test_a_noiseless_record_is_the_clipped_delta_on_the_grid() -> None:
    agg, dim = _agg(noise_multiplier=0.0, clip_norm=1.0), 6
    params = agg.client_params(agg.initial_state(dim))
    rng = np.random.default_rng(3)
    small = np.array([0.1, -0.2, 0.3, 0.0, 0.05, -0.4], np.float32)
    big = small * 100  # norm ~ 55: clipped to 1
    for delta in (small, big):
        x = agg.encode(params, delta, 1, rng)[SKELLAM_DELTA]
        scale = min(1.0, 1.0 / float(np.linalg.norm(delta.astype(np.float64))))
        # Randomized rounding moves each coordinate by less than one grid step.
        assert np.all(np.abs(x - delta.astype(np.float64) * scale) < 2.0**-F)
    # A 2-D delta is flattened: the record is one vector of all its weights.
    x = agg.encode(params, small.reshape(2, 3), 1, rng)[SKELLAM_DELTA]
    assert x.shape == (dim,)


def test_a_share_is_truncated_at_its_tail_on_both_sides(monkeypatch: pytest.MonkeyPatch) -> None:
    # A share beyond the tail (probability < 2^-100 per coordinate) must be cut to it, so the
    # record stays within contribution_bounds and the modulus never wraps.
    agg, dim = _agg(), 4
    cal = agg.calibration(dim)
    far = np.array([10, -10, 1, -1], np.int64) * cal.share_tail
    monkeypatch.setattr(skellam, "sample_skellam", lambda rng, variance, size: far.copy())
    params = agg.client_params(agg.initial_state(dim))
    x = agg.encode(params, np.zeros(dim, np.float32), 1, np.random.default_rng(0))
    assert (x[SKELLAM_DELTA] * 2**F).tolist() == [cal.share_tail, -cal.share_tail,
                                                  cal.share_tail, -cal.share_tail]


def test_the_contribution_bound_is_the_record_bound_on_the_grid() -> None:
    agg, dim = _agg(), 20
    cal = agg.calibration(dim)
    bound = agg.contribution_bounds(agg.client_params(agg.initial_state(dim)), dim)
    assert bound == {SKELLAM_DELTA: (math.floor(cal.l2) + cal.share_tail) / 2**F}


def test_a_round_expecting_another_cohort_size_is_refused() -> None:
    agg = _agg()
    ctx = RoundContext(7, 5, 5, np.random.default_rng(0))
    summed = SummedContributions({SKELLAM_DELTA: np.zeros(3)}, count=4)
    with pytest.raises(ValueError, match=r"^DPMean\.skellam was configured for "
                                         r"expected_count=4, but round 7 expects 5$"):
        agg.aggregate(agg.initial_state(3), summed, ctx)


def test_too_few_shares_keep_the_state_and_say_so() -> None:
    agg = _agg()
    state = agg.initial_state(3)
    out = agg.aggregate(state, SummedContributions({SKELLAM_DELTA: np.zeros(3)}, count=2),
                        RoundContext(1, 4, 4, np.random.default_rng(0)))
    assert out.delta is None and out.state is state
    assert out.measurements == {"clip_norm": 1.0, "noise_shares_below_minimum": 1.0}


def test_a_release_is_a_float32_mean_with_its_noise_measurement() -> None:
    agg = _agg()
    state = agg.initial_state(3)
    out = agg.aggregate(state, SummedContributions({SKELLAM_DELTA: np.array([4.0, -8.0, 2.0])},
                                                   count=4),
                        RoundContext(1, 4, 4, np.random.default_rng(0)))
    assert out.delta.dtype == np.float32 and out.delta.tolist() == [1.0, -2.0, 0.5]
    assert out.state is state
    assert set(out.measurements) == {"clip_norm", "skellam_noise_stddev_on_mean"}
    assert out.measurements["clip_norm"] == 1.0


def test_a_sum_of_the_wrong_shape_is_refused_naming_both_shapes() -> None:
    agg = _agg()
    summed = SummedContributions({SKELLAM_DELTA: np.zeros(2)}, count=4)
    with pytest.raises(ValueError, match=re.escape(
            "summed skellam_delta has shape (2,), expected (3,)")):
        agg.aggregate(agg.initial_state(3), summed, RoundContext(1, 4, 4,
                                                                 np.random.default_rng(0)))


def test_a_model_without_weights_is_refused_naming_dim() -> None:
    agg = _agg()
    with pytest.raises(ConfigError, match=r"^dim: must be >= 1, got 0$"):
        agg.initial_state(0)
    with pytest.raises(ConfigError, match=r"^dim: must be >= 1, got 0$"):
        calibration_for(agg.private_release(), 0)
    assert calibration_for(agg.private_release(), 5) == agg.calibration(5)


def test_the_scenario_refusals_say_why_and_what_to_do() -> None:
    release = _agg().private_release()
    with pytest.raises(ConfigError) as err:
        check_scenario(release, None)
    assert str(err.value) == (
        "secure_aggregation: is required by DPMean.skellam: each device adds only "
        "1/min_survivors of the noise, so without it the server would read records that are "
        "not private at the stated ε; add SecureAggregation(scale_bits=...) or use "
        "DPMean.fixed")
    with pytest.raises(ConfigError) as err:
        check_scenario(release, SecureAggregation(scale_bits=F + 2))
    assert str(err.value) == (
        f"secure_aggregation.scale_bits: is {F + 2} but DPMean.skellam has scale_bits={F}; "
        "they must be equal so every record is on the grid and quantization is exact")
