"""A round of SecAgg+ in modeled mode against a plain round, at 10,000 devices per round.

``python benchmarks/secagg_modeled.py [--cohort 10000] [--rounds 3] [--real-cohort 300]``
runs the reference workload (benchmarks/workloads.py: MLP 20-32-2, 100
examples per device) with the clipped mean that secure aggregation needs,
three ways in one process, one after the other:

* **plain**: no secure aggregation;
* **modeled**: ``SecureAggregation.sparse(mode="modeled")``, SecAgg+ with the
  calibrated compute model, every protocol message through the simulated
  network, the sum computed directly;
* **real** (at ``--real-cohort`` devices, since the real cryptography costs
  ~10 s per round at 1,000): the same with ``mode="real"``, for the ratio
  modeled mode saves.

Each figure is the median wall time of the rounds after the first (the first
builds the graph and compiles the model), over ``--repeats`` runs made in
turn (plain, modeled, plain, modeled, ...), so that a change in the machine's
load during the benchmark weighs on both sides of the ratio. It writes the
table into docs/benchmarks.md under "## Secure aggregation, modeled" (only
that section).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.workloads import scenario  # noqa: E402
from fedactors import SecureAggregation  # noqa: E402
from fedactors.aggregation.clipping import Clipped  # noqa: E402
from fedactors.aggregation.fedavg import WeightedMean  # noqa: E402
from fedactors.simulation import RunOptions, run_scenario  # noqa: E402

SECTION = "## Secure aggregation, modeled"


def run(cohort: int, rounds: int, secure: SecureAggregation | None) -> dict:
    base = scenario("mlp", cohort, cohort, rounds)
    s = dataclasses.replace(base, aggregator=Clipped(1.0, WeightedMean(weighted=False)),
                            secure_aggregation=secure)
    stamps: list[float] = []
    start = time.perf_counter()
    result = run_scenario(s, RunOptions(device_events=False, executor="vectorized",
                                        checkpoint=False),
                          on_round=[lambda _row: stamps.append(time.perf_counter())])
    walls = [b - a for a, b in zip([start] + stamps, stamps)]
    row = result.records[-1]
    return {"round_s": statistics.median(walls[1:] or walls), "walls": walls,
            "survivors": row.get("secagg_survivors"), "degree": row.get("secagg_max_degree"),
            "sim_round_s": row["end"] - row["start"] if "end" in row else None,
            "up": row.get("secagg_bytes_up_per_device"),
            "down": row.get("secagg_bytes_down_per_device")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--real-cohort", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dry-run", action="store_true", help="print, do not write the docs")
    args = parser.parse_args()
    configs = (
        ("plain", args.cohort, None),
        ("SecAgg+, modeled", args.cohort, SecureAggregation.sparse(mode="modeled")),
        ("plain", args.real_cohort, None),
        ("SecAgg+, modeled", args.real_cohort, SecureAggregation.sparse(mode="modeled")),
        ("SecAgg+, real", args.real_cohort, SecureAggregation.sparse(mode="real")),
    )
    runs: dict[int, list[dict]] = {i: [] for i in range(len(configs))}
    for _ in range(args.repeats):
        for i, (label, cohort, secure) in enumerate(configs):
            out = run(cohort, args.rounds, secure)
            out.update(label=label, cohort=cohort)
            print(out, flush=True)
            runs[i].append(out)
    rows = []
    for i in range(len(configs)):
        row = dict(runs[i][0])
        row["round_s"] = statistics.median(r["round_s"] for r in runs[i])
        rows.append(row)
    plain = {r["cohort"]: r["round_s"] for r in rows if r["label"] == "plain"}
    lines = [
        SECTION, "",
        f"`python benchmarks/secagg_modeled.py` on {platform.processor() or platform.machine()}, "
        f"{args.repeats} runs of each made in turn, {args.rounds} rounds each: the median over "
        "runs of the median wall seconds of the rounds after the first. "
        "Reference workload (MLP 20-32-2, 100 examples per device) with the clipped mean "
        "(clip 1) secure aggregation needs; every selected device always online, no dropout. "
        "SecAgg+ (k, t) from the SecureAggregation defaults; the calibrated compute model on.",
        "",
        "| devices per round | run | wall s per round | × plain | SecAgg+ degree | "
        "bytes up / down per device |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["round_s"] / plain[r["cohort"]]
        traffic = ("—" if r["up"] is None else f"{r['up']:,.0f} / {r['down']:,.0f}")
        lines.append(f"| {r['cohort']:,} | {r['label']} | {r['round_s']:.2f} | {ratio:.2f} | "
                     f"{r['degree'] or '—'} | {traffic} |")
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.dry_run:
        path = ROOT / "docs" / "benchmarks.md"
        text = path.read_text()
        pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
        text = (pattern.sub(lambda _: section + "\n", text) if pattern.search(text)
                else text.rstrip("\n") + "\n\n" + section)
        path.write_text(text)


if __name__ == "__main__":
    main()
