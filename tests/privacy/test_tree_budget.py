"""DP-FTRL's run-time budget: what summary.json's privacy block says, what is refused at load,
what a skipped release costs, and the budget stop."""

from __future__ import annotations

import json
from typing import Optional

import numpy as np
import pytest

from fedactors import DeviceClass, Privacy, Rounds, Scenario
from fedactors.aggregation.base import Aggregator, PlainContributions
from fedactors.errors import ConfigError
from fedactors.privacy.budget import STOPPED_BY_BUDGET, PrivacyBudget
from fedactors.privacy.dp_mean import DPMean
from fedactors.privacy.participation import Participation
from fedactors.privacy.tree_accounting import most_participations
from fedactors.privacy.tree_budget import TreeBudget
from fedactors.reporting.events import EventLog
from fedactors.seeding import SeedTree
from fedactors.server.fedbuff import FedBuff
from fedactors.server.optimizers import FedAvgStep
from fedactors.server.release import ReleaseStep
from fedactors.server.staleness import Unweighted
from tests.privacy.test_tree_accounting import brute_epsilon

N, M, Z, C, DELTA = 20, 4, 2.0, 1.0, 1e-5


def scenario(aggregator: Aggregator, fedbuff: bool = False, **privacy) -> Scenario:
    return Scenario(name="tree_budget", model=lambda: None, loss="mse", data=lambda f, r: None,
                    fleet=[DeviceClass("d", count=N)],
                    rounds=Rounds() if fedbuff else Rounds(cohort_size=M),  # FedBuff: unused
                    mode=FedBuff(buffer_size=M, staleness=Unweighted()) if fedbuff else None,
                    aggregator=aggregator, privacy=Privacy(**privacy) if privacy else None)


def budget(z: float = Z, restart_every: Optional[int] = None, fedbuff: bool = False,
           **privacy) -> TreeBudget:
    b = PrivacyBudget.for_scenario(
        scenario(DPMean.tree(C, z, M, restart_every=restart_every), fedbuff, delta=DELTA,
                 **privacy), N)
    assert isinstance(b, TreeBudget)
    return b


def charge(b: TreeBudget, state, contributors=(), aggregated: bool = True):
    return b.charge(state, Participation(contributors=tuple(contributors)), len(contributors),
                    aggregated=aggregated)


def test_the_summary_block_says_what_was_released_and_what_it_costs() -> None:
    b = budget(restart_every=4, min_separation=1, target_epsilon=100.0)
    state = b.initial_state()
    # Trees of leaves 1-4 and 5-6; one release skipped (no leaf) after the second leaf.
    # Five devices, once each in each tree: device 0 at leaves 1 and 5.
    for contributors, aggregated in [((0,), True), ((1,), True), ((), False), ((2,), True),
                                     ((3,), True), ((0,), True), ((4,), True)]:
        state = charge(b, state, contributors, aggregated)
    block = b.summary(state, "completed")
    json.dumps(block, allow_nan=False)  # strict JSON
    # The guarantee: for any participation the rule allows (2 of 4, 1 of 2) ...
    assert block["epsilon"] == pytest.approx(brute_epsilon(Z, [(4, 2, 1), (2, 1, 1)]), rel=1e-9)
    assert block["epsilon"] == b.epsilon(state)
    # ... and beside it, smaller, the bound for what happened: once each in every tree.
    assert block["epsilon_observed_participation"] == pytest.approx(
        brute_epsilon(Z, [(4, 1, 0), (2, 1, 0)]), rel=1e-9)
    assert block["epsilon_observed_participation"] < block["epsilon"]
    assert (block["delta"], block["target_epsilon"]) == (DELTA, 100.0)
    assert block["rounds_accounted"] == 6 and block["releases_skipped"] == 1
    assert block["releases"] == "rounds"
    acc = block["accounting"]
    assert acc["mechanism"] == "dp-ftrl-tree-aggregation" and acc["sampling"] == "none"
    assert (acc["population"], acc["expected_count"], acc["noise_multiplier"]) == (N, M, Z)
    assert (acc["restart_every"], acc["min_separation_enforced"]) == (4, 1)
    assert acc["trees"] == [{"releases": 4, "most_participations_allowed": 2},
                            {"releases": 2, "most_participations_allowed": 1}]
    seen = block["observed_participation"]
    assert seen["devices_contributed"] == 5
    assert seen["trees"] == [
        {"releases": 4, "most_participations": 1, "fewest_releases_between": None},
        {"releases": 2, "most_participations": 1, "fewest_releases_between": None}]
    assert "no sampling is assumed" in block["assumption"]
    assert "a new tree every 4 releases" in block["assumption"]
    assert "out of the 1 releases after each" in block["assumption"]
    # The skipped release is a stated violation: whether a release is made is not covered.
    assert block["assumption_held"] is False
    assert len(block["violations"]) == 1 and "1 releases were not made" in block["violations"][0]
    assert "next_round_epsilon" not in block


