"""Wake-ups due at one instant, set one after another, share one timer.

A cohort training at one speed finishes at one instant: a timer per device
costs a handle, a heap push and a pop each, thousands per round. An alarm
rings every wake-up set on it, in the order they were set, exactly where
their own timers would have run: a wake-up joins the alarm only if that
alarm's timer is the loop's newest (no timer was set in between) and falls
due at the same instant and priority (the same rule as the network's batched
deliveries, :mod:`fedactors.runtime.network`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Optional

from fedactors.runtime.loop import VirtualTimeLoop


@dataclass(frozen=True)
class WakeUps:
    """What a checkpoint saves of a pending alarm: who it wakes, in order."""

    keys: tuple[Hashable, ...]


class Alarm:
    """One timer that resolves the futures set on it, in the order they were set."""

    __slots__ = ("handle", "waiting")

    def __init__(self) -> None:
        self.handle: Optional[asyncio.TimerHandle] = None
        self.waiting: dict[Hashable, asyncio.Future] = {}

    def ring(self) -> None:
        waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            if not future.done():  # cancelled if its waiter was stopped meanwhile
                future.set_result(None)

    def leave(self, key: Hashable) -> None:
        """``key`` no longer waits (woken, or stopped); the last to leave before
        the alarm rings cancels its timer, as each used to cancel its own."""
        if self.waiting.pop(key, None) is not None and not self.waiting:
            self.handle.cancel()

    @property
    def pending(self) -> bool:
        return bool(self.waiting) and not self.handle.cancelled()

    def saved(self) -> WakeUps:
        return WakeUps(tuple(self.waiting))


class AlarmClock:
    """Hands out alarms, joining a wake-up to the one set last when it may."""

    def __init__(self) -> None:
        self._open: Optional[Alarm] = None

    def wake_at(self, loop: VirtualTimeLoop, when: float, key: Hashable,
                future: asyncio.Future, priority: int = 0) -> Alarm:
        """Resolve ``future`` at ``when`` (clamped to now, as ``call_at`` does)."""
        when = max(float(when), loop.time())
        alarm = self._open
        if alarm is None or not _joinable(alarm.handle, loop, when, priority):
            alarm = self._open = Alarm()
            alarm.handle = loop.call_at(when, alarm.ring, priority=priority)
        alarm.waiting[key] = future
        return alarm


def _joinable(handle: asyncio.TimerHandle, loop: VirtualTimeLoop, when: float,
              priority: int) -> bool:
    return (handle is loop.newest_timer() and handle._scheduled and not handle._cancelled
            and handle.when() == when and handle.priority == priority)
