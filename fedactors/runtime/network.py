"""The simulated network: messages arrive after latency plus size over bandwidth.

All traffic is between the server and one device (as in the real protocols,
even device-to-device messages of secure aggregation are relayed by the
server). The server's own link is taken to be unlimited.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from fedactors.devices.fleet import Fleet
from fedactors.runtime.loop import DELIVERY, TIMEOUT, VirtualTimeLoop


class Network:
    def __init__(
        self,
        loop: VirtualTimeLoop,
        fleet: Fleet,
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
        # dropped; a delivery leaves this map when it arrives.
        self._in_flight: dict[int, dict[int, asyncio.TimerHandle]] = {}
        self._keys = itertools.count()

    def _send(self, delay: float, message: Any, deliver: Callable[..., None], *args: Any) -> None:
        round_ = getattr(message, "round", None)
        if round_ is None:
            self._loop.call_later(delay, deliver, *args, priority=DELIVERY)
            return
        key = next(self._keys)
        self._in_flight.setdefault(round_, {})[key] = self._loop.call_later(
            delay, self._arrive, round_, key, deliver, *args, priority=DELIVERY
        )

    def _arrive(self, round_: int, key: int, deliver: Callable[..., None], *args: Any) -> None:
        on_wire = self._in_flight.get(round_)
        if on_wire is not None:
            on_wire.pop(key, None)
            if not on_wire:
                del self._in_flight[round_]
        deliver(*args)

    def drop_round(self, round_: int) -> None:
        """Discard every message of ``round_`` still in transit (the round is closed)."""
        for handle in self._in_flight.pop(round_, {}).values():
            handle.cancel()

    @property
    def messages_in_flight(self) -> int:
        return sum(len(on_wire) for on_wire in self._in_flight.values())

    def to_device(self, device: int, message: Any) -> float:
        """Send ``message`` to ``device``; returns its simulated transfer time."""
        delay = self._fleet.download_time(device, message.nbytes)
        self.bytes_down += message.nbytes
        self._send(delay, message, self._deliver, device, message)
        return delay

    def to_server(self, device: int, message: Any) -> float:
        delay = self._fleet.upload_time(device, message.nbytes)
        self.bytes_up += message.nbytes
        self._send(delay, message, self._server_mailbox.put_nowait, message)
        return delay

    def server_timer(self, delay: float, message: Any) -> asyncio.TimerHandle:
        """Put ``message`` in the server's own mailbox after ``delay`` seconds.

        Timers rank after deliveries, so an update that arrives exactly at a
        deadline is still counted.
        """
        return self._loop.call_later(
            delay, self._server_mailbox.put_nowait, message, priority=TIMEOUT
        )
