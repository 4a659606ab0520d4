"""The simulated network: messages arrive after latency plus size over bandwidth.

All traffic is between the server and one device (as in the real protocols,
even device-to-device messages of secure aggregation are relayed by the
server). The server's own link is taken to be unlimited.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from fedactors.runtime.loop import DELIVERY, TIMEOUT, VirtualTimeLoop


class Links(Protocol):
    """Each device's transfer times (``fedactors.devices.fleet.Fleet`` is one)."""

    def download_time(self, device: int, nbytes: int) -> float: ...

    def upload_time(self, device: int, nbytes: int) -> float: ...


@dataclass(frozen=True)
class Deliveries:
    """Messages on the wire under one timer, in the order they arrive: what a
    checkpoint saves of it, ``(device, message)`` each (device None: the server)."""

    pairs: tuple[tuple[Optional[int], Any], ...]


class _Batch:
    """Messages of one round that arrive at one instant, one after another, on one
    timer. A round's request reaches its whole cohort at once, and a cohort training
    at one speed reports at once: one timer each instead of one per device."""

    __slots__ = ("round", "key", "handle", "pairs")

    def __init__(self, round_: int, key: int) -> None:
        self.round, self.key = round_, key
        self.handle: Optional[asyncio.TimerHandle] = None
        self.pairs: list[tuple[Optional[int], Any]] = []


class Network:
    def __init__(
        self,
        loop: VirtualTimeLoop,
        fleet: Links,
        server_mailbox: asyncio.Queue,
        deliver_to_device: Callable[[int, Any], None],
    ) -> None:
        self._loop = loop
        self._fleet = fleet
        self._server_mailbox = server_mailbox
        self._deliver = deliver_to_device
        self.bytes_down = 0
        self.bytes_up = 0
        # Deliveries still on the wire, by round, so a closed round's can be
        # dropped; a batch leaves this map when it arrives.
        self._in_flight: dict[int, dict[int, _Batch]] = {}
        self._keys = itertools.count()
        self._open: Optional[_Batch] = None  # the batch set last, while more may join it

    def _send(self, delay: float, message: Any, device: Optional[int]) -> None:
        """Deliver ``message`` after ``delay``: to ``device``, or to the server if None."""
        self._send_at(self._loop.time() + delay, message, device)

    def _send_at(self, when: float, message: Any, device: Optional[int]) -> None:
        loop = self._loop
        round_ = getattr(message, "round", None)
        if round_ is None:
            deliver, args = ((self._server_mailbox.put_nowait, (message,)) if device is None
                             else (self._deliver, (device, message)))
            loop.call_at(when, deliver, *args, priority=DELIVERY)
            return
        batch = self._open
        # Joining the batch set last runs this message right after its others, exactly
        # where a timer of its own would have run: no timer was set in between, and
        # the clock clamps a past ``when`` to now as ``call_at`` would.
        if (batch is None or batch.round != round_ or batch.handle is not loop.newest_timer()
                or not batch.handle._scheduled or batch.handle._cancelled
                or batch.handle.when() != max(float(when), loop.time())):
            batch = self._open = _Batch(round_, next(self._keys))
            batch.handle = loop.call_at(when, self._arrive, batch, priority=DELIVERY)
            self._in_flight.setdefault(round_, {})[batch.key] = batch
        batch.pairs.append((device, message))

    def _arrive(self, batch: _Batch) -> None:
        put, deliver, handle = self._server_mailbox.put_nowait, self._deliver, batch.handle
        for device, message in batch.pairs:
            if handle._cancelled:  # its round was dropped by a delivery before it
                return
            if device is None:
                put(message)
            else:
                deliver(device, message)
        on_wire = self._in_flight.get(batch.round)
        if on_wire is not None:
            on_wire.pop(batch.key, None)
            if not on_wire:
                del self._in_flight[batch.round]

    def drop_round(self, round_: int) -> None:
        """Discard every message of ``round_`` still in transit (the round is closed)."""
        for batch in self._in_flight.pop(round_, {}).values():
            batch.handle.cancel()

    # -- checkpoints -------------------------------------------------------
    def pending_timers(self) -> list[tuple[asyncio.TimerHandle, Any]]:
        """Every batch on the wire, as its :class:`Deliveries`."""
        return [(batch.handle, Deliveries(tuple(batch.pairs)))
                for on_wire in self._in_flight.values() for batch in on_wire.values()]

    def restore_timer(self, what: Any, when: float, priority: int) -> None:
        """Put checkpointed messages back on the wire, arriving at ``when``: a
        :class:`Deliveries`, or one ``(device, message)`` (checkpoints written before
        messages shared timers)."""
        for device, message in what.pairs if isinstance(what, Deliveries) else (what,):
            self._send_at(when, message, device)

    def server_timer_at(self, when: float, message: Any) -> asyncio.TimerHandle:
        """A checkpointed :meth:`server_timer`, due at ``when``."""
        return self._loop.call_at(when, self._server_mailbox.put_nowait, message, priority=TIMEOUT)

    @property
    def messages_in_flight(self) -> int:
        return sum(len(batch.pairs) for on_wire in self._in_flight.values()
                   for batch in on_wire.values())

    def to_device(self, device: int, message: Any, after: float = 0.0) -> float:
        """Send ``message`` to ``device`` once ``after`` seconds of the sender's compute
        are over; returns its simulated transfer time."""
        nbytes = message.nbytes
        delay = self._fleet.download_time(device, nbytes)
        self.bytes_down += nbytes
        self._send(after + delay, message, device)
        return delay

    def to_server(self, device: int, message: Any, after: float = 0.0) -> float:
        """Send ``message`` from ``device`` once it has computed for ``after`` seconds
        (it is on the wire, and dropped with its round, from now); returns its transfer time."""
        nbytes = message.nbytes
        delay = self._fleet.upload_time(device, nbytes)
        self.bytes_up += nbytes
        self._send(after + delay, message, None)
        return delay

    def server_timer(self, delay: float, message: Any) -> asyncio.TimerHandle:
        """Put ``message`` in the server's own mailbox after ``delay`` seconds.

        Timers rank after deliveries, so an update that arrives exactly at a
        deadline is still counted.
        """
        return self._loop.call_later(
            delay, self._server_mailbox.put_nowait, message, priority=TIMEOUT
        )
