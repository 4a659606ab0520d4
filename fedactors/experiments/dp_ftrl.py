"""DP-FedAvg vs DP-FTRL on a fleet selected by availability: accuracy against ε, and which ε holds.

``python -m fedactors.experiments.dp_ftrl scenarios/smartphone_private.py [--noise 1.5,3,6,12]
[--rounds N] [--seed S] [--out DIR]``

The scenario must train with DP-FTRL (``DPMean.tree``); its clip norm C,
cohort size m, restarts and ``Privacy(min_separation=b)`` are kept. From it
(``dataclasses.replace``; fleet, data, model, rounds and seed unchanged) the
command runs, one after the other through the normal run path, each into its
own run directory ``DIR/<variant>/``:

* ``non-private``: ``WeightedMean`` (FedAvg), no privacy;
* ``dp-ftrl-z<z>``: ``DPMean.tree(C, z, m)`` with the scenario's separation,
  for every noise multiplier z;
* ``dp-fedavg-z<z>``: ``DPMean.fixed(C, z, m)`` at the same z, so every
  release adds Gaussian noise of the same standard deviation ``z·C`` to the
  sum of clipped updates (per tree node for DP-FTRL). No separation rule (it
  is refused with DP-FedAvg). A scenario's ``target_epsilon`` is dropped so
  every variant runs the same rounds.

ε is each run's ``summary.json`` ``privacy.epsilon``. For DP-FTRL it is the
planned bound: it holds for any participation the server's rules allow. For
DP-FedAvg it is amplified by sampling, and on a fleet whose cohorts are
drawn from whoever is online that assumption is broken (``assumption_held``
false): the figure is not a guarantee. Beside it, ``epsilon_guaranteed`` is
the ε that holds whatever the selection: DP-FTRL's own ε; for DP-FedAvg, if
its assumption did not hold, the bound without amplification (every round a
Gaussian mechanism of multiplier z under add-or-remove-one, composed over the
rounds run; what fedactors reports as the guarantee under FedBuff), computed
here from the run's charged releases. Writes to DIR:

* ``results.csv``: one row per variant (columns :data:`CSV_FIELDS`);
* ``results.md``: the same as a Markdown table (also printed, with rich);
* ``accuracy_vs_epsilon.png``: final accuracy against ε (log scale), the
  non-private run as a horizontal line, DP-FedAvg's amplified ε marked "not a
  guarantee" where its assumption was broken, with the bound that holds;
* ``accuracy_vs_round.png``: test accuracy round by round, every variant.
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

from fedactors.errors import EXIT_BAD_INPUT, ConfigError, ScenarioError

NON_PRIVATE, DP_FEDAVG, DP_FTRL = "non-private", "DP-FedAvg", "DP-FTRL"

#: The default noise multipliers, as multiples of the scenario's own z.
NOISE_FACTORS = (0.5, 1.0, 2.0, 4.0)

CSV_FIELDS = (
    "method", "noise", "clip", "cohort", "min_separation", "rounds", "stopped",
    "epsilon", "delta", "neighboring", "assumption_held", "epsilon_is_guarantee",
    "epsilon_observed_participation", "epsilon_guaranteed", "violations",
    "noise_stddev_on_mean", "final_accuracy", "best_accuracy", "wall_seconds", "run_dir",
)  # fmt: skip


@dataclass(frozen=True)
class Variant:
    """One run: ``method`` at noise multiplier ``noise`` (``None`` for the non-private run)."""

    method: str
    noise: Optional[float] = None

    @property
    def key(self) -> str:
        """The run directory's name: ``non-private``, ``dp-ftrl-z3``, ``dp-fedavg-z1.5``."""
        return NON_PRIVATE if self.noise is None else f"{self.method.lower()}-z{self.noise:g}"


def variants(noise: Sequence[float]) -> list[Variant]:
    """The non-private run, then DP-FTRL and DP-FedAvg at every noise multiplier."""
    return ([Variant(NON_PRIVATE)] + [Variant(DP_FTRL, z) for z in noise]
            + [Variant(DP_FEDAVG, z) for z in noise])


def tree_of(scenario: Any) -> Any:
    """The scenario's ``DPMean.tree`` aggregator, or a ``ConfigError``."""
    from fedactors.privacy.tree_mean import TreeDPMean

    if not isinstance(scenario.aggregator, TreeDPMean):
        raise ConfigError("aggregator", "the DP-FTRL experiment needs a scenario trained with "
                          f"DPMean.tree(...), got {scenario.aggregator!r}")
    if scenario.mode is not None:
        raise ConfigError("mode", "the DP-FTRL experiment compares synchronous rounds; "
                          "DP-FedAvg under FedBuff has no sampling to amplify by")
    return scenario.aggregator


