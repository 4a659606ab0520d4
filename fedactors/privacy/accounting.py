"""User-level (epsilon, delta) accounting for DP-FedAvg rounds, with dp-accounting.

One round = the server samples a cohort from the fleet, then runs the DP
mechanism of :class:`fedactors.privacy.dp_mean.DPMean` on it (a Gaussian sum,
plus a Gaussian count for adaptive clipping). The "record" is a *user*: each
device contributes one clipped delta per round, so the guarantee is user-level.

Sampling assumptions (pick the one the server actually implements):

* ``"fixed_size"``: exactly ``m`` devices drawn uniformly *without
  replacement* from ``N``. dp-accounting models this with
  ``SampledWithoutReplacementDpEvent(N, m, ...)``, analysed with RDP
  (Wang, Balle & Kasiviswanathan 2019), which requires the *replace-one*
  neighbouring relation (the dataset size ``N`` is public). Replacing one
  user moves the clipped sum by up to ``2C`` (and the +-0.5 below-clip count
  by up to 1), twice the add/remove sensitivity, so the Gaussian's noise
  multiplier is halved before it is handed to the accountant. dp-accounting's
  PLD accountant does not support sampling without replacement, so this mode
  is RDP only.
* ``"poisson"``: each device independently with probability ``q = m / N``.
  ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` under add/remove-one, which
  both the RDP and the PLD accountants support. PLD is usually tighter.

``method``: ``"rdp"``, ``"pld"`` (Poisson only) or ``"best"`` (default): the
minimum of every bound that applies. Each is a valid upper bound on the same
epsilon at the same delta, so their minimum is one too.

Adaptive clipping releases two Gaussians on the same cohort; for a Gaussian
mechanism they compose exactly into one Gaussian with
``z_eff = (sum_i z_i**-2) ** -1/2`` (Andrew et al. 2021, sec. 3.1), which is
what is accounted (and what PLD needs, as it takes a single Gaussian).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import dp_accounting
from dp_accounting import pld, rdp

from fedactors.errors import ConfigError
from fedactors.validation import non_negative_int, positive, positive_int, probability

SAMPLINGS = ("fixed_size", "poisson")
METHODS = ("best", "rdp", "pld")
NeighborRel = dp_accounting.NeighboringRelation


def effective_noise_multiplier(event: dp_accounting.DpEvent) -> float:
    """The single Gaussian noise multiplier equivalent to ``event``.

    ``event`` is a ``GaussianDpEvent`` or a ``ComposedDpEvent`` of them (what
    :meth:`DPMean.dp_event` returns). A zero multiplier anywhere means no
    privacy, reported as 0.
    """
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return float(event.noise_multiplier)
    if isinstance(event, dp_accounting.ComposedDpEvent):
        zs = [effective_noise_multiplier(e) for e in event.events]
        if any(z == 0.0 for z in zs):
            return 0.0
        return sum(z**-2 for z in zs) ** -0.5
    raise ConfigError("round_event", f"must be Gaussian events only, got {event!r}")


def sampled_round_event(
    noise_multiplier: float, population: int, cohort_size: int, sampling: str
) -> dp_accounting.DpEvent:
    """One round's event, including the cohort sampling (see module docstring)."""
    if sampling == "fixed_size":
        # Replace-one sensitivity is twice the add/remove one the multiplier is relative to.
        return dp_accounting.SampledWithoutReplacementDpEvent(
            population, cohort_size, dp_accounting.GaussianDpEvent(noise_multiplier / 2.0)
        )
    return dp_accounting.PoissonSampledDpEvent(
        cohort_size / population, dp_accounting.GaussianDpEvent(noise_multiplier)
    )


def epsilon_rdp(event: dp_accounting.DpEvent, rounds: int, sampling: str, delta: float) -> float:
    relation = NeighborRel.REPLACE_ONE if sampling == "fixed_size" else NeighborRel.ADD_OR_REMOVE_ONE
    acc = rdp.RdpAccountant(neighboring_relation=relation)
    acc.compose(event, rounds)
    return float(acc.get_epsilon(delta))


