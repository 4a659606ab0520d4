"""DP-FedAvg with a fixed clip norm: tensorflow-privacy's ``GaussianSumQuery``.

McMahan et al. 2018: every device clips its delta to L2 norm C; the server
adds ``N(0, (z * C)**2)`` to the sum and divides by m. One release is one
Gaussian mechanism of multiplier z on the cohort that took part.
"""

from __future__ import annotations

from typing import Any

import dp_accounting

from fedactors.privacy.dp_queries import GaussianSumQuery
from fedactors.privacy.gaussian_mean import CLIPPED_DELTA, GaussianDPMean


class FixedClipDPMean(GaussianDPMean):
    """Clip each delta to C on the device; the server adds ``N(0, (z * C)**2)`` to the sum, divides by m.

    Built by ``DPMean.fixed`` (which also moves the noise to the devices on
    request, ``distributed_noise=True``).

    Args:
        clip_norm: C, the largest L2 norm (> 0) of a device's delta, in the
            units of the model's weights. Stored as float32.
        noise_multiplier: z (>= 0): the noise on the sum has standard deviation
            ``z * C`` (on the mean ``z * C / m``). 0 adds no noise (ε is infinite).
        expected_count: m (>= 1), the cohort size the mean divides by and the
            noise is calibrated for. Must equal ``rounds.cohort_size``
            (``buffer_size`` under FedBuff); ``aggregate`` raises ``ValueError``
            for a round that expects another.

    Examples:
        >>> import numpy as np
        >>> from fedactors import DPMean
        >>> from fedactors.aggregation import PlainContributions, RoundContext

        The arithmetic without noise: one of the two expected devices reports.

        >>> exact = DPMean.fixed(clip_norm=1.0, noise_multiplier=0.0, expected_count=2)
        >>> state, rng = exact.initial_state(dim=2), np.random.default_rng(0)
        >>> row = exact.encode(exact.client_params(state), np.array([3.0, 4.0], np.float32), 1, rng)
        >>> result = exact.aggregate(state, PlainContributions([row]), RoundContext(1, 2, 2, rng))
        >>> print(result.delta.round(3))  # [3, 4] clipped to [0.6, 0.8], divided by m = 2
        [0.3 0.4]
    """

    record_keys = (CLIPPED_DELTA,)

    def __init__(self, clip_norm: float, noise_multiplier: float, expected_count: int) -> None:
        super().__init__(clip_norm, noise_multiplier, expected_count,
                         GaussianSumQuery(l2_norm_clip=clip_norm, stddev=0.0))

    def __repr__(self) -> str:
        return (f"FixedClipDPMean(clip_norm={self.clip_norm!r}, "
                f"noise_multiplier={self.noise_multiplier!r}, "
                f"expected_count={self.expected_count!r})")

    def dp_event(self) -> dp_accounting.DpEvent:
        return dp_accounting.GaussianDpEvent(self.noise_multiplier)

    def current_clip(self, query_state: Any) -> float:
        # A Gaussian sum query's sample parameter is its clip norm.
        return float(self.query.derive_sample_params(query_state))

    def noise_stddevs(self, clip_norm: float) -> dict[str, float]:
        return {CLIPPED_DELTA: self.noise_multiplier * clip_norm}

    def record_bounds(self, clip_norm: float) -> dict[str, float]:
        return {CLIPPED_DELTA: clip_norm}
