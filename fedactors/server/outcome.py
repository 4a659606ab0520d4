"""What one release looked like, whichever driver made it, and its metrics.jsonl row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from fedactors.reporting.closed_by import NOT_BY_DEADLINE
from fedactors.server.screening import REJECT_REASONS


@dataclass(frozen=True)
class ReleaseOutcome:
    """One release (a synchronous round or a FedBuff buffer), as the server saw it.

    ``given_up`` lists the ``(key, device)`` pairs the server stopped waiting
    for: ``(round, device)`` for selected devices that did not report in a
    round, ``(ticket, device)`` for FedBuff dispatches that timed out. The
    simulator's ground truth (who really dropped) is keyed the same way.
    """

    round: int  # the model version this release produced (1, 2, ...)
    start: float
    end: float
    selected: tuple[int, ...]  # devices asked to train for this release
    reported: tuple[int, ...]  # devices whose contribution was summed
    #: "target", "all-reported" (a Poisson round: every sampled device reported),
    #: "deadline", "nobody-online", "nobody-selected" or "buffer"
    closed_by: str
    applied: bool
    rejected: dict[str, int]
    measurements: dict[str, Any]
    metrics: dict[str, float]
    given_up: tuple[tuple[int, int], ...] = ()
    # FedBuff only: per-update staleness and its weight, devices still training.
    staleness: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    in_flight: Optional[int] = None
    #: Each reported contribution's share in the release, in ``reported`` order (robust
    #: stages: Krum's choice, the coordinates kept); empty: every one counted in full.
    shares: tuple[float, ...] = ()
    #: Secure aggregation: the devices a deadline cut (the round's or a protocol step's);
    #: the others given up were not needed. None: decided by ``closed_by`` alone.
    late_devices: Optional[frozenset[int]] = None
    #: Selected devices whose update came in time and was refused for its contents
    #: (malformed, not finite, out of bounds, an outlier): not in ``given_up``.
    refused: tuple[int, ...] = ()


def metrics_row(outcome: ReleaseOutcome, tally: Any, traffic: tuple[int, int]) -> dict:
    """One metrics.jsonl line: the server's view plus the simulator's ground truth.

    ``dropped``: devices the server gave up on that had in fact gone silent;
    the rest of those given up were still working: ``late`` if the release
    was closed by a deadline or timeouts, ``surplus`` (simply not needed) if
    it was closed at its target or, a Poisson round, once every sampled device
    had reported. Under secure aggregation the collection says
    which devices a deadline cut (``late_devices``: the round's deadline while
    keys were taken, or a protocol step's); the others were not needed: not
    admitted once the target was met, or their work discarded by an abort.
    """
    dropped, missing = 0, []
    for key in sorted({k for k, _ in outcome.given_up}):
        silent = tally.take(key, outcome.end)
        for k, d in outcome.given_up:
            if k != key:
                continue
            if d in silent:
                dropped += 1
            else:
                missing.append(d)
    if outcome.late_devices is None:
        late = 0 if outcome.closed_by in NOT_BY_DEADLINE else len(missing)
    else:
        late = sum(1 for d in missing if d in outcome.late_devices)
    row: dict[str, Any] = {
        "round": outcome.round,
        "time": outcome.end,
        "duration": outcome.end - outcome.start,
        "selected": len(outcome.selected),
        "reported": len(outcome.reported),
        "dropped": dropped,
        "late": late,
        "surplus": len(missing) - late,
        "refused": len(outcome.refused),
        "closed_by": outcome.closed_by,
        "applied": outcome.applied,
        "bytes_down": traffic[0],
        "bytes_up": traffic[1],
    }
    if outcome.in_flight is not None:
        staleness = np.asarray(outcome.staleness, np.float64)
        row["in_flight"] = outcome.in_flight
        row["staleness_mean"] = float(staleness.mean()) if staleness.size else 0.0
        row["staleness_max"] = int(staleness.max()) if staleness.size else 0
    for reason in REJECT_REASONS:
        row[f"rejected_{reason}"] = outcome.rejected.get(reason, 0)
    row.update(outcome.measurements)
    row.update(outcome.metrics)
    return row
