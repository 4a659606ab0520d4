"""Malformed and hostile updates at the server, at exact simulated instants."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from fedactors.aggregation.clipping import Clipped
from fedactors.aggregation.fedavg import WEIGHT, WEIGHTED_DELTA, WeightedMean
from fedactors.aggregation.robust import Median
from fedactors.devices.byzantine import Byzantine, SignFlip
from fedactors.messages import Update
from fedactors.runtime.loop import DELIVERY
from fedactors.server.outcome import metrics_row
from fedactors.server.rounds import Rounds
from fedactors.server.screening import REJECT_REASONS
from tests.server.harness import build_world, device, events


def contribution(value: float, weight: float = 100.0) -> dict[str, np.ndarray]:
    return {WEIGHTED_DELTA: np.full(3, value * weight, np.float32),
            WEIGHT: np.array([weight], np.float32)}


def forge(server, t: float, update) -> None:
    asyncio.get_running_loop().call_at(t, server.mailbox.put_nowait, update, priority=DELIVERY)


def slow_pair():
    """Two honest devices (1 s, 2 s) and two too slow to ever report (forged instead)."""
    return [device("a", 1.0), device("b", 2.0), device("c", 500.0), device("d", 500.0)]


HOSTILE = {
    "nan": (contribution(np.nan), "nonfinite"),
    "inf": (contribution(np.inf), "nonfinite"),
    "inf weight": ({WEIGHTED_DELTA: np.ones(3, np.float32), WEIGHT: np.array([np.inf], np.float32)},
                   "nonfinite"),
    "missing key": ({WEIGHTED_DELTA: np.ones(3, np.float32)}, "malformed"),
    "extra key": ({**contribution(1.0), "backdoor": np.ones(3, np.float32)}, "malformed"),
    "wrong shape": ({WEIGHTED_DELTA: np.ones(4, np.float32), WEIGHT: np.ones(1, np.float32)},
                    "malformed"),
    "wrong dtype": ({WEIGHTED_DELTA: np.ones(3, np.float64), WEIGHT: np.ones(1, np.float32)},
                    "malformed"),
    "a list": ({WEIGHTED_DELTA: [1.0, 1.0, 1.0], WEIGHT: np.ones(1, np.float32)}, "malformed"),
    "not a mapping": (np.ones(4, np.float32), "malformed"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_a_hostile_update_is_rejected_with_its_reason_and_the_round_goes_on(name: str) -> None:
    payload, reason = HOSTILE[name]
    world = build_world(slow_pair(), Rounds(cohort_size=4, deadline=10.0, min_reports=2))
    server = world.actors.server
    forge(server, 1.5, Update(1, 2, payload))
    outcome = await server.run_round(1)
    assert outcome.rejected == {reason: 1}
    assert outcome.reported == (0, 1) and outcome.applied and outcome.end == 10.0
    np.testing.assert_allclose(server.state.weights, np.full(3, 1.5))  # mean of the honest 1, 2
    assert [e["sender"] for e in events(world, f"update.{reason}")] == [2]
    row = metrics_row(outcome, world.actors.tally, (0, 0))
    assert row[f"rejected_{reason}"] == 1
    # Device 2 reported and was refused: neither late nor surplus, and the counts add up.
    assert outcome.refused == (2,) and (row["refused"], row["late"]) == (1, 1)
    assert sum(row[k] for k in ("reported", "refused", "dropped", "late", "surplus")) == (
        row["selected"])


@pytest.mark.asyncio
async def test_a_message_that_is_not_an_update_or_has_a_bogus_envelope_is_malformed() -> None:
    world = build_world(slow_pair(), Rounds(cohort_size=4, deadline=10.0))
    server = world.actors.server
    forge(server, 1.1, "hello")
    forge(server, 1.2, Update("1", 2, contribution(1.0)))  # type: ignore[arg-type]
    forge(server, 1.3, Update(1, True, contribution(1.0)))  # type: ignore[arg-type]
    outcome = await server.run_round(1)
    assert outcome.rejected == {"malformed": 3}
    assert outcome.reported == (0, 1)


@pytest.mark.asyncio
async def test_a_norm_a_million_times_the_median_is_an_outlier() -> None:
    world = build_world(slow_pair(), Rounds(cohort_size=4, deadline=10.0))
    server = world.actors.server
    forge(server, 1.5, Update(1, 2, contribution(1e7)))  # ~4e6 x the median norm
    outcome = await server.run_round(1)
    assert outcome.rejected == {"outlier": 1} and outcome.reported == (0, 1)
    assert outcome.refused == (2,) and 2 not in {d for _, d in outcome.given_up}
    np.testing.assert_allclose(server.state.weights, np.full(3, 1.5))
    [event] = events(world, "update.outlier")
    assert event["sender"] == 2 and event["key"] == WEIGHTED_DELTA
    assert event["norm_over_median"] > 1e6


@pytest.mark.asyncio
async def test_the_outlier_factor_is_configurable_and_can_be_turned_off() -> None:
    for factor, expected in ((10.0, {"outlier": 1}), (None, {})):
        world = build_world(slow_pair(), Rounds(cohort_size=4, deadline=10.0, outlier_factor=factor))
        server = world.actors.server
        forge(server, 1.5, Update(1, 2, contribution(100.0)))  # ~50x the median
        outcome = await server.run_round(1)
        assert outcome.rejected == expected


@pytest.mark.asyncio
async def test_a_huge_weight_is_an_outlier_too() -> None:
    world = build_world(slow_pair(), Rounds(cohort_size=4, deadline=10.0))
    server = world.actors.server
    forge(server, 1.5, Update(1, 2, {WEIGHTED_DELTA: np.zeros(3, np.float32),
                                     WEIGHT: np.array([1e9], np.float32)}))
    outcome = await server.run_round(1)
    assert outcome.rejected == {"outlier": 1}


@pytest.mark.asyncio
async def test_an_unclipped_update_under_a_clipping_stage_is_out_of_bounds() -> None:
    world = build_world(slow_pair(), Rounds(cohort_size=4, deadline=10.0),
                        aggregator=Clipped(1.0, WeightedMean(weighted=False)))
    server = world.actors.server
    forge(server, 1.5, Update(1, 2, {WEIGHTED_DELTA: np.full(3, 5.0, np.float32),
                                     WEIGHT: np.ones(1, np.float32)}))
    outcome = await server.run_round(1)
    assert outcome.rejected == {"out_of_bounds": 1} and outcome.reported == (0, 1)
    # Honest deltas (1 and 2 everywhere) were clipped on the device to norm 1.
    np.testing.assert_allclose(server.state.weights, np.full(3, 1 / np.sqrt(3)), rtol=1e-5)


@pytest.mark.asyncio
async def test_one_fewer_valid_update_than_min_reports_skips_the_round_exactly_at_the_deadline() -> None:
    world = build_world(slow_pair(), Rounds(cohort_size=4, deadline=10.0, min_reports=3))
    server = world.actors.server
    forge(server, 1.5, Update(1, 2, contribution(np.nan)))  # the would-be third report
    before = server.state.weights.copy()
    outcome = await server.run_round(1)
    assert outcome.end == 10.0 and outcome.reported == (0, 1) and not outcome.applied
    np.testing.assert_array_equal(server.state.weights, before)
    [skipped] = events(world, "round.skipped")
    assert skipped["t"] == 10.0 and skipped["reported"] == 2 and skipped["min_reports"] == 3


@pytest.mark.asyncio
async def test_exactly_min_reports_valid_updates_proceed_at_the_deadline() -> None:
    world = build_world(slow_pair(), Rounds(cohort_size=4, deadline=10.0, min_reports=3))
    server = world.actors.server
    forge(server, 1.5, Update(1, 2, contribution(np.nan)))
    forge(server, 10.0, Update(1, 3, contribution(3.0)))  # lands at the deadline instant: counts
    outcome = await server.run_round(1)
    assert outcome.end == 10.0 and outcome.reported == (0, 1, 3) and outcome.applied
    assert outcome.rejected == {"nonfinite": 1}
    np.testing.assert_allclose(server.state.weights, np.full(3, 2.0))  # mean of 1, 2, 3
    assert not events(world, "round.skipped")


@pytest.mark.asyncio
async def test_zero_total_weight_through_the_server_is_no_update_not_nan() -> None:
    world = build_world([device("a", 500.0), device("b", 500.0)], Rounds(cohort_size=2, deadline=10.0))
    server = world.actors.server
    for sender in (0, 1):
        forge(server, 1.0, Update(1, sender, {WEIGHTED_DELTA: np.zeros(3, np.float32),
                                              WEIGHT: np.zeros(1, np.float32)}))
    outcome = await server.run_round(1)
    assert outcome.reported == (0, 1) and outcome.closed_by == "target"
    assert not outcome.applied and outcome.measurements == {"total_weight": 0.0}
    np.testing.assert_array_equal(server.state.weights, np.zeros(3, np.float32))


@pytest.mark.asyncio
async def test_the_global_model_stays_finite_when_every_update_is_hostile() -> None:
    world = build_world(slow_pair(), Rounds(cohort_size=4, deadline=10.0))
    server = world.actors.server
    big = np.finfo(np.float32).max
    forge(server, 1.5, Update(1, 2, {WEIGHTED_DELTA: np.full(3, big, np.float32),
                                     WEIGHT: np.ones(1, np.float32)}))
    forge(server, 1.6, Update(1, 3, {WEIGHTED_DELTA: np.full(3, big, np.float32),
                                     WEIGHT: np.ones(1, np.float32)}))
    for r in (1, 2):
        await server.run_round(r)
        assert np.all(np.isfinite(server.state.weights))


@pytest.mark.asyncio
async def test_byzantine_devices_flip_their_delta_before_encoding() -> None:
    # Two devices, half Byzantine: which one is drawn from the seed path ("byzantine",).
    byz = Byzantine(0.5, SignFlip(scale=3.0))
    world = build_world([device("a", 1.0), device("b", 2.0)], Rounds(cohort_size=2, deadline=10.0),
                        aggregator=WeightedMean(weighted=False), byzantine=byz)
    server = world.actors.server
    [attacker] = list(world.actors.directory.world.attacks)
    await server.run_round(1)
    honest = {0: 1.0, 1: 2.0}
    sent = [(-3.0 if d == attacker else 1.0) * honest[d] for d in (0, 1)]
    np.testing.assert_allclose(server.state.weights, np.full(3, np.mean(sent)))


@pytest.mark.asyncio
async def test_a_median_round_ignores_a_byzantine_minority() -> None:
    classes = [device(f"d{i}", 1.0) for i in range(5)]
    world = build_world(classes, Rounds(cohort_size=5, deadline=10.0),
                        aggregator=Clipped(100.0, Median()),
                        byzantine=Byzantine(0.4, SignFlip(scale=50.0)))
    server = world.actors.server
    attackers = set(world.actors.directory.world.attacks)
    assert len(attackers) == 2
    await server.run_round(1)
    honest = sorted(d + 1.0 for d in range(5) if d not in attackers)
    flipped = [max(-50.0 * (d + 1.0), -100.0 / np.sqrt(3)) for d in attackers]
    expected = np.median(honest + flipped)
    assert expected in honest  # the median is an honest device's value
    np.testing.assert_allclose(server.state.weights, np.full(3, expected), rtol=1e-6)


def test_every_reject_reason_has_a_metrics_key() -> None:
    from fedactors.server.screening import MALFORMED, NONFINITE, OUT_OF_BOUNDS, OUTLIER

    assert {MALFORMED, NONFINITE, OUT_OF_BOUNDS, OUTLIER} <= set(REJECT_REASONS)
    assert {"late", "future", "foreign", "duplicate"} <= set(REJECT_REASONS)


def _huge(weight: float = 1.0) -> dict[str, np.ndarray]:
    """Finite and well-formed, so it passes every per-update screen: a weighted delta of
    3e38 (float32's largest is 3.4e38) and the given example weight."""
    return {WEIGHTED_DELTA: np.full(3, 3e38, np.float32),
            WEIGHT: np.array([weight], np.float32)}


@pytest.mark.asyncio
@pytest.mark.parametrize("case", ["second-release-overflows", "optimizer-step-overflows",
                                  "mean-overflows"])
async def test_a_release_whose_new_model_would_not_be_finite_is_refused(case: str) -> None:
    # The outlier screen is off and every update is finite: only the release's own guard
    # stands between these updates and a global model of infinities.
    import dataclasses

    from fedactors.server.optimizers import FedAvgStep

    world = build_world([device("a", 500.0), device("b", 500.0)],
                        Rounds(cohort_size=2, deadline=10.0, outlier_factor=None))
    server = world.actors.server
    rounds = 1
    if case == "second-release-overflows":
        # Round 1 moves the model to 3e38 (finite); round 2's step 3e38 + 3e38 overflows.
        rounds = 2
    elif case == "optimizer-step-overflows":
        server.step = dataclasses.replace(server.step, optimizer=FedAvgStep(learning_rate=2.0))
    weight = 0.5 if case == "mean-overflows" else 1.0  # (6e38 / 1.0): the mean itself is inf
    for r in range(1, rounds + 1):
        for sender in (0, 1):
            forge(server, 2.0 * r - 1.0 + 0.1 * sender, Update(r, sender, _huge(weight)))
        before = server.state.weights.copy()
        with np.errstate(over="ignore", invalid="ignore"):
            outcome = await server.run_round(r)
        assert outcome.reported == (0, 1) and outcome.rejected == {}
    assert r == rounds and np.all(np.isfinite(before))
    assert not outcome.applied
    np.testing.assert_array_equal(server.state.weights, before)
    assert np.all(np.isfinite(server.state.weights))
    assert server.state.round == rounds  # the release happened; the model did not change
    assert [e["round"] for e in events(world, "aggregate.nonfinite")] == [rounds]
    if case == "second-release-overflows":
        np.testing.assert_array_equal(before, np.full(3, 3e38, np.float32))
