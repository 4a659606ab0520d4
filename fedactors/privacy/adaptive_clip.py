"""DP-FedAvg whose clip norm tracks a quantile of the update norms: ``QuantileAdaptiveClipSumQuery``.

Andrew et al. 2021 ("Differentially private learning with adaptive
clipping"): besides its clipped delta, each device reports whether its norm
was at or below the current C (+0.5 or -0.5); the server adds noise to that
sum too and moves C toward the target quantile. One release is two Gaussian
mechanisms on the same cohort (the vector and the count), composed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import dp_accounting

from fedactors.errors import ConfigError
from fedactors.privacy.dp_queries import QuantileAdaptiveClipSumQuery
from fedactors.privacy.gaussian_mean import CLIPPED_DELTA, GaussianDPMean
from fedactors.validation import non_negative, positive_int, probability

#: The query's "was unclipped" record: +0.5 if norm <= C else -0.5 (summed).
BELOW_CLIP = "below_clip"
#: The below-clip record is a scalar of absolute value 0.5: its sensitivity.
BELOW_CLIP_SENSITIVITY = 0.5


@dataclass(frozen=True)
class AdaptiveClipping:
    """Parameters of quantile-tracking clipping (Andrew et al. 2021).

    ``clipped_count_stddev`` defaults to ``expected_count / 20``, the paper's
    suggestion; ``learning_rate`` 0.2 with geometric updates is also theirs.

    Each round every device also reports whether its update's norm was at or
    below the current clip norm C (as +0.5 or -0.5); the server sums these,
    adds Gaussian noise, estimates the fraction ``b`` of unclipped updates
    (clamped to [0, 1]) and moves C toward the ``target_quantile`` of the
    update norms: ``C * exp(-learning_rate * (b - target_quantile))``
    (geometric) or ``C - learning_rate * (b - target_quantile)``. Usually
    built for you by ``DPMean.adaptive_clipping``.

    Args:
        target_quantile: Fraction in [0, 1] of updates that should be
            unclipped, i.e. the quantile of the update norms C tracks.
            Default 0.5 (the median).
        learning_rate: Step (>= 0) of the clip update. Geometric: C changes by
            at most a factor ``exp(learning_rate)`` per round; arithmetic: by at
            most ``learning_rate`` (in the units of the norm). 0 keeps C fixed
            (while still spending the count noise). Default 0.2.
        clipped_count_stddev: Standard deviation of the Gaussian noise on the
            summed below-clip values, in devices (each device moves the sum by
            at most 0.5). It composes with the vector noise into the release's
            effective multiplier ``(z**-2 + (2 * clipped_count_stddev)**-2) ** -0.5``.
            0 makes the count exact and ε infinite. ``None`` (default):
            ``expected_count / 20``.
        geometric: True (default): multiplicative updates, which suit norms that
            may be very large or very small and keep C positive. False:
            additive updates.

    Examples:
        >>> from fedactors.privacy import AdaptiveClipDPMean, AdaptiveClipping
        >>> cfg = AdaptiveClipping(target_quantile=0.8, learning_rate=0.2)
        >>> agg = AdaptiveClipDPMean(0.1, noise_multiplier=1.0, expected_count=100, adaptive=cfg)
        >>> agg.clipped_count_stddev  # the default: expected_count / 20
        5.0
        >>> agg.private_release().noise_multiplier  # the count noise composed in
        0.995...
    """

    target_quantile: float = 0.5
    learning_rate: float = 0.2
    clipped_count_stddev: Optional[float] = None
    geometric: bool = True

    def __post_init__(self) -> None:
        probability("target_quantile", self.target_quantile)
        non_negative("learning_rate", self.learning_rate)
        if self.clipped_count_stddev is not None:
            non_negative("clipped_count_stddev", self.clipped_count_stddev)


class AdaptiveClipDPMean(GaussianDPMean):
    """Clip to a C that tracks a quantile of the update norms; noise on the sum and on the count.

    Built by ``DPMean.adaptive_clipping``. The vector noise is ``z * C`` with
    C the clip of the round; the below-clip count gets ``clipped_count_stddev``.

    Args:
        initial_clip_norm: C before round 1 (> 0), in the units of the model's
            weights.
        noise_multiplier: z (>= 0) of the vector noise, relative to the current C.
        expected_count: m (>= 1), the cohort size divided by; also what the
            below-clip sum is normalised by to estimate the unclipped fraction.
        adaptive: The update rule; default ``AdaptiveClipping()``.

    Examples:
        >>> from fedactors import DPMean
        >>> agg = DPMean.adaptive_clipping(0.1, noise_multiplier=1.0, expected_count=100)
        >>> [event.noise_multiplier for event in agg.dp_event().events]  # vector, count
        [1.0, 10.0]
    """

    record_keys = (CLIPPED_DELTA, BELOW_CLIP)

    def __init__(
        self,
        initial_clip_norm: float,
        noise_multiplier: float,
        expected_count: int,
        adaptive: Optional[AdaptiveClipping] = None,
    ) -> None:
        adaptive = AdaptiveClipping() if adaptive is None else adaptive
        if not isinstance(adaptive, AdaptiveClipping):
            raise ConfigError("adaptive", f"must be AdaptiveClipping or None, got {adaptive!r}")
        self.adaptive = adaptive
        self.clipped_count_stddev = (
            positive_int("expected_count", expected_count) / 20.0 if adaptive.clipped_count_stddev is None
            else float(adaptive.clipped_count_stddev)
        )
        super().__init__(
            initial_clip_norm, noise_multiplier, expected_count,
            QuantileAdaptiveClipSumQuery(
                initial_l2_norm_clip=initial_clip_norm,
                noise_multiplier=0.0,
                target_unclipped_quantile=adaptive.target_quantile,
                learning_rate=adaptive.learning_rate,
                clipped_count_stddev=0.0,
                expected_num_records=expected_count,
                geometric_update=adaptive.geometric,
            ),
        )

    def __repr__(self) -> str:
        return (f"AdaptiveClipDPMean(initial_clip_norm={self.clip_norm!r}, "
                f"noise_multiplier={self.noise_multiplier!r}, "
                f"expected_count={self.expected_count!r}, adaptive={self.adaptive!r})")

    def dp_event(self) -> dp_accounting.DpEvent:
        return dp_accounting.ComposedDpEvent([
            dp_accounting.GaussianDpEvent(self.noise_multiplier),
            dp_accounting.GaussianDpEvent(self.clipped_count_stddev / BELOW_CLIP_SENSITIVITY),
        ])

    def current_clip(self, query_state: Any) -> float:
        return float(self.query.derive_metrics(query_state)["clip"])

    def noise_stddevs(self, clip_norm: float) -> dict[str, float]:
        return {CLIPPED_DELTA: self.noise_multiplier * clip_norm,
                BELOW_CLIP: self.clipped_count_stddev}

    def record_bounds(self, clip_norm: float) -> dict[str, float]:
        return {CLIPPED_DELTA: clip_norm, BELOW_CLIP: BELOW_CLIP_SENSITIVITY}
