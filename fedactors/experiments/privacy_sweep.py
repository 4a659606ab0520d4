"""Privacy experiments: accuracy against ε over a grid of DP-FedAvg settings.

``python -m fedactors.experiments.privacy_sweep SCENARIO --noise 0,0.5,1 --clip 0.5,1
--cohort 20,40 --seeds 0,1,2 --rounds N --out DIR``

For every (noise multiplier z, clip norm C, cohort size m) and seed, the
scenario is run with its aggregator replaced by ``DPMean.fixed(C, z, m)`` and
``rounds.cohort_size = m`` (``dataclasses.replace``; everything else, including
the server's sampling and the fleet, is the scenario's). A scenario's
``target_epsilon`` is dropped so every setting runs the same number of rounds.
The non-private baseline is the same scenario with ``WeightedMean`` for each
cohort size (and, if the scenario has secure aggregation, without it: unbounded
weighted deltas have no fixed-point range that cannot wrap). FedBuff scenarios
are refused: the sweep sets synchronous cohort sizes. Writes to DIR:

* ``results.csv``: one ``run`` row per setting and seed, one ``aggregate`` row
  per setting (mean and standard deviation over seeds), the same for the
  ``baseline``;
* ``results.md``: the aggregate rows as a Markdown table;
* ``accuracy_vs_epsilon.png``: final accuracy against ε (log scale), error
  bars one standard deviation over seeds, baselines as horizontal lines.

ε is a pure function of (z, m, N, sampling, rounds), identical across seeds.
z = 0 gives ε = ∞ (clipping only); it is plotted at the right edge. An ε whose
run broke the accountant's assumption (a deadline or dropouts cut the cohort,
only online devices could be sampled, ...) is not a guarantee: it is marked
"(assumption broken)" in the progress lines and results.md, drawn hollow in the
plot, its violations are listed under the table and in results.csv
(``violations``), and a warning line says how many settings it concerns.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fedactors.errors import EXIT_BAD_INPUT, ConfigError, ScenarioError

CSV_FIELDS = (
    "kind", "aggregator", "noise", "clip", "cohort", "seed", "seeds", "rounds", "stopped",
    "epsilon", "delta", "accuracy", "accuracy_std", "assumption_held", "violations",
)  # fmt: skip

#: Marks an ε that the run's own audit says is not a guarantee.
BROKEN = "(assumption broken)"


def _broken(row: dict) -> bool:
    """The row's ε is not a guarantee (``None``, a baseline, states none at all)."""
    return row["assumption_held"] is False


@dataclass(frozen=True)
class Setting:
    """One grid point; ``noise is None`` is the non-private baseline."""

    cohort: int
    noise: Optional[float] = None
    clip: Optional[float] = None

    @property
    def private(self) -> bool:
        return self.noise is not None


def grid(noise: Sequence[float], clip: Sequence[float], cohort: Sequence[int]) -> list[Setting]:
    """Every DP setting, then one baseline per cohort size."""
    dp = [Setting(m, z, c) for m in cohort for c in clip for z in noise]
    return dp + [Setting(m) for m in cohort]


def configure(scenario: Any, setting: Setting) -> Any:
    """The scenario with the setting's aggregator and cohort size."""
    from fedactors.aggregation.fedavg import WeightedMean
    from fedactors.privacy.dp_mean import DPMean
    from fedactors.privacy.spec import Privacy

    r = scenario.rounds
    rounds = dataclasses.replace(
        r, cohort_size=setting.cohort, min_reports=min(r.min_reports, setting.cohort)
    )
    if not setting.private:
        return dataclasses.replace(scenario, aggregator=WeightedMean(), rounds=rounds,
                                   privacy=None, secure_aggregation=None)
    privacy = dataclasses.replace(scenario.privacy or Privacy(), target_epsilon=None)
    return dataclasses.replace(
        scenario,
        aggregator=DPMean.fixed(setting.clip, setting.noise, setting.cohort),
        rounds=rounds,
        privacy=privacy,
    )


