"""The release step's once-per-run log of the privacy assumption."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fedactors.privacy.dp_mean import DPMean
from tests.server.test_release import DIM, M, step_for


def test_the_privacy_assumption_is_logged_once_at_the_start_of_a_run() -> None:
    step = step_for(DPMean.fixed(1.0, 1.0, M), target_epsilon=50.0, delta=1e-5)
    state = step.initial_state(np.zeros(DIM, np.float32))
    step.start(state)
    (event,) = step.log.records
    assert (event["actor"], event["event"]) == ("server", "privacy.assumption")
    assert event["assumption"] == step.privacy.assumption()
    assert (event["delta"], event["target_epsilon"]) == (1e-5, 50.0)
    step.start(replace(state, round=1))  # a resumed run: said already
    assert len(step.log.records) == 1


def test_a_budget_stop_is_logged_with_the_round_it_refused_and_the_figures() -> None:
    from fedactors.aggregation.base import PlainContributions
    from fedactors.aggregation.fedavg import WeightedMean
    from fedactors.privacy.budget import STOPPED_BY_BUDGET
    from fedactors.privacy.participation import Participation

    dp = DPMean.fixed(1.0, 1.0, M)
    probe = step_for(dp, delta=1e-5)
    ledger = probe.initial_state(np.zeros(DIM)).privacy.ledger
    target = (ledger.compose(1).epsilon(1e-5) + ledger.compose(2).epsilon(1e-5)) / 2
    step = step_for(dp, target_epsilon=target, delta=1e-5)
    state = step.initial_state(np.zeros(DIM, np.float32))
    assert step.budget_stop(state) is None and step.log.records == []
    enc = WeightedMean(weighted=False).encode({}, np.ones(DIM, np.float32), 1, None)
    state = step.release(state, PlainContributions([enc] * M), expected_count=M, selected=M,
                         participation=Participation(online=20, selected=M)).state
    assert step.budget_stop(state) == STOPPED_BY_BUDGET
    (event,) = [e for e in step.log.records if e["event"] == "privacy.budget_exhausted"]
    assert event["actor"] == "server" and event["round"] == 2
    assert event["epsilon"] == step.privacy.epsilon(state.privacy)
    assert event["next_epsilon"] == step.privacy.next_epsilon(state.privacy)
    assert event["target_epsilon"] == target


def test_a_stateful_server_optimizer_carries_its_state_from_release_to_release() -> None:
    # FedAdam's moments start from init(weights) and each release continues them: two
    # releases through the step equal FedAdam applied twice by hand.
    from fedactors.aggregation.base import PlainContributions
    from fedactors.aggregation.fedavg import WeightedMean
    from fedactors.privacy.participation import Participation
    from fedactors.reporting.events import EventLog
    from fedactors.seeding import SeedTree
    from fedactors.server.optimizers import FedAdam
    from fedactors.server.release import ReleaseStep

    adam = FedAdam(learning_rate=0.1)
    step = ReleaseStep(WeightedMean(weighted=False), adam, lambda w: {}, SeedTree(0),
                       EventLog(lambda: 0.0, keep=True))
    w0 = np.full(DIM, 0.5, np.float32)
    state = step.initial_state(w0)
    by_hand_state, by_hand = adam.init(w0), w0
    for value in (1.0, -0.25):
        row = WeightedMean(weighted=False).encode({}, np.full(DIM, value, np.float32), 1, None)
        state = step.release(state, PlainContributions([row]), expected_count=1, selected=1,
                             participation=Participation()).state
        by_hand, by_hand_state = adam.apply(by_hand_state, by_hand, np.full(DIM, value,
                                                                            np.float32))
    np.testing.assert_array_equal(state.weights, by_hand)
    np.testing.assert_array_equal(state.optimizer_state.m, by_hand_state.m)
    np.testing.assert_array_equal(state.optimizer_state.v, by_hand_state.v)


def test_a_skipped_round_and_a_refused_aggregate_are_logged_with_their_round() -> None:
    from fedactors.aggregation.base import PlainContributions
    from fedactors.aggregation.fedavg import WeightedMean
    from fedactors.privacy.participation import Participation
    from tests.server.test_release import NaNDelta

    # Below min_reports: skipped, logged with how many reported (none at all: 0, not 1).
    step = step_for(WeightedMean(weighted=False), min_reports=2)
    state = step.initial_state(np.zeros(DIM, np.float32))
    for contributions, reported in ((None, 0), (PlainContributions([
            WeightedMean(weighted=False).encode({}, np.ones(DIM, np.float32), 1, None)]), 1)):
        out = step.release(state, contributions, expected_count=2, selected=2,
                           participation=Participation())
        assert out.state.round == 1 and not out.applied
        skipped = step.log.records[-1]
        assert skipped == {"t": 0.0, "actor": "server", "event": "round.skipped", "round": 1,
                           "reported": reported, "min_reports": 2}
    # A non-finite aggregate is refused and logged by the server with its round.
    nan = step_for(NaNDelta())
    out = nan.release(nan.initial_state(np.ones(DIM, np.float32)),
                      PlainContributions([{"x": np.ones(DIM, np.float32)}]), expected_count=1,
                      selected=1, participation=Participation())
    (refused,) = nan.log.records
    assert {k: refused[k] for k in ("actor", "event", "round")} == (
        {"actor": "server", "event": "aggregate.nonfinite", "round": 1})
