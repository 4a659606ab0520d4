"""How a round closed (``closed_by`` in ``round.end`` events and metrics.jsonl), and what
that makes of the selected devices still working: shared by the server, which writes it,
and the report, which reads it back from the log."""

from __future__ import annotations

from typing import Optional

#: Closed at the round deadline: devices still working are ``late``.
DEADLINE = "deadline"
#: A fixed-size round closed once ``cohort_size`` reports were in.
TARGET = "target"
#: A Poisson round whose every sampled device reported (it has no target).
ALL_REPORTED = "all-reported"
#: Closed before the deadline because the reports waited for were in: devices given up
#: on then were not needed (``surplus``), not ``late``.
NOT_BY_DEADLINE = (TARGET, ALL_REPORTED)


def cut_as(closed_by: Optional[str]) -> Optional[str]:
    """What a round that closed this way made of work still going: ``"late"``,
    ``"surplus"``, or None (nothing was cut by the close)."""
    if closed_by == DEADLINE:
        return "late"
    return "surplus" if closed_by in NOT_BY_DEADLINE else None
