"""The Skellam mechanism's numerics: sampler, rounding bound, tail bound and RDP. Pure numpy.

Agarwal, Kairouz & Liu 2021 ("The Skellam Mechanism for Differentially
Private Federated Learning", arXiv 2110.04995). The symmetric Skellam
distribution ``Sk(v)`` of variance ``v`` is ``Poisson(v/2) - Poisson(v/2)``:
integer-valued, and a sum of independent ``Sk(v_i)`` is ``Sk(sum v_i)``, so
devices that each add ``Sk(v/k)`` on the integer grid give a sum carrying
exactly ``Sk(v * m'/k)`` for ``m'`` devices, which secure aggregation's
modular integer sum computes without any rounding.

Everything here is in **integer units** (the grid after scaling by
``gamma = 2**scale_bits``): a record is an integer vector, its sensitivities
``l2`` and ``l1`` are norms of integer vectors, the variance is of the integer
noise. Each function draws only from the generator it is given.

* :func:`sample_skellam`: ``Sk(v)`` draws (numpy's Poisson sampler).
* :func:`rounded_l2_bound`, :func:`rounded_l1_bound`: the L2 norm a vector of
  norm ``c`` can have after conditional randomized rounding (Kairouz, Liu &
  Steinke 2021, Theorem 1, as the Skellam paper uses it), and the L1 norm that
  implies for an integer vector; :func:`conditional_round` enforces the L2 one.
* :func:`tail_bound`, :func:`truncation_level`: a Chernoff bound on
  ``P(|Sk(v)| > t)`` and the smallest ``t`` below a target probability, so a
  truncated share has a hard bound for the secure-aggregation modulus.
* :func:`skellam_rdp`: the paper's RDP bound for the multi-dimensional
  Skellam mechanism with L1 and L2 sensitivities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: A device's share is truncated where its two-sided tail is below this, per
#: coordinate (Chernoff bound, :func:`tail_bound`); the total over a run is
#: reported and folded into δ (fedactors.privacy.skellam_budget).
TAIL_PROBABILITY = 2.0**-100
#: Conditional rounding retries at most this many times, then sends the zero
#: vector (within any bound, so never a privacy failure). With success
#: probability >= 1 - beta per try, reaching it has probability <= beta**1000.
MAX_ROUNDING_TRIES = 1000
#: The largest Poisson mean numpy's generators draw (``Generator.poisson`` refuses a
#: larger one: "lam value too large"), so the largest ``share_variance / 2``.
POISSON_MEAN_MAX = float(np.iinfo(np.int64).max - math.sqrt(np.iinfo(np.int64).max) * 10)


def sample_skellam(rng: np.random.Generator, variance: float, size: int) -> np.ndarray:
    """``size`` draws (int64) of the symmetric Skellam ``Poisson(v/2) - Poisson(v/2)``, variance v.

    Examples:
        >>> import numpy as np
        >>> x = sample_skellam(np.random.default_rng(0), 4.0, 5)
        >>> x.dtype, x.shape
        (dtype('int64'), (5,))
        >>> sample_skellam(np.random.default_rng(0), 0.0, 3)
        array([0, 0, 0])
    """
    if not (math.isfinite(variance) and variance >= 0):
        raise ValueError(f"variance must be finite and >= 0, got {variance!r}")
    lam = variance / 2.0
    draws = rng.poisson(lam, size=(2, int(size))).astype(np.int64)
    return draws[0] - draws[1]


def tail_bound(variance: float, t: int) -> float:
    """An upper bound on ``P(|Sk(variance)| > t)``, by Chernoff.

    For ``X = P1 - P2``, ``Pi ~ Poisson(l)``, ``l = v/2``:
    ``E[exp(sX)] = exp(2l (cosh s - 1))``, so ``P(X >= a) <= exp(2l (cosh s - 1) - s a)``
    for every ``s > 0``, smallest at ``sinh s = a / (2l)``. Two-sided with
    ``a = t + 1`` (X is an integer). Returns 1.0 where the bound is vacuous.

    Examples:
        >>> tail_bound(0.0, 0)
        0.0
        >>> 0 < tail_bound(1.0, 10) < 1e-9
        True
    """
    if variance == 0:
        return 0.0
    lam, a = variance / 2.0, float(t) + 1.0
    s = math.asinh(a / (2.0 * lam))
    log_one_side = 2.0 * lam * (math.cosh(s) - 1.0) - s * a
    return min(1.0, 2.0 * math.exp(log_one_side))


def truncation_level(variance: float, probability: float = TAIL_PROBABILITY) -> int:
    """The smallest integer ``t >= 0`` with ``tail_bound(variance, t) <= probability``.

    Examples:
        >>> truncation_level(0.0)
        0
        >>> t = truncation_level(100.0)
        >>> tail_bound(100.0, t) <= TAIL_PROBABILITY < tail_bound(100.0, t - 1)
        True
    """
    if not 0 < probability < 1:
        raise ValueError(f"probability must be in (0, 1), got {probability!r}")
    if variance == 0:
        return 0
    hi = 1
    while tail_bound(variance, hi) > probability:  # the bound falls monotonically in t
        hi *= 2
    lo = -1  # tail_bound(v, -1) = P(|X| >= 0) bound: never <= probability
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if tail_bound(variance, mid) <= probability:
            hi = mid
        else:
            lo = mid
    return hi


def rounded_l2_bound(l2: float, dim: int, beta: float) -> float:
    """The L2 norm a vector of norm ``<= l2`` (in grid units) has after conditional rounding.

    Randomized rounding moves each coordinate by less than 1, so the norm
    grows by less than ``sqrt(dim)`` (always). With ``beta > 0``, rounding is
    repeated until the norm is at most
    ``sqrt(l2**2 + dim/4 + sqrt(2 ln(1/beta)) (l2 + sqrt(dim)/2))``, which one
    rounding meets with probability at least ``1 - beta`` (Kairouz, Liu &
    Steinke 2021, Theorem 1). The bound is the smaller of the two.

    Examples:
        >>> rounded_l2_bound(100.0, 4, 0.0)
        102.0
        >>> round(rounded_l2_bound(100.0, 4, 0.01), 3)
        101.526
    """
    if not (math.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2 must be finite and >= 0, got {l2!r}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim!r}")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    always = l2 + math.sqrt(dim)
    if beta == 0:
        return always
    conditional = math.sqrt(l2**2 + dim / 4.0
                            + math.sqrt(2.0 * math.log(1.0 / beta)) * (l2 + math.sqrt(dim) / 2.0))
    return min(always, conditional)


def rounded_l1_bound(l2_bound: float, dim: int) -> float:
    """The L1 norm of an integer vector of L2 norm ``<= l2_bound`` in ``dim`` coordinates.

    ``||q||_1 <= sqrt(dim) ||q||_2`` always; for integers also
    ``||q||_1 <= ||q||_2 ** 2`` (each non-zero ``|q_i| >= 1``, so ``|q_i| <= q_i**2``).

    Examples:
        >>> rounded_l1_bound(3.0, 100), rounded_l1_bound(30.0, 4)
        (9.0, 60.0)
    """
    return l2_bound * min(math.sqrt(dim), l2_bound)


def conditional_round(
    rng: np.random.Generator, x: np.ndarray, l2_bound: float
) -> tuple[np.ndarray, int]:
    """``x`` (grid units) randomly rounded to integers, re-drawn until ``||q||_2 <= l2_bound``.

    Each coordinate rounds up with probability equal to its fractional part
    (unbiased). Returns ``(q, tries)``; ``q`` is int64 and always within
    ``l2_bound``: after :data:`MAX_ROUNDING_TRIES` failures it is the zero
    vector (a bound the privacy rests on is never exceeded, whatever happens).

    Examples:
        >>> import numpy as np
        >>> q, tries = conditional_round(np.random.default_rng(0), np.array([0.5, -1.25]), 3.0)
        >>> q.dtype, bool(np.linalg.norm(q) <= 3.0)
        (dtype('int64'), True)
    """
    x = np.asarray(x, np.float64)
    low = np.floor(x)
    frac = x - low
    for tries in range(1, MAX_ROUNDING_TRIES + 1):
        q = (low + (rng.random(x.shape) < frac)).astype(np.int64)
        # Integer squares sum exactly in int64 for any grid this is used with.
        if math.sqrt(float(np.dot(q, q))) <= l2_bound:
            return q, tries
    return np.zeros(x.shape, np.int64), MAX_ROUNDING_TRIES


def skellam_rdp(orders: np.ndarray, variance: float, l1: float, l2: float) -> np.ndarray:
    """RDP of adding ``Sk(variance)`` per coordinate to an integer query of sensitivities l1, l2.

    Agarwal, Kairouz & Liu 2021 (multi-dimensional Skellam mechanism), for
    integer orders ``a >= 2``::

        eps(a) <= a l2**2 / (2 v) + min(((2a - 1) l2**2 + 6 l1) / (4 v**2), 3 l1 / (2 v))

    The first term is the Gaussian mechanism's RDP at the same variance; the
    second vanishes as ``v`` grows. Rényi divergence does not decrease with
    the order, so a non-integer order is given the bound at ``ceil(a)``
    (orders in (1, 2) the bound at 2): a valid, slightly loose bound at every
    order dp-accounting uses. ``variance == 0`` is ``inf`` (no noise).

    Examples:
        >>> import numpy as np
        >>> rdp = skellam_rdp(np.array([2.0, 1.5]), 1e6, 100.0, 10.0)
        >>> bool(rdp[0] == rdp[1]), round(float(rdp[0] / (2 * 100 / 2e6)), 6)
        (True, 1.000002)
    """
    orders = np.asarray(orders, np.float64)
    if np.any(orders <= 1):
        raise ValueError("RDP orders must be > 1")
    if variance == 0:
        return np.full(orders.shape, np.inf)
    a = np.maximum(np.ceil(orders), 2.0)
    v = float(variance)
    extra = np.minimum(((2 * a - 1) * l2**2 + 6 * l1) / (4 * v**2), 3 * l1 / (2 * v))
    return a * l2**2 / (2 * v) + extra


@dataclass(frozen=True)
class SkellamCalibration:
    """Everything one dimension's Skellam mechanism needs, in integer (grid) units.

    ``l2``/``l1``: sensitivities of one device's rounded record (its
    conditional-rounding bound and the L1 norm that implies). ``variance``:
    of the summed noise when exactly ``shares`` devices added theirs
    (``(noise_multiplier * l2) ** 2``). ``share_variance``: one device's,
    ``variance / shares``. ``share_tail``: where a share is truncated.
    ``record_bound``: the largest absolute integer any coordinate of a record
    (rounded value plus truncated share) can be.
    """

    dim: int
    scale: float
    l2: float
    l1: float
    variance: float
    shares: int
    share_variance: float
    share_tail: int

    @property
    def record_bound(self) -> int:
        # An integer coordinate is at most the vector's L2 norm.
        return math.floor(self.l2) + self.share_tail


def calibrate(clip_norm: float, noise_multiplier: float, scale_bits: int, beta: float,
              dim: int, shares: int) -> SkellamCalibration:
    """The calibration for records of ``dim`` weights clipped to ``clip_norm`` (model units).

    The clipped delta is scaled by ``gamma = 2**scale_bits`` (L2 norm at most
    ``clip_norm * gamma``), rounded (:func:`rounded_l2_bound`), and the noise
    on a sum of ``shares`` records is ``Sk((noise_multiplier * l2)**2)``: the
    noise multiplier is relative to the sensitivity after rounding, so as
    ``gamma`` grows the mechanism tends to the Gaussian one of the same
    multiplier.

    Examples:
        >>> cal = calibrate(1.0, 2.0, 8, 0.0, dim=4, shares=4)
        >>> cal.l2, cal.variance, cal.share_variance
        (258.0, 266256.0, 66564.0)
    """
    scale = 2.0**scale_bits
    l2 = rounded_l2_bound(clip_norm * scale, dim, beta)
    variance = (noise_multiplier * l2) ** 2
    share_variance = variance / shares
    if share_variance / 2.0 > POISSON_MEAN_MAX:
        raise ValueError(f"one device's noise share would need variance {share_variance:.6g}, "
                         f"beyond the {2 * POISSON_MEAN_MAX:.6g} numpy's Poisson sampler reaches")
    return SkellamCalibration(dim, scale, l2, rounded_l1_bound(l2, dim), variance, shares,
                              share_variance, truncation_level(share_variance))


__all__ = [
    "MAX_ROUNDING_TRIES",
    "POISSON_MEAN_MAX",
    "TAIL_PROBABILITY",
    "SkellamCalibration",
    "calibrate",
    "conditional_round",
    "rounded_l1_bound",
    "rounded_l2_bound",
    "sample_skellam",
    "skellam_rdp",
    "tail_bound",
    "truncation_level",
]
