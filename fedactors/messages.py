"""The messages actors exchange. Each knows its size on the wire.

Transfer time is simulated from ``nbytes``, the real size of the arrays a
message carries plus a small fixed header, so a bigger model really is slower
to ship to a phone on a slow uplink.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

HEADER_BYTES = 64


def payload_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    return HEADER_BYTES + sum(int(np.asarray(a).nbytes) for a in arrays.values())


@dataclass(frozen=True)
class TrainRequest:
    """Server to device: train on your data from these global weights."""

    round: int
    weights: np.ndarray = field(repr=False)
    #: Absolute simulated time after which the server no longer listens.
    deadline: float
    #: The aggregator's broadcast parameters (e.g. the current clip norm).
    params: Mapping[str, Any] = field(default_factory=dict)
    #: Secure aggregation's public parameters (a ``SecAggSetup``), or None.
    secagg: Any = field(default=None, repr=False)

    @cached_property  # one request goes to a whole cohort: sized once
    def nbytes(self) -> int:
        extra = self.secagg.nbytes if self.secagg is not None else 0
        return HEADER_BYTES + int(self.weights.nbytes) + extra


@dataclass(frozen=True)
class Update:
    """Device to server: my encoded contribution for ``round``."""

    round: int
    sender: int
    contribution: Mapping[str, np.ndarray] = field(repr=False)

    @cached_property  # read for the transfer time and for the byte tally
    def nbytes(self) -> int:
        return payload_bytes(self.contribution)


@dataclass(frozen=True)
class RoundDeadline:
    """The server's own timer: round ``round`` stops listening now."""

    round: int
    nbytes: int = 0
