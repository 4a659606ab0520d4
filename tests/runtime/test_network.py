"""The simulated network: transfer times, traffic counters, dropping a closed round's
messages, and putting checkpointed messages back on the wire.

A stand-in fleet (fixed link times) and recording mailboxes: no devices, no training.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedactors.runtime.loop import VirtualTimeLoop
from fedactors.runtime.network import Deliveries, Network
from fedactors.runtime.snapshot import pending_timers, restore_timers


@dataclass(frozen=True)
class Msg:
    """A round's message (the network tracks these by ``round``)."""

    round: int
    nbytes: int
    tag: str


@dataclass(frozen=True)
class Untracked:
    """A message of no round (it has no ``round`` attribute at all)."""

    nbytes: int
    tag: str


class Links:
    """Device ``d`` downloads in ``1 + d + nbytes/1000`` s and uploads in ``2 + d + nbytes/1000`` s."""

    def download_time(self, device: int, nbytes: int) -> float:
        return 1.0 + device + nbytes / 1000

    def upload_time(self, device: int, nbytes: int) -> float:
        return 2.0 + device + nbytes / 1000


class Mailbox:
    """Records ``(arrival time, message tag)`` for the server."""

    def __init__(self, loop: VirtualTimeLoop, seen: list) -> None:
        self.loop, self.seen = loop, seen

    def put_nowait(self, message: Any) -> None:
        self.seen.append((self.loop.time(), "server", getattr(message, "tag", message)))


class World:
    def __init__(self, start: float = 0.0) -> None:
        self.loop = VirtualTimeLoop(start)
        #: every arrival as (time, recipient, tag), recipient a device id or "server"
        self.seen: list[tuple[float, Any, Any]] = []
        self.net = Network(self.loop, Links(), Mailbox(self.loop, self.seen), self._to_device)

    def _to_device(self, device: int, message: Any) -> None:
        self.seen.append((self.loop.time(), device, getattr(message, "tag", message)))

    def run_until(self, t: float) -> None:
        """Let the simulated world run up to time ``t``."""
        self.loop.run_until_complete(asyncio.sleep(t - self.loop.time()))

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def world():
    w = World()
    yield w
    w.close()


@pytest.mark.parametrize("message", [Msg(1, 500, "m"), Untracked(500, "m")],
                         ids=["of_a_round", "of_no_round"])
def test_a_message_arrives_once_its_transfer_time_has_passed(message) -> None:
    # The clock does not start at zero, so "now + delay" and "delay" are different instants.
    w = World(start=100.0)
    try:
        down = w.net.to_device(3, message)
        up = w.net.to_server(0, message)
        assert (down, up) == (1.0 + 3 + 0.5, 2.0 + 0 + 0.5)
        w.run_until(200.0)
        assert w.seen == [(100.0 + up, "server", "m"), (100.0 + down, 3, "m")]
    finally:
        w.close()


def test_the_traffic_counters_add_up_every_message_each_way(world: World) -> None:
    assert (world.net.bytes_down, world.net.bytes_up) == (0, 0)
    world.net.to_device(0, Msg(1, 300, "a"))
    world.net.to_device(1, Untracked(50, "b"))
    world.net.to_server(0, Msg(1, 20, "c"))
    world.net.to_server(1, Msg(2, 7, "d"))
    assert (world.net.bytes_down, world.net.bytes_up) == (350, 27)
    world.run_until(50.0)  # arriving does not change what was sent
    assert (world.net.bytes_down, world.net.bytes_up) == (350, 27)


def test_dropping_a_round_discards_exactly_its_messages_still_in_transit(world: World) -> None:
    net = world.net
    net.to_device(0, Msg(1, 0, "r1 to device 0"))  # arrives at 1
    net.to_device(4, Msg(1, 0, "r1 to device 4"))  # 5
    net.to_server(1, Msg(1, 0, "r1 to server"))  # 3
    net.to_device(2, Msg(2, 0, "r2 to device 2"))  # 3
    net.to_device(1, Untracked(0, "no round"))  # 2
    assert net.messages_in_flight == 4  # the round's three, and round 2's one
    world.run_until(1.5)
    assert [tag for _, _, tag in world.seen] == ["r1 to device 0"]
    assert net.messages_in_flight == 3  # one of round 1's arrived: two of them still on the wire
    net.drop_round(1)
    assert net.messages_in_flight == 1
    world.run_until(50.0)
    assert world.seen == [(1.0, 0, "r1 to device 0"), (2.0, 1, "no round"),
                          (3.0, 2, "r2 to device 2")]
    assert net.messages_in_flight == 0
    net.drop_round(2)  # nothing left of it: a no-op
    net.drop_round(7)  # a round that never sent anything
    assert net.messages_in_flight == 0


