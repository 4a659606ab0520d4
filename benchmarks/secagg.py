"""Wall time of the SecAgg / SecAgg+ protocol for 100, 1,000 and 10,000 devices.

``python benchmarks/secagg.py [--dim 1000] [--quick]`` runs the in-process
protocol (fedactors.secagg.simulate.run_protocol: every device and the server
in one Python process, so the time is the *sum* of all parties' compute) for
0%, 10% and 30% dropout (each dropped device goes silent at a uniformly
random step), SecAgg+ and complete-graph SecAgg side by side, and writes the
table into docs/benchmarks.md under "## Secure aggregation" (only that
section is replaced).

Complete-graph SecAgg does O(n^2) key agreements and Shamir shares: beyond a
few hundred devices it takes many minutes in Python. Those cells are
estimated from a power-law fit t = a * n^b over measured cohorts of 100-300
devices at the same dropout rate, and marked as estimates.
"""

from __future__ import annotations

import argparse
import math
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedactors.secagg.graph import complete_graph, secagg_plus_graph  # noqa: E402
from fedactors.secagg.messages import SecAggResult  # noqa: E402
from fedactors.secagg.parameters import plus_parameters  # noqa: E402
from fedactors.secagg.simulate import run_protocol  # noqa: E402

SIZES = (100, 1000, 10000)
DROPOUTS = (0.0, 0.1, 0.3)
FIT_SIZES = (100, 150, 200, 300)  # complete graph, measured for the fit
#: Above this the complete graph is estimated, not run (it would take > ~1 min).
COMPLETE_MAX = 300
K = 32
NOTE = (
    '"(aborted)" would mean some closed neighbourhood kept fewer than t survivors and the server '
    'returned no sum. SecAgg+ (k, t) come from plus_parameters(n) with the SecureAggregation '
    'defaults: each device drops with probability <= 0.3 and is corrupt with probability <= 0.1; '
    'abort probability <= 2^-20, share collusion and graph disconnection <= 2^-40 (union bounds, '
    'docs/secure_aggregation.md). The same (k, t) serve every dropout row; a 30% row sits at the '
    'assumed maximum. Fit estimates are rough: b varies with machine load on 2 shared cores.'
)


def run(n: int, dim: int, plus: bool, drop: float, seed: int = 0) -> dict:
    rng = np.random.default_rng([seed, n, int(plus), int(drop * 100)])
    ids = list(range(1, n + 1))
    graph = secagg_plus_graph(ids, rng) if plus else complete_graph(ids, n // 2 + 1)
    inputs = {u: rng.integers(0, 2**K, size=dim, dtype=np.uint64) for u in ids}
    gone = rng.choice(ids, int(round(drop * n)), replace=False)
    drop_at = {int(u): int(rng.integers(0, 4)) for u in gone}
    t = time.perf_counter()
    trace = run_protocol(inputs, graph, K, rng, drop_at)
    wall = time.perf_counter() - t
    ok = isinstance(trace.result, SecAggResult)
    if ok:  # the benchmark also checks the answer
        want = np.zeros(dim, np.uint64)
        for u in trace.result.contributors:
            want += inputs[u]
        assert (trace.result.total == want & np.uint64(2**K - 1)).all()
    return {"wall": wall, "degree": graph.max_degree(), "threshold": min(graph.thresholds.values()),
            "ok": ok,
            "survivors": len(trace.result.contributors) if ok else 0,
            "up": trace.bytes_to_server / n, "down": trace.bytes_from_server / n}


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares fit of log t = log a + b log n."""
    x = np.log([p[0] for p in points])
    y = np.log([p[1] for p in points])
    b, loga = np.polyfit(x, y, 1)
    return math.exp(loga), b


def fmt_s(s: float) -> str:
    return f"{s:.2f}" if s < 10 else f"{s:.0f}" if s < 10_000 else f"{s:.2g}"


def fmt_b(b: float) -> str:
    return f"{b / 1e3:.0f} kB" if b < 1e6 else f"{b / 1e6:.1f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="100 and 1,000 devices only")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    sizes = SIZES[:2] if args.quick else SIZES
    started = time.perf_counter()
    rows = []
    fits = {}
    for drop in DROPOUTS:
        measured = []
        for n in FIT_SIZES:
            r = run(n, args.dim, False, drop)
            measured.append((n, r["wall"]))
            print(f"complete n={n} drop={drop:.0%}: {r['wall']:.2f}s", flush=True)
        fits[drop] = fit(measured)
        complete_at = dict(measured)
        for n in sizes:
            plus = run(n, args.dim, True, drop)
            print(f"SecAgg+  n={n} drop={drop:.0%}: {plus['wall']:.2f}s", flush=True)
            if n <= COMPLETE_MAX:
                c = run(n, args.dim, False, drop) if n not in complete_at else None
                c_wall = c["wall"] if c else complete_at[n]
                c_cell = fmt_s(c_wall)
                c_ref = c or run(n, args.dim, False, drop)
                c_bytes = f"{fmt_b(c_ref['up'])} / {fmt_b(c_ref['down'])}"
            else:
                a, b = fits[drop]
                c_cell = f"~{fmt_s(a * n**b)} (fit)"
                # Per-device bytes of the complete graph grow linearly in n.
                c_bytes = "~n × 2 kB (fit)"
            rows.append((n, drop, plus, c_cell, c_bytes))
    total = time.perf_counter() - started

    lines = [
        "## Secure aggregation",
        "",
        f"`python benchmarks/secagg.py` (dim = {args.dim}, modulus {K} bits, threshold: "
        "n/2+1 for SecAgg; SecAgg+ degree k and threshold t (of the k+1 holders of a closed "
        "neighbourhood) from `plus_parameters(n)`: "
        + ", ".join(f"n = {n:,}: k = {p.degree}, t = {p.threshold}"
                    for n, p in ((n, plus_parameters(n)) for n in sizes))
        + "). "
        "Wall time of the whole protocol run in one Python process on "
        f"{platform.processor() or platform.machine()} ({platform.python_version()}): "
        "the *sum* of every device's and the server's compute. Bytes are per device "
        "(to server / from server). Dropped devices go silent at a random step.",
        "",
        "| devices | dropout | SecAgg+ k / t | SecAgg+ wall s | SecAgg+ bytes up / down "
        "| SecAgg wall s | SecAgg bytes up / down |",
        "|---:|---:|---:|---:|---|---:|---|",
    ]
    for n, drop, plus, c_cell, c_bytes in sorted(rows, key=lambda r: (r[0], r[1])):
        p_cell = fmt_s(plus["wall"]) + ("" if plus["ok"] else " (aborted)")
        lines.append(f"| {n:,} | {drop:.0%} | {plus['degree']} / {plus['threshold']} | {p_cell} | "
                     f"{fmt_b(plus['up'])} / {fmt_b(plus['down'])} | {c_cell} | {c_bytes} |")
    lines += ["", "Complete-graph SecAgg fits (t = a·n^b over n = "
              f"{', '.join(map(str, FIT_SIZES))}):"]
    for drop, (_, b) in fits.items():
        lines.append(f"- {drop:.0%} dropout: b = {b:.2f}")
    lines += ["", NOTE, "", f"Benchmark total: {total:.0f} s.", ""]
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", section)


def write_section(path: Path, section: str) -> None:
    """Replace (or append) only the "## Secure aggregation" section of the file."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Secure aggregation\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