def configure(scenario: Any, variant: Variant) -> Any:
    """The scenario with the variant's aggregator and privacy options."""
    from fedactors.aggregation.fedavg import WeightedMean
    from fedactors.privacy.dp_mean import DPMean
    from fedactors.privacy.spec import Privacy

    tree = tree_of(scenario)
    name = f"{scenario.name}-{variant.key}"
    if variant.noise is None:
        return dataclasses.replace(scenario, name=name, aggregator=WeightedMean(), privacy=None)
    privacy = dataclasses.replace(scenario.privacy or Privacy(), target_epsilon=None)
    if variant.method == DP_FTRL:
        aggregator = DPMean.tree(tree.clip_norm, variant.noise, tree.expected_count,
                                 restart_every=tree.restart_every, efficient=tree.efficient)
    else:
        aggregator = DPMean.fixed(tree.clip_norm, variant.noise, tree.expected_count)
        privacy = dataclasses.replace(privacy, min_separation=0)
    return dataclasses.replace(scenario, name=name, aggregator=aggregator, privacy=privacy)


def epsilon_without_amplification(privacy: dict) -> float:
    """DP-FedAvg's ε with no sampling assumed: every charged round a Gaussian mechanism of
    its multiplier (add-or-remove-one, sensitivity C), composed. Holds for any selection."""
    from fedactors.privacy.accounting import PrivacyLedger

    acc = privacy["accounting"]
    charged = [(float(z), int(n)) for z, n in acc["noise_multipliers_charged"]]
    if any(z == 0.0 for z, n in charged if n):
        return math.inf
    ledger = PrivacyLedger(acc["population"], acc["sample_size"], acc["noise_multiplier"],
                           sampling="none", releases=charged)
    return ledger.epsilon(privacy["delta"])


def _eps(value: Optional[float]) -> Optional[float]:
    """summary.json's ε (JSON null for no noise) as a number: null is ∞."""
    return math.inf if value is None else float(value)


def row_for(variant: Variant, scenario: Any, summary: dict, records: list[dict],
            run_dir: Optional[Path]) -> dict:
    """The table row of one finished run of ``configure(scenario, variant)``."""
    tree = tree_of(scenario)
    accuracies = [r["accuracy"] for r in records if "accuracy" in r]
    row: dict[str, Any] = {
        "method": variant.method, "noise": variant.noise,
        "clip": None if variant.noise is None else tree.clip_norm,
        "cohort": scenario.rounds.cohort_size,
        "min_separation": (scenario.privacy.min_separation
                           if variant.method == DP_FTRL and scenario.privacy else
                           0 if variant.method == DP_FEDAVG else None),
        "rounds": summary["rounds"], "stopped": summary["stopped"],
        "final_accuracy": float(summary["final"]["accuracy"]),
        "best_accuracy": float(max(accuracies)) if accuracies else None,
        "wall_seconds": summary["wall_seconds"],
        "run_dir": str(run_dir) if run_dir is not None else None,
        "noise_stddev_on_mean": (None if variant.noise is None
                                 else variant.noise * tree.clip_norm / tree.expected_count),
    }  # fmt: skip
    p = summary.get("privacy")
    if p is None:
        return {**row, **{k: None for k in CSV_FIELDS if k not in row}}
    held = bool(p["assumption_held"])
    epsilon = _eps(p["epsilon"])
    if variant.method == DP_FTRL:
        observed = _eps(p["epsilon_observed_participation"])
        guaranteed = epsilon
    else:
        observed = None
        guaranteed = epsilon if held else epsilon_without_amplification(p)
    return {
        **row,
        "epsilon": epsilon, "delta": p["delta"],
        "neighboring": p["accounting"]["neighboring"],
        "assumption_held": held, "epsilon_is_guarantee": held,
        "epsilon_observed_participation": observed, "epsilon_guaranteed": guaranteed,
        "violations": "; ".join(v.split(":")[0] for v in p["violations"]),
    }  # fmt: skip


def run_one(scenario: Any, variant: Variant, seed: Optional[int], rounds: int,
            out: Optional[Path]) -> tuple[dict, list[dict]]:
    """Run one variant through the normal run path; its row and its metrics rows."""
    from fedactors.simulation import RunOptions, run_scenario

    configured = configure(scenario, variant)
    run_dir = None if out is None else out / variant.key
    result = run_scenario(configured, RunOptions(seed=seed, rounds=rounds, out_dir=run_dir,
                                                 device_events=False))
    if "accuracy" not in result.summary["final"]:
        raise ConfigError("metrics", "the experiment plots accuracy; the scenario's final "
                          f"metrics are {list(result.summary['final'])}")
    return row_for(variant, scenario, result.summary, result.records, run_dir), result.records


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in CSV_FIELDS})


