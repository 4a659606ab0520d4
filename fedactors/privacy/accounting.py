"""User-level (epsilon, delta) accounting for DP-FedAvg releases, with dp-accounting.

A *release* = the server runs the DP mechanism of
:class:`fedactors.privacy.dp_mean.DPMean` once (a Gaussian sum, plus a
Gaussian count for adaptive clipping) on a set of devices: one synchronous
round, or one FedBuff buffer. The "record" is a *user*: each device
contributes at most one clipped delta per release, so the guarantee is
user-level. A :class:`PrivacyLedger` records how many releases ran at each
noise multiplier (a sorted histogram), so releases with different noise can be
composed.

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
* ``"none"``: no amplification by sampling at all. Every release is a plain
  ``GaussianDpEvent(z)`` under add/remove-one: a device may contribute to
  every release, but at most once to each. This is for asynchronous FedBuff
  buffers, whose membership (whoever finishes first) is not a uniform sample.
  ``cohort_size`` means nothing here but is still validated (1..N). Gaussians
  compose exactly into one Gaussian with ``z_eff = (sum_i n_i z_i**-2)**-1/2``,
  which is what PLD is handed (tighter than convolving discretized PLDs).

``method``: ``"rdp"``, ``"pld"`` (``"poisson"``/``"none"`` only) or ``"best"``
(default): the minimum of every bound that applies. Each is a valid upper bound
on the same epsilon at the same delta, so their minimum is one too.

**What is cheap and what is exact.** :meth:`PrivacyLedger.epsilon_rdp` is the
RDP bound, cheap enough for every round: the RDP vector of each distinct
per-release event (at dp-accounting's default orders) is computed once per
process and cached (:func:`release_rdp`, keyed by the event's parameters;
0.2-0.6 s the first time), the ledger's vector is ``sum(count * vector)``,
which is what ``RdpAccountant`` forms too, and dp-accounting's own
``compute_epsilon`` turns it into epsilon (~0.2-0.3 ms; figures in
docs/benchmarks.md). :meth:`PrivacyLedger.epsilon` is the best bound per
``method``, as before: where PLD applies it costs a PLD computation (each
distinct Poisson event composed with its count; 0.1-3 s at 1,000 releases,
more with more releases and larger epsilon), cached per (event parameters,
histogram, delta). For ``"fixed_size"`` or ``method="rdp"`` the two are the
same number. :meth:`PrivacyLedger.would_exceed` pays for PLD only when the RDP
bound alone cannot answer. No releases is epsilon 0; a release with a zero
multiplier is epsilon ``inf``.

Adaptive clipping releases two Gaussians on the same cohort; for a Gaussian
mechanism they compose exactly into one Gaussian with
``z_eff = (sum_i z_i**-2) ** -1/2`` (Andrew et al. 2021, sec. 3.1), which is
what is accounted (and what PLD needs, as it takes a single Gaussian).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import dp_accounting
import numpy as np
from dp_accounting import pld, rdp

from fedactors.errors import ConfigError
from fedactors.validation import non_negative, non_negative_int, positive, positive_int, probability

SAMPLINGS = ("fixed_size", "poisson", "none")
METHODS = ("best", "rdp", "pld")
#: Samplings dp-accounting's PLD accountant supports.
PLD_SAMPLINGS = ("poisson", "none")
NeighborRel = dp_accounting.NeighboringRelation

#: How many releases ran at each noise multiplier: ``((z, count), ...)``, sorted by
#: ``z``, each ``z`` once, every count >= 1. Plain data, so a ledger stays
#: hashable, picklable and free of dp-accounting objects.
Releases = tuple[tuple[float, int], ...]


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
    """One release's event, including the sampling (see module docstring)."""
    if sampling == "fixed_size":
        # Replace-one sensitivity is twice the add/remove one the multiplier is relative to.
        return dp_accounting.SampledWithoutReplacementDpEvent(
            population, cohort_size, dp_accounting.GaussianDpEvent(noise_multiplier / 2.0)
        )
    if sampling == "poisson":
        return dp_accounting.PoissonSampledDpEvent(
            cohort_size / population, dp_accounting.GaussianDpEvent(noise_multiplier)
        )
    return dp_accounting.GaussianDpEvent(noise_multiplier)


def neighboring_relation(sampling: str) -> NeighborRel:
    """The relation the sampling's analysis needs (replace-one only for fixed_size)."""
    return NeighborRel.REPLACE_ONE if sampling == "fixed_size" else NeighborRel.ADD_OR_REMOVE_ONE


# -- dp-accounting's RDP machinery, used in one place -------------------------
# The cheap path needs two things RdpAccountant does not offer per call: the
# RDP vector of one event (read off a fresh accountant's public ``rdp``
# property) and the vector -> epsilon conversion, which is the public
# ``dp_accounting.rdp.compute_epsilon`` that ``RdpAccountant.get_epsilon``
# itself calls. tests/privacy/test_accounting.py checks both still exist and
# still agree with ``RdpAccountant`` to 1e-9.

