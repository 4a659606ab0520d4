"""Round semantics at exact simulated instants."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from fedactors.aggregation.fedavg import WEIGHT, WEIGHTED_DELTA
from fedactors.messages import RoundDeadline, Update
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
    # A Poisson round has no target: it closed because every sampled device reported.
    assert outcome.closed_by == "all-reported" and outcome.end == pytest.approx(6.0)
    np.testing.assert_allclose(world.actors.server.state.weights, np.full(3, 3.5), rtol=1e-6)


@pytest.mark.asyncio
@pytest.mark.parametrize("scheduled", ["before-the-deadline-timer", "after-the-deadline-timer"])
async def test_a_delivery_at_the_deadline_instant_counts_whichever_timer_was_set_first(
        scheduled: str) -> None:
    """Deliveries outrank the deadline at the same instant by *priority*, not by which
    timer happened to be created first (the loop breaks remaining ties by sequence)."""
    world = build_world([device("a", 1.0), device("b", 500.0)], Rounds(cohort_size=2, deadline=10.0))
    server = world.actors.server
    loop = asyncio.get_running_loop()
    forged = Update(1, 1, contribution(2.0))
    order: list[tuple[str, int]] = []  # (timer, sequence) as they are put on the heap

    def deadline_sequence() -> int:
        # The round's own timer at t = 10 (whatever its priority): the RoundDeadline.
        [seq] = [s for when, _, s, h in loop._scheduled
                 if when == 10.0 and isinstance(h._args[0], RoundDeadline)]
        return seq

    def forge() -> None:
        # From inside the round (t = 5): the round's deadline timer is already set.
        order.append(("deadline", deadline_sequence()))
        handle = loop.call_at(10.0, server.mailbox.put_nowait, forged, priority=DELIVERY)
        order.append(("delivery", next(s for _, _, s, h in loop._scheduled if h is handle)))

    if scheduled == "before-the-deadline-timer":
        handle = loop.call_at(10.0, server.mailbox.put_nowait, forged, priority=DELIVERY)
        order.append(("delivery", next(s for _, _, s, h in loop._scheduled if h is handle)))
        loop.call_at(5.0, lambda: order.append(("deadline", deadline_sequence())))
    else:
        loop.call_at(5.0, forge)
    outcome = await server.run_round(1)
    # The precondition the case is named for: which of the two timers is older.
    first = min(order, key=lambda item: item[1])[0]
    assert first == ("delivery" if scheduled.startswith("before") else "deadline")
    assert outcome.reported == (0, 1) and outcome.rejected == {}
    assert outcome.end == 10.0 and outcome.closed_by == "target"
    np.testing.assert_allclose(server.state.weights, np.full(3, 1.5))  # mean of 1 and 2
    assert [e["t"] for e in events(world, "update.received") if e["sender"] == 1] == [10.0]


@pytest.mark.asyncio
async def test_a_device_silent_exactly_at_the_round_end_counts_as_dropped_not_late() -> None:
    world = build_world([device("a", 1.0), device("b", 500.0), device("c", 500.0)],
                        Rounds(cohort_size=3, deadline=10.0))
    server, tally = world.actors.server, world.actors.tally
    loop = asyncio.get_running_loop()
    # Ground truth the server cannot see: device 1 goes silent at t = 10, the very
    # instant the round closes; device 2 is still working then (merely late).
    loop.call_at(10.0, lambda: tally.record_drop(1, 1, loop.time()), priority=DELIVERY)
    outcome = await server.run_round(1)
    assert outcome.end == 10.0 and outcome.closed_by == "deadline"
    assert outcome.given_up == ((1, 1), (1, 2))
    row = metrics_row(outcome, tally, (0, 0))
    assert (row["reported"], row["dropped"], row["late"], row["surplus"]) == (1, 1, 1, 0)


def test_round_tally_counts_drops_up_to_and_including_the_end_instant() -> None:
    from fedactors.devices.actor import RoundTally

    end = 10.0
    tally = RoundTally.empty()
    tally.record_drop(1, 0, 3.0)
    tally.record_drop(1, 1, end)  # silent at the very instant the round ends
    tally.record_drop(1, 2, float(np.nextafter(end, np.inf)))  # one tick after: not yet
    tally.record_drop(2, 0, 1.0)  # another round's record is kept for that round
    assert tally.take(1, end) == {0, 1}
    assert tally.take(1, end) == set()  # a round's record is taken once
    assert tally.take(2, end) == {0}
