"""The event log: every simulated happening as one structlog JSON line.

Each line carries the simulated time ``t``, the ``actor`` and the ``event``
first, then its fields. No wall-clock value ever goes in, so two runs with the
same seed write byte-identical logs.

Every line is strict JSON (RFC 8259), which has no NaN or infinity: a
non-finite number in a field (a device's ``train_loss`` on data holding a NaN,
say) is written as ``null``, at any depth. Records kept in memory
(``keep=True``) hold the values as emitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, TextIO

import numpy as np
import structlog

from fedactors.reporting import strict_json


def _plain(value: Any) -> Any:
    """Numpy values as the JSON-ready Python values they stand for."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


class EventLog:
    """Writes events to a text stream and/or keeps them in memory."""

    def __init__(
        self,
        clock: Callable[[], float],
        stream: Optional[TextIO] = None,
        keep: bool = False,
        device_events: bool = True,
    ) -> None:
        self._clock = clock
        self.records: list[dict[str, Any]] = []
        self._keep = keep
        self.device_events = device_events
        self._stream = stream
        self._logger = structlog.wrap_logger(
            structlog.PrintLogger(stream) if stream is not None else None,
            processors=[self._order, self._collect, self._render],
            context_class=dict,
        )

    def _order(self, _logger: Any, _method: str, event_dict: dict) -> dict:
        head = {"t": round(self._clock(), 9), "actor": event_dict.pop("actor"),
                "event": event_dict.pop("event")}
        head.update((k, _plain(v)) for k, v in event_dict.items())
        return head

    def _collect(self, _logger: Any, _method: str, event_dict: dict) -> dict:
        if self._keep:
            self.records.append(dict(event_dict))
        if self._stream is None:
            raise structlog.DropEvent
        return event_dict

    @staticmethod
    def _render(_logger: Any, _method: str, event_dict: dict) -> str:
        return strict_json.dumps(event_dict, separators=(",", ":"))

    def emit(self, actor: str, event: str, **fields: Any) -> None:
        if self._stream is None and not self._keep:
            return
        self._logger.info(event, actor=actor, **fields)

    def device(self, device: int, event: str, **fields: Any) -> None:
        """A per-device event; skipped when device events are off (huge fleets)."""
        if self.device_events:
            self.emit(f"device-{device}", event, **fields)