def _fmt_eps(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return "∞" if math.isinf(value) else f"{value:.2f}"


def _held(r: dict) -> str:
    if r["assumption_held"] is None:
        return "—"
    return "yes" if r["assumption_held"] else f"no ({r['violations']})"


TABLE_HEADER = ("method", "z", "ε reported", "assumption held", "ε observed participation",
                "ε that holds", "final acc.", "best acc.")


def table_cells(r: dict) -> tuple[str, ...]:
    """One row of the printed and Markdown tables."""
    eps = _fmt_eps(r["epsilon"])
    if r["epsilon"] is not None and not r["epsilon_is_guarantee"]:
        eps += " (not a guarantee)"
    return (
        r["method"], "—" if r["noise"] is None else f"{r['noise']:g}", eps, _held(r),
        _fmt_eps(r["epsilon_observed_participation"]), _fmt_eps(r["epsilon_guaranteed"]),
        f"{r['final_accuracy']:.3f}",
        "—" if r["best_accuracy"] is None else f"{r['best_accuracy']:.3f}",
    )


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    # Piped output is 80 columns to rich; the table needs about 160.
    console.width = max(console.width, 160)
    table = Table(title=title)
    for i, name in enumerate(TABLE_HEADER):
        table.add_column(name, justify="left" if i < 2 or i == 3 else "right")
    for r in rows:
        table.add_row(*table_cells(r))
    console.print(table)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    plt.rcParams.update({"font.size": 12})
    fig, ax = plt.subplots(figsize=(10, 7.2), dpi=110)
    ftrl = sorted((r for r in rows if r["method"] == DP_FTRL), key=lambda r: -r["noise"])
    fedavg = sorted((r for r in rows if r["method"] == DP_FEDAVG), key=lambda r: -r["noise"])
    finite = [v for r in ftrl + fedavg for v in (r["epsilon"], r["epsilon_guaranteed"])
              if v is not None and math.isfinite(v)]
    # Where ε = ∞ (no noise) is drawn: beyond the largest finite ε.
    x_inf = max(finite) * 3 if finite else 10.0

    def x(v: float) -> float:
        return x_inf if math.isinf(v) else v

    def annotate(xs: list[float], pts: list[dict], color: str, dy: int) -> None:
        for xv, r in zip(xs, pts):
            ax.annotate(f"z={r['noise']:g}", (xv, r["final_accuracy"]), textcoords="offset points",
                        xytext=(6, dy), fontsize=9, color=color)

    if ftrl:
        xs = [x(r["epsilon"]) for r in ftrl]
        sep = ftrl[0]["min_separation"]
        ax.plot(xs, [r["final_accuracy"] for r in ftrl], "o-", color="tab:blue", lw=2, ms=8,
                label=f"DP-FTRL (min separation {sep}): ε holds for any participation")
        annotate(xs, ftrl, "tab:blue", 6)
    broken = [r for r in fedavg if not r["assumption_held"]]
    held = [r for r in fedavg if r["assumption_held"]]
    if broken:
        xs = [x(r["epsilon"]) for r in broken]
        ax.plot(xs, [r["final_accuracy"] for r in broken], "s--", color="tab:red", mfc="none",
                ms=8, lw=1.2,
                label="DP-FedAvg, amplified ε: NOT a guarantee (assumption broken: "
                      + (broken[0]["violations"] or "sampling") + ")")
        annotate(xs, broken, "tab:red", -14)
        xg = [x(r["epsilon_guaranteed"]) for r in broken]
        ax.plot(xg, [r["final_accuracy"] for r in broken], "s-", color="tab:red", ms=8, lw=1.6,
                label="DP-FedAvg, the ε that holds (no amplification)")
        for a, b, r in zip(xs, xg, broken):
            ax.annotate("", (b, r["final_accuracy"]), (a, r["final_accuracy"]),
                        arrowprops={"arrowstyle": "->", "color": "tab:red", "alpha": 0.35})
    if held:
        xs = [x(r["epsilon"]) for r in held]
        ax.plot(xs, [r["final_accuracy"] for r in held], "s-", color="tab:orange", ms=8,
                label="DP-FedAvg, amplified ε (sampling assumption held)")
        annotate(xs, held, "tab:orange", -14)
    for r in rows:
        if r["method"] == NON_PRIVATE:
            ax.axhline(r["final_accuracy"], ls="--", lw=1.6, color="0.3",
                       label=f"non-private FedAvg ({r['final_accuracy']:.3f})")
    ax.set_xscale("log")
    # Plain numbers on major ticks only; minor labels collide on a short range.
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if any(math.isinf(v) for r in ftrl + fedavg for v in (r["epsilon"], r["epsilon_guaranteed"])
           if v is not None):
        ax.axvline(x_inf, color="0.85", lw=8, zorder=0)
        ax.text(x_inf, 0.02, "ε = ∞", transform=ax.get_xaxis_transform(), ha="right",
                fontsize=10)
    ax.set_xlabel("ε (user-level, log scale)")
    ax.set_ylabel("final test accuracy")
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    # Below the axes: inside, it would hide the low-accuracy points.
    ax.legend(fontsize=9.5, loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=1, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_rounds(runs: dict[str, list[dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.4), dpi=110)
    shades = {DP_FTRL: plt.get_cmap("Blues"), DP_FEDAVG: plt.get_cmap("Reds")}
    counts = {m: sum(label.startswith(m) for label in runs) for m in shades}
    seen = dict.fromkeys(shades, 0)
    for label, records in runs.items():
        pts = [(r["round"], r["accuracy"]) for r in records if "accuracy" in r]
        method = next((m for m in shades if label.startswith(m)), None)
        if method is None:
            color, style = "0.2", "--"
        else:  # darker for more noise
            seen[method] += 1
            color = shades[method](0.35 + 0.6 * seen[method] / max(counts[method], 1))
            style = "-" if method == DP_FTRL else ":"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, lw=1.6, label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_all(scenario: Any, chosen: list[Variant], seed: Optional[int], rounds: int,
            out: Optional[Path], progress: bool = True) -> tuple[list[dict], dict[str, list[dict]]]:
    rows, runs = [], {}
    for k, variant in enumerate(chosen, 1):
        row, records = run_one(scenario, variant, seed, rounds, out)
        rows.append(row)
        runs[NON_PRIVATE if variant.noise is None else f"{variant.method} z={variant.noise:g}"] = (
            records)
        if progress:
            print(f"[{k}/{len(chosen)}] {variant.key}: accuracy={row['final_accuracy']:.3f} "
                  f"ε={_fmt_eps(row['epsilon'])} assumption_held={row['assumption_held']} "
                  f"({row['wall_seconds']:.0f} s)", file=sys.stderr, flush=True)
    return rows, runs


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"must be numbers > 0, got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fedactors.experiments.dp_ftrl",
        description="Run a DP-FTRL scenario as DP-FTRL and as DP-FedAvg at the same noise, and "
        "without privacy; write results.csv, results.md, accuracy_vs_epsilon.png and "
        "accuracy_vs_round.png.",
    )
    p.add_argument("scenario", type=Path)
    p.add_argument("--noise", type=_floats,
                   help="noise multipliers z for both methods (default: the scenario's z times "
                   + ", ".join(f"{f:g}" for f in NOISE_FACTORS) + ")")
    p.add_argument("--rounds", type=int, help="rounds per run (default: the scenario's)")
    p.add_argument("--seed", type=int, help="seed (default: the scenario's)")
    p.add_argument("--out", type=Path, default=Path("runs/dp_ftrl"))
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
        tree = tree_of(scenario)
        noise = args.noise or [tree.noise_multiplier * f for f in NOISE_FACTORS]
        if any(z <= 0 for z in noise):
            raise ConfigError("noise", f"must be > 0 (the scenario's z is {tree.noise_multiplier:g};"
                              " pass --noise)")
        rounds = scenario.rounds.count if args.rounds is None else args.rounds
        if rounds < 1:
            raise ConfigError("rounds", f"must be >= 1, got {args.rounds!r}")
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ScenarioError(f"{args.out}: cannot write the output directory "
                                f"({exc.strerror or exc})") from None
        rows, runs = run_all(scenario, variants(noise), args.seed, rounds, args.out,
                             progress=not args.quiet)
    except (ConfigError, ScenarioError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    write_csv(rows, args.out / "results.csv")
    table = markdown(rows)
    (args.out / "results.md").write_text(table)
    delta = next((r["delta"] for r in rows if r["delta"]), None)
    seed = scenario.seed if args.seed is None else args.seed
    sep = scenario.privacy.min_separation if scenario.privacy else 0
    title = (f"{scenario.name}: {scenario.fleet_size:,} devices, cohort {tree.expected_count}, "
             f"C={tree.clip_norm:g}, {rounds} rounds, min separation {sep}, δ={delta:g}, "
             f"seed {seed}")
    plot(rows, args.out / "accuracy_vs_epsilon.png", title)
    plot_rounds(runs, args.out / "accuracy_vs_round.png", title)
    if not args.quiet:
        print_table(rows, title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