def test_without_a_skipped_release_the_assumption_held() -> None:
    b = budget(min_separation=1)
    state = b.initial_state()
    for contributors in [(0,), (1,), (0,), ()]:
        state = charge(b, state, contributors)
    block = b.summary(state, "completed")
    assert block["assumption_held"] is True and block["violations"] == []
    assert block["observed_participation"]["trees"] == [
        {"releases": 4, "most_participations": 2, "fewest_releases_between": 1}]


def test_a_run_stopped_by_the_budget_says_what_the_next_release_would_cost() -> None:
    b = budget(min_separation=2)
    state = b.initial_state()
    for contributors in [(0,), (1,), (2,)]:
        state = charge(b, state, contributors)
    block = b.summary(state, STOPPED_BY_BUDGET)
    # One more release's ε, by the bound the budget stops with (never below the exact one).
    assert block["next_round_epsilon"] == b.next_epsilon(state)
    assert block["next_round_epsilon"] >= brute_epsilon(
        Z, [(4, most_participations(4, 2), 2)]) * (1 - 1e-9)
    assert block["next_round_epsilon"] > block["epsilon"]


def test_fedbuff_releases_are_buffers_and_zero_noise_is_null() -> None:
    assert budget(fedbuff=True).summary(budget().initial_state(), "completed")["releases"] == (
        "buffers")
    b = budget(z=0.0)
    state = charge(b, b.initial_state(), (0,))
    block = b.summary(state, "completed")
    assert block["epsilon"] is None and block["epsilon_observed_participation"] is None
    json.dumps(block, allow_nan=False)


# -- refused at load -----------------------------------------------------------------------


def test_a_target_below_one_release_is_refused_at_load() -> None:
    one = brute_epsilon(Z, [(1, 1, 0)])
    with pytest.raises(ConfigError) as err:
        budget(target_epsilon=one * 0.999)
    assert err.value.field == "privacy.target_epsilon"
    assert budget(target_epsilon=one * 1.001).target_epsilon == one * 1.001  # one release fits


@pytest.mark.parametrize("make", [DPMean.fixed, DPMean.adaptive_clipping])
def test_min_separation_without_dp_ftrl_is_refused(make) -> None:
    aggregator = make(C, Z, M)
    with pytest.raises(ConfigError) as err:
        PrivacyBudget.for_scenario(scenario(aggregator, min_separation=3), N)
    assert err.value.field == "privacy.min_separation"
    assert PrivacyBudget.for_scenario(scenario(aggregator, min_separation=0), N) is not None


# -- charging ----------------------------------------------------------------------------------


def test_a_skipped_release_is_not_charged() -> None:
    b = budget(min_separation=1)
    state = charge(b, b.initial_state(), (0, 1))
    skipped = charge(b, state, (2,), aggregated=False)
    assert skipped.ledger == state.ledger and skipped.releases_skipped == 1
    assert b.epsilon(skipped) == b.epsilon(state)
    assert b.epsilon(charge(b, skipped, ())) > b.epsilon(skipped)  # a real release is


