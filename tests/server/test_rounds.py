"""Round semantics at exact simulated instants."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from fedactors.aggregation.fedavg import WEIGHT, WEIGHTED_DELTA
from fedactors.messages import Update
from fedactors.runtime.loop import DELIVERY
from fedactors.server.outcome import metrics_row
from fedactors.server.rounds import Rounds
from tests.server.harness import build_world, device, events


def contribution(value: float, weight: float = 100.0) -> dict[str, np.ndarray]:
    return {WEIGHTED_DELTA: np.full(3, value * weight, np.float32),
            WEIGHT: np.array([weight], np.float32)}


@pytest.mark.asyncio
async def test_deadline_cuts_a_straggler_exactly_at_the_deadline() -> None:
    world = build_world([device("fast", 1.0), device("also-fast", 2.0), device("slow", 100.0)],
                        Rounds(cohort_size=3, deadline=10.0))
    server = world.actors.server
    outcome = await server.run_round(1)
    assert outcome.start == 0.0 and outcome.end == 10.0
    assert outcome.closed_by == "deadline"
    assert outcome.reported == (0, 1)
    row = metrics_row(outcome, world.actors.tally, (0, 0))
    assert (row["selected"], row["reported"], row["late"], row["dropped"]) == (3, 2, 1, 0)
    # Mean of devices 0 and 1 (deltas 1 and 2, equal weights); the straggler is out.
    np.testing.assert_array_equal(server.state.weights, np.full(3, 1.5, np.float32))

    # The server closes the round at the deadline: the straggler's work is cut
    # right there, and nothing of round 1 reaches the server afterwards.
    await asyncio.sleep(0)  # let the cancelled device run its handler
    cut = events(world, "cut")
    assert [(e["actor"], e["round"], e["t"]) for e in cut] == [("device-2", 1, 10.0)]
    for r in range(2, 12):
        outcome = await server.run_round(r)
        assert (outcome.start, outcome.end) == (10.0 * (r - 1), 10.0 * r)
        assert outcome.rejected == {}
    assert events(world, "update.late") == []


@pytest.mark.asyncio
async def test_an_update_arriving_exactly_at_the_deadline_counts() -> None:
    world = build_world([device("a", 1.0), device("b", 500.0)], Rounds(cohort_size=2, deadline=10.0))
    server = world.actors.server
    loop = asyncio.get_running_loop()
    # Device 1 is far too slow; forge its genuine-looking update to land at t = 10 exactly.
    loop.call_at(10.0, server.mailbox.put_nowait, Update(1, 1, contribution(2.0)),
                 priority=DELIVERY)
    outcome = await server.run_round(1)
    assert outcome.reported == (0, 1)
    assert outcome.end == 10.0
    assert outcome.closed_by == "target"


@pytest.mark.asyncio
async def test_a_dropped_device_does_not_stall_the_round() -> None:
    world = build_world([device("ok", 1.0), device("flaky", 1.0, dropout=1.0)],
                        Rounds(cohort_size=2, deadline=30.0))
    outcome = await world.actors.server.run_round(1)
    assert outcome.end == 30.0 and outcome.reported == (0,)
    row = metrics_row(outcome, world.actors.tally, (0, 0))
    assert (row["dropped"], row["late"]) == (1, 0)
    assert len(events(world, "dropped")) == 1


@pytest.mark.asyncio
async def test_when_everyone_drops_the_round_is_skipped_and_the_model_unchanged() -> None:
    world = build_world([device("a", 1.0, dropout=1.0), device("b", 1.0, dropout=1.0)],
                        Rounds(cohort_size=2, deadline=5.0))
    server = world.actors.server
    before = server.state.weights.copy()
    outcome = await server.run_round(1)
    assert outcome.end == 5.0 and not outcome.applied
    np.testing.assert_array_equal(server.state.weights, before)
    assert len(events(world, "round.skipped")) == 1
    # ... and the next round proceeds normally.
    assert (await server.run_round(2)).end == 10.0


@pytest.mark.asyncio
async def test_late_duplicate_future_and_foreign_updates_are_ignored_and_logged() -> None:
    world = build_world([device("a", 1.0), device("b", 2.0), device("c", 3.0)],
                        Rounds(cohort_size=3, deadline=10.0))
    server = world.actors.server
    loop = asyncio.get_running_loop()
    poison = contribution(1e6)
    for t, update in [(1.5, Update(1, 0, poison)),   # duplicate of device 0's real update
                      (1.6, Update(0, 1, poison)),   # a round that is over
                      (1.7, Update(7, 1, poison)),   # a round that has not begun
                      (1.8, Update(1, 42, poison))]:  # a sender that was never selected
        loop.call_at(t, server.mailbox.put_nowait, update, priority=DELIVERY)
    outcome = await server.run_round(1)
    assert outcome.rejected == {"duplicate": 1, "late": 1, "future": 1, "foreign": 1}
    assert outcome.reported == (0, 1, 2)
    np.testing.assert_allclose(server.state.weights, np.full(3, 2.0))  # mean of 1, 2, 3
    logged = {e["event"] for e in world.log.records}
    assert {"update.duplicate", "update.late", "update.future", "update.foreign"} <= logged


@pytest.mark.asyncio
async def test_fedavg_round_applies_the_example_weighted_mean() -> None:
    world = build_world([device("a", 1.0, examples=10), device("b", 1.0, examples=30),
                         device("c", 1.0, examples=60)], Rounds(cohort_size=3, deadline=10.0))
    server = world.actors.server
    await server.run_round(1)
    expected = (10 * 1.0 + 30 * 2.0 + 60 * 3.0) / 100
    np.testing.assert_allclose(server.state.weights, np.full(3, expected), rtol=1e-6)


@pytest.mark.asyncio
async def test_over_selection_closes_the_round_when_the_target_is_met() -> None:
    classes = [device(f"d{i}", float(i + 1)) for i in range(4)]
    world = build_world(classes, Rounds(cohort_size=2, over_selection=2.0, deadline=50.0))
    outcome = await world.actors.server.run_round(1)
    assert len(outcome.selected) == 4
    assert outcome.closed_by == "target" and outcome.reported == (0, 1)
    assert outcome.end == pytest.approx(2.0)
    row = metrics_row(outcome, world.actors.tally, (0, 0))
    assert (row["surplus"], row["late"]) == (2, 0)


@pytest.mark.asyncio
async def test_nothing_of_a_closed_round_stays_on_the_wire() -> None:
    world = build_world([device("fast", 1.0), device("slow", 100.0)],
                        Rounds(cohort_size=2, deadline=10.0))
    await world.actors.server.run_round(1)
    assert world.actors.network.messages_in_flight == 0


@pytest.mark.asyncio
async def test_a_poisson_round_sums_every_sampled_report_however_many_and_however_slow() -> None:
    # q = min(1, 6 / 6) = 1: all six devices are sampled, three times cohort_size.
    classes = [device(f"d{i}", float(i + 1)) for i in range(6)]
    world = build_world(classes, Rounds(cohort_size=2, over_selection=3.0, deadline=50.0,
                                        sampling="poisson"))
    outcome = await world.actors.server.run_round(1)
    assert outcome.selected == tuple(range(6))
    # No cut at cohort_size: the slowest (6 s) is summed too, and the round ends with it.
    assert outcome.reported == tuple(range(6))
    assert outcome.closed_by == "target" and outcome.end == pytest.approx(6.0)
    np.testing.assert_allclose(world.actors.server.state.weights, np.full(3, 3.5), rtol=1e-6)
