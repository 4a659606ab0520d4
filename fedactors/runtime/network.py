"""The simulated network: messages arrive after latency plus size over bandwidth.

All traffic is between the server and one device (as in the real protocols,
even device-to-device messages of secure aggregation are relayed by the
server). The server's own link is taken to be unlimited.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any, Optional, Protocol

from fedactors.runtime.loop import DELIVERY, TIMEOUT, VirtualTimeLoop


class Links(Protocol):
    """Each device's transfer times (``fedactors.devices.fleet.Fleet`` is one)."""

    def download_time(self, device: int, nbytes: int) -> float: ...

    def upload_time(self, device: int, nbytes: int) -> float: ...


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
        # dropped; a delivery leaves this map when it arrives. Each is
        # (timer, device or None for the server, message), for checkpoints.
        self._in_flight: dict[int, dict[int, tuple[asyncio.TimerHandle, Optional[int], Any]]] = {}
        self._keys = itertools.count()

    def _send(self, delay: float, message: Any, device: Optional[int]) -> None:
        """Deliver ``message`` after ``delay``: to ``device``, or to the server if None."""
        self._send_at(self._loop.time() + delay, message, device)

    def _send_at(self, when: float, message: Any, device: Optional[int]) -> None:
        deliver, args = ((self._server_mailbox.put_nowait, (message,)) if device is None
                         else (self._deliver, (device, message)))
        round_ = getattr(message, "round", None)
        if round_ is None:
            self._loop.call_at(when, deliver, *args, priority=DELIVERY)
            return
        key = next(self._keys)
        handle = self._loop.call_at(when, self._arrive, round_, key, deliver, *args,
                                    priority=DELIVERY)
        self._in_flight.setdefault(round_, {})[key] = (handle, device, message)

    def _arrive(self, round_: int, key: int, deliver: Callable[..., None], *args: Any) -> None:
        on_wire = self._in_flight.get(round_)
        if on_wire is not None:
            on_wire.pop(key, None)
            if not on_wire:
                del self._in_flight[round_]
        deliver(*args)

    def drop_round(self, round_: int) -> None:
        """Discard every message of ``round_`` still in transit (the round is closed)."""
        for handle, _, _ in self._in_flight.pop(round_, {}).values():
            handle.cancel()

    # -- checkpoints -------------------------------------------------------
    def pending_timers(self) -> list[tuple[asyncio.TimerHandle, Any]]:
        """Every message on the wire, as ``(device or None for the server, message)``."""
        return [(handle, (device, message)) for on_wire in self._in_flight.values()
                for handle, device, message in on_wire.values()]

    def restore_timer(self, what: tuple[Optional[int], Any], when: float, priority: int) -> None:
        """Put a checkpointed message back on the wire, arriving at ``when``."""
        device, message = what
        self._send_at(when, message, device)

    def server_timer_at(self, when: float, message: Any) -> asyncio.TimerHandle:
        """A checkpointed :meth:`server_timer`, due at ``when``."""
        return self._loop.call_at(when, self._server_mailbox.put_nowait, message, priority=TIMEOUT)

    @property
    def messages_in_flight(self) -> int:
        return sum(len(on_wire) for on_wire in self._in_flight.values())

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