#: dp-accounting's default RDP orders (those of ``RdpAccountant()``).
RDP_ORDERS: np.ndarray = rdp.RdpAccountant().orders
RDP_ORDERS.flags.writeable = False


@functools.lru_cache(maxsize=1024)
def release_rdp(
    sampling: str, population: int, cohort_size: int, noise_multiplier: float
) -> np.ndarray:
    """RDP vector (at :data:`RDP_ORDERS`) of one release; read-only, computed once per process.

    The without-replacement bound costs ~0.5 s per event, the Poisson one
    ~0.2 s: that is why it is cached, keyed by the event's parameters.
    """
    acc = rdp.RdpAccountant(neighboring_relation=neighboring_relation(sampling))
    acc.compose(sampled_round_event(noise_multiplier, population, cohort_size, sampling), 1)
    vector = acc.rdp
    vector.flags.writeable = False  # shared by every caller of the cache
    return vector


def rdp_epsilon(rdp_vector: np.ndarray, delta: float) -> float:
    """dp-accounting's RDP -> (epsilon, delta) conversion at :data:`RDP_ORDERS`."""
    return float(rdp.compute_epsilon(RDP_ORDERS, rdp_vector, delta)[0])


# -- per-ledger computations, cached on plain hashable data -------------------


def _has_zero(releases: Releases) -> bool:
    return any(z == 0.0 for z, _ in releases)


@functools.lru_cache(maxsize=4096)
def _epsilon_rdp(
    sampling: str, population: int, cohort_size: int, releases: Releases, delta: float
) -> float:
    # Same sum RdpAccountant forms (count * vector per composed event).
    total = sum(n * release_rdp(sampling, population, cohort_size, z) for z, n in releases)
    # At tiny q the library's RDP can come out at -1e-16, which compute_epsilon
    # rejects (RdpAccountant.get_epsilon raises too); RDP is >= 0, so 0 is safe.
    return rdp_epsilon(np.maximum(total, 0.0), delta)


#: PLD value discretization. dp-accounting's default (1e-4) is ~10x slower; the
#: default pessimistic discretization keeps a coarser grid a valid upper bound
#: (measured: 0.7181 vs 0.7180 at q=0.01, z=1, 100 rounds, delta=1e-5).
PLD_DISCRETIZATION = 1e-3


@functools.lru_cache(maxsize=256)
def _epsilon_pld(
    sampling: str, population: int, cohort_size: int, releases: Releases, delta: float
) -> float:
    acc = pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    if sampling == "none":
        # Composed Gaussians are exactly one Gaussian; one PLD instead of a
        # convolution per distinct z, and no discretization error compounded.
        z_eff = sum(n * z**-2 for z, n in releases) ** -0.5
        acc.compose(dp_accounting.GaussianDpEvent(z_eff), 1)
    else:
        for z, n in releases:
            acc.compose(sampled_round_event(z, population, cohort_size, sampling), n)
    return float(acc.get_epsilon(delta))


def _canonical_releases(releases: Iterable[tuple[float, int]]) -> Releases:
    counts: dict[float, int] = {}
    for z, n in releases:
        z = non_negative("noise_multiplier", z)
        counts[z] = counts.get(z, 0) + non_negative_int("releases", n)
    return tuple(sorted((z, n) for z, n in counts.items() if n))


