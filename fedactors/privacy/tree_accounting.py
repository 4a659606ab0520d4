"""User-level (ε, δ) for DP-FTRL's tree-aggregated noise, from who contributed when.

DP-FTRL (Kairouz et al. 2021, "Practical and Private (Deep) Learning without
Sampling or Shuffling") releases, at every step, a running sum of clipped
updates plus the noise of the binary-tree nodes that cover it. One device's
update reaches every node above its leaf, so its privacy loss is the
Gaussian mechanism's with sensitivity ``sqrt(sum of squares of how many of
its contributions each node holds)``, maximised over where in the tree its
contributions may fall: that is what tensorflow-privacy's tree-aggregation
accountant computes (``compute_rdp_single_tree``, Appendix D of the paper),
given the tree's size, the device's most contributions and the fewest
releases between two of them. Nothing here assumes any sampling.

A run with restarts builds independent trees (fresh noise each); their RDP
adds up. Per tree this module keeps the participation the server recorded,
so two bounds can be computed:

* the **planned** bound, from the rules the server enforces whatever
  happens: at most one contribution per release and, with
  ``min_separation = b``, at least ``b`` releases between two contributions
  of one device (so at most ``floor((L - 1) / (b + 1)) + 1`` in a tree of
  ``L`` releases). It holds for any participation the rules allow, including
  one chosen by the data;
* the **observed** bound, from each tree's largest number of contributions by
  one device and smallest gap actually seen. It is tighter, and it holds if
  *when* devices took part (online, charging, fast enough) does not depend on
  their data; the planned one needs no such condition.

The planned bound is computed two ways: exactly, by the library's search
(for the run's summary), and from a closed-form bound on the sensitivity
(:func:`sensitivity_bound`, for every release's row and the budget check;
never below the exact one, and O(log T) where the search's cost grows with
the tree, the participations and the separation).

Everything is a pure function of plain data (:class:`TreeLedger` is frozen
and replaced at every release), so a ledger checkpoints as is.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Optional

import numpy as np

from fedactors.privacy.accounting import RDP_ORDERS, rdp_epsilon
from fedactors.privacy.dp_queries import tree_aggregation_accountant


@functools.lru_cache(maxsize=4096)
def tree_rdp(noise_multiplier: float, steps: int, max_participations: int,
             min_separation: int) -> tuple[float, ...]:
    """RDP (at dp-accounting's default orders) of one tree of ``steps`` releases.

    ``max_participations``: the most releases of this tree one device
    contributed to; ``min_separation``: the fewest releases strictly between
    two of one device's contributions (tensorflow-privacy's definition:
    contributions at releases x < y are ``y - x - 1`` apart). A tree nobody
    contributed to twice is accounted with one participation. Zero noise is
    ``inf`` at every order; an empty tree costs nothing.
    """
    if steps == 0 or max_participations == 0:
        return tuple(0.0 for _ in RDP_ORDERS)
    rdp = tree_aggregation_accountant.compute_rdp_single_tree(
        noise_multiplier, steps, max_participations, min_separation, list(RDP_ORDERS))
    return tuple(float(v) for v in np.broadcast_to(rdp, RDP_ORDERS.shape))


def sensitivity_bound(steps: int, max_participations: int, min_separation: int) -> float:
    """An upper bound on the tree's worst-case sum of squared node counts, in closed form.

    At each level ``h`` of the tree (nodes covering ``2**h`` leaves) one
    device's ``k`` contributions fall in ``k`` node slots in all, and one node
    holds at most ``min(k, ceil(2**h / (b + 1)))`` of them (``b`` releases
    apart), so the level's sum of squares is at most ``k * min(k, ceil(2**h /
    (b + 1)))``. Summed over the ``floor(log2 T) + 1`` levels this bounds what
    ``compute_rdp_single_tree``'s exact search finds (equal to it when
    ``b = 0`` and T is a power of two), in O(log T) instead of a dynamic
    programme whose cost grows with k and b at every release.

    Args:
        steps: T, the tree's releases (leaves).
        max_participations: k, the most contributions of one device (capped at
            what ``min_separation`` allows in T releases).
        min_separation: b, the fewest releases between two contributions.

    Examples:
        >>> from fedactors.privacy.tree_accounting import sensitivity_bound
        >>> sensitivity_bound(8, 8, 0)  # every leaf: 8*1 + 4*4 + 2*16 + 1*64
        120.0
        >>> sensitivity_bound(8, 1, 0)  # one contribution: one node per level
        4.0
    """
    k = min(max_participations, most_participations(steps, min_separation))
    if k == 0:
        return 0.0
    levels = steps.bit_length()  # floor(log2 T) + 1
    return float(sum(k * min(k, -(-(2**h) // (min_separation + 1))) for h in range(levels)))


def most_participations(steps: int, min_separation: int) -> int:
    """The most contributions one device can make to a tree of ``steps`` releases
    when two of them are at least ``min_separation`` releases apart.

    Args:
        steps: The tree's releases.
        min_separation: The fewest releases between two contributions.

    Examples:
        >>> from fedactors.privacy.tree_accounting import most_participations
        >>> most_participations(60, 19), most_participations(60, 0)
        (3, 60)
    """
    return 0 if steps == 0 else (steps - 1) // (min_separation + 1) + 1


@dataclass(frozen=True)
class TreeStats:
    """One tree's releases and the participation the server recorded in it.

    Args:
        steps: The releases (leaves) in this tree so far.
        max_participations: The most of them one device contributed to.
        min_separation: The fewest releases between two contributions of one
            device (``None``: nobody contributed twice).

    Examples:
        >>> from fedactors.privacy.tree_accounting import TreeStats
        >>> tree = TreeStats(steps=8, max_participations=1)
        >>> bool(tree.observed_rdp(1.0)[0] <= tree.planned_rdp(1.0, min_separation=0)[0])
        True
    """

    steps: int = 0
    #: The most releases of this tree one device contributed to (0: nobody yet).
    max_participations: int = 0
    #: The fewest releases between two contributions of one device to this
    #: tree (``None``: nobody contributed twice).
    min_separation: Optional[int] = None

    def observed_rdp(self, noise_multiplier: float) -> np.ndarray:
        # With one contribution each the separation does not matter: any value allowed.
        gap = self.steps if self.min_separation is None else self.min_separation
        return np.asarray(tree_rdp(noise_multiplier, self.steps, self.max_participations, gap))

    def planned_rdp(self, noise_multiplier: float, min_separation: int) -> np.ndarray:
        most = most_participations(self.steps, min_separation)
        return np.asarray(tree_rdp(noise_multiplier, self.steps, most, min_separation))

    def planned_rdp_bound(self, noise_multiplier: float, min_separation: int) -> np.ndarray:
        """:meth:`planned_rdp` from :func:`sensitivity_bound`: never below it, cheap."""
        squares = sensitivity_bound(self.steps, self.steps, min_separation)
        if squares == 0.0:
            return np.zeros(RDP_ORDERS.shape)
        if noise_multiplier == 0.0:
            return np.full(RDP_ORDERS.shape, np.inf)
        return RDP_ORDERS * squares / (2.0 * noise_multiplier**2)


@dataclass(frozen=True)
class TreeLedger:
    """DP-FTRL's releases so far, tree by tree, and when each device last contributed.

    Args:
        noise_multiplier: z, each tree node's noise standard deviation over C.
        restart_every: Releases per tree (``None``: one tree).
        min_separation: The separation the server enforces (0: none, a device
            may contribute to consecutive releases).
        releases: Releases recorded so far.
        trees: Each tree's :class:`TreeStats`, the current one last.
        last: Device -> the last release (1-based) it contributed to.
        in_tree: Device -> its contributions to the current tree.

    Examples:
        >>> from fedactors.privacy.tree_accounting import TreeLedger
        >>> ledger = TreeLedger(noise_multiplier=4.0, restart_every=None, min_separation=2)
        >>> for contributors in [(0, 1), (2,), (3,), (0,)]:
        ...     ledger = ledger.record(contributors)
        >>> ledger.trees[-1]
        TreeStats(steps=4, max_participations=2, min_separation=2)
        >>> ledger.eligible(1, next_release=5), ledger.eligible(0, next_release=5)
        (True, False)
        >>> ledger.epsilon_observed(1e-5) <= ledger.epsilon_planned(1e-5)
        True
    """

    noise_multiplier: float
    restart_every: Optional[int]
    min_separation: int = 0
    releases: int = 0
    #: Closed trees, then the current one.
    trees: tuple[TreeStats, ...] = (TreeStats(),)
    #: Device -> the last release (1-based) it contributed to.
    last: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    #: Device -> its contributions to the current tree.
    in_tree: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    def __post_init__(self) -> None:
        # Plain dicts for pickling (a checkpoint), read-only views in use.
        object.__setattr__(self, "last", MappingProxyType(dict(self.last)))
        object.__setattr__(self, "in_tree", MappingProxyType(dict(self.in_tree)))

    def __reduce__(self):
        return (_rebuild_ledger, (self.noise_multiplier, self.restart_every, self.min_separation,
                                  self.releases, self.trees, dict(self.last), dict(self.in_tree)))

    def eligible(self, device: int, next_release: int) -> bool:
        """Whether ``device`` may contribute to release ``next_release`` (the separation rule)."""
        last = self.last.get(device)
        return last is None or next_release - last - 1 >= self.min_separation

    def record(self, contributors: Iterable[int]) -> TreeLedger:
        """The ledger after one more release (one more tree leaf) summing ``contributors``."""
        release = self.releases + 1
        tree = self.trees[-1]
        last, in_tree = dict(self.last), dict(self.in_tree)
        most, gap = tree.max_participations, tree.min_separation
        for device in contributors:
            device = int(device)
            before = in_tree.get(device, 0)
            if before:  # a second contribution to this tree: how far apart
                seen = release - last[device] - 1
                gap = seen if gap is None else min(gap, seen)
            in_tree[device] = before + 1
            most = max(most, before + 1)
            last[device] = release
        trees = self.trees[:-1] + (TreeStats(tree.steps + 1, most, gap),)
        if self.restart_every is not None and trees[-1].steps == self.restart_every:
            trees, in_tree = trees + (TreeStats(),), {}  # the next release starts a fresh tree
        return replace(self, releases=release, trees=trees, last=last, in_tree=in_tree)

    def rdp_observed(self) -> np.ndarray:
        return sum((t.observed_rdp(self.noise_multiplier) for t in self.trees),
                   np.zeros(RDP_ORDERS.shape))

    def rdp_planned(self) -> np.ndarray:
        return sum((t.planned_rdp(self.noise_multiplier, self.min_separation) for t in self.trees),
                   np.zeros(RDP_ORDERS.shape))

    def rdp_planned_bound(self) -> np.ndarray:
        return sum((t.planned_rdp_bound(self.noise_multiplier, self.min_separation)
                    for t in self.trees), np.zeros(RDP_ORDERS.shape))

    def epsilon_observed(self, delta: float) -> float:
        """ε from each tree's observed most contributions and smallest gap."""
        return _epsilon(self.rdp_observed(), self.noise_multiplier, self.releases, delta)

    def epsilon_planned(self, delta: float) -> float:
        """ε for any participation the enforced rules allow (the guarantee), from
        tensorflow-privacy's exact search: seconds for long trees without separation."""
        return _epsilon(self.rdp_planned(), self.noise_multiplier, self.releases, delta)

    def epsilon_planned_bound(self, delta: float) -> float:
        """An upper bound on :meth:`epsilon_planned` from the closed-form sensitivity
        bound: cheap enough for every release (metrics rows, the budget check)."""
        return _epsilon(self.rdp_planned_bound(), self.noise_multiplier, self.releases, delta)

    def with_one_more(self) -> TreeLedger:
        """The ledger after one more release nobody contributed to (its planned ε is the
        planned ε of one more release: the plan does not depend on who contributes)."""
        return self.record(())


def _rebuild_ledger(z, restart_every, min_separation, releases, trees, last, in_tree) -> TreeLedger:
    return TreeLedger(z, restart_every, min_separation, releases, trees, last, in_tree)


def _epsilon(rdp: np.ndarray, noise_multiplier: float, releases: int, delta: float) -> float:
    if releases == 0:
        return 0.0
    if noise_multiplier == 0.0 or not np.all(np.isfinite(rdp)):
        return math.inf
    return rdp_epsilon(rdp, delta)
