"""The release step both server drivers share, alone: no event loop, no actors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from fedactors import DeviceClass, Privacy, Rounds, Scenario
from fedactors.aggregation.base import (
    Aggregate,
    Aggregator,
    PlainContributions,
    RoundContext,
    SummedContributions,
)
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.privacy.budget import STOPPED_BY_BUDGET, PrivacyBudget
from fedactors.privacy.dp_mean import DPMean
from fedactors.privacy.participation import Participation
from fedactors.reporting.events import EventLog
from fedactors.seeding import SeedTree
from fedactors.server.optimizers import FedAvgStep
from fedactors.server.release import ReleaseStep

DIM, N, M = 3, 20, 4


class NaNDelta(Aggregator[None]):
    """A stage whose aggregate is not finite, whatever it is given."""

    def encode(self, params, delta, num_examples, rng):
        return {"x": np.asarray(delta, np.float32)}

    def aggregate(self, state, contributions, ctx):
        return Aggregate(np.full(DIM, np.nan, np.float32), state)


def scenario(aggregator: Aggregator, **privacy) -> Scenario:
    return Scenario(name="release", model=lambda: None, loss="mse", data=lambda f, r: None,
                    fleet=[DeviceClass("d", count=N)], rounds=Rounds(cohort_size=M),
                    aggregator=aggregator, privacy=Privacy(**privacy) if privacy else None)


def step_for(aggregator: Aggregator, min_reports: int = 1, sampling: str = "fixed_size",
             **privacy) -> ReleaseStep:
    sc = scenario(aggregator, **privacy)
    sc = dataclasses.replace(sc, rounds=Rounds(cohort_size=M, sampling=sampling))
    budget = PrivacyBudget.for_scenario(sc, N)
    return ReleaseStep(aggregator, FedAvgStep(), lambda w: {"loss": float(w.sum())},
                       SeedTree(0), EventLog(lambda: 0.0, keep=True), min_reports=min_reports,
                       eval_every=2, privacy=budget)


def rows(n: int, value: float = 1.0) -> PlainContributions:
    enc = WeightedMean(weighted=False).encode({}, np.full(DIM, value, np.float32), 1, None)
    return PlainContributions([enc] * n)


def test_a_non_finite_aggregate_is_never_adopted_and_the_release_still_counts() -> None:
    step = step_for(NaNDelta())
    state = step.initial_state(np.ones(DIM, np.float32))
    out = step.release(state, PlainContributions([{"x": np.ones(DIM, np.float32)}]),
                       expected_count=1, selected=1, participation=Participation())
    assert not out.applied and out.state.round == 1
    np.testing.assert_array_equal(out.state.weights, np.ones(DIM, np.float32))
    assert [e["event"] for e in step.log.records] == ["aggregate.nonfinite"]


def test_evaluation_follows_the_cadence_and_sees_the_new_weights() -> None:
    step = step_for(WeightedMean(weighted=False))
    state = step.initial_state(np.zeros(DIM, np.float32))
    first = step.release(state, rows(2), expected_count=2, selected=2, participation=Participation())
    second = step.release(first.state, rows(2), expected_count=2, selected=2,
                          participation=Participation())
    assert first.metrics == {} and second.metrics == {"loss": pytest.approx(2.0 * DIM)}


def test_too_few_reports_skip_the_release_but_a_dp_run_is_still_charged() -> None:
    dp = DPMean.fixed(1.0, 1.0, M)
    step = step_for(dp, min_reports=3)
    state = step.initial_state(np.zeros(DIM, np.float32))
    out = step.release(state, rows(2), expected_count=M, selected=M,
                       participation=Participation(online=N, selected=M))
    assert not out.applied and out.state.round == 1
    assert out.state.privacy.ledger.rounds == 1 and out.measurements["epsilon"] > 0
    assert out.measurements["noise_multiplier"] == 1.0
    assert out.measurements["below_min_reports"] == 1  # for the run's warning
    enough = step.release(state, rows(3), expected_count=M, selected=M,
                          participation=Participation(online=N, selected=M))
    assert enough.applied and "below_min_reports" not in enough.measurements


def test_distributed_noise_is_charged_at_the_noise_the_release_really_had() -> None:
    dp = DPMean.fixed(1.0, 1.0, M, distributed_noise=True, min_survivors=2)
    step = step_for(dp)
    state = step.initial_state(np.zeros(DIM, np.float32))
    summed = SummedContributions(rows(4).sum(), 4)
    out = step.release(state, summed, expected_count=M, selected=M,
                       participation=Participation(online=N, selected=M))
    # Four shares of variance 1/2 each: twice the nominal variance.
    assert out.state.privacy.ledger.releases == ((math.sqrt(2.0), 1),)
    assert out.measurements["noise_multiplier"] == pytest.approx(math.sqrt(2.0))
    assert out.measurements["noise_stddev_on_mean"] == pytest.approx(math.sqrt(2.0) / M)
    # One share short of the minimum: nothing is released, and the charge is nominal.
    short = step.release(out.state, SummedContributions(rows(1).sum(), 1), expected_count=M,
                         selected=M, participation=Participation(online=N, selected=M))
    assert not short.applied and short.measurements["noise_shares_below_minimum"] == 1.0
    np.testing.assert_array_equal(short.state.weights, out.state.weights)
    assert short.state.privacy.ledger.releases == ((1.0, 1), (math.sqrt(2.0), 1))


def test_the_budget_check_refuses_the_release_that_would_pass_the_target() -> None:
    dp = DPMean.fixed(1.0, 1.0, M)
    probe = step_for(dp, delta=1e-5)
    ledger = probe.initial_state(np.zeros(DIM)).privacy.ledger
    target = (ledger.compose(2).epsilon(1e-5) + ledger.compose(3).epsilon(1e-5)) / 2
    step = step_for(dp, target_epsilon=target, delta=1e-5)
    state = step.initial_state(np.zeros(DIM, np.float32))
    stops = []
    for _ in range(4):
        stops.append(step.budget_stop(state))
        if stops[-1]:
            break
        state = step.release(state, rows(M), expected_count=M, selected=M,
                             participation=Participation(online=N, selected=M)).state
    assert stops == [None, None, STOPPED_BY_BUDGET]
    assert step.privacy.epsilon(state.privacy) <= target < step.privacy.next_epsilon(state.privacy)


# -- Poisson rounds: a DP-FedAvg release never depends on the count -------------------------


CENTRAL = {"fixed": lambda: DPMean.fixed(1.0, 1.0, M),
           "adaptive": lambda: DPMean.adaptive_clipping(0.5, 1.0, M)}


def dp_rows(agg: Aggregator, n: int) -> PlainContributions:
    params = agg.client_params(agg.initial_state(DIM))
    return PlainContributions([agg.encode(params, np.full(DIM, 0.3 * (i + 1), np.float32), 1,
                                          np.random.default_rng(i)) for i in range(n)])


def mechanism_output(step: ReleaseStep, contributions, selected: int) -> np.ndarray:
    """What the accounted mechanism releases over ``contributions`` in round 1."""
    agg = step.aggregator
    ctx = RoundContext(1, M, selected, step.seeds.secret("server", 1))
    return agg.aggregate(agg.initial_state(DIM), contributions, ctx).delta


@pytest.mark.parametrize("make", CENTRAL.values(), ids=CENTRAL.keys())
@pytest.mark.parametrize("reported", [0, 2])
def test_a_poisson_round_is_released_whatever_the_count(make, reported: int) -> None:
    """Nobody, or fewer than ``min_reports``, reported: the round still releases the
    mechanism's output (the noise alone over nobody), uncounted as a skip."""
    agg = make()
    step = step_for(agg, min_reports=3, sampling="poisson")
    assert step.releases_every_step
    state = step.initial_state(np.zeros(DIM, np.float32))
    out = step.release(state, dp_rows(agg, reported), expected_count=M, selected=reported,
                       participation=Participation(online=N, selected=reported))
    assert out.applied and out.state.round == 1
    expected = mechanism_output(step, dp_rows(agg, reported), reported)
    np.testing.assert_array_equal(out.state.weights, expected)
    assert np.all(expected != 0)  # the noise, not a model left as it was
    assert not any(e["event"] == "round.skipped" for e in step.log.records)
    assert out.state.privacy.ledger.rounds == 1
    assert out.state.privacy.rounds_not_released == 0
    assert step.privacy.summary(out.state.privacy, "completed")["assumption_held"] is True


