"""The run-time budget of distributed Skellam noise (``DPMean.skellam``): RDP, no sampling assumed.

The counterpart of :class:`fedactors.privacy.budget.PrivacyBudget` for a
stage that declares a :class:`~fedactors.aggregation.SkellamRelease`, with the
same interface towards the server's release step.

**What ε is.** dp-accounting has no subsampled-Skellam event, so each release
is accounted as the plain multi-dimensional Skellam mechanism
(:func:`fedactors.privacy.skellam.skellam_rdp`, Agarwal, Kairouz & Liu 2021)
and the releases compose in RDP. No amplification by sampling is claimed,
so the guarantee holds whoever was online, dropped out or was slowest. A
release over ``m' >= k`` shares is charged at the variance it carried,
``v m'/k``; one the server did not make (fewer than k shares, too few
reports, an aborted protocol) at the nominal ``v``, which only over-states ε.

**Neighbours.** Zero-out: one device's record replaced by zero while it still
adds its noise share (the relation the distributed discrete mechanisms are
analysed under). The L2 sensitivity is the conditional-rounding bound and the
L1 sensitivity the one it implies for integers; both depend on the model
size, which is why the budget is built with ``dim``.

**Truncation.** Each share is truncated at a tail of probability at most
``TAIL_PROBABILITY`` per coordinate. The run's noise differs from the
untruncated mechanism's with probability at most ``eta`` (the sum over
released sums of ``devices * dim * TAIL_PROBABILITY``), so the guarantee is
``(ε, δ + (1 + e^ε) eta)``; ``delta_truncation`` in the summary is that
second term.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np

from fedactors.aggregation.base import SkellamRelease
from fedactors.errors import ConfigError
from fedactors.privacy.accounting import RDP_ORDERS, rdp_epsilon
from fedactors.privacy.claims import ROUNDS, STOPPED_BY_BUDGET, json_epsilon
from fedactors.privacy.participation import Participation
from fedactors.privacy.skellam import TAIL_PROBABILITY, SkellamCalibration, skellam_rdp
from fedactors.privacy.skellam_mean import calibration_for

#: ``(shares summed, releases)`` pairs, sorted: the charged variance is ``v * shares / k``.
Releases = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class SkellamPrivacyState:
    """The releases charged so far and the truncation probability of those made."""

    releases: Releases = ()
    #: Sum over released sums of (devices summed * dim * TAIL_PROBABILITY).
    truncation_probability: float = 0.0
    #: Releases charged at nominal noise because they were not made.
    releases_not_made: int = 0

    @property
    def count(self) -> int:
        return sum(n for _, n in self.releases)

    def with_release(self, shares: int) -> SkellamPrivacyState:
        hist = dict(self.releases)
        hist[shares] = hist.get(shares, 0) + 1
        return replace(self, releases=tuple(sorted(hist.items())))


@functools.lru_cache(maxsize=1024)
def _release_rdp(variance: float, l1: float, l2: float) -> np.ndarray:
    out = skellam_rdp(RDP_ORDERS, variance, l1, l2)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class SkellamBudget:
    """What a distributed-Skellam run accounts, at which δ, against which target."""

    calibration: SkellamCalibration
    delta: float
    target_epsilon: Optional[float]
    declared: SkellamRelease
    population: int
    releases: str = ROUNDS

    @property
    def min_separation(self) -> int:
        """No separation rule: that is DP-FTRL's (``TreeBudget``)."""
        return 0

    @property
    def releases_whatever_the_count(self) -> bool:
        """No: zero-out neighbours, so the count of shares does not depend on any
        device's data; a release below min_survivors shares is declined."""
        return False

    def initial_state(self) -> SkellamPrivacyState:
        return SkellamPrivacyState()

    # -- charging -------------------------------------------------------------

    def shares_charged(self, summed: int, aggregated: bool = True) -> int:
        """The shares a release is charged at: those summed, or k if it was not made."""
        k = self.calibration.shares
        return summed if aggregated and summed >= k else k

    def multiplier_charged(self, summed: int) -> float:
        """The noise multiplier (std over L2 sensitivity) a release over ``summed`` carried."""
        shares = self.shares_charged(summed)
        return self.declared.noise_multiplier * math.sqrt(shares / self.calibration.shares)

    def charge(self, state: SkellamPrivacyState, participation: Participation, summed: int,
               aggregated: bool = True) -> SkellamPrivacyState:
        """The state after one more release (a skipped one at the nominal noise)."""
        made = aggregated and summed >= self.calibration.shares
        new = state.with_release(self.shares_charged(summed, aggregated))
        if not made:
            return replace(new, releases_not_made=state.releases_not_made + 1)
        return replace(new, truncation_probability=state.truncation_probability
                       + summed * self.calibration.dim * TAIL_PROBABILITY)

    # -- what ε is ------------------------------------------------------------

    def rdp(self, releases: Releases) -> np.ndarray:
        """The RDP vector (at ``RDP_ORDERS``) of ``releases`` composed."""
        cal = self.calibration
        total = np.zeros(len(RDP_ORDERS))
        for shares, n in releases:
            total = total + n * _release_rdp(cal.variance * shares / cal.shares, cal.l1, cal.l2)
        return total

    def _epsilon(self, releases: Releases) -> float:
        if not releases:
            return 0.0
        return rdp_epsilon(self.rdp(releases), self.delta)

    def epsilon(self, state: SkellamPrivacyState) -> float:
        return self._epsilon(state.releases)

    def round_epsilon(self, state: SkellamPrivacyState) -> Optional[float]:
        return json_epsilon(self.epsilon(state))

    def next_epsilon(self, state: SkellamPrivacyState) -> float:
        """ε if one more release were made at the nominal (lowest possible) noise."""
        return self._epsilon(state.with_release(self.calibration.shares).releases)

    def would_exceed(self, state: SkellamPrivacyState) -> bool:
        return self.target_epsilon is not None and self.next_epsilon(state) > self.target_epsilon

    def delta_truncation(self, state: SkellamPrivacyState) -> float:
        """What the shares' truncation adds to δ: ``(1 + e^ε) * eta``."""
        eps = self.epsilon(state)
        if state.truncation_probability == 0:
            return 0.0
        return math.inf if eps > 700 else (1 + math.exp(eps)) * state.truncation_probability

    def checked(self) -> SkellamBudget:
        """This budget, or a ``ConfigError`` if its target is below what one release costs."""
        first = self.next_epsilon(self.initial_state())
        if self.target_epsilon is not None and first > self.target_epsilon:
            raise ConfigError(
                "privacy.target_epsilon",
                f"{self.target_epsilon:g} is below the ε of a single Skellam release "
                f"({first:.4g} at δ={self.delta:g}, without amplification): no release could "
                "run; raise the target or the noise")
        return self

    # -- what the run claims --------------------------------------------------

    def assumption(self) -> str:
        k = self.calibration.shares
        return (
            f"user-level ε at δ={self.delta:g} for distributed Skellam noise under secure "
            f"aggregation: each release is the Skellam mechanism on the sum of at least {k} "
            "devices' rounded records (zero-out neighbours: one device's record replaced by zero, "
            "its noise share kept), composed with no amplification by sampling, so it holds "
            "whoever took part; it assumes the server sees only the securely aggregated sum "
            "(honest-but-curious) and each device contributes at most one clipped update per "
            "release; the shares' truncation adds delta_truncation to δ"
        )

    def summary(self, state: SkellamPrivacyState, stopped: str) -> dict[str, Any]:
        """The ``privacy`` block of summary.json."""
        cal = self.calibration
        block: dict[str, Any] = {
            "epsilon": json_epsilon(self.epsilon(state)),
            "delta": self.delta,
            "delta_truncation": self.delta_truncation(state),
            "target_epsilon": self.target_epsilon,
            "rounds_accounted": state.count,
            "releases": self.releases,
            "accounting": {
                "mechanism": "distributed-skellam",
                "population": self.population,
                "expected_count": self.declared.expected_count,
                "sampling": "none",
                "neighboring": "zero-out",
                "noise_multiplier": self.declared.noise_multiplier,
                "noise_multipliers_charged": [
                    [self.multiplier_charged(s), n] for s, n in state.releases],
                "distributed_noise_min_survivors": cal.shares,
                "clip_norm": self.declared.clip_norm,
                "scale_bits": self.declared.scale_bits,
                "beta": self.declared.beta,
                "dim": cal.dim,
                "l2_sensitivity_integer": cal.l2,
                "l1_sensitivity_integer": cal.l1,
                "variance_nominal_integer": cal.variance,
                "variances_charged_integer": [
                    [cal.variance * s / cal.shares, n] for s, n in state.releases],
                "share_truncated_at_integer": cal.share_tail,
                "releases_not_made": state.releases_not_made,
                "method": "rdp",
            },
            "assumption": self.assumption(),
            "assumption_held": True,
            "violations": [],
        }
        if stopped == STOPPED_BY_BUDGET:
            block["next_round_epsilon"] = json_epsilon(self.next_epsilon(state))
        return block


def skellam_budget(declared: SkellamRelease, options: Any, population: int, fedbuff: bool,
                   delta: float, dim: Optional[int]) -> SkellamBudget:
    """The budget of a Skellam scenario (called by ``PrivacyBudget.for_scenario``)."""
    if fedbuff:  # refused at load already (FedBuff has no secure aggregation)
        raise ConfigError("mode", "DPMean.skellam needs secure aggregation, which FedBuff lacks")
    if dim is None:
        raise ConfigError("aggregator", "DPMean.skellam's ε depends on the model size: the "
                                        "budget must be built with dim")
    if options.min_separation:
        raise ConfigError("privacy.min_separation", "only applies to DP-FTRL (DPMean.tree)")
    if options.method == "pld":
        raise ConfigError("privacy.method", "'pld' is not available for DPMean.skellam (no "
                                            "Skellam privacy-loss distribution): use 'rdp' or "
                                            "'best'")
    return SkellamBudget(calibration_for(declared, dim), delta, options.target_epsilon,
                         declared, population).checked()


__all__ = ["SkellamBudget", "SkellamPrivacyState", "skellam_budget"]
