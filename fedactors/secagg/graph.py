"""Who shares secrets with, and masks against, whom.

SecAgg uses the complete graph. SecAgg+ (Bell et al. 2020) replaces it with a
random sparse graph of degree O(log n): a Harary graph (a ring where each node
links to its k/2 nearest neighbours on each side) over a random relabelling of
the devices, so the server cannot choose who neighbours whom. Each device's
secrets are shared among its *closed* neighbourhood (neighbours plus itself)
with a threshold chosen for that neighbourhood. The degree and threshold come
from :mod:`fedactors.secagg.parameters` (stated dropout and corruption rates).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Optional

import numpy as np

from fedactors.errors import ConfigError
from fedactors.secagg.parameters import (
    DEFAULT_CORRUPT,
    DEFAULT_DROPOUT,
    DEFAULT_FAILURE_LOG2,
    DEFAULT_SECURITY_LOG2,
    plus_parameters,
)
from fedactors.secagg.shamir import MAX_HOLDER_ID


@dataclass(frozen=True)
class CommGraph:
    neighbours: Mapping[int, frozenset[int]]
    thresholds: Mapping[int, int]
    # Set by the constructors below for holder_counts: a complete graph, or a regular one's
    # sorted ids and neighbour positions (row i: the positions of ids[i]'s neighbours).
    _complete: bool = field(default=False, init=False, repr=False, compare=False)
    _table: Optional[tuple[np.ndarray, np.ndarray]] = field(
        default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for u, nbrs in self.neighbours.items():
            if not 1 <= u <= MAX_HOLDER_ID:
                raise ConfigError(
                    "graph.ids", f"device ids must be in [1, {MAX_HOLDER_ID}], got {u!r}"
                )
            if u in nbrs:
                raise ConfigError("graph.neighbours", f"device {u} lists itself as a neighbour")
            for v in nbrs:
                if u not in self.neighbours.get(v, ()):
                    raise ConfigError("graph.neighbours", f"edge {u}-{v} is not symmetric")
        if set(self.thresholds) != set(self.neighbours):
            raise ConfigError("graph.thresholds", "must give exactly one threshold per device")
        for u, t in self.thresholds.items():
            if not 1 <= t <= len(self.neighbours[u]) + 1:
                raise ConfigError(
                    "graph.thresholds",
                    f"device {u}: threshold must be in [1, {len(self.neighbours[u]) + 1}], "
                    f"got {t!r}",
                )

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(self.neighbours)

    def holders(self, u: int) -> frozenset[int]:
        """Devices that hold shares of u's secrets: its closed neighbourhood."""
        return self.neighbours[u] | {u}

    @property
    def is_complete(self) -> bool:
        """Built as the complete graph (every device neighbours every other)."""
        return self._complete

    def holders_in(self, u: int, group: frozenset[int] | set[int]) -> int:
        """``len(holders(u) & group)``, without building the closed neighbourhood."""
        return len(self.neighbours[u] & group) + (u in group)

    def holder_counts(self, group: AbstractSet[int]) -> dict[int, int]:
        """``holders_in(u, group)`` for every device u, at once.

        The server asks this of every device at every step; at 10,000 devices of
        degree ~100 one set intersection each was a tenth of a second, one
        gather over the neighbour table is a few milliseconds."""
        if self._complete:
            inside = len(self.neighbours.keys() & group)
            return dict.fromkeys(self.neighbours, inside)
        if self._table is None:
            return {u: self.holders_in(u, group) for u in self.neighbours}
        ids, positions = self._table
        inside = np.isin(ids, np.fromiter(group, np.int64, len(group)))
        counts = inside[positions].sum(axis=1) + inside
        return dict(zip(ids.tolist(), counts.tolist()))

    def reach_mask(self, listed: AbstractSet[int]) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """(sorted ids, mask of the ids holding shares of some device in ``listed``): the
        union of their closed neighbourhoods, as ``consistency.signers_for`` takes it.
        None when the graph has no neighbour table (the caller unions sets instead)."""
        if self._table is None:
            return None
        ids, positions = self._table
        rows = np.searchsorted(ids, np.fromiter(listed, np.int64, len(listed)))
        mask = np.zeros(ids.size, dtype=bool)
        mask[rows] = True
        mask[positions[rows]] = True
        return ids, mask

    def max_degree(self) -> int:
        return max(len(n) for n in self.neighbours.values())


def _build(adj: dict[int, set[int]], thresholds: dict[int, int]) -> CommGraph:
    return CommGraph(
        MappingProxyType({u: frozenset(v) for u, v in adj.items()}),
        MappingProxyType(dict(thresholds)),
    )