def test_fixed_size_rounds_keep_min_reports() -> None:
    """Replace-one neighbours sum as many devices: the skip reveals nothing there."""
    agg = DPMean.fixed(1.0, 1.0, M)
    step = step_for(agg, min_reports=3)
    assert not step.releases_every_step
    state = step.initial_state(np.zeros(DIM, np.float32))
    out = step.release(state, dp_rows(agg, 2), expected_count=M, selected=M,
                       participation=Participation(online=N, selected=M))
    assert not out.applied and out.state.privacy.ledger.rounds == 1
    block = step.privacy.summary(out.state.privacy, "completed")
    assert block["releases_skipped"] == 1
    assert not any(v.startswith("skipped releases") for v in block["violations"])


def test_a_secure_poisson_round_that_selected_nobody_releases_the_noise() -> None:
    # The secure collection hands back the empty sum when nobody took part (selected
    # nobody, or nobody trained in time: tests/server/test_secure_rounds.py); None is an abort.
    agg = DPMean.fixed(1.0, 1.0, M)
    step = step_for(agg, sampling="poisson")
    state = step.initial_state(np.zeros(DIM, np.float32))
    out = step.release(state, SummedContributions({}, 0), expected_count=M, selected=0,
                       participation=Participation(online=N, selected=0))
    assert out.applied
    np.testing.assert_array_equal(out.state.weights,
                                  mechanism_output(step, PlainContributions([]), 0))
    assert out.state.privacy.rounds_not_released == 0


