"""Canary clients and the one-shot empirical ε estimate (Andrew et al. 2024).

"One-shot Empirical Privacy Estimation for Federated Learning" (ICLR 2024,
arXiv 2302.03098) measures, in the same single run that trains the model, how
much the *final model* reveals about one client:

1. ``k`` canary clients are added to the population. Canary ``i`` has a fixed
   direction ``c_i``, uniform on the unit sphere of the model's ``d``
   parameters (drawn from the seed tree, path ``("canary", "direction", i)``).
   Whenever it takes part in a release it sends an update along ``c_i`` larger
   than any clip norm, which the DP stage's own ``encode`` clips to exactly
   ``C``: the record a client with the largest possible influence would send.
   It goes through the same ``encode`` as a device's update and is summed with
   the devices' records before the mechanism adds its noise.
2. A canary takes part in each release independently with the probability the
   accountant assumes for a device (``q = sample / N``), from its own seed path
   ``("canary", "joins", release)``, so the run's noise draws are those of the
   same run without canaries.
3. At the end, the cosine between the final model delta (final minus initial
   weights) and each inserted canary's direction is computed, and a Gaussian
   ``N(mu, sigma**2)`` is fitted to them. A direction drawn independently of
   the run has cosine mean 0 and variance exactly ``1 / d`` with the model
   delta (nearly Gaussian for ``d`` in the hundreds or more); ``k'`` further
   canaries are drawn the same way but never inserted, and their fitted mean and
   standard deviation are reported as a check of that null.
4. The estimate is the ε at the run's δ of the pair of Gaussians
   ``N(0, 1/d)`` and ``N(mu, sigma**2)``: the privacy of a Gaussian mechanism
   whose outputs, with and without the canary, are distributed as the cosines
   are. With unequal variances the privacy loss is quadratic, not linear, in
   the output; :func:`epsilon_between_gaussians` handles both.

What it is: an estimate of the privacy an attacker who sees only the final
model gets against a worst-case client (one whose update is always clipped and
always points the same way), which is often far below what the accountant
proves for an attacker who sees every release. What it is not: a bound. It
rests on the Gaussian fit and on ``k`` being large enough; it can be below the
true ε of the final model, and it says nothing about clients unlike the
canaries. Every function here is pure (numpy and scipy); the wiring into a run
is :class:`CanaryInsertion` and :class:`CanaryPlan`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from scipy import optimize, special

from fedactors.aggregation.base import (
    Aggregate,
    Aggregator,
    Contribution,
    Contributions,
    PlainContributions,
    RoundContext,
    Wrapper,
)
from fedactors.seeding import SeedTree

#: A canary's raw update is this many clip norms long, so the DP stage's encode
#: always clips it (to exactly C), as the paper's canaries are; with adaptive
#: clipping it counts as a clipped update.
OVERSIZE = 2.0
#: The one-line reading of the estimate written next to it in summary.json.
NOTE = ("empirical estimate, not a guarantee: the ε at this δ of telling the final model's "
        "cosines with inserted canaries from those of random directions, both fitted as "
        "Gaussians (Andrew et al. 2024); it measures only what the final model reveals about "
        "a worst-case client, and can be below the true ε; the guarantee is privacy.epsilon")
#: Fewest model parameters a canary run accepts: below ~1,000 the cosine of a
#: random direction (a scaled Beta variable) is visibly lighter-tailed than the
#: Gaussian N(0, 1/d) the estimate assumes (the threshold of the paper's own code).
MIN_PARAMETERS = 1000
#: A fitted standard deviation of exactly 0 (identical cosines, e.g. no noise at
#: all and one participation pattern) is floored at this fraction of the null's,
#: so ε is large and finite rather than undefined. ε grows like the square of the
#: ratio: at 1e-2 it is ~1e5, below the search's cap; at 1e-6 no ε below the cap
#: reached δ and the estimate raised instead.
_TINY = 1e-2
#: ``log`` of the smallest δ the root-finding distinguishes from zero.
_LOG_FLOOR = -745.0


# -- the canaries ------------------------------------------------------------------


def canary_direction(seeds: SeedTree, index: int, dim: int) -> np.ndarray:
    """Canary ``index``'s direction: uniform on the unit sphere of ``R**dim`` (float64).

    A standard normal vector, normalised (rotation invariance makes it uniform).
    Derived from its own seed path, so it is the same whoever asks and when.
    """
    v = seeds.generator("canary", "direction", index).standard_normal(dim)
    return v / np.linalg.norm(v)


def joining_canaries(seeds: SeedTree, release: int, inserted: int, rate: float) -> np.ndarray:
    """The inserted canaries (indices ``0 .. inserted-1``) that take part in ``release``.

    Each independently with probability ``rate``: Poisson sampling, as the
    accountant models a device's participation.
    """
    draws = seeds.generator("canary", "joins", release).random(inserted)
    return np.flatnonzero(draws < rate)


def cosines(delta: np.ndarray, directions: Iterable[np.ndarray]) -> np.ndarray:
    """The cosine between ``delta`` and each unit vector in ``directions`` (float64).

    ``directions`` is consumed one vector at a time, so a generator keeps only
    one in memory (2,000 canaries of a 10^6-parameter model would be 16 GB).
    """
    d = np.asarray(delta, np.float64).ravel()
    norm = float(np.linalg.norm(d))
    if norm == 0.0 or not math.isfinite(norm):
        raise ValueError(f"the model delta has norm {norm}: no cosine is defined")
    return np.array([float(np.dot(c, d)) for c in directions], np.float64) / norm


# -- ε of a pair of Gaussians ---------------------------------------------------------


def _log_cdf(x: float, mean: float, sd: float) -> float:
    # scipy.special.log_ndtr directly: accurate far into the tail, and ~20x
    # cheaper than scipy.stats.norm.logcdf, which the root-finding calls often.
    return float(special.log_ndtr((x - mean) / sd))


def _log_sf(x: float, mean: float, sd: float) -> float:
    return float(special.log_ndtr((mean - x) / sd))


def _log_mass(intervals: Sequence[tuple[float, float]], mean: float, sd: float) -> float:
    """``log P(X in union of disjoint intervals)`` for ``X ~ N(mean, sd**2)``, in log space."""
    logs = []
    for lo, hi in intervals:
        if lo == -math.inf:
            logs.append(_log_cdf(hi, mean, sd))
        elif hi == math.inf:
            logs.append(_log_sf(lo, mean, sd))
        else:  # a difference, taken in the tail where it loses no digits
            a, b = ((_log_sf(lo, mean, sd), _log_sf(hi, mean, sd)) if lo >= mean
                    else (_log_cdf(hi, mean, sd), _log_cdf(lo, mean, sd)))
            logs.append(a + math.log1p(-math.exp(b - a)) if b < a else -math.inf)
    # At most two disjoint pieces: a plain log-add-exp (scipy's logsumexp costs
    # ~0.5 ms a call, most of the root-finding's time).
    return float(np.logaddexp.reduce(logs)) if logs else -math.inf


def _loss_above(p: tuple[float, float], q: tuple[float, float],
                epsilon: float) -> list[tuple[float, float]]:
    """Where the privacy loss ``log p(x) - log q(x)`` of two Gaussians exceeds ``epsilon``.

    The loss is ``a x**2 + b x + c``: linear for equal variances, a parabola
    otherwise, so the set is empty, a half-line, an interval or two half-lines.
    """
    (mp, sp), (mq, sq) = p, q
    a = 0.5 / sq**2 - 0.5 / sp**2
    b = mp / sp**2 - mq / sq**2
    c = 0.5 * mq**2 / sq**2 - 0.5 * mp**2 / sp**2 + math.log(sq / sp) - epsilon
    if a == 0.0:
        if b == 0.0:
            return [] if c <= 0 else [(-math.inf, math.inf)]
        t = -c / b
        return [(t, math.inf)] if b > 0 else [(-math.inf, t)]
    disc = b * b - 4.0 * a * c
    if disc <= 0.0:  # the parabola never crosses zero: its sign is a's
        return [(-math.inf, math.inf)] if a > 0 else []
    # The numerically stable pair of roots (no cancellation when a is tiny).
    k = -0.5 * (b + math.copysign(math.sqrt(disc), b))
    lo, hi = sorted((k / a, c / k))  # k != 0: disc > 0
    return [(-math.inf, lo), (hi, math.inf)] if a > 0 else [(lo, hi)]


def _log_delta_one_way(p: tuple[float, float], q: tuple[float, float], epsilon: float) -> float:
    """``log`` of the hockey-stick divergence ``sup_S P(S) - e**epsilon Q(S)`` of P over Q."""
    region = _loss_above(p, q, epsilon)
    log_p, log_q = _log_mass(region, *p), _log_mass(region, *q)
    if log_p == -math.inf:
        return -math.inf
    gap = epsilon + log_q - log_p  # on the region p > e^eps q, so gap < 0 up to rounding
    return log_p + math.log1p(-math.exp(gap)) if gap < 0 else -math.inf


def delta_between_gaussians(mean_a: float, sd_a: float, mean_b: float, sd_b: float,
                            epsilon: float) -> float:
    """The smallest δ for which the two Gaussians are (ε, δ)-indistinguishable, both ways.

    ``max(H(A || B), H(B || A))`` with ``H`` the hockey-stick divergence at
    ``e**epsilon``: exactly the δ(ε) of a mechanism whose output is
    ``N(mean_a, sd_a**2)`` on one dataset and ``N(mean_b, sd_b**2)`` on its
    neighbour. Equal standard deviations give the Gaussian mechanism's
    δ(ε) with sensitivity ``|mean_a - mean_b|`` and noise ``sd_a``.

    Args:
        mean_a: Mean of the first Gaussian.
        sd_a: Its standard deviation (> 0).
        mean_b: Mean of the second Gaussian.
        sd_b: Its standard deviation (> 0).
        epsilon: ε (>= 0).

    Returns:
        δ in [0, 1].

    Examples:
        >>> from fedactors.privacy.canaries import delta_between_gaussians
        >>> round(delta_between_gaussians(0.0, 1.0, 1.0, 1.0, epsilon=2.3), 4)  # sensitivity 1, noise 1
        0.0104
    """
    a, b = (float(mean_a), _sd("sd_a", sd_a)), (float(mean_b), _sd("sd_b", sd_b))
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
    log_delta = max(_log_delta_one_way(a, b, epsilon), _log_delta_one_way(b, a, epsilon))
    return math.exp(log_delta) if log_delta > -math.inf else 0.0


def epsilon_between_gaussians(mean_a: float, sd_a: float, mean_b: float, sd_b: float,
                              delta: float) -> float:
    """The smallest ε >= 0 at which the two Gaussians are (ε, ``delta``)-indistinguishable.

    Inverts :func:`delta_between_gaussians` (non-increasing in ε) by Brent's
    method on ``log δ``, so a δ of 1e-10 is found as precisely as one of 0.1.
    For equal standard deviations this is the analytic Gaussian mechanism's
    ε (Balle and Wang 2018) at sensitivity ``|mean_a - mean_b|``, noise ``sd_a``.

    Args:
        mean_a: Mean of the first Gaussian.
        sd_a: Its standard deviation (> 0).
        mean_b: Mean of the second Gaussian.
        sd_b: Its standard deviation (> 0).
        delta: δ, strictly between 0 and 1.

    Returns:
        ε (0 if even ε = 0 meets ``delta``).

    Examples:
        >>> from fedactors.privacy.canaries import epsilon_between_gaussians
        >>> round(epsilon_between_gaussians(0.0, 1.0, 1.0, 1.0, delta=1e-5), 3)
        4.377
        >>> round(epsilon_between_gaussians(0.0, 1.0, 1.0, 1.2, delta=1e-5), 3)  # wider: larger
        8.818
    """
    a, b = (float(mean_a), _sd("sd_a", sd_a)), (float(mean_b), _sd("sd_b", sd_b))
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be strictly between 0 and 1, got {delta!r}")
    target = math.log(delta)

    def excess(eps: float) -> float:
        log_d = max(_log_delta_one_way(a, b, eps), _log_delta_one_way(b, a, eps))
        return max(log_d, _LOG_FLOOR) - target

    if excess(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while excess(hi) > 0:
        lo, hi = hi, 2.0 * hi
        if hi > 1e6:  # δ(ε) -> 0 as ε grows; this is only reached for absurd inputs
            raise ValueError(f"no ε below {hi:g} reaches delta={delta!r}")
    return float(optimize.brentq(excess, lo, hi, xtol=1e-10, rtol=1e-10))


def _sd(name: str, value: float) -> float:
    v = float(value)
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


# -- the estimate ------------------------------------------------------------------------


@dataclass(frozen=True)
class EmpiricalEstimate:
    """The one-shot empirical ε of a run's final model, and the statistics it comes from.

    Args:
        epsilon: The estimate: ε at ``delta`` between ``N(0, 1/dim)`` and
            ``N(mean, sd**2)`` (see :func:`estimate_epsilon`).
        delta: The δ it is computed at (the run's).
        dim: Number of model parameters ``d``.
        inserted: Canaries inserted (``k``).
        held_out: Canaries drawn but never inserted (``k'``).
        mean: Mean cosine of the final model delta with the inserted canaries.
        sd: Their sample standard deviation.
        held_out_mean: Mean cosine with the held-out canaries (about 0).
        held_out_sd: Their standard deviation (about ``1 / sqrt(dim)``).

    Examples:
        >>> from fedactors.privacy.canaries import EmpiricalEstimate
        >>> e = EmpiricalEstimate(epsilon=1.5, delta=1e-5, dim=10_000, inserted=1000,
        ...                       held_out=1000, mean=0.02, sd=0.011,
        ...                       held_out_mean=0.0003, held_out_sd=0.0101)
        >>> e.null_sd
        0.01
    """

    epsilon: float
    delta: float
    dim: int
    inserted: int
    held_out: int
    mean: float
    sd: float
    held_out_mean: float
    held_out_sd: float

    @property
    def null_sd(self) -> float:
        """The standard deviation of a random direction's cosine, ``1 / sqrt(dim)``."""
        return 1.0 / math.sqrt(self.dim)

    def as_json(self) -> dict[str, Any]:
        """The statistics as plain JSON values (``summary.json``'s ``privacy.empirical``)."""
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "canaries_inserted": self.inserted,
            "canaries_held_out": self.held_out,
            "parameters": self.dim,
            "cosine_mean": self.mean,
            "cosine_sd": self.sd,
            "null_cosine_sd": self.null_sd,
            "held_out_cosine_mean": self.held_out_mean,
            "held_out_cosine_sd": self.held_out_sd,
        }


def estimate_epsilon(inserted_cosines: Sequence[float], held_out_cosines: Sequence[float],
                     dim: int, delta: float) -> EmpiricalEstimate:
    """The one-shot ε estimate from the final model's cosines with the canaries.

    Fits ``N(mean, sd**2)`` to ``inserted_cosines`` (sample standard deviation)
    and takes the ε at ``delta`` between it and the null ``N(0, 1/dim)``: the
    exact mean and variance of the cosine of a direction drawn independently of
    the model (Andrew et al. 2024, section 4). ``held_out_cosines`` (canaries
    never inserted) only check that null and are reported beside it.

    Any sampling error in the fitted ``sd`` (either way) moves the pair of
    Gaussians apart, so with finitely many canaries the estimate is biased
    upward: for a Gaussian mechanism of true ε 4.38 at δ = 1e-5, ``k = 1000``
    gave 4.30 to 5.78 over 16 seeds (mean +8%).

    Args:
        inserted_cosines: Cosine of the final model delta with each inserted
            canary (at least 2).
        held_out_cosines: Cosine with each canary drawn but never inserted
            (at least 2).
        dim: Number of model parameters ``d`` (>= 1).
        delta: δ, strictly between 0 and 1.

    Returns:
        An ``EmpiricalEstimate``.

    Examples:
        >>> import numpy as np
        >>> from fedactors.privacy.canaries import estimate_epsilon
        >>> rng, d = np.random.default_rng(0), 10_000
        >>> seen = rng.normal(1.0 / np.sqrt(d), 1.0 / np.sqrt(d), 5000)  # Gaussian mechanism, mu = 1
        >>> unseen = rng.normal(0.0, 1.0 / np.sqrt(d), 5000)
        >>> round(estimate_epsilon(seen, unseen, d, delta=1e-5).epsilon, 2)  # exact: 4.38
        4.47
    """
    seen = np.asarray(inserted_cosines, np.float64)
    unseen = np.asarray(held_out_cosines, np.float64)
    if seen.size < 2 or unseen.size < 2:
        raise ValueError("need at least 2 inserted and 2 held-out cosines to fit a Gaussian")
    if int(dim) < 1:
        raise ValueError(f"dim must be >= 1, got {dim!r}")
    null_sd = 1.0 / math.sqrt(int(dim))
    mean, sd = float(seen.mean()), float(seen.std(ddof=1))
    eps = epsilon_between_gaussians(0.0, null_sd, mean, max(sd, _TINY * null_sd), delta)
    return EmpiricalEstimate(eps, float(delta), int(dim), int(seen.size), int(unseen.size),
                             mean, sd, float(unseen.mean()), float(unseen.std(ddof=1)))


# -- the canaries in a run -------------------------------------------------------------


@dataclass(frozen=True)
class CanaryPlan:
    """A run's canaries: how many, how often each takes part, where their randomness comes from.

    Args:
        seeds: The run's seed tree (canary paths start with ``"canary"``).
        inserted: Canaries inserted into releases (``k``).
        held_out: Canaries drawn but never inserted (``k'``); indices
            ``inserted .. inserted + held_out - 1``.
        rate: Probability that an inserted canary takes part in one release.
        dim: Number of model parameters.
    """

    seeds: SeedTree = field(repr=False, compare=False)
    inserted: int
    held_out: int
    rate: float
    dim: int

    def joining(self, release: int) -> np.ndarray:
        """Indices of the canaries that take part in ``release``."""
        return joining_canaries(self.seeds, release, self.inserted, self.rate)

    def records(self, aggregator: Aggregator, params: Mapping[str, Any],
                release: int) -> list[Contribution]:
        """The contributions of the canaries in ``release``, each encoded by ``aggregator``.

        A canary's raw update is its direction ``OVERSIZE`` clip norms long, so
        the stage's encode clips it to exactly the round's C; ``encode`` gets the
        round's broadcast ``params`` and a generator of the canary's own, as a
        device's would.
        """
        clip = float(params["clip_norm"])
        out = []
        for i in self.joining(release):
            raw = (OVERSIZE * clip * canary_direction(self.seeds, int(i), self.dim)).astype(np.float32)
            rng = self.seeds.generator("canary", "encode", release, int(i))
            out.append(aggregator.encode(params, raw, 1, rng))
        return out

    def estimate(self, initial: np.ndarray, final: np.ndarray, delta: float) -> Optional[EmpiricalEstimate]:
        """The estimate for a run that went from ``initial`` to ``final`` weights.

        ``None`` if the model did not move (no release was applied): no cosine
        is defined.
        """
        change = np.asarray(final, np.float64) - np.asarray(initial, np.float64)
        if not np.any(change):
            return None
        seen = cosines(change, (canary_direction(self.seeds, i, self.dim)
                                for i in range(self.inserted)))
        unseen = cosines(change, (canary_direction(self.seeds, i, self.dim)
                                  for i in range(self.inserted, self.inserted + self.held_out)))
        return estimate_epsilon(seen, unseen, self.dim, delta)

    def summary(self, initial: np.ndarray, final: np.ndarray, delta: float, ledger: Any,
                participations: int) -> dict[str, Any]:
        """``summary.json``'s ``privacy.empirical`` block.

        ``ledger`` is the run's ``PrivacyLedger`` (its releases and noise);
        ``participations`` the canaries summed over all releases. Beside the
        estimate goes ``epsilon_canary_bound``: what the accountant proves for
        a canary itself (the run's releases, Poisson sampling at the canaries'
        rate, add-or-remove-one), which holds whatever the devices did; the
        estimate should not be above it.
        """
        estimate = self.estimate(initial, final, delta)
        block: dict[str, Any] = {"epsilon": None if estimate is None else estimate.epsilon}
        block.update({} if estimate is None else estimate.as_json())
        block.update({
            "epsilon_canary_bound": canary_epsilon_bound(ledger, delta),
            "canaries_inserted": self.inserted,
            "canaries_held_out": self.held_out,
            "participation_rate": self.rate,
            "canary_participations": int(participations),
            "note": NOTE if estimate is not None else
            "no estimate: no release changed the model, so no cosine is defined",
        })
        return block


def canary_epsilon_bound(ledger: Any, delta: float) -> Optional[float]:
    """The accountant's ε for one canary: ``ledger``'s releases, Poisson-sampled, add/remove-one.

    A canary joins each release independently at the ledger's sampling
    probability, so this is a guarantee for it whether or not the devices kept
    the sampling assumption; for a Poisson-sampled run it equals the run's ε.
    ``None`` when there is no noise (ε is infinite).
    """
    from dataclasses import replace

    poisson = replace(ledger, sampling="poisson", method="best")
    eps = poisson.epsilon(delta)
    return None if math.isinf(eps) else float(eps)


class _WithCanaries(Contributions):
    """The cohort's contributions followed by the canaries' (summed in float64)."""

    def __init__(self, real: Contributions, canaries: Sequence[Contribution]) -> None:
        self._real = real
        self._canaries = PlainContributions(canaries)

    @property
    def count(self) -> int:
        return self._real.count + self._canaries.count

    def sum(self) -> dict[str, np.ndarray]:
        total = self._real.sum() if self._real.count else {}
        for key, value in (self._canaries.sum() if self._canaries.count else {}).items():
            total[key] = np.asarray(total[key], np.float64) + value if key in total else value
        return total

    def stacked(self) -> dict[str, np.ndarray]:
        real = self._real.stacked() if self._real.count else {}
        extra = self._canaries.stacked()
        if not real:
            return extra
        return {k: np.concatenate([real[k], extra[k]]) if k in extra else real[k] for k in real}


class CanaryInsertion(Wrapper):
    """Adds the plan's canaries to every release's contributions, then aggregates as ``inner``.

    The canaries' records are encoded by ``inner`` (the scenario's whole stage
    chain, what every device runs) with the round's broadcast parameters, and
    reach ``inner.aggregate`` summed with the devices' before any noise is
    added: they go through exactly the clipping and noise a device's update
    does. The round's ``canaries`` measurement counts them. Devices never see
    this stage; only the server's release step runs it.

    Args:
        inner: The scenario's aggregator.
        plan: The run's ``CanaryPlan``.
    """

    def __init__(self, inner: Aggregator, plan: CanaryPlan) -> None:
        super().__init__(inner)
        self.plan = plan

    def encode(self, params: Mapping[str, Any], delta: np.ndarray, num_examples: int,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
        return self.inner.encode(params, delta, num_examples, rng)

    def aggregate(self, state: Any, contributions: Contributions, ctx: RoundContext) -> Aggregate:
        records = self.plan.records(self.inner, self.inner.client_params(state), ctx.round)
        result = self.inner.aggregate(state, _WithCanaries(contributions, records), ctx)
        return Aggregate(result.delta, result.state,
                         {**result.measurements, "canaries": len(records)})
