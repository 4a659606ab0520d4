"""How much an update that started from an old model still counts (asynchronous FL).

Staleness ``s`` of an update = server model version when it is aggregated -
the version the device started from. A weighting turns ``s`` into a factor
applied to the update's delta before it is summed (FedBuff, Nguyen et al.
2022, sec. 3; FedAsync, Xie et al. 2019, sec. 5.2 for the hinge form).
The numerics are pure functions of an integer array so the tests can state
them exactly.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedactors.aggregation.clipping import clip_l2
from fedactors.aggregation.fedavg import WEIGHT
from fedactors.validation import non_negative, positive

#: Contribution keys that are weights or counts, never deltas, even for a model
#: whose size happens to be 1 (DP's below-clip record is named here rather than
#: imported so this module does not pull in TensorFlow).
_NOT_DELTAS = frozenset({WEIGHT, "below_clip"})


class StalenessWeight(abc.ABC):
    """Maps staleness (integers >= 0) to weights in (0, 1]."""

    @abc.abstractmethod
    def __call__(self, staleness: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Polynomial(StalenessWeight):
    """``(1 + s) ** -exponent``; FedBuff's default is ``exponent=0.5``, i.e. 1/sqrt(1+s)."""

    exponent: float = 0.5

    def __post_init__(self) -> None:
        non_negative("staleness.exponent", self.exponent)

    def __call__(self, staleness: np.ndarray) -> np.ndarray:
        s = np.asarray(staleness, np.float64)
        return (1.0 + s) ** -float(self.exponent)


@dataclass(frozen=True)
class Unweighted(StalenessWeight):
    """Every update counts fully, however stale (weight 1)."""

    def __call__(self, staleness: np.ndarray) -> np.ndarray:
        return np.ones(np.shape(staleness), np.float64)


@dataclass(frozen=True)
class Hinge(StalenessWeight):
    """1 while ``s <= cutoff``, then ``1 / (slope * (s - cutoff) + 1)`` (FedAsync's hinge)."""

    slope: float = 1.0
    cutoff: float = 0.0

    def __post_init__(self) -> None:
        positive("staleness.slope", self.slope)
        non_negative("staleness.cutoff", self.cutoff)

    def __call__(self, staleness: np.ndarray) -> np.ndarray:
        s = np.asarray(staleness, np.float64)
        # Only staleness past the cutoff counts. Clamping it at 0, rather than choosing with
        # np.where (which computes both branches), keeps the denominator >= 1 for every s:
        # below the cutoff the discarded branch would divide by zero (s = cutoff - 1/slope)
        # or go negative, and numpy would print its warning on the user's terminal.
        excess = np.maximum(s - float(self.cutoff), 0.0)
        # A slope * excess past float64 gives weight 1/inf = 0 (the true one is below 1e-305).
        with np.errstate(over="ignore", under="ignore"):
            return np.asarray(1.0 / (float(self.slope) * excess + 1.0))


def _is_delta(key: str, value: np.ndarray, dim: int) -> bool:
    """A model-shaped float array: the (weighted, clipped, ...) delta, not a weight or count."""
    return key not in _NOT_DELTAS and value.shape == (dim,) and value.dtype.kind == "f"


def clip_to_release(contribution: Mapping[str, np.ndarray], bound: float,
                    dim: int) -> tuple[dict[str, np.ndarray], bool]:
    """``contribution`` with its delta clipped to L2 norm ``bound``, and whether it was.

    A device clips to the bound of the version it was sent; its update may join
    a later release whose bound is smaller (adaptive clipping moved it, a
    DP-FTRL tree restarted at another), and that release's noise covers only
    records within its own bound. A delta already within it is kept bit for bit.
    """
    out, clipped = {}, False
    for key, value in contribution.items():
        arr = np.asarray(value)
        if _is_delta(key, arr, dim):
            arr, norm = clip_l2(arr, bound)
            clipped |= norm > bound
        out[key] = arr
    return out, clipped


def scale_delta(contribution: dict[str, np.ndarray], factor: float, dim: int) -> dict[str, np.ndarray]:
    """``contribution`` with its model-shaped arrays multiplied by ``factor``.

    Why only the model-shaped arrays: they are the (weighted, clipped, ...)
    delta; the scalar entries are weights and counts (FedAvg's example weight,
    DP's below-clip indicator). Scaling the delta but not its weight gives
    FedBuff's ``sum_i s_i w_i delta_i / sum_i w_i``; scaling the weight too
    would cancel the discount out of a weighted mean. With ``factor <= 1`` a
    clipped delta stays within its clip norm, so DP's sensitivity still holds.
    The product is taken in float64 and rounded once, back to the array's dtype.
    """
    out = {}
    for key, value in contribution.items():
        arr = np.asarray(value)
        if _is_delta(key, arr, dim):
            out[key] = (arr.astype(np.float64) * float(factor)).astype(arr.dtype)
        else:
            out[key] = arr
    return out