def test_a_secure_poisson_round_that_aborted_is_a_stated_violation() -> None:
    """No sum to noise: skipped, charged, and said to break the Poisson ε."""
    agg = DPMean.fixed(1.0, 1.0, M)
    step = step_for(agg, sampling="poisson")
    state = step.initial_state(np.zeros(DIM, np.float32))
    out = step.release(state, None, expected_count=M, selected=3,
                       participation=Participation(online=N, selected=3))
    assert not out.applied and out.state.privacy.ledger.rounds == 1
    block = step.privacy.summary(out.state.privacy, "completed")
    assert block["releases_skipped"] == 1 and block["assumption_held"] is False
    assert any(v.startswith("skipped releases: in 1 of 1 Poisson rounds")
               for v in block["violations"])


class ReadsEveryUpdate(Aggregator[None]):
    """A stage that reads each update but does not declare needs_individual_updates."""

    def encode(self, params, delta, num_examples, rng):
        return {"x": np.asarray(delta, np.float32)}

    def aggregate(self, state, contributions, ctx):
        return Aggregate(np.median(contributions.stacked()["x"], axis=0), state)


def test_a_stage_reading_updates_the_server_only_holds_the_sum_of_is_one_config_error() -> None:
    from fedactors.errors import ConfigError

    step = ReleaseStep(ReadsEveryUpdate(), FedAvgStep(), lambda w: {}, SeedTree(0),
                       EventLog(lambda: 0.0, keep=True))
    state = step.initial_state(np.zeros(DIM, np.float32))
    summed = SummedContributions({"x": np.ones(DIM)}, count=2)
    with pytest.raises(ConfigError, match="^aggregator: ReadsEveryUpdate read individual "
                                          "updates.*needs_individual_updates = True"):
        step.release(state, summed, expected_count=2, selected=2,
                     participation=Participation(contributors=(0, 1)))
    plain = PlainContributions([{"x": np.ones(DIM, np.float32)}] * 2)  # in the clear: it runs
    assert step.release(state, plain, expected_count=2, selected=2,
                        participation=Participation(contributors=(0, 1))).applied
