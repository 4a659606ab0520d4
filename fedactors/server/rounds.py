"""How the server runs rounds: cohort size, over-selection, deadline."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from fedactors.errors import ConfigError
from fedactors.validation import finite, positive, positive_int

SAMPLINGS = ("fixed_size", "poisson")


@dataclass(frozen=True)
class Rounds:
    """The server's round policy.

    Each round the server selects ``ceil(cohort_size * over_selection)`` of the
    devices online, waits for ``cohort_size`` updates or ``deadline`` simulated
    seconds, whichever comes first, and aggregates if at least ``min_reports``
    arrived (otherwise the round is skipped and the model left unchanged).

    ``sampling`` is how the selected devices are drawn from those online:

    * ``"fixed_size"`` (default): ``selected_size`` of them uniformly without
      replacement (all of them if fewer are online).
    * ``"poisson"``: each online device independently with probability
      ``q = min(1, selected_size / N)`` (``N`` the fleet size), so the number
      selected varies from round to round (mean ``q * online``). The round's
      ``expected_count`` stays ``cohort_size``: a DP mean divides by it, never
      by the random number selected or reported.
    ``outlier_factor``: once the round closes, an update whose L2 norm on an
    unbounded key is more than this many times the cohort's median is rejected
    as an outlier (see :mod:`fedactors.server.screening`); ``None`` turns the
    screen off.
    """

    count: int = 10
    cohort_size: int = 10
    over_selection: float = 1.0
    deadline: float = 600.0
    min_reports: int = 1
    eval_every: int = 1
    sampling: str = "fixed_size"
    outlier_factor: Optional[float] = 1e6

    def __post_init__(self) -> None:
        positive_int("count", self.count)
        positive_int("cohort_size", self.cohort_size)
        if finite("over_selection", self.over_selection) < 1.0:
            raise ConfigError(
                "over_selection", f"must be >= 1 (select at least the target), got {self.over_selection!r}"
            )
        positive("deadline", self.deadline)
        positive_int("min_reports", self.min_reports)
        if self.min_reports > self.cohort_size:
            raise ConfigError(
                "min_reports",
                f"{self.min_reports} is more than cohort_size {self.cohort_size}: "
                "no round could ever be aggregated",
            )
        positive_int("eval_every", self.eval_every)
        if self.sampling not in SAMPLINGS:
            raise ConfigError("sampling", f"must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.outlier_factor is not None and finite("outlier_factor", self.outlier_factor) < 1.0:
            # Below 1 even the median update would be "an outlier".
            raise ConfigError("outlier_factor", f"must be >= 1 or None, got {self.outlier_factor!r}")

    @property
    def selected_size(self) -> int:
        return math.ceil(self.cohort_size * self.over_selection)

    def poisson_rate(self, population: int) -> float:
        """Per-device inclusion probability under ``sampling="poisson"``."""
        return min(1.0, self.selected_size / population)
