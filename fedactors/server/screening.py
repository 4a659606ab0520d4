"""What the server checks in an update's contents before it counts it.

Two kinds of check, for two reasons:

* **One update alone** (:func:`screen_contribution`, at receipt): the keys,
  shapes and dtypes must be exactly what the aggregator's ``encode`` produces
  (``Aggregator.contribution_spec``), every float must be finite, and any key
  the aggregator bounds (``Aggregator.contribution_bounds``, e.g. a clipped
  delta) must be within its bound. These need nothing but the update, so they
  cost an honest device nothing and do not depend on who else reported.
* **Against the cohort** (:func:`norm_outliers`, at aggregation time, when the
  whole cohort is in): an update whose L2 norm on some key is more than
  ``factor`` times the cohort's median norm on that key. Only *unbounded* keys
  are screened this way: a bounded key is already checked on its own, and
  rejecting a bounded (e.g. DP-clipped) update because of what *other* devices
  sent would make one device's fate depend on another's data, which the DP
  accountant does not cover.

Reasons are the strings counted as ``rejected_<reason>`` in metrics.jsonl.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from fedactors.aggregation.base import Aggregator, Contribution
from fedactors.arrays import stack_rows

MALFORMED = "malformed"  # not an Update, or wrong keys, shapes or dtypes
NONFINITE = "nonfinite"  # a NaN or an infinity anywhere
OUT_OF_BOUNDS = "out_of_bounds"  # beyond a bound the aggregator guarantees
OUTLIER = "outlier"  # norm far above the cohort median

#: Every reason an update can be refused; each is a ``rejected_<reason>``
#: count in metrics.jsonl. The first four are about *when* and *from whom* an
#: update came, the rest about what it holds; ``stale`` is FedBuff's.
REJECT_REASONS = ("late", "future", "foreign", "duplicate", MALFORMED, NONFINITE,
                  OUT_OF_BOUNDS, OUTLIER, "stale")


@dataclass(frozen=True)
class Expectation:
    """What a well-formed contribution looks like in one round."""

    spec: Mapping[str, tuple[tuple[int, ...], np.dtype]]
    bounds: Mapping[str, float]

    def __post_init__(self) -> None:
        # Shapes as tuples and dtypes as np.dtype once, not on every update's check
        # (comparing an array's dtype with a scalar type converts the type each time).
        object.__setattr__(self, "spec", {k: (tuple(shape), np.dtype(dtype))
                                          for k, (shape, dtype) in self.spec.items()})

    @classmethod
    def for_round(cls, aggregator: Aggregator, params: Mapping[str, Any], dim: int) -> Expectation:
        return cls(dict(aggregator.contribution_spec(params, dim)),
                   dict(aggregator.contribution_bounds(params, dim)))

    @property
    def unbounded_keys(self) -> tuple[str, ...]:
        """Float keys with no guaranteed bound: the ones screened against the cohort."""
        return tuple(sorted(k for k, (_, dtype) in self.spec.items()
                            if k not in self.bounds and np.dtype(dtype).kind == "f"))


def screen_contribution(contribution: Any, expect: Expectation) -> Optional[str]:
    """Why ``contribution`` is unacceptable on its own (None if it is fine)."""
    if _malformed(contribution, expect):
        return MALFORMED
    for value in contribution.values():
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            return NONFINITE
    for key, bound in expect.bounds.items():
        value = contribution[key]
        if value.size and float(np.abs(value).max()) > bound:
            return OUT_OF_BOUNDS
    return None


def screen_contributions(contributions: Sequence[Any], expect: Expectation) -> list[Optional[str]]:
    """:func:`screen_contribution` of each, the same verdicts, with the array checks
    done once over the well-formed ones stacked (a round's updates arrive together,
    and one NumPy call per key per update was most of their cost)."""
    verdicts: list[Optional[str]] = [MALFORMED if _malformed(c, expect) else None
                                     for c in contributions]
    rows = [c for c, verdict in zip(contributions, verdicts) if verdict is None]
    if not rows:
        return verdicts
    nonfinite = np.zeros(len(rows), bool)
    for key, (_, dtype) in expect.spec.items():
        if dtype.kind in "fc":
            nonfinite |= ~np.isfinite(_stacked(rows, key)).all(axis=1)
    beyond = np.zeros(len(rows), bool)
    for key, bound in expect.bounds.items():
        stacked = _stacked(rows, key)
        if stacked.shape[1]:
            # Compared in float64, as float(max) > bound is: a float32 comparison would
            # round the bound first.
            beyond |= np.abs(stacked).max(axis=1).astype(np.float64) > bound
    found = iter(np.where(nonfinite, 1, np.where(beyond, 2, 0)).tolist())
    reasons = (None, NONFINITE, OUT_OF_BOUNDS)
    return [verdict if verdict is not None else reasons[next(found)] for verdict in verdicts]


def _malformed(contribution: Any, expect: Expectation) -> bool:
    """Not the keys, shapes and dtypes ``encode`` produces."""
    spec = expect.spec
    # ``type(...) is dict`` first: what every stock ``encode`` returns, and a quicker
    # check than the ABC's (one per update per round).
    if (type(contribution) is not dict and not isinstance(contribution, Mapping)
            or contribution.keys() != spec.keys()):
        return True
    for key, (shape, dtype) in spec.items():
        value = contribution[key]
        if not isinstance(value, np.ndarray) or value.shape != shape or value.dtype != dtype:
            return True
    return False


def _stacked(rows: Sequence[Mapping[str, np.ndarray]], key: str) -> np.ndarray:
    """``key`` of every row, one flat row each: (len(rows), size)."""
    return stack_rows([row[key] for row in rows]).reshape(len(rows), -1)


def row_norms(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Each row's L2 norm in float64 (``aggregation.clipping.l2_norm``, i.e.
    ``np.linalg.norm``'s arithmetic for a vector: the square root of its dot product
    with itself), the same bits, with the conversion to float64 done once for all
    rows (it was most of the cost).

    Each row keeps its own BLAS dot product, not one reduction over the stacked
    array (``np.linalg.norm(axis=1)``, ``einsum``): those sum in another order and
    the ratios :func:`norm_outliers` reports are compared to the last bit. Rows
    start on 16-byte boundaries, as a fresh float64 copy of one row does, so a kernel
    that peels by alignment sees the same layout.
    """
    if not rows:
        return np.zeros(0)
    size = rows[0].size
    wide = np.empty((len(rows), size + (size & 1)), np.float64)[:, :size]
    wide[...] = stack_rows(rows).reshape(len(rows), size)
    return np.array([math.sqrt(row.dot(row)) for row in wide])


def norm_outliers(
    contributions: Mapping[int, Contribution], keys: tuple[str, ...], factor: Optional[float]
) -> dict[int, tuple[str, float]]:
    """Senders whose norm on some key exceeds ``factor`` x the cohort median, with
    ``(key, norm / median)`` for the first such key.

    The *lower* median (the ``(n-1)//2``-th smallest norm) is used so that with
    two updates, one honest and one huge, the honest one sets the scale. A key
    whose median norm is zero is not screened: every multiple of zero is zero,
    and such a cohort has nothing to compare against. ``factor=None`` disables
    the screen.
    """
    if factor is None or not contributions:
        return {}
    senders = sorted(contributions)
    out: dict[int, tuple[str, float]] = {}
    for key in keys:
        norms = row_norms([contributions[s][key] for s in senders])
        median = float(np.sort(norms)[(len(norms) - 1) // 2])
        if median <= 0.0:
            continue
        for s, norm in zip(senders, norms):
            if norm > factor * median and s not in out:
                out[s] = (key, float(norm / median))
    return out