def test_the_release_step_charges_an_aborted_secure_round_nothing() -> None:
    agg = DPMean.tree(C, Z, M)
    b = budget()
    step = ReleaseStep(agg, FedAvgStep(), lambda w: {}, SeedTree(0),
                       EventLog(lambda: 0.0, keep=True), privacy=b)
    state = step.initial_state(np.zeros(3, np.float32))
    out = step.release(state, None, expected_count=M, selected=M, participation=Participation())
    assert out.state.round == 1 and not out.applied
    assert out.state.privacy.ledger.releases == 0 and out.state.privacy.releases_skipped == 1
    assert out.measurements["epsilon"] == 0.0
    done = step.release(out.state, PlainContributions([]), expected_count=M, selected=M,
                        participation=Participation())
    assert done.state.privacy.ledger.releases == 1
    assert done.measurements["epsilon"] == pytest.approx(brute_epsilon(Z, [(1, 1, 0)]))


@pytest.mark.parametrize("gap", [0, 3])
@pytest.mark.parametrize("between", [4, 5, 6])
def test_the_budget_stops_before_the_guarantee_would_pass_the_target(gap: int,
                                                                     between: int) -> None:
    """The stop is checked with a cheap bound on the next release's ε (never below the
    exact one): ε never passes the target, and the release refused would have been
    over it by that bound."""
    def eps(releases: int) -> float:  # the exact guarantee after this many releases
        return brute_epsilon(Z, [(releases, most_participations(releases, gap), gap)])

    target = (eps(between) + eps(between + 1)) / 2
    b = budget(min_separation=gap, target_epsilon=target)
    state, made = b.initial_state(), 0
    while not b.would_exceed(state):
        state = charge(b, state, (made % N,))  # who contributes does not change the plan
        made += 1
        assert b.epsilon(state) == pytest.approx(eps(made), rel=1e-9)
        assert b.epsilon(state) <= target
        assert made <= between
    assert made >= 1  # the target is above one release's ε
    assert b.next_epsilon(state) > target
    assert b.next_epsilon(state) >= eps(made + 1) * (1 - 1e-9)  # a bound on the exact one
    assert not budget(min_separation=gap).would_exceed(state)  # no target: never


@pytest.mark.parametrize("releases", [1, 2, 4, 8])
def test_without_separation_on_a_full_tree_the_stop_is_exact(releases: int) -> None:
    """With b = 0 and a power-of-two tree the bound is the exact figure, so the budget
    makes exactly the releases whose guarantee fits."""
    exact = brute_epsilon(Z, [(releases, releases, 0)])
    b = budget(target_epsilon=exact * (1 + 1e-9))
    state, made = b.initial_state(), 0
    while not b.would_exceed(state):
        state = charge(b, state, ())
        made += 1
        assert made <= releases
    assert made == releases


def test_eligibility_follows_the_ledgers_rule() -> None:
    b = budget(min_separation=2)
    state = charge(b, b.initial_state(), (5,))
    assert [b.eligible(state, 5, nxt) for nxt in (2, 3, 4)] == [False, False, True]
    assert b.eligible(state, 6, 2)


def test_the_separation_is_counted_in_releases_made_not_in_releases_skipped() -> None:
    """``next_release`` is the server's count, skipped releases included; the rule is
    about the tree's leaves, which a skipped release is not."""
    b = budget(min_separation=2)
    state = charge(b, b.initial_state(), (5,))  # leaf 1, server release 1
    state = charge(b, state, (), aggregated=False)  # server release 2: skipped, no leaf
    # Server release 3 is leaf 2, 4 is leaf 3, 5 is leaf 4: the first 2 leaves after 1.
    assert [b.eligible(state, 5, nxt) for nxt in (3, 4, 5)] == [False, False, True]
