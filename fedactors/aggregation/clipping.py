"""L2 clipping on the device, as a stage that wraps another (like tff.aggregators).

``Clipped(clip_norm, inner)`` clips each device's delta to L2 norm at most
``clip_norm`` *before* ``inner.encode`` sees it, so whatever ``inner`` sums is
built from bounded deltas. The server side is ``inner``'s, unchanged.

Non-finite deltas: a delta containing NaN or +-inf is replaced by the zero
vector (not rejected). Reasons: a NaN has no meaningful "clipped" version; a
zero delta is a valid, bounded contribution that keeps the device counted the
same way as any other (rejecting would make the count of non-finite devices
visible to the server, a side channel DP does not account for); and a single
NaN can never poison the cohort's sum. The numerics are pure functions so DP
stages reuse them (see :mod:`fedactors.privacy.dp_mean`).

No extra "was clipped" key is added to the contribution: an exact clipped count
is information about individual devices that no noise protects. DP stages that
need it (adaptive clipping) add it *with* noise accounting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from fedactors.aggregation.base import Aggregator, Wrapper
from fedactors.aggregation.fedavg import WEIGHT, WEIGHTED_DELTA, WeightedMean
from fedactors.aggregation.robust import DELTA, RobustStage
from fedactors.errors import ConfigError
from fedactors.validation import positive

# Relative shrink applied when float32 rounding leaves a clipped vector an ulp
# above the bound: float32 rounding moves the norm by at most ~6e-8 relative,
# so 1e-6 always lands strictly inside.
_SAFETY = 1.0 - 1e-6


def l2_norm(delta: np.ndarray) -> float:
    """The L2 norm in float64 (float32 overflows at ~1.8e19 per coordinate squared)."""
    return float(np.linalg.norm(np.asarray(delta, dtype=np.float64).ravel()))


def zero_if_non_finite(delta: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(delta as float32, True)``, or ``(zeros, False)`` if any entry is NaN/inf."""
    d = np.asarray(delta, dtype=np.float32)
    if np.all(np.isfinite(d)):
        return d, True
    return np.zeros_like(d), False


def clip_l2(delta: np.ndarray, clip_norm: float) -> tuple[np.ndarray, float]:
    """Clip ``delta`` to L2 norm <= ``clip_norm``; returns ``(clipped, norm_before)``.

    A delta already within the bound is returned unchanged (bit for bit), so a
    huge clip norm is exactly the identity. A zero delta needs no division. A
    non-finite delta becomes zeros and reports norm ``inf`` (it would have been
    clipped). The result is float32 and its norm, computed in float64, is
    guaranteed <= ``clip_norm``.
    """
    d, finite = zero_if_non_finite(delta)
    if not finite:
        return d, float("inf")
    norm = l2_norm(d)
    if norm <= clip_norm:
        return d.copy(), norm
    d64 = d.astype(np.float64)
    out = (d64 * (clip_norm / norm)).astype(np.float32)
    scale = 1.0
    while l2_norm(out) > clip_norm:
        # Rounding to float32 overshot; shrink a hair (at most a couple of passes).
        scale *= _SAFETY
        out = (d64 * (clip_norm / norm * scale)).astype(np.float32)
        if scale < 0.5:  # pragma: no cover - subnormal corner; zero is always safe
            out = np.zeros_like(d)
    return out, norm


class Clipped(Wrapper[Any]):
    """Clip each device's delta to L2 norm ``clip_norm``, then hand it to ``inner``.

    Everything else is ``inner``'s, its DP declaration included: clipping
    before a DP stage only tightens what that stage already bounds.

    Clipping runs on the device: a delta with norm above ``clip_norm`` is
    scaled down to it (direction kept), a smaller one passes unchanged, and a
    delta containing NaN or infinity becomes zeros. Around
    ``WeightedMean(weighted=False)`` or a robust stage it also gives the
    per-coordinate bounds secure aggregation needs. Not private by itself: add
    noise with ``DPMean``.

    Args:
        clip_norm: Largest L2 norm (> 0) of a device's delta, in the units of
            the model's weights (the norm of the flat ``local - global`` vector).
        inner: The stage that receives the clipped deltas (any ``Aggregator``).

    Examples:
        >>> import numpy as np
        >>> from fedactors.aggregation import Clipped, PlainContributions, RoundContext, WeightedMean
        >>> stage, rng = Clipped(1.0, WeightedMean(weighted=False)), np.random.default_rng(0)
        >>> deltas = [np.array([3.0, 4.0], np.float32), np.array([0.0, 0.5], np.float32)]
        >>> rows = [stage.encode({}, d, 10, rng) for d in deltas]
        >>> first = rows[0]
        >>> print(first["weighted_delta"].round(4))  # [3, 4] has norm 5: scaled to norm 1
        [0.6 0.8]
        >>> delta = stage.aggregate(None, PlainContributions(rows), RoundContext(1, 2, 2, rng)).delta
        >>> print(delta.round(4))
        [0.3 0.65]
    """

    def __init__(self, clip_norm: float, inner: Aggregator[Any]) -> None:
        self.clip_norm = positive("clip_norm", clip_norm)
        if not isinstance(inner, Aggregator):
            raise ConfigError("inner", f"must be an Aggregator, got {inner!r}")
        super().__init__(inner)

    def clip_bound(self, params: Mapping[str, Any]) -> Optional[float]:
        return float(self.clip_norm)

    def __repr__(self) -> str:
        return f"Clipped(clip_norm={self.clip_norm!r}, inner={self.inner!r})"

    def encode(
        self,
        params: Mapping[str, Any],
        delta: np.ndarray,
        num_examples: int,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        clipped, _ = clip_l2(delta, self.clip_norm)
        return self.inner.encode(params, clipped, num_examples, rng)

    def contribution_bounds(self, params: Mapping[str, Any], dim: int) -> dict[str, float]:
        bounds = dict(self.inner.contribution_bounds(params, dim))
        if isinstance(self.inner, WeightedMean) and not self.inner.weighted:
            # Unweighted mean of clipped deltas: each coordinate is at most the
            # vector's norm, and every weight is exactly 1.
            bounds.update({WEIGHTED_DELTA: self.clip_norm, WEIGHT: 1.0})
        elif isinstance(self.inner, RobustStage):
            # Robust stages send the clipped delta itself: no coordinate exceeds its norm.
            bounds[DELTA] = self.clip_norm
        return bounds