@dataclass(frozen=True)
class PrivacyLedger:
    """Immutable record of the releases run so far; epsilon on demand.

    ``noise_multiplier`` is the nominal per-release multiplier relative to the
    add/remove-one sensitivity (use :meth:`for_dp_mean` to derive it);
    ``releases`` counts the releases at each multiplier (see :data:`Releases`;
    any iterable of ``(z, count)`` pairs is accepted and put in that form).
    """

    population: int
    cohort_size: int
    noise_multiplier: float
    sampling: str = "fixed_size"
    method: str = "best"
    releases: Releases = field(default=())

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
        if self.method == "pld" and self.sampling not in PLD_SAMPLINGS:
            raise ConfigError(
                "method",
                f"'pld' needs sampling in {PLD_SAMPLINGS} (dp-accounting's PLD has no sampling "
                f"without replacement), got {self.method!r} with {self.sampling!r}",
            )
        # Canonical form, so equal histograms are equal (and hash equal) ledgers.
        object.__setattr__(self, "releases", _canonical_releases(self.releases))

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Checkpoints written before per-multiplier releases stored ``rounds``
        # (all at the nominal multiplier).
        state = dict(state)
        if "rounds" in state:
            n = state.pop("rounds")
            state["releases"] = ((float(state["noise_multiplier"]), n),) if n else ()
        for name, value in state.items():
            object.__setattr__(self, name, value)

    @classmethod
    def for_dp_mean(
        cls, aggregator: Any, population: int, sampling: str = "fixed_size", method: str = "best"
    ) -> PrivacyLedger:
        """A ledger for a :class:`DPMean` whose cohorts are ``expected_count`` users."""
        z = effective_noise_multiplier(aggregator.dp_event())
        return cls(population, aggregator.expected_count, z, sampling, method)

    @property
    def rounds(self) -> int:
        """Total number of releases, whatever their multiplier."""
        return sum(n for _, n in self.releases)

    @property
    def sampling_probability(self) -> float:
        """Probability that a given device is in a release: ``m / N``, 1 for ``"none"``."""
        return 1.0 if self.sampling == "none" else self.cohort_size / self.population

    def release_event(self, noise_multiplier: Optional[float] = None) -> dp_accounting.DpEvent:
        """One release's event at ``noise_multiplier`` (default: the nominal one)."""
        z = self.noise_multiplier if noise_multiplier is None else noise_multiplier
        return sampled_round_event(z, self.population, self.cohort_size, self.sampling)

    def round_event(self) -> dp_accounting.DpEvent:
        """One release's event at the nominal multiplier."""
        return self.release_event()

    def compose(self, rounds: int = 1, noise_multiplier: Optional[float] = None) -> PrivacyLedger:
        """The ledger after ``rounds`` more releases at ``noise_multiplier`` (default: nominal)."""
        z = self.noise_multiplier if noise_multiplier is None else noise_multiplier
        n = non_negative_int("rounds", rounds)
        if n == 0:
            return self
        return replace(self, releases=(*self.releases, (z, n)))

    def epsilon_rdp(self, delta: float) -> float:
        """The RDP bound on epsilon at ``delta``: cheap, always a valid upper bound."""
        d = probability("delta", delta)
        if not self.releases:
            return 0.0
        if _has_zero(self.releases):
            return math.inf
        return _epsilon_rdp(self.sampling, self.population, self.cohort_size, self.releases, d)

    def epsilon(self, delta: float) -> float:
        """Epsilon at ``delta`` per ``method`` (``inf`` if any release had no noise).

        Costs a PLD computation (cached) when ``method`` is not ``"rdp"`` and
        the sampling is ``"poisson"`` or ``"none"``.
        """
        d = probability("delta", delta)
        if not self.releases:
            return 0.0
        if _has_zero(self.releases):
            return math.inf
        if self.method == "rdp" or self.sampling not in PLD_SAMPLINGS:
            return self.epsilon_rdp(d)
        eps_pld = _epsilon_pld(self.sampling, self.population, self.cohort_size, self.releases, d)
        return eps_pld if self.method == "pld" else min(self.epsilon_rdp(d), eps_pld)

    def would_exceed(
        self, target_epsilon: float, delta: float, noise_multiplier: Optional[float] = None
    ) -> bool:
        """True iff one more release (at ``noise_multiplier``) would push epsilon above the target.

        Same answer as ``self.compose(1, z).epsilon(delta) > target_epsilon``;
        PLD is only computed when the RDP bound exceeds the target.
        """
        nxt = self.compose(1, noise_multiplier)
        # epsilon <= epsilon_rdp unless method is "pld" (PLD alone may exceed RDP).
        if self.method != "pld" and nxt.epsilon_rdp(delta) <= target_epsilon:
            return False
        return nxt.epsilon(delta) > target_epsilon


def _last_true(ok: Callable[[int], bool], lo: int, hi: int) -> int:
    """Largest n in [lo, hi] with ok(n), given ok(lo) and ok monotone (true then false)."""
    if ok(hi):
        return hi
    while hi - lo > 1:  # ok(lo) holds, ok(hi) does not
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def rounds_within_budget(
    ledger: PrivacyLedger, target_epsilon: float, delta: float, max_rounds: int = 100_000
) -> int:
    """The most releases (counted from zero, at the nominal multiplier) with epsilon <= target.

    Epsilon only grows with releases, so a search suffices; the answer is
    capped at ``max_rounds``. The RDP bound (cheap, and >= epsilon unless
    ``method="pld"``) gives a lower end; the exact epsilon is then searched
    upward from it with doubling steps, so PLD is evaluated near the answer
    rather than at ``max_rounds``.
    """
    positive("target_epsilon", target_epsilon)
    max_rounds = non_negative_int("max_rounds", max_rounds)
    base = replace(ledger, releases=())

    def exact_ok(n: int) -> bool:
        return base.compose(n).epsilon(delta) <= target_epsilon

    lo = 0
    if base.method != "pld":
        lo = _last_true(lambda n: base.compose(n).epsilon_rdp(delta) <= target_epsilon, 0, max_rounds)
        if lo == max_rounds or base.method == "rdp" or base.sampling not in PLD_SAMPLINGS:
            return lo  # epsilon is the RDP bound here, or already capped
    step = 1
    while lo + step <= max_rounds and exact_ok(lo + step):
        lo += step
        step *= 2
    return _last_true(exact_ok, lo, min(lo + step, max_rounds))