def run_one(scenario: Any, setting: Setting, seed: int, rounds: int, metric: str) -> dict:
    from fedactors.simulation import RunOptions, run_scenario

    result = run_scenario(
        configure(scenario, setting), RunOptions(seed=seed, rounds=rounds, device_events=False)
    )
    s = result.summary
    if metric not in s["final"]:
        raise ConfigError("metric", f"{metric!r} is not among the final metrics {list(s['final'])}")
    p = s.get("privacy")
    return {
        "kind": "run" if setting.private else "baseline",
        "aggregator": "DPMean" if setting.private else (
            "WeightedMean" if scenario.secure_aggregation is None
            else "WeightedMean (no secure aggregation)"),
        "noise": setting.noise, "clip": setting.clip, "cohort": setting.cohort,
        "seed": seed, "seeds": 1, "rounds": s["rounds"], "stopped": s["stopped"],
        # JSON null (no noise) is infinite epsilon.
        "epsilon": (math.inf if p["epsilon"] is None else p["epsilon"]) if p else None,
        "delta": p["delta"] if p else None,
        "accuracy": float(s["final"][metric]), "accuracy_std": None,
        "assumption_held": p["assumption_held"] if p else None,
        "violations": " | ".join(p.get("violations") or []) if p else None,
    }  # fmt: skip


def aggregate(rows: list[dict]) -> dict:
    """Mean and (sample) standard deviation over the seeds of one setting."""
    acc = np.array([r["accuracy"] for r in rows])
    first = rows[0]
    return {
        **first,
        "kind": "aggregate" if first["kind"] == "run" else "baseline-aggregate",
        "seed": None, "seeds": len(rows),
        "rounds": float(np.mean([r["rounds"] for r in rows])),
        "stopped": ";".join(sorted({r["stopped"] for r in rows})),
        "accuracy": float(acc.mean()),
        "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
        "assumption_held": all(r["assumption_held"] for r in rows) if first["delta"] else None,
        "violations": " | ".join(dict.fromkeys(
            v for r in rows if r["violations"] for v in r["violations"].split(" | "))) or None,
    }  # fmt: skip


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in CSV_FIELDS})


