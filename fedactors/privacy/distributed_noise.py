"""Distributed noise: the devices add the DP noise, in shares, so secure aggregation can hide the sum.

With central noise the server must be trusted to add the noise, and it sees
the un-noised sum. With secure aggregation it should see only a sum that is
already private. So each device adds its share of the mechanism's noise to
each record: ``N(0, sigma**2 / k)`` for a record whose sum needs
``N(0, sigma**2)`` (``z * C`` on the clipped delta, ``clipped_count_stddev``
on the adaptive below-clip count), ``k`` being ``min_survivors`` (default:
``m``). The sum over any ``m' >= k`` devices then carries at least the nominal
noise: exactly ``sigma * sqrt(m' / k)``, which is what the accountant charges
for that release (:meth:`PrivateRelease.noise_multiplier_for`) and what
``noise_stddev_on_mean`` reports. A sum of fewer than ``k`` shares carries too
little noise and is not released: the round makes no update and the clip norm
does not move (the release is still charged).

Each share is truncated at ``noise.TAIL`` standard deviations so that
:meth:`DistributedDPMean.contribution_bounds` is a hard bound for fixed-point
secure aggregation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import dp_accounting
import numpy as np

from fedactors.aggregation.base import Aggregate, Contributions, PrivateRelease, RoundContext
from fedactors.errors import ConfigError
from fedactors.privacy import noise
from fedactors.privacy.accounting import effective_noise_multiplier
from fedactors.privacy.gaussian_mean import FLOAT32_SLACK, GaussianDPMean
from fedactors.privacy.mechanism import DPMeanState, DPMechanism
from fedactors.validation import positive_int


class DistributedDPMean(DPMechanism):
    """``mechanism`` with its noise added by the devices, in shares sized for ``min_survivors``.

    Built by ``DPMean.fixed(..., distributed_noise=True)`` and
    ``DPMean.adaptive_clipping(..., distributed_noise=True)``. Clipping, the
    clip update and the mean are the wrapped mechanism's; only where the noise
    is drawn changes, and with it the release declared (``min_survivors``).

    Args:
        mechanism: The central mechanism whose noise moves to the devices
            (``FixedClipDPMean`` or ``AdaptiveClipDPMean``).
        min_survivors: k, the fewest shares a release may sum, 1 to
            ``mechanism.expected_count``; ``None`` (default) means
            ``expected_count``. A sum over ``m' >= k`` devices carries noise
            ``z * C * sqrt(m' / k)`` and is charged at that multiplier; with
            fewer than k the round makes no update (and is still charged).

    Examples:
        >>> import numpy as np
        >>> from fedactors import DPMean
        >>> from fedactors.aggregation import SummedContributions, RoundContext
        >>> agg = DPMean.fixed(1.0, 1.0, expected_count=10, distributed_noise=True,
        ...                    min_survivors=8)
        >>> agg.mechanism, agg.min_survivors
        (FixedClipDPMean(clip_norm=1.0, noise_multiplier=1.0, expected_count=10), 8)
        >>> state, rng = agg.initial_state(dim=2), np.random.default_rng(0)
        >>> too_few = SummedContributions({"clipped_delta": np.zeros(2)}, count=7)
        >>> agg.aggregate(state, too_few, RoundContext(1, 10, 10, rng)).delta is None
        True
    """

    def __init__(self, mechanism: GaussianDPMean, min_survivors: Optional[int] = None) -> None:
        if not isinstance(mechanism, GaussianDPMean):
            raise ConfigError("mechanism", f"must be a FixedClipDPMean or AdaptiveClipDPMean, "
                                           f"got {mechanism!r}")
        self.mechanism = mechanism
        self.min_survivors = (self.expected_count if min_survivors is None
                              else positive_int("min_survivors", min_survivors))
        if self.min_survivors > self.expected_count:
            # A fixed-size round sums at most expected_count: nothing could ever be released.
            raise ConfigError("min_survivors", f"{min_survivors!r} is more than expected_count "
                                               f"{self.expected_count}: no release could be made")

    # C, z and m are the wrapped mechanism's: read through, never copied.
    @property
    def clip_norm(self) -> float:  # type: ignore[override]
        return self.mechanism.clip_norm

    @property
    def noise_multiplier(self) -> float:  # type: ignore[override]
        return self.mechanism.noise_multiplier

    @property
    def expected_count(self) -> int:  # type: ignore[override]
        return self.mechanism.expected_count

    def __repr__(self) -> str:
        return f"DistributedDPMean({self.mechanism!r}, min_survivors={self.min_survivors!r})"

    def dp_event(self) -> dp_accounting.DpEvent:
        return self.mechanism.dp_event()

    def private_release(self) -> Optional[PrivateRelease]:
        return PrivateRelease(effective_noise_multiplier(self.dp_event()), self.expected_count,
                              self.min_survivors)

    def initial_state(self, dim: int) -> DPMeanState:
        return self.mechanism.initial_state(dim)

    def client_params(self, state: DPMeanState) -> Mapping[str, Any]:
        return self.mechanism.client_params(state)

    def encode(
        self,
        params: Mapping[str, Any],
        delta: np.ndarray,
        num_examples: int,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        record = self.mechanism.encode(params, delta, num_examples, rng)
        stddevs = self.mechanism.noise_stddevs(float(params["clip_norm"]))
        # The device's shares, record by record in the mechanism's key order.
        return {
            key: (value.astype(np.float64)
                  + noise.device_share(rng, stddevs[key], self.min_survivors, value.size)
                  ).astype(np.float32)
            for key, value in record.items()
        }

    def contribution_bounds(self, params: Mapping[str, Any], dim: int) -> dict[str, float]:
        clip = float(params["clip_norm"])
        stddevs = self.mechanism.noise_stddevs(clip)
        return {
            key: (bound + noise.share_bound(stddevs[key], self.min_survivors)) * FLOAT32_SLACK
            for key, bound in self.mechanism.record_bounds(clip).items()
        }

    def aggregate(
        self, state: DPMeanState, contributions: Contributions, ctx: RoundContext
    ) -> Aggregate[DPMeanState]:
        self.check_round(ctx)
        release = self.private_release()
        assert release is not None
        actual = release.noise_multiplier_for(contributions.count)
        if actual is None:
            # Too few shares: releasing would under-noise the sum.
            return Aggregate(None, state, {
                "clip_norm": self.mechanism.current_clip(state.query_state),
                "noise_shares_below_minimum": 1.0,
            })
        noise_scale = actual / release.noise_multiplier if release.noise_multiplier else 1.0
        summed = self.mechanism.summed_records(state, contributions)
        return self.mechanism.release(state, summed, ctx, noise_scale)