def test_messages_of_a_round_stay_droppable_until_the_last_one_arrives(world: World) -> None:
    net = world.net
    for device in range(3):  # arrive at 1, 2, 3
        net.to_device(device, Msg(5, 0, f"to {device}"))
    for t, left in [(1.5, 2), (2.5, 1)]:
        world.run_until(t)
        assert net.messages_in_flight == left
        assert len(net.pending_timers()) == left
    net.drop_round(5)
    world.run_until(10.0)
    assert [tag for _, _, tag in world.seen] == ["to 0", "to 1"]


def test_pending_messages_are_listed_with_their_recipient_and_content(world: World) -> None:
    net = world.net
    a, b, c = Msg(1, 0, "a"), Msg(1, 0, "b"), Msg(2, 0, "c")
    net.to_device(0, a)
    net.to_server(3, b)
    net.to_device(2, c)
    listed = net.pending_timers()
    assert sorted(((h.when(), what) for h, what in listed), key=lambda e: e[0]) == [
        (1.0, Deliveries(((0, a),))), (3.0, Deliveries(((2, c),))),
        (5.0, Deliveries(((None, b),)))]
    assert all(not h.cancelled() for h, _ in listed)


def test_restored_messages_arrive_as_the_originals_would_have_and_can_still_be_dropped() -> None:
    original = World()
    try:
        net = original.net
        net.to_device(0, Msg(1, 0, "r1 to 0"))  # 1
        net.to_server(0, Msg(1, 1000, "r1 up"))  # 3: an upload, ties with ...
        net.to_device(2, Msg(2, 0, "r2 to 2"))  # 3 ... this download
        net.to_device(5, Msg(1, 0, "r1 to 5"))  # 6
        original.run_until(2.0)
        saved = pending_timers(original.loop, {"network": net})
        original.run_until(50.0)
    finally:
        original.close()

    resumed = World(start=2.0)
    try:
        restore_timers(saved, {"network": resumed.net})
        assert resumed.net.messages_in_flight == 3
        resumed.run_until(50.0)
        assert resumed.seen == original.seen[1:]
        assert resumed.seen == [(3.0, "server", "r1 up"), (3.0, 2, "r2 to 2"), (6.0, 5, "r1 to 5")]
    finally:
        resumed.close()

    again = World(start=2.0)
    try:
        restore_timers(saved, {"network": again.net})
        again.net.drop_round(1)
        again.run_until(50.0)
        assert again.seen == [(3.0, 2, "r2 to 2")]
    finally:
        again.close()


@pytest.mark.parametrize("message", [Msg(1, 3000, "update"), Untracked(3000, "update")],
                         ids=["of_a_round", "of_no_round"])
def test_a_server_timer_due_when_an_update_arrives_fires_after_it(message) -> None:
    # An update that arrives exactly at a deadline is still counted: a timer set for that
    # instant, even set before the update was sent, reaches the server after it.
    w = World()
    try:
        w.net.server_timer_at(5.0, "deadline (restored)")
        w.net.server_timer(5.0, "deadline")
        assert w.net.to_server(0, message) == 5.0
        w.run_until(10.0)
        assert w.seen == [(5.0, "server", "update"), (5.0, "server", "deadline (restored)"),
                          (5.0, "server", "deadline")]
    finally:
        w.close()


def test_server_timers_fire_at_their_instant_and_can_be_cancelled(world: World) -> None:
    kept = world.net.server_timer_at(4.0, "kept")
    cancelled = world.net.server_timer_at(3.0, "cancelled")
    later = world.net.server_timer(2.0, "later")
    cancelled.cancel()
    assert kept.when() == 4.0 and later.when() == 2.0
    world.run_until(10.0)
    assert world.seen == [(2.0, "server", "later"), (4.0, "server", "kept")]


def test_each_message_reaches_the_recipient_it_was_sent_to(world: World) -> None:
    # The same message object sent both ways arrives once at each end.
    m = Msg(1, 0, "same")
    world.net.to_device(0, m)
    world.net.to_server(0, m)
    world.run_until(10.0)
    assert world.seen == [(1.0, 0, "same"), (2.0, "server", "same")]


class SameTime:
    """Every device downloads and uploads in ``d % 2`` seconds: many messages tie."""

    def download_time(self, device: int, nbytes: int) -> float:
        return float(device % 2)

    def upload_time(self, device: int, nbytes: int) -> float:
        return float(device % 2)


