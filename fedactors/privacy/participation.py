"""Who took part in one release, as the privacy audit of its sampling needs it.

The server drivers fill it in (:mod:`fedactors.server.release`); the budget
reads it to say whether the sampling assumption behind ε held
(:mod:`fedactors.privacy.budget`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Participation:
    """Who took part in one release, as far as the privacy audit needs it."""

    online: Optional[int] = None  # devices online at selection (rounds only)
    selected: Optional[int] = None  # devices selected (rounds only)
    #: The round closed at a target below the selection: the slowest were cut.
    cut_at_target: bool = False
    #: The reports a round closed at (rounds only): under secure aggregation a device
    #: it closed on can still drop out, and the sum is then short of it.
    target: Optional[int] = None
    #: The devices whose contributions were summed (DP-FTRL accounts from them).
    contributors: tuple[int, ...] = ()