#: PLD value discretization. dp-accounting's default (1e-4) is ~10x slower; the
#: default pessimistic discretization keeps a coarser grid a valid upper bound
#: (measured: 0.7181 vs 0.7180 at q=0.01, z=1, 100 rounds, delta=1e-5).
PLD_DISCRETIZATION = 1e-3


def epsilon_pld(
    event: dp_accounting.DpEvent,
    rounds: int,
    delta: float,
    discretization: float = PLD_DISCRETIZATION,
) -> float:
    acc = pld.PLDAccountant(value_discretization_interval=discretization)
    acc.compose(event, rounds)
    return float(acc.get_epsilon(delta))


@dataclass(frozen=True)
class PrivacyLedger:
    """Immutable record of the rounds run so far; ``epsilon(delta)`` on demand.

    ``noise_multiplier`` is the effective per-round multiplier relative to the
    add/remove-one sensitivity (use :meth:`for_dp_mean` to derive it).
    """

    population: int
    cohort_size: int
    noise_multiplier: float
    sampling: str = "fixed_size"
    method: str = "best"
    rounds: int = 0

    def __post_init__(self) -> None:
        positive_int("population", self.population)
        positive_int("cohort_size", self.cohort_size)
        if self.cohort_size > self.population:
            raise ConfigError(
                "cohort_size",
                f"must be <= population ({self.population}), got {self.cohort_size!r}",
            )
        if self.noise_multiplier != 0:
            positive("noise_multiplier", self.noise_multiplier)
        if self.sampling not in SAMPLINGS:
            raise ConfigError("sampling", f"must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.method not in METHODS:
            raise ConfigError("method", f"must be one of {METHODS}, got {self.method!r}")
        if self.method == "pld" and self.sampling != "poisson":
            raise ConfigError(
                "method",
                f"'pld' needs sampling='poisson' (dp-accounting's PLD has no sampling "
                f"without replacement), got {self.method!r} with {self.sampling!r}",
            )
        non_negative_int("rounds", self.rounds)

    @classmethod
    def for_dp_mean(
        cls, aggregator: Any, population: int, sampling: str = "fixed_size", method: str = "best"
    ) -> PrivacyLedger:
        """A ledger for a :class:`DPMean` whose cohorts are ``expected_count`` users."""
        z = effective_noise_multiplier(aggregator.dp_event())
        return cls(population, aggregator.expected_count, z, sampling, method)

    @property
    def sampling_probability(self) -> float:
        return self.cohort_size / self.population

    def round_event(self) -> dp_accounting.DpEvent:
        return sampled_round_event(
            self.noise_multiplier, self.population, self.cohort_size, self.sampling
        )

    def compose(self, rounds: int = 1) -> PrivacyLedger:
        """The ledger after ``rounds`` more rounds."""
        return replace(self, rounds=self.rounds + non_negative_int("rounds", rounds))

    def epsilon(self, delta: float) -> float:
        """Epsilon at ``delta`` after ``self.rounds`` rounds (``inf`` without noise)."""
        d = probability("delta", delta)
        if self.rounds == 0:
            return 0.0
        if self.noise_multiplier == 0.0:
            return math.inf
        event = self.round_event()
        bounds = []
        if self.method in ("best", "rdp"):
            bounds.append(epsilon_rdp(event, self.rounds, self.sampling, d))
        if self.method in ("best", "pld") and self.sampling == "poisson":
            bounds.append(epsilon_pld(event, self.rounds, d))
        return min(bounds)

    def would_exceed(self, target_epsilon: float, delta: float) -> bool:
        """True if running one more round would push epsilon above ``target_epsilon``."""
        return self.compose(1).epsilon(delta) > target_epsilon


def rounds_within_budget(
    ledger: PrivacyLedger, target_epsilon: float, delta: float, max_rounds: int = 100_000
) -> int:
    """The most rounds (counted from zero) whose epsilon stays <= ``target_epsilon``.

    Epsilon only grows with rounds, so a binary search over ``[0, max_rounds]``
    suffices; the answer is capped at ``max_rounds``.
    """
    positive("target_epsilon", target_epsilon)
    base = replace(ledger, rounds=0)

    def ok(n: int) -> bool:
        return base.compose(n).epsilon(delta) <= target_epsilon

    if ok(max_rounds):
        return max_rounds
    lo, hi = 0, max_rounds  # ok(lo) holds, ok(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo
