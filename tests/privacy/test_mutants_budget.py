"""The privacy block a run reports: the assumption ε rests on, where a run broke it, and the
summary.json figures (found by mutation testing: only the end-to-end runs reached these)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from fedactors.aggregation.base import PrivateRelease
from fedactors.aggregation.clipping import Clipped
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.errors import ConfigError
from fedactors.privacy.accounting import PrivacyLedger
from fedactors.privacy.budget import BUFFERS, ROUNDS, STOPPED_BY_BUDGET, PrivacyBudget
from fedactors.privacy.dp_mean import DPMean
from fedactors.privacy.participation import Participation
from fedactors.privacy.spec import Privacy

N, M, Z, DELTA = 1_000, 50, 1.5, 1e-5


def budget(sampling: str = "fixed_size", releases: str = ROUNDS, target=None,
           indicative: bool = False, min_survivors=None) -> PrivacyBudget:
    ledger = PrivacyLedger(N, M, Z, "none" if releases == BUFFERS else sampling)
    ind = PrivacyLedger(N, M, Z, "poisson", method="rdp") if indicative else None
    return PrivacyBudget(ledger, DELTA, target, PrivateRelease(Z, M, min_survivors), releases, ind)


def test_the_assumption_names_the_sampling_the_epsilon_relies_on() -> None:
    fixed = budget("fixed_size").assumption()
    assert f"exactly {M} of all {N} devices" in fixed
    assert "sampling without replacement" in fixed and "replace-one neighbours" in fixed
    assert "δ=1e-05" in fixed
    assert "independently of the data and of other rounds" in fixed
    assert "updates are summed does not depend on their data" in fixed

    poisson = budget("poisson").assumption()
    assert "a Poisson sample" in poisson and f"probability {M / N:.4g}" in poisson
    assert "add-or-remove-one neighbours" in poisson
    assert "without replacement" not in poisson

    buffers = budget(releases=BUFFERS).assumption()
    assert "one Gaussian mechanism per buffer" in buffers and "no amplification" in buffers
    assert "at most one clipped update per buffer, which the server enforces" in buffers
    assert "Poisson" not in buffers and "without replacement" not in buffers


def test_violations_are_empty_when_the_assumption_held() -> None:
    b = budget()
    state = b.charge(b.initial_state(), Participation(online=N, selected=M), M)
    assert b.violations(state, 1) == []
    summary = b.summary(state, "rounds")
    assert summary["assumption_held"] is True and summary["violations"] == []


def test_each_broken_assumption_is_reported_with_its_counts() -> None:
    b = budget()
    s = b.initial_state()
    s = b.charge(s, Participation(online=N - 200, selected=M), M)  # partial fleet
    s = b.charge(s, Participation(online=N, selected=M), M - 3)  # missing reports
    s = b.charge(s, Participation(online=N, selected=M, cut_at_target=True), M - 5)  # cut at target
    out = b.violations(s, 3)
    assert len(out) == 3
    availability, missing, arrival = out
    assert availability.startswith("availability: in 1 of 3 rounds")
    assert f"as few as {N - 200} of {N}" in availability
    assert "not a uniform sample of the fleet" in availability
    assert missing.startswith("missing reports: in 1 of 3 rounds")
    assert "ε holds only if who drops does not depend on the data" in missing
    assert arrival.startswith("arrival order: in 1 of 3 rounds")
    assert "summed the first reports to reach its target" in arrival
    summary = b.summary(s, "rounds")
    assert summary["assumption_held"] is False and summary["violations"] == out


@pytest.mark.parametrize("summed, cut, target, missing, cut_rounds", [
    (M, False, M, 0, 0),  # every selected device reported
    (M - 3, False, M, 1, 0),  # deadline or dropouts: reports are missing
    (M - 5, True, M - 5, 0, 1),  # closed at its target: the slowest were cut, not missing
    (M - 5, True, None, 0, 1),  # (a driver that does not say its target)
    # Closed at its target, then one it closed on dropped (secure aggregation, mid-protocol):
    # both the slowest cut and a report missing.
    (M - 6, True, M - 5, 1, 1),
])
def test_a_round_counts_as_missing_reports_when_short_of_what_it_waited_for(
        summed, cut, target, missing, cut_rounds) -> None:
    b = budget()
    s = b.charge(b.initial_state(), Participation(online=N, selected=M, cut_at_target=cut,
                                                  target=target), summed)
    assert (s.rounds_missing_reports, s.rounds_cut_at_target) == (missing, cut_rounds)
    assert s.rounds_partial_fleet == 0 and s.min_online == N


def test_summary_reports_the_ledger_and_the_figures() -> None:
    b = budget("poisson", target=50.0, min_survivors=7)
    s = b.initial_state()
    for summed in (M, M, M - 1):
        s = b.charge(s, Participation(online=N, selected=M), summed)
    block = b.summary(s, "rounds")
    assert block["epsilon"] == s.ledger.epsilon(DELTA) > 0
    assert block["delta"] == DELTA and block["target_epsilon"] == 50.0
    assert block["rounds_accounted"] == 3 and block["releases"] == ROUNDS
    acc = block["accounting"]
    assert acc == {
        "population": N,
        "sample_size": M,
        "expected_count": M,
        "sampling": "poisson",
        "neighboring": "add-or-remove-one",
        "noise_multiplier": Z,
        "noise_multipliers_charged": [[z, n] for z, n in s.ledger.releases],
        "distributed_noise_min_survivors": 7,
        "method": "best",
    }
    assert sum(n for _, n in acc["noise_multipliers_charged"]) == 3
    assert block["assumption"] == b.assumption()
    assert "next_round_epsilon" not in block
    assert "epsilon_if_uniform_sample" not in block


def test_a_budget_stop_reports_the_epsilon_of_the_round_it_refused() -> None:
    b = budget("fixed_size", target=50.0)
    s = b.charge(b.initial_state(), Participation(online=N, selected=M), M)
    block = b.summary(s, STOPPED_BY_BUDGET)
    assert block["next_round_epsilon"] == s.ledger.compose(1).epsilon(DELTA) > block["epsilon"]


def test_a_noiseless_release_is_reported_as_null_epsilon() -> None:
    b = budget()
    s = b.initial_state()
    s = type(s)(s.ledger.compose(1, noise_multiplier=0.0))
    assert math.isinf(b.epsilon(s))
    assert b.summary(s, "rounds")["epsilon"] is None


def test_fedbuff_reports_an_indicative_uniform_sample_epsilon() -> None:
    b = budget(releases=BUFFERS, indicative=True)
    s = b.charge(b.initial_state(), Participation(), M)
    block = b.summary(s, "rounds")
    assert block["releases"] == BUFFERS
    assert block["epsilon_if_uniform_sample"] == s.indicative.epsilon(DELTA)
    assert block["epsilon_if_uniform_sample"] < block["epsilon"]  # sampling amplifies
    note = block["epsilon_if_uniform_sample_note"]
    assert note.startswith("indicative only")
    assert f"rate {M}/{N}" in note and "this is not a guarantee" in note


# -- charging with distributed noise, and the per-round figure ---------------------------------

def test_distributed_noise_charges_the_multiplier_the_release_actually_had() -> None:
    k = 20
    b = budget("poisson", min_survivors=k, indicative=True)
    assert b.multiplier_charged(k) == pytest.approx(Z)
    assert b.multiplier_charged(4 * k) == pytest.approx(2 * Z)  # four times the shares
    assert b.multiplier_charged(k - 1) == Z  # no release is made; the nominal is the floor
    s = b.charge(b.initial_state(), Participation(online=N, selected=M), 4 * k)
    assert s.ledger.releases == ((pytest.approx(2 * Z), 1),)
    # The indicative (as-if-sampled) ledger is charged the same release.
    assert s.indicative.rounds == 1
    assert s.indicative.releases[0][0] == pytest.approx(2 * Z)
    assert s.indicative.sampling == "poisson"


def test_round_epsilon_is_the_rdp_bound_unless_that_is_above_the_target() -> None:
    free = budget("poisson", target=None)
    s = free.charge(free.initial_state(), Participation(online=N, selected=M), M)
    rdp, best = s.ledger.epsilon_rdp(DELTA), s.ledger.epsilon(DELTA)
    assert best < rdp  # PLD is tighter here
    assert free.round_epsilon(s) == rdp
    # A target exactly at the RDP bound is not exceeded by it: the bound is reported.
    at = budget("poisson", target=rdp)
    assert at.round_epsilon(s) == rdp
    # Above the target, the tighter figure the budget check used is reported instead.
    below = budget("poisson", target=(rdp + best) / 2)
    assert below.round_epsilon(s) == best <= below.target_epsilon


# -- PrivacyBudget.for_scenario -------------------------------------------------------------------

def scenario(aggregator, *, privacy=None, selected=M, sampling="fixed_size", buffer_size=None):
    mode = None if buffer_size is None else SimpleNamespace(buffer_size=buffer_size)
    return SimpleNamespace(aggregator=aggregator, privacy=privacy, mode=mode,
                           rounds=SimpleNamespace(selected_size=selected, sampling=sampling))


def test_for_scenario_builds_the_round_ledger_from_the_scenario() -> None:
    dp = DPMean.fixed(1.0, Z, M)
    b = PrivacyBudget.for_scenario(scenario(dp, privacy=Privacy(method="rdp"), sampling="poisson"), N)
    assert b.releases == ROUNDS and b.indicative_ledger is None
    led = b.initial_ledger
    assert (led.population, led.cohort_size, led.sampling, led.method) == (N, M, "poisson", "rdp")
    assert led.noise_multiplier == dp.private_release().noise_multiplier
    assert b.delta == Privacy().delta_for(N) and b.target_epsilon is None
    assert b.initial_state().indicative is None
    assert PrivacyBudget.for_scenario(scenario(WeightedMean()), N) is None


def test_for_scenario_builds_the_buffer_ledger_and_the_indicative_one() -> None:
    dp = DPMean.fixed(1.0, Z, 10)
    b = PrivacyBudget.for_scenario(scenario(dp, privacy=Privacy(method="rdp"), buffer_size=10), N)
    assert b.releases == BUFFERS
    led, ind = b.initial_ledger, b.indicative_ledger
    assert (led.cohort_size, led.sampling, led.method) == (10, "none", "rdp")
    assert (ind.population, ind.cohort_size, ind.sampling, ind.method) == (N, 10, "poisson", "rdp")
    assert ind.noise_multiplier == led.noise_multiplier
    assert b.initial_state().indicative == ind


def test_for_scenario_refuses_a_target_below_one_release() -> None:
    dp = DPMean.fixed(1.0, Z, M)
    one = PrivacyBudget.for_scenario(scenario(dp), N).next_epsilon(
        PrivacyBudget.for_scenario(scenario(dp), N).initial_state())
    # A target of exactly one release's ε allows that release.
    assert PrivacyBudget.for_scenario(scenario(dp, privacy=Privacy(target_epsilon=one)), N)
    with pytest.raises(ConfigError) as err:
        PrivacyBudget.for_scenario(scenario(dp, privacy=Privacy(target_epsilon=one / 2)), N)
    assert err.value.field == "privacy.target_epsilon"
    assert "below the ε of a single release" in err.value.message
    assert "no round could run" in err.value.message
    assert "without amplification" not in err.value.message
    fb = DPMean.fixed(1.0, Z, 10)
    with pytest.raises(ConfigError) as err:
        PrivacyBudget.for_scenario(
            scenario(fb, privacy=Privacy(target_epsilon=1e-3), buffer_size=10), N)
    assert err.value.field == "privacy.target_epsilon"
    assert "without amplification" in err.value.message


def test_for_scenario_reports_bad_ledger_options_under_privacy() -> None:
    dp = DPMean.fixed(1.0, Z, M)
    with pytest.raises(ConfigError) as err:
        PrivacyBudget.for_scenario(scenario(dp, privacy=Privacy(method="pld")), N)  # fixed_size
    assert err.value.field == "privacy.method"


def test_for_scenario_refuses_a_wrapper_that_hides_the_dp_declaration() -> None:
    class Hiding(Clipped):
        def private_release(self):
            return None

    with pytest.raises(ConfigError) as err:
        PrivacyBudget.for_scenario(scenario(Hiding(1.0, DPMean.fixed(1.0, Z, M))), N)
    assert err.value.field == "aggregator"
    assert "does not forward its private_release()" in err.value.message


@pytest.mark.parametrize("sampling, aggregated, summed, violation", [
    ("poisson", False, M, True),  # skipped (a secure round that aborted)
    ("poisson", True, 3, True),  # fewer distributed-noise shares than min_survivors
    ("poisson", True, 7, False),  # enough shares: released
    ("fixed_size", False, M, False),  # replace-one: counted, not a violation
    ("fixed_size", True, 3, False),
])
def test_a_round_not_released_is_counted_and_on_poisson_rounds_a_violation(
        sampling, aggregated, summed, violation) -> None:
    b = budget(sampling, min_survivors=7)
    s = b.charge(b.initial_state(), Participation(online=N, selected=summed), summed,
                 aggregated=aggregated)
    not_released = not aggregated or summed < 7
    assert s.rounds_not_released == not_released
    assert s.ledger.rounds == 1  # charged either way
    block = b.summary(s, "rounds")
    assert block["releases_skipped"] == not_released
    skipped = [v for v in block["violations"] if v.startswith("skipped releases:")]
    assert bool(skipped) == violation and block["assumption_held"] is not violation
    if violation:
        assert "1 of 1 Poisson rounds" in skipped[0] and "does not cover" in skipped[0]


def test_only_central_noise_on_poisson_rounds_releases_whatever_the_count() -> None:
    assert budget("poisson").releases_whatever_the_count
    assert not budget("poisson", min_survivors=7).releases_whatever_the_count
    assert not budget("fixed_size").releases_whatever_the_count
    assert not budget(releases=BUFFERS).releases_whatever_the_count
