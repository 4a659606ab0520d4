"""Byzantine-robust aggregation: coordinate-wise median, trimmed mean, (multi-)Krum.

Each device sends its delta as it is (key :data:`DELTA`, unweighted: a robust
rule must not let a device buy influence by claiming many examples). The
server needs every row, so these stages set ``needs_individual_updates`` and
cannot run under secure aggregation. Wrap them to bound each delta first:
``Clipped(1.0, Median())`` clips on the device, then takes the median.

Every rule here is **invariant to the order of the rows**, bit for bit: the
median and the trimmed mean sort each coordinate, and Krum's scores are sums of
the same sorted distances whatever the order, with ties broken by the rows'
values rather than their positions. A rule that depended on arrival order would
hand an attacker one more lever.

The numerics are pure functions on a ``(devices, dim)`` array so they can be
tested alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from fedactors.aggregation.base import Aggregate, Aggregator, Contributions, RoundContext
from fedactors.errors import ConfigError
from fedactors.validation import finite, non_negative_int, positive_int

DELTA = "delta"


# -- pure numerics -------------------------------------------------------------


def coordinate_median(rows: np.ndarray) -> np.ndarray:
    """The median of each coordinate (the mean of the middle two for an even count)."""
    return np.median(np.asarray(rows, np.float64), axis=0)


def trimmed_mean(rows: np.ndarray, beta: float) -> np.ndarray:
    """Per coordinate, drop the ``floor(beta * n)`` smallest and largest values, average the rest.

    ``beta < 0.5`` always leaves at least one value per coordinate.
    """
    x = np.sort(np.asarray(rows, np.float64), axis=0)
    n = x.shape[0]
    k = int(np.floor(beta * n))
    return x[k : n - k].mean(axis=0)


def coordinate_ranks(rows: np.ndarray) -> np.ndarray:
    """Each value's rank within its coordinate (0 = smallest; ties by row order), (n, dim)."""
    x = np.asarray(rows, np.float64)
    ranks = np.empty(x.shape, np.int64)
    np.put_along_axis(ranks, np.argsort(x, axis=0, kind="stable"),
                      np.arange(x.shape[0])[:, None], axis=0)
    return ranks


