"""The simulated world at the end of an instant, for a checkpoint that needs no clean cut.

A synchronous round ends with no device at work, so its checkpoint is the
server's state alone (:mod:`fedactors.runtime.checkpoint`). In FedBuff some
devices are always training, some messages always on the wire; no moment is a
clean cut. What there is instead is the end of an instant
(:meth:`VirtualTimeLoop.call_when_idle`): every actor waits, either for mail
or for a timer. The world is then its actors' state plus its pending timers,
and a timer is fully described by when it falls due, its priority, and what
its owner will do then.

So each part of the world that sets timers (the network, the server, the
devices) lists its own as ``(handle, what)`` and can re-create one from
``what``. A snapshot takes every pending timer of the loop in the order they
would run and refuses to be taken if a timer belongs to nobody (it could not
be restored); restoring re-creates them in that order, before anything else is
scheduled, so ties at one instant still break as they would have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class SetsTimers(Protocol):
    """A part of the world whose pending timers a checkpoint can save and restore."""

    def pending_timers(self) -> Iterable[tuple[asyncio.TimerHandle, Any]]: ...

    def restore_timer(self, what: Any, when: float, priority: int) -> None: ...


@dataclass(frozen=True)
class PendingTimer:
    when: float
    priority: int
    owner: str  # the name of the part that set it
    what: Any  # what the owner needs to set it again


def pending_timers(loop: Any, owners: Mapping[str, SetsTimers]) -> tuple[PendingTimer, ...]:
    """Every timer of ``loop`` still to run, in order, each named by its owner."""
    named = {id(handle): (name, what) for name, owner in owners.items()
             for handle, what in owner.pending_timers()}
    timers = []
    for handle in loop.pending_timers():
        if id(handle) not in named:
            raise RuntimeError(f"cannot checkpoint: a pending timer belongs to no part of the "
                               f"world ({handle!r})")
        name, what = named[id(handle)]
        timers.append(PendingTimer(handle.when(), handle.priority, name, what))
    return tuple(timers)


def restore_timers(timers: Iterable[PendingTimer], owners: Mapping[str, SetsTimers]) -> None:
    """Set ``timers`` again, in their order (call before anything else is scheduled)."""
    for timer in timers:
        owners[timer.owner].restore_timer(timer.what, timer.when, timer.priority)


@dataclass(frozen=True)
class WorldSnapshot:
    """Everything of a FedBuff run between two instants that the server state is not."""

    server: Any  # fedactors.server.fedbuff.FedBuffSnapshot
    devices: tuple[Any, ...]  # fedactors.devices.actor.DeviceSnapshot, one per device at work
    timers: tuple[PendingTimer, ...]
    dropped: dict[int, dict[int, float]]  # the simulator's drop tally
    traffic: tuple[int, int]  # the network's byte counters
