"""Who shares secrets with, and masks against, whom.

SecAgg uses the complete graph. SecAgg+ (Bell et al. 2020) replaces it with a
random sparse graph of degree O(log n): a Harary graph (a ring where each node
links to its k/2 nearest neighbours on each side) over a random relabelling of
the devices, so the server cannot choose who neighbours whom. Each device's
secrets are shared among its *closed* neighbourhood (neighbours plus itself)
with a threshold chosen for that neighbourhood.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from fedactors.errors import ConfigError
from fedactors.secagg.shamir import MAX_HOLDER_ID


@dataclass(frozen=True)
class CommGraph:
    neighbours: Mapping[int, frozenset[int]]
    thresholds: Mapping[int, int]

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
    return _build(adj, {u: threshold for u in nodes})


def harary_graph(
    ids: Iterable[int], degree: int, rng: np.random.Generator, threshold_fraction: float = 0.5
) -> CommGraph:
    """Harary graph of even ``degree`` over a random ring order; t = floor(f * |N[u]|) + 1."""
    nodes = _ids(ids)
    n = len(nodes)
    if not isinstance(degree, (int, np.integer)) or degree < 2 or degree % 2:
        raise ConfigError("degree", f"must be an even int >= 2, got {degree!r}")
    if not 0.0 < threshold_fraction < 1.0:
        raise ConfigError("threshold_fraction", f"must be in (0, 1), got {threshold_fraction!r}")
    ring = [nodes[i] for i in rng.permutation(n)]
    adj: dict[int, set[int]] = {u: set() for u in nodes}
    half = min(degree // 2, (n - 1) // 2)
    for pos, u in enumerate(ring):
        for off in range(1, half + 1):
            v = ring[(pos + off) % n]
            adj[u].add(v)
            adj[v].add(u)
    if degree >= n - 1:  # the ring is too short for a sparse graph: fall back to complete
        adj = {u: set(nodes) - {u} for u in nodes}
    thresholds = {u: min(len(adj[u]) + 1, int(threshold_fraction * (len(adj[u]) + 1)) + 1)
                  for u in nodes}
    return _build(adj, thresholds)


def secagg_plus_degree(n: int, degree_factor: float = 3.0) -> int:
    """Even degree ~ degree_factor * ln(n) (Bell et al.: O(log n) suffices)."""
    k = 2 * math.ceil(degree_factor * math.log(max(n, 2)) / 2)
    return max(2, k)  # harary_graph falls back to complete when k >= n - 1


def secagg_plus_graph(
    ids: Iterable[int], rng: np.random.Generator, degree_factor: float = 3.0,
    threshold_fraction: float = 0.5,
) -> CommGraph:
    nodes = _ids(ids)
    return harary_graph(nodes, secagg_plus_degree(len(nodes), degree_factor), rng,
                        threshold_fraction)