def markdown(rows: list[dict]) -> str:
    def eps(r: dict) -> str:
        if r["epsilon"] is None:
            return "—"
        value = "∞" if math.isinf(r["epsilon"]) else f"{r['epsilon']:.2f}"
        return f"{value} {BROKEN}" if _broken(r) else value

    lines = [
        "| aggregator | z | C | m | ε | accuracy (mean ± std) | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        z = "—" if r["noise"] is None else f"{r['noise']:g}"
        c = "—" if r["clip"] is None else f"{r['clip']:g}"
        lines.append(
            f"| {r['aggregator']} | {z} | {c} | {r['cohort']} | {eps(r)} | "
            f"{r['accuracy']:.3f} ± {r['accuracy_std']:.3f} | {r['seeds']} |"
        )
    broken = [r for r in rows if _broken(r)]
    if broken:
        lines += ["", f"ε marked {BROKEN} is not a guarantee: the accountant's assumption did "
                  "not hold in these runs (summary.json `privacy.violations`):", ""]
        for violation in dict.fromkeys(v for r in broken for v in r["violations"].split(" | ")):
            lines.append(f"* {violation}")
    return "\n".join(lines) + "\n"


def plot(aggregates: list[dict], path: Path, title: str, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    plt.rcParams.update({"font.size": 13})
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    dp = [r for r in aggregates if r["kind"] == "aggregate"]
    finite = [r["epsilon"] for r in dp if math.isfinite(r["epsilon"])]
    # Where ε = ∞ (no noise) is drawn: beyond the largest finite ε.
    x_inf = max(finite) * 4 if finite else 10.0
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    series = sorted({(r["clip"], r["cohort"]) for r in dp})
    for i, (clip, cohort) in enumerate(series):
        pts = sorted(
            (r for r in dp if (r["clip"], r["cohort"]) == (clip, cohort)),
            key=lambda r: -r["noise"],
        )
        xs = [x_inf if math.isinf(r["epsilon"]) else r["epsilon"] for r in pts]
        ax.errorbar(
            xs, [r["accuracy"] for r in pts], yerr=[r["accuracy_std"] for r in pts],
            marker="o", capsize=4, lw=1.8, color=colors[i % len(colors)],
            label=f"DP-FedAvg C={clip:g}, m={cohort}",
        )  # fmt: skip
        # An ε that is not a guarantee is drawn hollow (and said so in the legend).
        hollow = [(x, r["accuracy"]) for x, r in zip(xs, pts) if _broken(r)]
        if hollow:
            ax.plot(*zip(*hollow), ls="none", marker="o", ms=9, mfc="white",
                    mec=colors[i % len(colors)], mew=2,
                    label=f"ε {BROKEN}: not a guarantee" if i == 0 else None)
        for x, r in zip(xs, pts):
            ax.annotate(f"z={r['noise']:g}", (x, r["accuracy"]), textcoords="offset points",
                        xytext=(5, -14), fontsize=10, color=colors[i % len(colors)])
    for j, r in enumerate(a for a in aggregates if a["kind"] == "baseline-aggregate"):
        ax.axhline(r["accuracy"], ls="--", lw=1.6, color="0.3" if j == 0 else "0.6",
                   label=f"non-private FedAvg, m={r['cohort']}")
    ax.set_xscale("log")
    # Plain numbers on major ticks only; minor labels collide on a short range.
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if any(math.isinf(r["epsilon"]) for r in dp):
        ax.axvline(x_inf, color="0.85", lw=8, zorder=0)
        ax.text(x_inf, 0.98, "ε = ∞\n(no noise)", transform=ax.get_xaxis_transform(),
                ha="right", va="top", fontsize=11)
    ax.set_xlabel("ε (user-level, log scale)")
    ax.set_ylabel(f"final test {metric}")
    ax.set_title(title, fontsize=13)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=11, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_grid(
    scenario: Any, settings: list[Setting], seeds: Sequence[int], rounds: int, metric: str,
    progress: bool = True,
) -> tuple[list[dict], list[dict]]:
    runs, aggregates = [], []
    for k, setting in enumerate(settings, 1):
        rows = []
        for seed in seeds:
            rows.append(run_one(scenario, setting, seed, rounds, metric))
            if progress:
                r = rows[-1]
                print(f"[{k}/{len(settings)}] {r['aggregator']} z={r['noise']} C={r['clip']} "
                      f"m={r['cohort']} seed={seed}: {metric}={r['accuracy']:.3f} "
                      f"ε={r['epsilon']}{' ' + BROKEN if _broken(r) else ''}",
                      file=sys.stderr, flush=True)
        runs += rows
        aggregates.append(aggregate(rows))
    return runs, aggregates


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"must be numbers >= 0, got {text!r}")
    return values


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated whole numbers, got {text!r}"
        ) from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"must be whole numbers >= 0, got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fedactors.experiments.privacy_sweep",
        description="Run a scenario over a grid of DP-FedAvg settings and seeds; "
        "write results.csv, results.md and accuracy_vs_epsilon.png.",
    )
    p.add_argument("scenario", type=Path)
    p.add_argument("--noise", type=_floats, default=[0.0, 0.5, 1.0], help="noise multipliers z")
    p.add_argument("--clip", type=_floats, default=[1.0], help="clip norms C (> 0)")
    p.add_argument("--cohort", type=_ints, help="cohort sizes m (default: the scenario's)")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--rounds", type=int, help="rounds per run (default: the scenario's)")
    p.add_argument("--metric", default="accuracy", help="final metric to plot")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = parser().parse_args(argv)
    from fedactors.scenarios.loader import load_scenario
    from fedactors.training.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()  # its banner would bury the table

    try:
        scenario = load_scenario(args.scenario)
        if scenario.mode is not None:
            raise ConfigError("mode", f"{args.scenario} is a FedBuff scenario; the sweep sets "
                              "synchronous cohort sizes (--cohort), which FedBuff does not use")
        if any(c <= 0 for c in args.clip):
            raise ConfigError("clip", f"must be > 0, got {args.clip!r}")
        cohorts = args.cohort or [scenario.rounds.cohort_size]
        for m in cohorts:
            if not 1 <= m <= scenario.fleet_size:
                raise ConfigError("cohort", f"must be in [1, {scenario.fleet_size}], got {m!r}")
        rounds = args.rounds or scenario.rounds.count
        if rounds < 1:
            raise ConfigError("rounds", f"must be >= 1, got {args.rounds!r}")
        runs, aggregates = run_grid(
            scenario, grid(args.noise, args.clip, cohorts), args.seeds, rounds, args.metric,
            progress=not args.quiet,
        )
    except (ConfigError, ScenarioError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(runs + aggregates, args.out / "results.csv")
    table = markdown(aggregates)
    (args.out / "results.md").write_text(table)
    delta = next((r["delta"] for r in aggregates if r["delta"]), None)
    title = (f"{scenario.name}: {args.metric} vs ε ({scenario.rounds.sampling} sampling, "
             f"δ={delta:g}, {rounds} rounds, {len(args.seeds)} seeds)") if delta else scenario.name
    plot(aggregates, args.out / "accuracy_vs_epsilon.png", title, args.metric)
    if not args.quiet:
        print(table)
    broken = sum(map(_broken, aggregates))
    if broken:
        print(f"warning: privacy: the ε of {broken} of {sum(r['kind'] == 'aggregate' for r in aggregates)} "
              f"settings is not a guarantee: the accountant's assumption did not hold "
              f"({args.out / 'results.md'} lists why)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
