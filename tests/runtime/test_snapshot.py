"""World snapshots: every pending timer named by its owner, and restored in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fedactors.runtime.loop import DELIVERY, TIMEOUT, VirtualTimeLoop
from fedactors.runtime.snapshot import pending_timers, restore_timers


class Alarms:
    """A part of the world that sets named timers and records when they ring."""

    def __init__(self, loop: VirtualTimeLoop, rung: list) -> None:
        self.loop, self.rung, self.handles = loop, rung, {}

    def set(self, name: str, when: float, priority: int = 0) -> None:
        self.handles[name] = self.loop.call_at(when, self.rung.append, name, priority=priority)

    def pending_timers(self) -> list[tuple[asyncio.TimerHandle, Any]]:
        return [(h, name) for name, h in self.handles.items() if not h.cancelled()]

    def restore_timer(self, what: Any, when: float, priority: int) -> None:
        self.set(what, when, priority)


def _ring(loop: VirtualTimeLoop) -> None:
    loop.run_until_complete(asyncio.sleep(100.0))


def test_restored_timers_ring_in_the_original_order_ties_included() -> None:
    rung: list[str] = []
    loop = VirtualTimeLoop()
    alarms = Alarms(loop, rung)
    # Ties at t=3 broken by priority, then by who was scheduled first, across owners.
    for name, when, priority in [("b", 3.0, TIMEOUT), ("a", 3.0, DELIVERY), ("c", 1.0, 0),
                                 ("d", 3.0, DELIVERY), ("e", 2.0, 0)]:
        alarms.set(name, when, priority)
    saved = pending_timers(loop, {"alarms": alarms})
    _ring(loop)
    loop.close()
    assert rung == ["c", "e", "a", "d", "b"]

    # A fresh world restored from the snapshot rings the same, although the names
    # sort otherwise and the new timers get new sequence numbers.
    again: list[str] = []
    loop = VirtualTimeLoop()
    restore_timers(saved, {"alarms": Alarms(loop, again)})
    _ring(loop)
    loop.close()
    assert again == rung


def test_a_timer_no_part_of_the_world_owns_refuses_the_snapshot() -> None:
    loop = VirtualTimeLoop()
    try:
        alarms = Alarms(loop, [])
        alarms.set("known", 1.0)
        loop.call_at(2.0, print)  # set by something the snapshot cannot restore
        with pytest.raises(RuntimeError, match="belongs to no part of the world"):
            pending_timers(loop, {"alarms": alarms})
    finally:
        loop.close()


def test_a_snapshot_records_when_each_timer_falls_due_and_its_priority() -> None:
    loop = VirtualTimeLoop()
    try:
        alarms = Alarms(loop, [])
        alarms.set("deadline", 4.0, TIMEOUT)
        alarms.set("arrival", 4.0, DELIVERY)
        alarms.set("plain", 2.5)
        saved = pending_timers(loop, {"alarms": alarms})
        assert [(t.when, t.priority, t.owner, t.what) for t in saved] == [
            (2.5, 0, "alarms", "plain"), (4.0, DELIVERY, "alarms", "arrival"),
            (4.0, TIMEOUT, "alarms", "deadline")]
    finally:
        loop.close()


def test_restored_timers_keep_their_priority_against_timers_set_after_the_restore() -> None:
    # A restored deadline and a message that (after the restore) is sent to arrive at the
    # same instant: the arrival is still seen first, as in the uninterrupted run.
    loop = VirtualTimeLoop()
    alarms = Alarms(loop, [])
    alarms.set("deadline", 3.0, TIMEOUT)
    saved = pending_timers(loop, {"alarms": alarms})
    loop.close()

    rung: list[str] = []
    loop = VirtualTimeLoop()
    try:
        again = Alarms(loop, rung)
        restore_timers(saved, {"alarms": again})
        again.set("arrival", 3.0, DELIVERY)
        _ring(loop)
        assert rung == ["arrival", "deadline"]
    finally:
        loop.close()


def test_timers_go_back_to_the_part_of_the_world_that_owned_them() -> None:
    loop = VirtualTimeLoop()
    try:
        a, b = Alarms(loop, []), Alarms(loop, [])
        a.set("of a", 1.0)
        b.set("of b", 2.0)
        saved = pending_timers(loop, {"a": a, "b": b})
    finally:
        loop.close()
    rung_a: list[str] = []
    rung_b: list[str] = []
    loop = VirtualTimeLoop()
    try:
        restore_timers(saved, {"a": Alarms(loop, rung_a), "b": Alarms(loop, rung_b)})
        _ring(loop)
    finally:
        loop.close()
    assert (rung_a, rung_b) == (["of a"], ["of b"])