def _ids(ids: Iterable[int]) -> list[int]:
    out = sorted(int(i) for i in ids)
    if len(set(out)) != len(out):
        raise ConfigError("graph.ids", f"duplicate device ids in {out!r}")
    if not out:
        raise ConfigError("graph.ids", "need at least one device")
    return out


def complete_graph(ids: Iterable[int], threshold: int) -> CommGraph:
    """Original SecAgg: everyone neighbours everyone; ``threshold``-of-n for every device."""
    nodes = _ids(ids)
    if not 1 <= threshold <= len(nodes):
        raise ConfigError("threshold", f"must be in [1, {len(nodes)}], got {threshold!r}")
    adj = {u: set(nodes) - {u} for u in nodes}
    graph = _build(adj, {u: threshold for u in nodes})
    object.__setattr__(graph, "_complete", True)
    return graph


def harary_graph(ids: Iterable[int], degree: int, rng: np.random.Generator,
                 threshold: int) -> CommGraph:
    """Harary graph of even ``degree`` over a random ring order; ``threshold``-of-|N[u]| for all.

    A ``degree`` of n - 1 or more gives the complete graph (the ring is too short).
    """
    nodes = _ids(ids)
    n = len(nodes)
    if not isinstance(degree, (int, np.integer)) or degree < 1 or (degree % 2 and degree < n - 1):
        raise ConfigError("degree", f"must be an even int >= 2 (or >= n - 1), got {degree!r}")
    ids_sorted = np.asarray(nodes, dtype=np.int64)
    perm = rng.permutation(n)  # ring position p holds the id at sorted position perm[p]
    ring = ids_sorted[perm]
    if degree >= n - 1:  # the ring is too short for a sparse graph: fall back to complete
        adj = {u: set(nodes) - {u} for u in nodes}
        graph = _build(adj, {u: int(threshold) for u in nodes})
        object.__setattr__(graph, "_complete", True)
        return graph
    half = degree // 2
    # Row p holds the ids at ring positions p - half .. p - 1, p + 1 .. p + half: since
    # 2 * half < n they are distinct and never p itself, and the relation is symmetric.
    offsets = np.concatenate([np.arange(-half, 0), np.arange(1, half + 1)])
    window = (np.arange(n)[:, None] + offsets[None, :]) % n  # ring positions around each
    around = ring[window]
    neighbours = {int(u): frozenset(row) for u, row in zip(ring.tolist(), around.tolist())}
    graph = CommGraph.__new__(CommGraph)
    # Symmetric, loop-free and of one degree by construction: CommGraph's O(n k) checks
    # (a tenth of a second per 2,000 devices, every round) would find nothing; the
    # threshold is still checked once against that degree.
    if not 1 <= int(threshold) <= degree + 1:
        raise ConfigError("graph.thresholds", f"threshold must be in [1, {degree + 1}], "
                                              f"got {threshold!r}")
    for end in (nodes[0], nodes[-1]):  # sorted: the extremes are the ones to check
        if not 1 <= end <= MAX_HOLDER_ID:
            raise ConfigError("graph.ids", f"device ids must be in [1, {MAX_HOLDER_ID}], "
                                           f"got {end!r}")
    object.__setattr__(graph, "neighbours", MappingProxyType(neighbours))
    object.__setattr__(graph, "thresholds",
                       MappingProxyType(dict.fromkeys(neighbours, int(threshold))))
    # Rows by sorted id: sorted position s sits at ring position p with perm[p] = s, and
    # its neighbours' sorted positions are perm of the ring positions around p.
    at_ring = np.empty(n, dtype=np.int64)
    at_ring[perm] = np.arange(n)
    object.__setattr__(graph, "_complete", False)
    object.__setattr__(graph, "_table", (ids_sorted, perm[window[at_ring]]))
    return graph


def secagg_plus_graph(
    ids: Iterable[int], rng: np.random.Generator, *, dropout: float = DEFAULT_DROPOUT,
    corrupt: float = DEFAULT_CORRUPT, failure_log2: float = DEFAULT_FAILURE_LOG2,
    security_log2: float = DEFAULT_SECURITY_LOG2,
) -> CommGraph:
    """SecAgg+ graph with (k, t) from ``parameters.plus_parameters`` under these assumptions."""
    nodes = _ids(ids)
    p = plus_parameters(len(nodes), dropout, corrupt, failure_log2, security_log2)
    return harary_graph(nodes, p.degree, rng, p.threshold)
