"""Names both budgets (DP-FedAvg's and DP-FTRL's) use in what a run claims."""

from __future__ import annotations

import math
from typing import Optional

#: ``summary.json`` ``stopped`` value when the budget ended the run.
STOPPED_BY_BUDGET = "privacy-budget"
#: The two kinds of release a run can make.
ROUNDS, BUFFERS = "rounds", "buffers"


def json_epsilon(value: float) -> Optional[float]:
    """``inf`` (no noise) as JSON ``null``: strict JSON has no infinity."""
    return None if math.isinf(value) else value