#: One step of a sender: ("down"|"up", device, round), or ("timer", delay) for a
#: timer of someone else's (a device waking, priority 0 as deliveries), or
#: ("drop", round), or ("run", t): let the world run t seconds.
STEPS = st.lists(st.one_of(
    st.tuples(st.sampled_from(["down", "up"]), st.integers(0, 3), st.integers(1, 2)),
    st.tuples(st.just("timer"), st.sampled_from([0.0, 1.0])),
    st.tuples(st.just("drop"), st.integers(1, 2)),
    st.tuples(st.just("run"), st.sampled_from([0.0, 0.5, 1.0])),
), max_size=30)


def _play(steps, alone: bool) -> list:
    """Play ``steps``; ``alone``: each message on a timer of its own, as the network's
    reference (the arrivals the shared timers must reproduce exactly)."""
    loop = VirtualTimeLoop()
    seen: list = []
    net = Network(loop, SameTime(), Mailbox(loop, seen),
                  lambda d, m: seen.append((loop.time(), d, m.tag)))
    own: dict[int, list] = {}
    try:
        for i, step in enumerate(steps):
            if step[0] in ("down", "up"):
                kind, device, round_ = step
                message = Msg(round_, 0, f"{kind} {i}")
                if not alone:
                    (net.to_device if kind == "down" else net.to_server)(device, message)
                    continue
                to = device if kind == "down" else None
                deliver = (lambda m: seen.append((loop.time(), "server", m.tag))) if to is None \
                    else (lambda m, d=to: seen.append((loop.time(), d, m.tag)))
                own.setdefault(round_, []).append(loop.call_later(float(device % 2), deliver,
                                                                  message, priority=0))
            elif step[0] == "timer":
                loop.call_later(step[1], lambda i=i: seen.append((loop.time(), "timer", i)))
            elif step[0] == "drop":
                if alone:
                    for handle in own.pop(step[1], []):
                        handle.cancel()
                else:
                    net.drop_round(step[1])
            else:
                loop.run_until_complete(asyncio.sleep(step[1]))
        loop.run_until_complete(asyncio.sleep(5.0))
        return seen
    finally:
        loop.close()


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_messages_sharing_a_timer_arrive_exactly_as_on_timers_of_their_own(steps) -> None:
    assert _play(steps, alone=False) == _play(steps, alone=True)


def test_a_cohorts_messages_of_one_instant_share_one_timer(world: World) -> None:
    net = world.net
    for device in (4, 4, 4):
        net.to_device(device, Msg(1, 0, f"to {device}"))
    assert len(world.loop.pending_timers()) == 1 and net.messages_in_flight == 3
    world.loop.call_later(1.0, lambda: None)  # someone else's timer, set in between ...
    net.to_device(4, Msg(1, 0, "after"))  # ... so this one waits for it: a timer of its own
    net.to_device(4, Msg(2, 0, "round 2"))  # another round: droppable apart
    assert len(world.loop.pending_timers()) == 4
    net.drop_round(2)
    world.run_until(10.0)
    assert [tag for _, _, tag in world.seen] == ["to 4", "to 4", "to 4", "after"]


def test_a_round_dropped_by_a_delivery_stops_the_rest_of_its_batch() -> None:
    loop = VirtualTimeLoop()
    seen: list = []

    def deliver(device: int, message: Msg) -> None:
        seen.append(device)
        if device == 2:
            net.drop_round(message.round)  # as a server closing the round would

    net = Network(loop, SameTime(), Mailbox(loop, seen), deliver)
    try:
        for device in (0, 2, 4, 6):  # all arrive at 0, on one timer
            net.to_device(device, Msg(3, 0, "m"))
        loop.run_until_complete(asyncio.sleep(1.0))
        assert seen == [0, 2] and net.messages_in_flight == 0
    finally:
        loop.close()


def test_a_message_saved_alone_by_an_older_checkpoint_is_restored(world: World) -> None:
    world.net.restore_timer((3, Msg(1, 0, "old")), 2.0, 0)
    world.net.restore_timer(Deliveries(((None, Msg(1, 0, "new")), (5, Msg(1, 0, "new")))), 2.0, 0)
    assert len(world.loop.pending_timers()) == 1 and world.net.messages_in_flight == 3
    world.run_until(5.0)
    assert world.seen == [(2.0, 3, "old"), (2.0, "server", "new"), (2.0, 5, "new")]
