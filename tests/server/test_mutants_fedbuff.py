"""FedBuff's server bookkeeping, without an event loop: checkpoints (snapshot, restore and
timers, which otherwise only whole-run checkpoint tests reach), the screen of an arriving
update, the options and the driver choice."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from fedactors.aggregation.fedavg import WEIGHT, WEIGHTED_DELTA, WeightedMean
from fedactors.errors import ConfigError
from fedactors.messages import Update
from fedactors.reporting.events import EventLog
from fedactors.seeding import SeedTree
from fedactors.server.actor import ServerActor
from fedactors.server.fedbuff import (
    DeviceTimeout,
    FedBuff,
    FedBuffServer,
    Poll,
    _Dispatch,
    _Gathering,
    server_class,
)
from fedactors.server.optimizers import FedAvgStep
from fedactors.server.release import ReleaseStep
from fedactors.server.rounds import Rounds
from fedactors.server.staleness import Unweighted


class Handle:
    """Stands in for an asyncio.TimerHandle."""

    def __init__(self, when: float = 0.0, message: Any = None) -> None:
        self._when, self.message, self.cancelled = when, message, False

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self.cancelled = True


class Network:
    def __init__(self) -> None:
        self.timers: list[Handle] = []

    def server_timer_at(self, when: float, message: Any) -> Handle:
        h = Handle(when, message)
        self.timers.append(h)
        return h


def make_server(**mode: Any) -> FedBuffServer:
    step = ReleaseStep(WeightedMean(), FedAvgStep(), lambda w: {}, SeedTree(0),
                       EventLog(lambda: 0.0, keep=True))
    return FedBuffServer(mode=FedBuff(**{"buffer_size": 3, "concurrency": 4, **mode}),
                         rounds=Rounds(), fleet=None, step=step, seeds=SeedTree(0),
                         log=step.log, mailbox=asyncio.Queue(), network=Network(),
                         initial_weights=np.zeros(3, np.float32))


def update(ticket: int, sender: int, value: float = 1.0) -> Update:
    return Update(ticket, sender, {WEIGHTED_DELTA: np.full(3, value, np.float32),
                                   WEIGHT: np.array([1.0], np.float32)})


def busy_server() -> tuple[FedBuffServer, Handle, Handle]:
    """A server mid-run, every field holding a value no other field holds."""
    s = make_server()
    h8, poll = Handle(30.0), Handle(60.0)
    s.state = replace(s.state, round=2, weights=np.full(3, 0.5, np.float32))
    s._gathering = _Gathering(5.0, [(7, update(7, 4), 2)], {"late": 1}, [(3, 13)], [4, 5, 6])
    s.in_flight = {8: _Dispatch(5, 1, 2.5, h8), 9: _Dispatch(6, 0, 3.5, None)}
    s._busy = {5, 6}
    s._buffered = {4}
    s._given_up = {3}
    s._next_ticket = 10
    s._refills = 12
    s._poll_pending = True
    s._poll_timer = poll
    s._idle_since = 42.0
    s.max_in_flight = 4
    s._sent_params = {1: {"clip": 2.0}, 0: {"clip": 3.0}}
    return s, h8, poll


def test_a_snapshot_holds_every_field_and_copies_what_the_server_keeps_changing() -> None:
    s, _, _ = busy_server()
    snap = s.snapshot()
    assert snap.state is s.state
    g = snap.gathering
    assert g.start == 5.0 and g.rejected == {"late": 1} and g.timed_out == [(3, 13)]
    assert g.dispatched == [4, 5, 6] and [(t, u.sender, st) for t, u, st in g.updates] == [(7, 4, 2)]
    assert snap.in_flight == ((8, 5, 1, 2.5), (9, 6, 0, 3.5))
    assert snap.buffered == frozenset({4})
    assert snap.given_up == frozenset({3})
    assert (snap.next_ticket, snap.refills, snap.poll_pending, snap.idle_since,
            snap.max_in_flight) == (10, 12, True, 42.0, 4)
    assert snap.sent_params == ((0, {"clip": 3.0}), (1, {"clip": 2.0}))
    # The server goes on changing its own gathering; the snapshot does not follow.
    s._gathering.updates.clear()
    s._gathering.rejected["late"] = 5
    s._gathering.timed_out.clear()
    s._gathering.dispatched.append(9)
    assert len(g.updates) == 1 and g.rejected == {"late": 1} and g.timed_out == [(3, 13)]
    assert g.dispatched == [4, 5, 6]


def test_restore_gives_back_the_server_that_was_snapshotted() -> None:
    s, _, _ = busy_server()
    snap = s.snapshot()
    t = make_server()
    t.restore(snap)
    assert t.state is snap.state
    assert t._gathering.start == 5.0 and t._gathering.rejected == {"late": 1}
    assert t._gathering.timed_out == [(3, 13)] and t._gathering.dispatched == [4, 5, 6]
    assert [(k, u.sender, st) for k, u, st in t._gathering.updates] == [(7, 4, 2)]
    assert {k: (j.device, j.version, j.start) for k, j in t.in_flight.items()} == {
        8: (5, 1, 2.5), 9: (6, 0, 3.5)}
    assert all(j.timer is None for j in t.in_flight.values())  # timers come back separately
    assert t._busy == {5, 6}
    assert t._buffered == {4} and t._given_up == {3}
    assert isinstance(t._buffered, set)
    assert isinstance(t._given_up, set)
    assert (t._next_ticket, t._refills, t._poll_pending, t._idle_since, t.max_in_flight) == (
        10, 12, True, 42.0, 4)
    assert t._sent_params == {0: {"clip": 3.0}, 1: {"clip": 2.0}}
    assert t._at_work == {1: 1, 0: 1}  # tickets 8 and 9 were sent versions 1 and 0
    # The restored server's gathering is its own: the snapshot can be restored again.
    t._gathering.updates.clear()
    t._gathering.rejected.clear()
    t._gathering.timed_out.clear()
    t._gathering.dispatched.clear()
    t._given_up.add(99)
    t._buffered.add(99)
    assert len(snap.gathering.updates) == 1 and snap.gathering.rejected == {"late": 1}
    assert snap.gathering.timed_out == [(3, 13)] and snap.gathering.dispatched == [4, 5, 6]
    # ... and a restored server can be snapshotted again, identically.
    again = make_server()
    again.restore(snap)
    assert again.snapshot() == snap


def test_a_server_mid_event_or_not_started_refuses_to_snapshot() -> None:
    with pytest.raises(RuntimeError, match="mid-event"):
        make_server().snapshot()
    s, _, _ = busy_server()
    s.mailbox.put_nowait(Poll())
    with pytest.raises(RuntimeError, match="mid-event"):
        s.snapshot()


def test_pending_timers_are_the_device_timeouts_then_the_poll() -> None:
    s, h8, poll = busy_server()
    assert s.pending_timers() == [(h8, ("timeout", 8)), (poll, ("poll", None))]
    s._poll_timer = None
    assert s.pending_timers() == [(h8, ("timeout", 8))]


def test_restore_timer_puts_each_timer_back_where_it_was() -> None:
    s, _, _ = busy_server()
    t = make_server()
    t.restore(s.snapshot())
    t.restore_timer(("timeout", 8), 30.0, 1)
    t.restore_timer(("poll", None), 60.0, 1)
    timeout, poll = t.network.timers
    assert t.in_flight[8].timer is timeout and t.in_flight[9].timer is None
    assert timeout.when() == 30.0 and timeout.message == DeviceTimeout(8)
    assert t._poll_timer is poll and poll.when() == 60.0 and poll.message == Poll()


# -- screening an arriving update ------------------------------------------------------------


def test_screen_async_reasons_by_ticket_and_sender() -> None:
    s, _, _ = busy_server()
    assert s._screen_async("not an update") == "malformed"
    assert s._screen_async(update(10, 5)) == "future"  # the next ticket, not yet issued
    assert s._screen_async(update(11, 5)) == "future"
    assert s._screen_async(update(3, 13)) == "late"  # given up at its timeout
    assert s._screen_async(update(7, 4)) == "duplicate"  # answered already
    assert s._screen_async(update(8, 6)) == "foreign"  # ticket 8 went to device 5
    assert s._screen_async(update(8, 5)) is None
    assert s._screen_async(update(8, 5, np.nan)) == "nonfinite"


def test_the_expectation_is_built_once_per_model_version() -> None:
    s = make_server()
    first = s._expectation(0)
    assert s._expectation(0) is first
    assert set(first.spec) == {WEIGHTED_DELTA, WEIGHT}
    s.state = replace(s.state, round=1)
    second = s._expectation(1)
    assert second is not first and set(s._expect) == {0, 1}
    assert s._expectation(1) is second and s._expectation(0) is first


# -- options and the driver ------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "field"), [
    (dict(buffer_size=0), "mode.buffer_size"),
    (dict(concurrency=0), "mode.concurrency"),
    (dict(staleness=0.5), "mode.staleness"),
    (dict(max_staleness=-1), "mode.max_staleness"),
    (dict(poll_interval=0.0), "mode.poll_interval"),
    (dict(max_idle=-1.0), "mode.max_idle"),
])
def test_a_bad_fedbuff_option_names_its_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        FedBuff(**kwargs)
    assert err.value.field == field


def test_fedbuff_option_defaults_and_limits() -> None:
    m = FedBuff()
    assert (m.buffer_size, m.concurrency, m.max_staleness, m.poll_interval, m.max_idle) == (
        10, 100, None, 60.0, 7 * 86400.0)
    assert m.staleness(np.array([3]))[0] == 0.5  # Polynomial(0.5): 1 / sqrt(1 + 3)
    assert FedBuff(max_staleness=0).max_staleness == 0
    with pytest.raises(ConfigError) as err:
        FedBuff(staleness="sqrt")
    assert "StalenessWeight" in err.value.message


def test_fedbuff_refuses_secure_aggregation() -> None:
    step = ReleaseStep(WeightedMean(), FedAvgStep(), lambda w: {}, SeedTree(0),
                       EventLog(lambda: 0.0))
    with pytest.raises(ConfigError) as err:
        FedBuffServer(mode=FedBuff(), rounds=Rounds(), fleet=None, step=step, seeds=SeedTree(0),
                      log=step.log, mailbox=asyncio.Queue(), network=None,
                      initial_weights=np.zeros(3, np.float32), secure_aggregation=object())
    assert err.value.field == "secure_aggregation" and "not implemented" in err.value.message


def test_server_class_picks_the_driver_for_the_mode() -> None:
    assert server_class(None) is ServerActor
    mode = FedBuff(buffer_size=2, staleness=Unweighted())
    made = server_class(mode)
    assert made.func is FedBuffServer and made.keywords == {"mode": mode}


def test_a_fresh_server_starts_from_ticket_zero_with_nothing_in_flight() -> None:
    s = make_server()
    assert s.state.round == 0 and s.in_flight == {} and s._next_ticket == 0
    assert s._gathering is None and s.max_in_flight == 0 and s._poll_pending is False
    assert s._idle_since is None and s._poll_timer is None and s._expect == {}
    assert s._sent_params == {} and not s._at_work
    assert s._busy == set() and s._buffered == set()
    assert s._given_up == set() and s._refills == 0


# -- a short real run ------------------------------------------------------------------------

from dataclasses import dataclass  # noqa: E402

from fedactors.server.staleness import StalenessWeight  # noqa: E402
from tests.server.harness import build_world, device, events  # noqa: E402


@dataclass(frozen=True)
class Constant(StalenessWeight):
    """The same weight whatever the staleness (a hostile or buggy weighting)."""

    value: float

    def __call__(self, staleness: np.ndarray) -> np.ndarray:
        return np.full(np.shape(staleness), self.value, np.float64)


def record_timers(server) -> list:
    made: list = []
    honest = server.network.server_timer

    def recording(delay, message):
        handle = honest(delay, message)
        made.append((message, handle))
        return handle

    server.network.server_timer = recording
    return made


@pytest.mark.asyncio
async def test_dispatches_keep_their_start_and_timer_and_a_release_cancels_the_timer() -> None:
    world = build_world([device("a", 1.0), device("b", 3.0)], Rounds(count=1, deadline=100.0),
                        mode=FedBuff(buffer_size=1, concurrency=2, staleness=Unweighted(),
                                     poll_interval=1000.0))
    server = world.actors.server
    timers = record_timers(server)
    (outcome,) = [o async for o in _run(server, 1)]
    dispatched = events(world, "device.dispatched")
    first = [e for e in dispatched if e["t"] == 0.0]
    # Everyone asked before the release is in its "selected", by device id.
    assert outcome.selected == tuple(e["device"] for e in first) and len(first) == 2
    assert outcome.reported == (0,) and outcome.end == pytest.approx(1.0)
    assert outcome.start == 0.0 and outcome.closed_by == "buffer" and outcome.applied is True
    # Still waiting: ticket 1 (device 1, from t = 0) and ticket 2 (device 0 again, from t = 1).
    assert {t: (j.device, j.version, j.start) for t, j in server.in_flight.items()} == {
        1: (1, 0, 0.0), 2: (0, 1, pytest.approx(1.0))}
    by_ticket = {m.ticket: h for m, h in timers if isinstance(m, DeviceTimeout)}
    for t, job in server.in_flight.items():
        assert job.timer is by_ticket[t] and not job.timer.cancelled()
        assert job.timer.when() == pytest.approx(job.start + 100.0)
    assert by_ticket[0].cancelled()  # answered: nothing left to time out
    assert server._busy == {0, 1}
    assert server.pending_timers()[:2] == [(by_ticket[1], ("timeout", 1)),
                                           (by_ticket[2], ("timeout", 2))]


async def _run(server, count):
    outcomes: list = []
    await server.run(count, outcomes.append)
    for o in outcomes:
        yield o


@pytest.mark.asyncio
async def test_the_buffer_aggregated_event() -> None:
    world = build_world([device("a", 1.0), device("b", 3.0)], Rounds(count=2, deadline=100.0),
                        mode=FedBuff(buffer_size=2, concurrency=2, staleness=Unweighted()))
    server = world.actors.server
    server.step = replace(server.step, evaluate=lambda w: {"loss": float(w.sum())})
    outcomes = [o async for o in _run(server, 1)]
    (event,) = events(world, "buffer.aggregated")
    assert event["actor"] == "server" and event["round"] == 1 and event["applied"] is True
    assert list(event["staleness"]) == [0, 0]
    assert event["loss"] == pytest.approx(3 * 1.5) == outcomes[0].metrics["loss"]


@pytest.mark.asyncio
@pytest.mark.parametrize("weight", [1.5, -0.25])
async def test_a_dp_run_refuses_staleness_weights_outside_zero_one(weight: float) -> None:
    from fedactors.privacy.dp_mean import DPMean

    # The scenario refuses such a weighting at load (spec.py probes staleness 0..100,000);
    # the server checks again at every release, for weights the probe could not see.
    world = build_world([device("a", 1.0), device("b", 2.0)], Rounds(count=1, deadline=100.0),
                        mode=FedBuff(buffer_size=1, concurrency=1, staleness=Constant(1.0)),
                        aggregator=DPMean.fixed(1.0, 1.0, expected_count=1))
    server = world.actors.server
    server.mode = replace(server.mode, staleness=Constant(weight))
    with pytest.raises(ConfigError) as err:
        await server.run(1, lambda o: None)
    assert err.value.field == "mode.staleness"
    assert err.value.message.startswith("gave weights outside [0, 1] (")
    assert err.value.message.endswith("), which a DP release cannot account")


@pytest.mark.asyncio
@pytest.mark.parametrize(("weight", "dp"), [(0.0, True), (1.0, True), (1.5, False)])
async def test_weights_in_zero_one_pass_under_dp_and_any_weight_without(weight: float,
                                                                        dp: bool) -> None:
    from fedactors.privacy.dp_mean import DPMean

    aggregator = DPMean.fixed(1.0, 0.0, expected_count=1) if dp else None
    world = build_world([device("a", 1.0)], Rounds(count=1, deadline=100.0),
                        mode=FedBuff(buffer_size=1, concurrency=1, staleness=Constant(weight)),
                        aggregator=aggregator)
    server = world.actors.server
    outcomes = [o async for o in _run(server, 1)]
    assert outcomes[0].weights == (weight,)
    # Device 0's delta is 1 everywhere; DP clips it to norm 1 first.
    unit = 1 / np.sqrt(3.0) if dp else 1.0
    np.testing.assert_allclose(server.state.weights, np.full(3, weight * unit), rtol=1e-5)


@pytest.mark.asyncio
async def test_dispatch_follows_the_documented_seed_paths_and_counts_refills() -> None:
    from fedactors.devices.availability import OnlineShare

    world = build_world([device("d", 1.0, count=12, availability=OnlineShare(0.5))],
                        Rounds(count=1, deadline=100.0),
                        mode=FedBuff(buffer_size=1, concurrency=3, poll_interval=1000.0),
                        seed=3)
    server = world.actors.server
    assert await server.run(0, lambda o: None) == "completed"  # the first refill only
    seeds = server.seeds
    online = world.fleet.online(0.0, seeds.generator("fedbuff-availability", 0))
    chosen = np.sort(seeds.generator("fedbuff-selection", 0).choice(online, 3, replace=False))
    assert [e["device"] for e in events(world, "device.dispatched")] == [int(d) for d in chosen]
    (start,) = events(world, "fedbuff.start")
    assert (start["actor"], start["buffer_size"], start["concurrency"]) == ("server", 1, 3)
    assert "updates" not in start  # (a resumed run to more updates would log another count)
    # Every slot filled: no poll is pending.
    assert server._refills == 1 and server._poll_pending is False and server._poll_timer is None
    # Refills with every slot taken draw nothing and count nothing ...
    server._refill()
    assert server._refills == 1
    # ... while each refill with a free slot takes the next seed path.
    for k in (1, 2):
        server.in_flight.clear()
        server._busy.clear()
        server._refill()
        assert server._refills == k + 1


@pytest.mark.asyncio
async def test_a_poll_is_set_once_while_slots_stay_free_and_cleared_when_they_fill() -> None:
    from fedactors.devices.availability import Trace

    later = Trace([(50.0, 1e9)])  # nobody online before t = 50
    world = build_world([device("d", 1.0, count=2, availability=later)],
                        Rounds(count=1, deadline=100.0),
                        mode=FedBuff(buffer_size=1, concurrency=2, poll_interval=60.0))
    server = world.actors.server
    timers = record_timers(server)
    outcomes = [o async for o in _run(server, 1)]
    polls = [h for m, h in timers if isinstance(m, Poll)]
    # t = 0: nobody online, one poll (not one per refill); t = 60: both slots filled.
    assert len(polls) == 1 and polls[0].when() == 60.0
    assert [e["t"] for e in events(world, "device.dispatched")][:2] == [60.0, 60.0]
    assert outcomes[0].end == pytest.approx(61.0)
    # After the release a slot was refilled; no poll is pending, none is remembered.
    assert server._poll_pending is False and server._poll_timer is None
    assert server._idle_since is None
    assert all(what[0] == "timeout" for _, what in server.pending_timers())


@pytest.mark.asyncio
async def test_refills_with_a_slot_still_free_do_not_stack_polls() -> None:
    world = build_world([device("only", 1.0)], Rounds(count=3, deadline=100.0),
                        mode=FedBuff(buffer_size=1, concurrency=2, poll_interval=1000.0))
    server = world.actors.server
    timers = record_timers(server)
    outcomes = [o async for o in _run(server, 3)]
    assert [o.end for o in outcomes] == pytest.approx([1.0, 2.0, 3.0])
    polls = [h for m, h in timers if isinstance(m, Poll)]
    assert len(polls) == 1 and polls[0].when() == 1000.0 and server._poll_pending is True
    assert server._poll_timer is polls[0]


@pytest.mark.asyncio
async def test_fedbuff_logs_each_update_taken_or_refused_and_a_staleness_at_the_limit_counts(
) -> None:
    from fedactors.runtime.loop import DELIVERY

    world = build_world([device("a", 1.0), device("b", 3.5)], Rounds(count=9, deadline=100.0),
                        mode=FedBuff(buffer_size=1, concurrency=2, staleness=Unweighted(),
                                     max_staleness=3, poll_interval=1000.0))
    server = world.actors.server
    loop = asyncio.get_running_loop()
    for t in (0.5, 0.6):
        loop.call_at(t, server.mailbox.put_nowait, "junk", priority=DELIVERY)
    outcomes: list = []

    def on_round(o):
        outcomes.append(o)
        return "enough" if o.round == 4 else None

    assert await server.run(9, on_round) == "enough"
    received = [(e["actor"], e["version"], e["sender"], e["ticket"], e["staleness"], e["buffered"])
                for e in events(world, "update.received")]
    assert received == [("server", 0, 0, 0, 0, 1), ("server", 1, 0, 2, 0, 1),
                        ("server", 2, 0, 3, 0, 1), ("server", 3, 1, 1, 3, 1)]
    assert outcomes[3].staleness == (3,) and outcomes[3].reported == (1,)  # == max_staleness
    assert outcomes[0].rejected == {"malformed": 2}
    junk = events(world, "update.malformed")
    assert [(e["actor"], e["version"], e["sender"], e["ticket"]) for e in junk] == [
        ("server", 0, None, None)] * 2
    (stopped,) = events(world, "run.stopped")
    assert (stopped["actor"], stopped["round"], stopped["reason"]) == ("server", 4, "enough")


@pytest.mark.asyncio
async def test_a_completed_run_says_so() -> None:
    world = build_world([device("a", 1.0)], Rounds(count=2, deadline=100.0),
                        mode=FedBuff(buffer_size=1, concurrency=1))
    assert await world.actors.server.run(2, lambda o: None) == "completed"
    assert events(world, "run.stopped") == []


@pytest.mark.asyncio
async def test_a_timed_out_device_is_given_up_and_logged() -> None:
    # Seed 8: the one slot goes first to the silent device (device 0), then to the other.
    world = build_world([device("gone", 1.0, dropout=1.0), device("ok", 4.0)],
                        Rounds(count=1, deadline=30.0),
                        mode=FedBuff(buffer_size=1, concurrency=1, poll_interval=1000.0), seed=8)
    (outcome,) = [o async for o in _run(world.actors.server, 1)]
    assert outcome.given_up == ((0, 0),) and outcome.reported == (1,)
    (timeout,) = events(world, "device.timeout")
    assert (timeout["t"], timeout["actor"], timeout["ticket"], timeout["device"]) == (
        30.0, "server", 0, 0)


@pytest.mark.asyncio
async def test_an_idle_stop_is_logged_with_how_long_nobody_trained() -> None:
    from fedactors.devices.availability import Trace

    never = Trace([(1e9, 1e9 + 1)])
    world = build_world([device("asleep", 1.0, count=2, availability=never)],
                        Rounds(count=5, deadline=100.0),
                        mode=FedBuff(buffer_size=1, concurrency=2, poll_interval=60.0,
                                     max_idle=600.0))
    assert await world.actors.server.run(5, lambda o: None) == "idle"
    (stopped,) = events(world, "run.stopped")
    assert (stopped["t"], stopped["actor"], stopped["round"], stopped["reason"],
            stopped["idle_seconds"]) == (660.0, "server", 0, "idle", 600.0)


@pytest.mark.asyncio
async def test_a_stalled_stop_comes_max_idle_after_the_last_update_and_says_how_long() -> None:
    # Two fast devices online only at first give two buffers (t = 1, 2); then only devices too
    # slow for the deadline are left: they keep being dispatched and timing out, nobody
    # delivers, and the run must stop exactly max_idle after the buffer began (t = 2 + 5),
    # not counted from t = 0 and not one poll later.
    from fedactors.devices.availability import Trace

    world = build_world([device("fast", 1.0, count=2, availability=Trace([(0.0, 1.5)],
                                                                          period=1e6)),
                         device("slow", 10.0, count=2)],
                        Rounds(count=5, deadline=2.0),
                        mode=FedBuff(buffer_size=2, concurrency=4, poll_interval=1.0,
                                     max_idle=5.0))
    loop = asyncio.get_running_loop()
    assert await world.actors.server.run(5, lambda o: None) == "stalled"
    last_update = max(e["t"] for e in events(world, "buffer.aggregated"))
    assert last_update == 2.0
    assert loop.time() == pytest.approx(last_update + 5.0, abs=1e-9)
    # Devices were still at work (timing out), so this is "stalled", not "idle".
    assert max(e["t"] for e in events(world, "device.dispatched")) > last_update
    (stopped,) = events(world, "run.stopped")
    assert (stopped["actor"], stopped["round"], stopped["reason"]) == ("server", 2, "stalled")
    assert stopped["seconds_without_update"] == pytest.approx(5.0, abs=1e-9)
    assert stopped["t"] == pytest.approx(last_update + 5.0, abs=1e-9)


def _private_world(target_after: int, count: int):
    """A private FedBuff world whose target lets exactly ``target_after`` buffers through."""
    from fedactors import Privacy
    from fedactors.privacy.accounting import PrivacyLedger
    from fedactors.privacy.dp_mean import DPMean

    k, z, delta = 2, 3.0, 1e-5
    plain = PrivacyLedger(6, k, z, "none")
    target = (plain.compose(target_after).epsilon(delta)
              + plain.compose(target_after + 1).epsilon(delta)) / 2
    return build_world([device("a", 1.0, count=3), device("b", 2.5, count=3)],
                       Rounds(count=count, deadline=100.0),
                       aggregator=DPMean.fixed(1.0, z, expected_count=k),
                       mode=FedBuff(buffer_size=k, concurrency=4),
                       privacy=Privacy(target_epsilon=target, delta=delta))


@pytest.mark.asyncio
async def test_a_budget_stop_after_an_update_is_logged_at_that_update() -> None:
    from fedactors.privacy.budget import STOPPED_BY_BUDGET

    world = _private_world(target_after=3, count=10)
    assert await world.actors.server.run(10, lambda o: None) == STOPPED_BY_BUDGET
    (stopped,) = events(world, "run.stopped")
    assert (stopped["actor"], stopped["round"], stopped["reason"]) == (
        "server", 3, STOPPED_BY_BUDGET)
    assert stopped["t"] == max(e["t"] for e in events(world, "buffer.aggregated"))


@pytest.mark.asyncio
async def test_a_run_whose_last_update_exhausts_the_budget_completed() -> None:
    # After the last asked-for update there is no next release to refuse: the run completed,
    # even though one more buffer would pass the target.
    world = _private_world(target_after=3, count=3)
    outcomes: list = []
    assert await world.actors.server.run(3, outcomes.append) == "completed"
    assert [o.round for o in outcomes] == [1, 2, 3]
    assert events(world, "run.stopped") == []
