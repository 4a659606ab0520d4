"""An asyncio event loop on a virtual clock.

Why a custom loop rather than ``looptime``: we need three things looptime does
not promise. (1) When no callback is ready, the clock *jumps* to the next timer
instead of sleeping, so an hour-long deadline costs no wall time. (2) Timers
that fall due at the same instant run in a fixed order, ``(time, priority,
sequence)``, so ties break the same way every run however loaded the machine
is. (3) A hook runs when an instant is over (nothing left to do before the
clock moves), which is where cohort training is batched. The loop performs no
I/O: it is a scheduler for simulated actors, nothing else.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from asyncio import base_events, events
from collections.abc import Callable
from typing import Any

from fedactors.errors import SimulationStalled

#: Priorities for timers that fall due at the same instant (lower runs first).
DELIVERY = 0  # messages arriving now are seen before ...
TIMEOUT = 10  # ... a deadline that expires at the same instant.


class _OrderedTimer(events.TimerHandle):
    """A timer that sorts by (when, priority, sequence) instead of by when alone."""

    __slots__ = ("_key",)

    def __init__(self, when: float, priority: int, seq: int, callback, args, loop, context):
        super().__init__(when, callback, args, loop, context)
        self._key = (when, priority, seq)

    def __lt__(self, other: object) -> bool:
        if isinstance(other, _OrderedTimer):
            return self._key < other._key
        return NotImplemented


class VirtualTimeLoop(base_events.BaseEventLoop):
    """Runs coroutines on simulated seconds, starting at ``start``."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self._now = float(start)
        self._sequence = itertools.count()
        self._instant_end: list[Callable[[], None]] = []

    # -- the clock -------------------------------------------------------
    def time(self) -> float:
        return self._now

    def call_at(self, when, callback, *args, context=None, priority: int = 0):  # noqa: D401
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()
        # Never schedule into the past: a timer "now" fires at the current instant.
        when = max(float(when), self._now)
        timer = _OrderedTimer(when, priority, next(self._sequence), callback, args, self, context)
        heapq.heappush(self._scheduled, timer)
        timer._scheduled = True
        return timer

    def call_later(self, delay, callback, *args, context=None, priority: int = 0):
        return self.call_at(self._now + delay, callback, *args, context=context, priority=priority)

    def at_instant_end(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once, when the current instant has no ready work left."""
        self._instant_end.append(callback)

    # -- the scheduler ---------------------------------------------------
    def _run_once(self) -> None:
        scheduled = self._scheduled
        while scheduled and scheduled[0]._cancelled:
            self._timer_cancelled_count -= 1
            heapq.heappop(scheduled)._scheduled = False

        if not self._ready and not self._stopping:
            if self._instant_end:
                hooks, self._instant_end = self._instant_end, []
                for hook in hooks:
                    hook()
                if self._ready or self._instant_end:
                    return
            if not scheduled:
                raise SimulationStalled(
                    f"simulation stalled at t={self._now:g}s: every actor waits and no timer is set"
                )
            self._now = max(self._now, scheduled[0]._when)

        while scheduled and scheduled[0]._when <= self._now:
            handle = heapq.heappop(scheduled)
            handle._scheduled = False
            self._ready.append(handle)

        for _ in range(len(self._ready)):
            handle = self._ready.popleft()
            if not handle._cancelled:
                handle._run()

    # -- the I/O the base class expects, of which there is none ----------
    def _process_events(self, event_list: Any) -> None:  # pragma: no cover - never called
        pass

    def _write_to_self(self) -> None:
        pass


def run(coro, start: float = 0.0):
    """Run ``coro`` to completion on a fresh virtual-time loop and close it."""
    loop = VirtualTimeLoop(start)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
