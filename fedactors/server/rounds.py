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
      by the random number selected or reported. A Poisson round is never cut
      at ``cohort_size`` reports: every sampled device that reports by the
      deadline is summed (docs/privacy.md).

    ``outlier_factor``: once the round closes, an update whose L2 norm on an
    unbounded key is more than this many times the cohort's median is rejected
    as an outlier (see ``fedactors.server.screening``); ``None`` turns the
    screen off.

    In ``Scenario(mode=FedBuff(...))`` only ``count``, ``deadline`` (then a
    per-device timeout) and ``eval_every`` are used (docs/async.md); the
    scenario refuses any other field set away from its default.

    Args:
        count: Number of rounds to run (under FedBuff: of server updates).
            Default 10.
        cohort_size: Target number of updates per round, the ``expected_count``
            a DP aggregator divides by and is calibrated for. At most the fleet
            size; at least 2 with secure aggregation. Default 10.
        over_selection: Factor (>= 1) by which the server over-selects to
            absorb dropouts and stragglers: it selects
            ``ceil(cohort_size * over_selection)`` devices (``selected_size``)
            and, under ``"fixed_size"`` sampling, closes the round at the first
            ``cohort_size`` reports. Default 1.0 (no over-selection).
        deadline: Simulated seconds the server waits for reports before
            closing the round with what arrived. Default 600.0.
        min_reports: Fewest reports (1 to ``cohort_size``) for a round to be
            aggregated; below it the round is skipped. Default 1. DP-FTRL
            (``DPMean.tree``) ignores it: it releases its noise every round
            (docs/privacy.md, "DP-FTRL"); so does DP-FedAvg with central noise
            on ``"poisson"`` rounds, where a value above 1 is refused by the
            scenario (a skip would reveal how many took part).
        eval_every: Evaluate the global model on the server's test set every
            this many rounds. Default 1 (every round).
        sampling: ``"fixed_size"`` (default) or ``"poisson"``, as above; the
            privacy accountant uses the same sampling (``"pld"`` accounting
            needs ``"poisson"``).
        outlier_factor: Reject an update whose L2 norm, on a key the aggregator
            does not bound, exceeds this multiple (>= 1) of the cohort's median
            norm on that key; ``None`` disables the screen. Default 1e6, which
            only catches updates many orders of magnitude off.

    Examples:
        >>> from fedactors import Rounds
        >>> rounds = Rounds(count=50, cohort_size=20, over_selection=1.5, deadline=120.0,
        ...                 min_reports=10)
        >>> rounds.selected_size
        30
        >>> Rounds(cohort_size=20, over_selection=1.5, sampling="poisson").poisson_rate(population=300)
        0.1
        >>> Rounds(cohort_size=5, min_reports=6)
        Traceback (most recent call last):
            ...
        fedactors.errors.ConfigError: min_reports: 6 is more than cohort_size 5: ...
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
        """``ceil(cohort_size * over_selection)``: the devices a round selects.

        Under ``"poisson"`` sampling it is the expected number selected when the
        whole fleet is online.
        """
        return math.ceil(self.cohort_size * self.over_selection)

    def poisson_rate(self, population: int) -> float:
        """Per-device inclusion probability under ``sampling="poisson"``."""
        return min(1.0, self.selected_size / population)
