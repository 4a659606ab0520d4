"""Wall time of one in-process SecAgg / SecAgg+ run of N devices, 10% dropout.

``python benchmarks/secagg_cohort.py N [DIM] [plus,complete]``: one line per
graph, with the survivors and the bytes each way. For the table over cohort
sizes and dropout rates, see ``benchmarks/secagg.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedactors.secagg.graph import complete_graph, secagg_plus_graph  # noqa: E402
from fedactors.secagg.messages import SecAggResult  # noqa: E402
from fedactors.secagg.simulate import run_protocol  # noqa: E402


def bench(n: int, dim: int, plus: bool, drop_fraction: float = 0.1, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    ids = list(range(1, n + 1))
    g = secagg_plus_graph(ids, rng) if plus else complete_graph(ids, n // 2 + 1)
    k = 32
    inputs = {u: rng.integers(0, 2**k, size=dim, dtype=np.uint64) for u in ids}
    dropped = rng.choice(ids, int(drop_fraction * n), replace=False)
    drop_at = {int(u): int(rng.integers(0, 4)) for u in dropped}
    t = time.perf_counter()
    trace = run_protocol(inputs, g, k, rng, drop_at)
    dt = time.perf_counter() - t
    r = trace.result
    assert isinstance(r, SecAggResult), r
    exp = np.zeros(dim, dtype=np.uint64)
    for u in r.contributors:
        exp += inputs[u]
    assert (r.total == exp & np.uint64(2**k - 1)).all()
    return (f"n={n} dim={dim} {'SecAgg+' if plus else 'SecAgg '} deg={g.max_degree()} "
            f"survivors={len(r.contributors)} wall={dt:.2f}s "
            f"up={trace.bytes_to_server / 1e6:.1f}MB down={trace.bytes_from_server / 1e6:.1f}MB")


if __name__ == "__main__":
    n = int(sys.argv[1])
    dim = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    modes = sys.argv[3].split(",") if len(sys.argv) > 3 else ["plus", "complete"]
    for m in modes:
        print(bench(n, dim, m == "plus"), flush=True)