def median_shares(rows: np.ndarray) -> np.ndarray:
    """Each row's share in the coordinate-wise median: per coordinate, 1 for the middle
    value (1/2 each for the middle two of an even count), averaged over coordinates."""
    n = rows.shape[0]
    ranks = coordinate_ranks(rows)
    if n % 2:
        used = (ranks == n // 2).astype(np.float64)
    else:
        used = 0.5 * ((ranks == n // 2 - 1) | (ranks == n // 2))
    return used.mean(axis=1)


def trimmed_shares(rows: np.ndarray, beta: float) -> np.ndarray:
    """Each row's share of coordinates the trimmed mean keeps (not among the
    ``floor(beta * n)`` smallest or largest)."""
    n = rows.shape[0]
    k = int(np.floor(beta * n))
    ranks = coordinate_ranks(rows)
    return ((ranks >= k) & (ranks < n - k)).mean(axis=1)


def krum_scores(rows: np.ndarray, f: int) -> np.ndarray:
    """Krum's score per row: the sum of squared distances to its ``n - f - 2`` nearest others.

    With fewer rows than Krum's guarantee needs (``n < 2f + 3``) the neighbour
    count is clamped to ``[1, n - 1]`` so the rule still picks the most central
    rows; :class:`Krum` reports whether the guarantee held.
    """
    x = np.asarray(rows, np.float64)
    n = x.shape[0]
    if n == 1:
        return np.zeros(1)
    k = min(max(n - f - 2, 1), n - 1)
    scores = np.empty(n)
    for i in range(n):
        # Direct differences, not the |a|^2 + |b|^2 - 2ab trick: d(i, j) == d(j, i)
        # exactly, which is what makes the scores independent of row order.
        d = np.square(x - x[i]).sum(axis=1)
        d = np.sort(np.delete(d, i))
        scores[i] = d[:k].sum()
    return scores


def krum_select(rows: np.ndarray, f: int, m: int) -> np.ndarray:
    """Indices of the ``m`` rows with the lowest Krum scores, best first.

    Ties are broken by the rows' coordinates, never by their positions.
    """
    x = np.asarray(rows, np.float64)
    scores = krum_scores(x, f)
    # np.lexsort sorts by the last key first: score, then coordinate 0, 1, ...
    keys = tuple(x[:, j] for j in range(x.shape[1] - 1, -1, -1)) + (scores,)
    return np.lexsort(keys)[: min(m, x.shape[0])]


def multi_krum(rows: np.ndarray, f: int, m: int) -> np.ndarray:
    """The plain mean of the ``m`` rows Krum selects (``m = 1`` is Krum itself)."""
    x = np.asarray(rows, np.float64)
    return x[krum_select(x, f, m)].mean(axis=0)


# -- stages --------------------------------------------------------------------


class RobustStage(Aggregator[None]):
    """A stage that sends each delta unweighted and reduces the stacked rows on the server."""

    needs_individual_updates = True

    def encode(
        self,
        params: Mapping[str, Any],
        delta: np.ndarray,
        num_examples: int,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        return {DELTA: np.asarray(delta, np.float32).ravel().copy()}

    def reduce(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """Combine the ``(devices, dim)`` rows into one delta, plus measurements."""
        raise NotImplementedError

    def reduce_with_shares(
        self, rows: np.ndarray
    ) -> tuple[np.ndarray, dict[str, float], Optional[np.ndarray]]:
        """:meth:`reduce`, plus each row's share in the result (``Aggregate.shares``);
        the built-in stages say, a stage that only overrides ``reduce`` says None."""
        delta, measurements = self.reduce(rows)
        return delta, measurements, None

    def aggregate(
        self, state: None, contributions: Contributions, ctx: RoundContext
    ) -> Aggregate[None]:
        if contributions.count == 0:
            return Aggregate(None, state, {"robust_inputs": 0.0})
        rows = contributions.stacked()[DELTA]
        delta, measurements, shares = self.reduce_with_shares(rows)
        return Aggregate(delta.astype(np.float32), state,
                         {"robust_inputs": float(rows.shape[0]), **measurements},
                         None if shares is None else tuple(float(s) for s in shares))


class Median(RobustStage):
    """Coordinate-wise median (Yin et al. 2018): tolerates any minority of attackers per coordinate.

    Each device sends its delta unweighted; the server takes the median of
    each coordinate (the mean of the middle two for an even count). It needs
    every update (``needs_individual_updates``), so it cannot run under secure
    aggregation. Takes no parameters; wrap it to bound each delta first,
    ``Clipped(clip_norm, Median())``. See docs/robustness.md.

    Examples:
        >>> import numpy as np
        >>> from fedactors.aggregation import Median, PlainContributions, RoundContext
        >>> stage, rng = Median(), np.random.default_rng(0)
        >>> deltas = [[1.0, 1.0], [2.0, 2.0], [-50.0, 100.0]]  # the last is an attacker
        >>> rows = [stage.encode({}, np.array(d, np.float32), 10, rng) for d in deltas]
        >>> stage.aggregate(None, PlainContributions(rows), RoundContext(1, 3, 3, rng)).delta
        array([1., 2.], dtype=float32)
    """

    def __repr__(self) -> str:
        return "Median()"

    def reduce(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        return coordinate_median(rows), {}

    def reduce_with_shares(self, rows):
        return coordinate_median(rows), {}, median_shares(rows)


class TrimmedMean(RobustStage):
    """Coordinate-wise trimmed mean: drop the ``beta`` fraction at each end, average the rest.

    Per coordinate, the ``floor(beta * n)`` smallest and largest of the ``n``
    values are dropped and the rest averaged (Yin et al. 2018). Deltas are
    sent unweighted and the server needs every one, so it cannot run under
    secure aggregation. The measurement ``trimmed_each_side`` is how many
    values were dropped at each end. See docs/robustness.md.

    Args:
        beta: Fraction of the cohort trimmed from each end, in [0, 0.5).
            0 is the plain mean. Default 0.1. A round of ``n`` updates trims
            ``floor(beta * n)`` per side, so with small cohorts nothing may be
            trimmed (``beta=0.1`` trims nothing below 10 updates).

    Examples:
        >>> import numpy as np
        >>> from fedactors.aggregation import PlainContributions, RoundContext, TrimmedMean
        >>> stage, rng = TrimmedMean(beta=0.25), np.random.default_rng(0)
        >>> deltas = [[1.0], [2.0], [3.0], [100.0]]  # 0.25 * 4: one trimmed at each end
        >>> rows = [stage.encode({}, np.array(d, np.float32), 10, rng) for d in deltas]
        >>> result = stage.aggregate(None, PlainContributions(rows), RoundContext(1, 4, 4, rng))
        >>> result.delta, result.measurements["trimmed_each_side"]
        (array([2.5], dtype=float32), 1.0)
    """

    def __init__(self, beta: float = 0.1) -> None:
        b = finite("beta", beta)
        if not 0.0 <= b < 0.5:
            raise ConfigError(
                "beta", f"must be in [0, 0.5) (a fraction trimmed from each side), got {beta!r}"
            )
        self.beta = b

    def __repr__(self) -> str:
        return f"TrimmedMean(beta={self.beta!r})"

    def reduce(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        trimmed = int(np.floor(self.beta * rows.shape[0]))
        return trimmed_mean(rows, self.beta), {"trimmed_each_side": float(trimmed)}

    def reduce_with_shares(self, rows):
        delta, measurements = self.reduce(rows)
        return delta, measurements, trimmed_shares(rows, self.beta)


class Krum(RobustStage):
    """(Multi-)Krum (Blanchard et al. 2017): average the ``m`` most central updates.

    ``f`` is the number of Byzantine devices to tolerate; Krum's guarantee needs
    at least ``2f + 3`` updates, and the measurement ``krum_guaranteed`` says
    whether a round had them. ``m=1`` is the original Krum; larger ``m``
    (multi-Krum) averages more honest updates and so has less variance.

    A row's score is the sum of squared L2 distances to its ``n - f - 2``
    nearest other rows (clamped to ``[1, n - 1]``); the ``m`` lowest-scoring
    rows are averaged, unweighted. Deltas are sent unweighted and the server
    needs every one, so it cannot run under secure aggregation. The result
    does not depend on the order of the rows. See docs/robustness.md.

    Args:
        f: Number of Byzantine devices to tolerate, >= 0.
        m: Number of lowest-score updates averaged, >= 1. Default 1 (Krum);
            at most the number of updates is used.

    Examples:
        >>> import numpy as np
        >>> from fedactors.aggregation import Krum, PlainContributions, RoundContext
        >>> stage, rng = Krum(f=1), np.random.default_rng(0)
        >>> deltas = [[1.0, 1.0], [1.1, 1.0], [0.9, 1.0], [1.0, 1.1], [1.0, 0.9], [40.0, -40.0]]
        >>> rows = [stage.encode({}, np.array(d, np.float32), 10, rng) for d in deltas]
        >>> result = stage.aggregate(None, PlainContributions(rows), RoundContext(1, 6, 6, rng))
        >>> result.delta  # the most central update
        array([1., 1.], dtype=float32)
        >>> result.measurements["krum_guaranteed"]  # 6 updates >= 2f + 3
        1.0
    """

    def __init__(self, f: int, m: int = 1) -> None:
        self.f = non_negative_int("f", f)
        self.m = positive_int("m", m)

    def __repr__(self) -> str:
        return f"Krum(f={self.f!r}, m={self.m!r})"

    def reduce(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        delta, measurements, _ = self.reduce_with_shares(rows)
        return delta, measurements

    def reduce_with_shares(self, rows):
        x = np.asarray(rows, np.float64)
        chosen = krum_select(x, self.f, self.m)  # once: the scores are O(n^2 dim)
        shares = np.zeros(x.shape[0])
        shares[chosen] = 1.0
        # The mean of the chosen rows, as multi_krum takes it.
        return x[chosen].mean(axis=0), {
            "krum_selected": float(min(self.m, x.shape[0])),
            "krum_guaranteed": float(x.shape[0] >= 2 * self.f + 3),
        }, shares
