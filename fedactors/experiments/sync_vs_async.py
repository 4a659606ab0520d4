"""Synchronous FedAvg with deadlines vs FedBuff, in simulated hours to a target accuracy.

``python -m fedactors.experiments.sync_vs_async scenarios/smartphone.py --out DIR``

Runs the scenario twice on the same fleet, data and seed: as written
(synchronous rounds), and in FedBuff mode with as many devices training at
once as a synchronous round selects (``ceil(cohort_size * over_selection)``),
so both modes keep the same number of phones busy. Each run stops at
``--hours`` simulated hours. Writes ``DIR/sync_vs_async.png`` (accuracy vs
simulated hours), ``DIR/summary.json`` and each run's ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from fedactors.reporting import strict_json

HOUR = 3600.0


def first_reaching(records: Sequence[dict], target: float, key: str = "accuracy") -> Optional[int]:
    """Index of the first row whose evaluation reaches ``target`` (None if none does)."""
    for i, row in enumerate(records):
        if key in row and row[key] >= target:
            return i
    return None


def time_to_target(records: Sequence[dict], target: float, key: str = "accuracy") -> Optional[float]:
    """Simulated hours at the first evaluation reaching ``target`` (None if never)."""
    i = first_reaching(records, target, key)
    return None if i is None else records[i]["time"] / HOUR


def fedbuff_variant(scenario: Any, buffer_size: int, concurrency: Optional[int], updates: int) -> Any:
    from fedactors.server.fedbuff import FedBuff

    mode = FedBuff(buffer_size=buffer_size,
                   concurrency=concurrency or scenario.rounds.selected_size)
    from fedactors.server.rounds import Rounds

    # Only what FedBuff uses (the scenario refuses the other fields set): the deadline
    # becomes the per-device timeout.
    rounds = Rounds(count=updates, deadline=scenario.rounds.deadline,
                    eval_every=scenario.rounds.eval_every)
    return dataclasses.replace(scenario, name=f"{scenario.name}-fedbuff", mode=mode, rounds=rounds)


def plot(runs: dict[str, list[dict]], target: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for label, records in runs.items():
        rows = [r for r in records if "accuracy" in r]
        ax.plot([r["time"] / HOUR for r in rows], [r["accuracy"] for r in rows], label=label,
                linewidth=1.4)
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel("simulated time (hours)")
    ax.set_ylabel("test accuracy (next character)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def compare(scenario_path: Path, out: Path, hours: float, target: float, buffer_size: int,
            concurrency: Optional[int], seed: Optional[int]) -> dict[str, Any]:
    from fedactors.scenarios.loader import load_scenario
    from fedactors.simulation import RunOptions, run_scenario

    sync = load_scenario(scenario_path)
    # Round counts far beyond the horizon: the time limit ends both runs.
    sync = dataclasses.replace(sync, rounds=dataclasses.replace(sync.rounds, count=100_000))
    fedbuff = fedbuff_variant(sync, buffer_size, concurrency, 1_000_000)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {}
    summary: dict[str, Any] = {"scenario": sync.name, "hours": hours, "target": target}
    for key, scenario, label in (
        ("sync", sync, f"FedAvg, {sync.rounds.cohort_size} of {sync.rounds.selected_size} "
                       f"per round, {sync.rounds.deadline:g} s deadline"),
        ("fedbuff", fedbuff, f"FedBuff, K={fedbuff.mode.buffer_size}, "
                             f"concurrency {fedbuff.mode.concurrency}"),
    ):
        options = RunOptions(seed=seed, out_dir=out / key, device_events=False, until=hours * HOUR)
        result = run_scenario(scenario, options)
        runs[label] = result.records
        accuracies = [r["accuracy"] for r in result.records if "accuracy" in r]
        summary[key] = {
            "label": label,
            "server_updates": len(result.records),
            "hours_to_target": time_to_target(result.records, target),
            # Device updates aggregated until then: the compute the fleet spent.
            "device_updates_to_target": (
                None if (i := first_reaching(result.records, target)) is None
                else sum(r["reported"] for r in result.records[: i + 1])
            ),
            "final_accuracy": accuracies[-1] if accuracies else None,
            "best_accuracy": max(accuracies) if accuracies else None,
            "device_updates": sum(r["reported"] for r in result.records),
            "wall_seconds": result.summary["wall_seconds"],
        }
        if key == "fedbuff":
            st = [r["staleness_mean"] for r in result.records]
            summary[key]["staleness_mean"] = sum(st) / max(len(st), 1)
            summary[key]["staleness_max"] = max((r["staleness_max"] for r in result.records), default=0)
        print(strict_json.dumps(summary[key]), flush=True)
    plot(runs, target, out / "sync_vs_async.png",
         f"{sync.name}: {sync.fleet_size:,} devices, seed {result.seed}")
    (out / "summary.json").write_text(strict_json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = argparse.ArgumentParser(prog="python -m fedactors.experiments.sync_vs_async",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/sync_vs_async"))
    parser.add_argument("--hours", type=float, default=8.0, help="simulated hours per run")
    parser.add_argument("--target", type=float, default=0.32, help="target test accuracy")
    parser.add_argument("--buffer-size", type=int, default=10, help="FedBuff's K")
    parser.add_argument("--concurrency", type=int,
                        help="FedBuff's concurrency (default: the synchronous selection size)")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    from fedactors.errors import EXIT_BAD_INPUT, ConfigError, ScenarioError

    try:
        compare(args.scenario, args.out, args.hours, args.target, args.buffer_size,
                args.concurrency, args.seed)
    except (ScenarioError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
