"""Gaussian noise for DP releases, drawn from an explicit generator: pure helpers.

tensorflow-privacy's queries draw their noise with unseeded TensorFlow ops,
which cannot be replayed from the run's root seed. So every DP mechanism in
fedactors builds its query without noise and draws the noise here, from the
generator the caller passes (the server's per-round ``ctx.rng`` for central
noise, the device's generator for its share of distributed noise). Same
generator state, same noise, bit for bit.

Standard deviations are on the *sum* of the cohort's records, in the units of
the record (model-weight units for a clipped delta, devices for a count).
"""

from __future__ import annotations

import math

import numpy as np

#: A device's share of distributed noise is truncated at this many standard
#: deviations, so its contribution has a hard bound (fixed-point secure
#: aggregation needs one). The truncation changes each coordinate's
#: distribution by less than 1e-22 in total variation.
TAIL = 10.0


def central(rng: np.random.Generator, stddev: float, size: int) -> np.ndarray:
    """``size`` draws of ``N(0, stddev**2)`` (float64), for the server to add to a sum.

    Examples:
        >>> import numpy as np
        >>> central(np.random.default_rng(0), 0.0, 3)
        array([0., 0., 0.])
    """
    return rng.normal(0.0, stddev, size)


def share_stddev(stddev_on_sum: float, shares: int) -> float:
    """The standard deviation of one device's share: any ``shares`` of them sum to ``stddev_on_sum``.

    Examples:
        >>> share_stddev(2.0, 4)
        1.0
    """
    return stddev_on_sum / math.sqrt(shares)


def device_share(
    rng: np.random.Generator, stddev_on_sum: float, shares: int, size: int
) -> np.ndarray:
    """One device's share of distributed noise, ``size`` float64 draws.

    Each draw is ``N(0, stddev_on_sum**2 / shares)`` truncated at ``TAIL``
    standard deviations, so ``shares`` devices' shares sum to (at least, up to
    the truncation) the noise ``N(0, stddev_on_sum**2)`` of a central release.

    Examples:
        >>> import numpy as np
        >>> share = device_share(np.random.default_rng(0), 2.0, 4, 1000)
        >>> bool(np.all(np.abs(share) <= TAIL * share_stddev(2.0, 4)))
        True
    """
    return np.clip(rng.standard_normal(size), -TAIL, TAIL) * share_stddev(stddev_on_sum, shares)


def share_bound(stddev_on_sum: float, shares: int) -> float:
    """The largest absolute value one coordinate of a device's share can take.

    Examples:
        >>> share_bound(2.0, 4)
        10.0
    """
    return TAIL * share_stddev(stddev_on_sum, shares)
