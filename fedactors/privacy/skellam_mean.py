"""Distributed Skellam noise: devices add integer noise on secure aggregation's grid.

Agarwal, Kairouz & Liu 2021. Each device clips its delta to L2 norm C,
scales it by ``gamma = 2**scale_bits``, rounds it to integers by conditional
randomized rounding (re-drawn until its L2 norm is within the bound the
accounting uses, :func:`~fedactors.privacy.skellam.conditional_round`), adds
its share ``Sk(v / k)`` of Skellam noise (``k = min_survivors``) and sends
the integer vector divided by ``gamma``. That value is on secure
aggregation's fixed-point grid when its ``scale_bits`` is the mechanism's, so
quantization is exact (deterministic or stochastic rounding alike), the
modular sum is the exact integer sum, and a sum over ``m' >= k`` devices
carries exactly ``Sk(v m' / k)``: a sum of Skellams is a Skellam. Nothing
is rounded after the noise is added.

The sum over fewer than k shares is not released (the round makes no update;
it is still charged). Records are float64: integers up to 2**53 over a power
of two are exact in it, float32 would only hold 2**24.

**Why secure aggregation is required.** Without it the server reads each
record, which carries only ``1/k`` of the noise: that record alone is not
private at the stated ε. The released sum still would be, but the server
would have seen more than the sum, so the scenario is refused
(:func:`check_scenario`) instead of reporting an ε against a server that
saw each device.

**Truncation.** Each share is truncated where its tail probability is below
:data:`~fedactors.privacy.skellam.TAIL_PROBABILITY` per coordinate, so
:meth:`SkellamDPMean.contribution_bounds` is a hard bound and the modulus
never wraps; the budget reports the truncation's contribution to δ.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from fedactors.aggregation.base import (
    Aggregate,
    Aggregator,
    Contributions,
    RoundContext,
    SkellamRelease,
)
from fedactors.aggregation.clipping import clip_l2
from fedactors.errors import ConfigError
from fedactors.privacy import skellam
from fedactors.validation import non_negative, positive, positive_int

#: The record: (rounded clipped delta + noise share) / gamma, summed across devices.
SKELLAM_DELTA = "skellam_delta"
#: Largest scale_bits: records must stay exact in float64 and in a 62-bit modulus.
MAX_SCALE_BITS = 40


@dataclass(frozen=True)
class SkellamMeanState:
    """Explicit state: only the model size (the mechanism keeps nothing across rounds)."""

    dim: int


class SkellamDPMean(Aggregator[SkellamMeanState]):
    """Fixed clipping with integer Skellam noise added by the devices, for secure aggregation.

    Build it with ``DPMean.skellam``; see docs/privacy.md, "Discrete
    distributed noise (Skellam)". Declares a
    :class:`~fedactors.aggregation.SkellamRelease`: each release is
    accounted without amplification by sampling, at the Skellam noise the
    surviving devices actually added.

    Args:
        clip_norm: C (> 0), the largest L2 norm of a device's delta (model units).
        noise_multiplier: z (>= 0): the summed noise of ``min_survivors``
            shares has standard deviation ``z`` times the L2 sensitivity after
            rounding (integer units). 0 adds no noise (ε infinite).
        expected_count: m (>= 1), the cohort size divided by; must equal
            ``rounds.cohort_size``.
        min_survivors: k, the fewest shares a release may sum, 1 to m;
            ``None`` (default): m.
        scale_bits: The grid is multiples of ``2 ** -scale_bits`` in model
            units, 0 to 40; must equal ``SecureAggregation(scale_bits=...)``.
            Larger values make rounding negligible beside C. Default 16.
        beta: Conditional rounding's parameter in [0, 1): a rounding is
            re-drawn until its norm is within a bound one rounding meets
            with probability ``1 - beta``. 0 rounds once and uses the
            looser bound ``C * gamma + sqrt(dim)``. Default ``exp(-0.5)``
            (the paper's choice).

    Examples:
        >>> import numpy as np
        >>> from fedactors import DPMean
        >>> agg = DPMean.skellam(clip_norm=1.0, noise_multiplier=2.0, expected_count=4,
        ...                      min_survivors=3, scale_bits=8)
        >>> agg.private_release().min_survivors
        3
        >>> row = agg.encode(agg.client_params(agg.initial_state(5)), np.ones(5, np.float32), 1,
        ...                  np.random.default_rng(0))
        >>> bool(np.all(row["skellam_delta"] * 2**8 == np.round(row["skellam_delta"] * 2**8)))
        True
    """

    def __init__(self, clip_norm: float, noise_multiplier: float, expected_count: int,
                 min_survivors: Optional[int] = None, scale_bits: int = 16,
                 beta: float = math.exp(-0.5)) -> None:
        self.clip_norm = float(positive("clip_norm", clip_norm))
        self.noise_multiplier = float(non_negative("noise_multiplier", noise_multiplier))
        self.expected_count = positive_int("expected_count", expected_count)
        self.min_survivors = (self.expected_count if min_survivors is None
                              else positive_int("min_survivors", min_survivors))
        if self.min_survivors > self.expected_count:
            raise ConfigError("min_survivors", f"{min_survivors!r} is more than expected_count "
                                               f"{self.expected_count}: no release could be made")
        if isinstance(scale_bits, bool) or not isinstance(scale_bits, int) or not (
                0 <= scale_bits <= MAX_SCALE_BITS):
            raise ConfigError("scale_bits", f"must be an int in [0, {MAX_SCALE_BITS}], "
                                            f"got {scale_bits!r}")
        self.scale_bits = scale_bits
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
            raise ConfigError("beta", f"must be a number in [0, 1), got {beta!r}")
        self.beta = float(beta)

    def __repr__(self) -> str:
        return (f"SkellamDPMean(clip_norm={self.clip_norm!r}, "
                f"noise_multiplier={self.noise_multiplier!r}, "
                f"expected_count={self.expected_count!r}, min_survivors={self.min_survivors!r}, "
                f"scale_bits={self.scale_bits!r}, beta={self.beta!r})")

    def private_release(self) -> SkellamRelease:
        return SkellamRelease(self.noise_multiplier, self.expected_count, self.min_survivors,
                              clip_norm=self.clip_norm, scale_bits=self.scale_bits,
                              beta=self.beta)

    def calibration(self, dim: int) -> skellam.SkellamCalibration:
        """Sensitivities, variance and truncation for models of ``dim`` weights."""
        return _calibration(self.private_release(), int(dim))

    # -- the aggregator interface ----------------------------------------------------

    def initial_state(self, dim: int) -> SkellamMeanState:
        return SkellamMeanState(dim=positive_int("dim", dim))

    def client_params(self, state: SkellamMeanState) -> Mapping[str, Any]:
        return {"clip_norm": self.clip_norm}

    def clip_bound(self, params: Mapping[str, Any]) -> Optional[float]:
        return float(self.clip_norm)

    def encode(self, params: Mapping[str, Any], delta: np.ndarray, num_examples: int,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
        d = np.asarray(delta, np.float32).ravel()
        cal = self.calibration(d.size)
        clipped, _ = clip_l2(d, self.clip_norm)  # non-finite deltas become zeros
        # The rounding bound, not the clip, is what the privacy rests on: it is
        # checked on the integer vector itself.
        q, _ = skellam.conditional_round(rng, np.asarray(clipped, np.float64) * cal.scale, cal.l2)
        share = np.clip(skellam.sample_skellam(rng, cal.share_variance, d.size),
                        -cal.share_tail, cal.share_tail)
        return {SKELLAM_DELTA: (q + share).astype(np.float64) / cal.scale}

    def contribution_bounds(self, params: Mapping[str, Any], dim: int) -> dict[str, float]:
        cal = self.calibration(dim)
        # On the grid itself, so quantization never clips a record.
        return {SKELLAM_DELTA: cal.record_bound / cal.scale}

    def check_round(self, ctx: RoundContext) -> None:
        """Raise ``ValueError`` for a round that expects another cohort size than ``m``."""
        if ctx.expected_count != self.expected_count:
            raise ValueError(
                f"DPMean.skellam was configured for expected_count={self.expected_count}, "
                f"but round {ctx.round} expects {ctx.expected_count}")

    def aggregate(self, state: SkellamMeanState, contributions: Contributions,
                  ctx: RoundContext) -> Aggregate[SkellamMeanState]:
        self.check_round(ctx)
        count = contributions.count
        if count < self.min_survivors:
            # Too few shares: the sum would carry less noise than accounted.
            return Aggregate(None, state, {"clip_norm": self.clip_norm,
                                           "noise_shares_below_minimum": 1.0})
        cal = self.calibration(state.dim)
        total = np.asarray(contributions.sum()[SKELLAM_DELTA], np.float64)
        if total.shape != (state.dim,):
            raise ValueError(f"summed {SKELLAM_DELTA} has shape {total.shape}, "
                             f"expected ({state.dim},)")
        noise_std = math.sqrt(cal.share_variance * count) / cal.scale
        return Aggregate((total / ctx.expected_count).astype(np.float32), state, {
            "clip_norm": self.clip_norm,
            "skellam_noise_stddev_on_mean": noise_std / ctx.expected_count,
        })


@functools.lru_cache(maxsize=64)
def _calibration(release: SkellamRelease, dim: int) -> skellam.SkellamCalibration:
    """One calibration per (declaration, dim): encode runs per device per round."""
    assert release.min_survivors is not None
    try:
        return skellam.calibrate(release.clip_norm, release.noise_multiplier, release.scale_bits,
                                 release.beta, dim, release.min_survivors)
    except ValueError as e:  # the grid is too fine for this clip and noise
        fits = [b for b in range(release.scale_bits) if _share_drawable(release, b, dim)]
        fix = f"at most {fits[-1]} fits" if fits else "no scale_bits fits"
        raise ConfigError("scale_bits", f"{release.scale_bits} with clip_norm "
                          f"{release.clip_norm:g}, noise_multiplier {release.noise_multiplier:g} "
                          f"and min_survivors {release.min_survivors}: {e} ({fix}; or lower "
                          "clip_norm or noise_multiplier, or raise min_survivors)") from None


def _share_drawable(release: SkellamRelease, scale_bits: int, dim: int) -> bool:
    try:
        skellam.calibrate(release.clip_norm, release.noise_multiplier, scale_bits,
                          release.beta, dim, release.min_survivors or 1)
    except ValueError:
        return False
    return True


def calibration_for(release: SkellamRelease, dim: int) -> skellam.SkellamCalibration:
    """The calibration a ``SkellamRelease`` implies for ``dim`` weights (what the budget uses)."""
    return _calibration(release, positive_int("dim", dim))


def check_scenario(release: SkellamRelease, secure_aggregation: Any) -> None:
    """Refuse, naming the field, a scenario in which a Skellam release's claims would be false.

    Without secure aggregation the server sees each record with 1/k of the
    noise; with another ``scale_bits`` the records are off the grid and
    quantization would round noised values (the sum would no longer be the
    Skellam mechanism that is accounted).
    """
    if secure_aggregation is None:
        raise ConfigError(
            "secure_aggregation",
            "is required by DPMean.skellam: each device adds only 1/min_survivors of the noise, "
            "so without it the server would read records that are not private at the stated ε; "
            "add SecureAggregation(scale_bits=...) or use DPMean.fixed")
    if secure_aggregation.scale_bits != release.scale_bits:
        raise ConfigError(
            "secure_aggregation.scale_bits",
            f"is {secure_aggregation.scale_bits!r} but DPMean.skellam has scale_bits="
            f"{release.scale_bits!r}; they must be equal so every record is on the grid and "
            "quantization is exact")


__all__ = ["SKELLAM_DELTA", "SkellamDPMean", "SkellamMeanState", "calibration_for",
           "check_scenario"]
