"""``python -m fedactors report DIR [DIR ...] [--out REPORT_DIR]``: figures and a page.

Reads finished run directories only, so any run can be reported on (and
compared with others) after the fact. Writes one PNG per figure and
``report.html`` with every figure embedded.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from fedactors.errors import EXIT_BAD_INPUT
from fedactors.reporting.html import FigureEntry, render_html
from fedactors.reporting.partitions import FILE as PARTITIONS_FILE
from fedactors.reporting.partitions import (
    UnreadablePartitions,
    label_distribution_figure,
    read_partitions,
)
from fedactors.reporting.plots import (
    bytes_figure,
    epsilon_figure,
    eval_metrics,
    extras_figure,
    final_epsilon,
    metric_figure,
    participation_figure,
    pretty,
    save,
)
from fedactors.reporting.rundir import RunData, RunDirError, load_runs
from fedactors.reporting.timeline import (
    DEFAULT_ROUNDS,
    DEFAULT_SAMPLE,
    timeline_figure,
    timeline_from_file,
)
from fedactors.reporting.units import mixed_neighbors_note
from fedactors.validation import whole_number


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def default_out(paths: Sequence[Path]) -> Path:
    """A single run's report lives inside it; a comparison gets its own directory."""
    if len(paths) == 1:
        return paths[0] / "report"
    return Path("report-" + "-vs-".join(_slug(p.resolve().name) for p in paths))


def write_report(
    paths: Sequence[Path],
    out: Optional[Path] = None,
    timeline_devices: int = DEFAULT_SAMPLE,
    timeline_rounds: Optional[int] = DEFAULT_ROUNDS,
) -> Path:
    """Render every figure of ``paths`` into ``out``; returns the HTML page's path.

    Raises RunDirError (naming the path) for a missing or malformed run.
    """
    runs = load_runs(paths)
    out = out or default_out(paths)
    out.mkdir(parents=True, exist_ok=True)
    drawn = [r for r in runs if r.rows]  # a run that finished no round has nothing to plot
    notes: list[str] = []
    data = _data(runs, out, notes)  # the run's setup: drawn even if no round finished
    sections = ([("Data", data)] if data else []) + [
        ("Learning", _learning(drawn, out)),
        ("Participation", _participation(drawn, out)),
        ("Fleet timeline", _timelines(drawn, out, timeline_devices, timeline_rounds)),
        ("Privacy", _privacy(drawn, out)),
        ("Traffic", _traffic(drawn, out)),
        ("Other measurements", _extras(drawn, out)),
    ] if drawn else ([("Data", data)] if data else [])
    notes += [f"{r.label}: no round finished (stopped: {r.summary.get('stopped', '?')}), so "
              "there is nothing to draw." for r in runs if not r.rows]
    if len(runs) > 1:
        notes.append("Each run keeps its colour in every figure.")
        mixed = mixed_neighbors_note([(r.label, r.summary.get("privacy") or {}) for r in runs])
        if mixed:
            notes.append(mixed)
    page = out / "report.html"
    page.write_text(render_html(runs, sections, notes), encoding="utf-8")
    return page


def _data(runs: Sequence[RunData], out: Path, notes: list[str]) -> list[FigureEntry]:
    """Each partitioned run's labels per device (partitions.json, written at its start);
    a table that cannot be read is left out, and ``notes`` says so."""
    entries = []
    for i, run in enumerate(runs):
        try:
            table = read_partitions(run.path)
        except UnreadablePartitions as exc:
            notes.append(f"{run.label}: {PARTITIONS_FILE} is unreadable ({exc}), so its labels "
                         "per device are not drawn.")
            continue
        if table is None:
            continue
        name = "labels.png" if len(runs) == 1 else f"labels-{i + 1}-{_slug(run.label)}.png"
        entries.append(FigureEntry(
            f"Data: labels per device: {run.label}",
            save(label_distribution_figure(table, run.label), out / name),
            f"{table.get('description') or 'Partitioned data'}. Each bar is a device (by id), "
            "each colour a label: how many of the device's examples carry it, as the "
            "partitioner made them (docs/data.md).",
        ))
    return entries


def _learning(runs: Sequence[RunData], out: Path) -> list[FigureEntry]:
    entries = []
    for key in eval_metrics(runs):
        fig = metric_figure(runs, key)
        if fig is None:
            continue
        path = save(fig, out / f"{_slug(key)}.png")
        entries.append(FigureEntry(
            pretty(key), path,
            f"{pretty(key)} of the global model on the server's held-out data after each "
            "evaluated round, against round (left) and simulated time (right). The right "
            "panel shows what stragglers and deadlines cost in time to reach a given value.",
        ))
    return entries


def _participation(runs: Sequence[RunData], out: Path) -> list[FigureEntry]:
    path = save(participation_figure(runs), out / "participation.png")
    return [FigureEntry(
        "Participation per round", path,
        "What became of each round's selected devices (black step: number selected). "
        "Reported: the server accepted the update before the round closed. Late: no "
        "update by the deadline (still training, or its update still on the way, when it "
        "closed the round; under FedBuff, past the device's timeout, though it may still "
        "be computing). Dropped: went silent before the round closed. Surplus: not "
        "needed: the target number of reports was met first (a Poisson round: every "
        "sampled device had reported), or a secure round aborted and its survivors' work "
        "was discarded. Under FedBuff a row is one server update and counts the devices "
        "given work since the last; those still working at the end (in_flight in "
        "metrics.jsonl) are in no colour.",
    )]


def _timelines(runs: Sequence[RunData], out: Path, devices: int,
               rounds: Optional[int]) -> list[FigureEntry]:
    entries = []
    for i, run in enumerate(runs):
        timeline = timeline_from_file(run.events_path, devices, rounds)
        fig = timeline_figure(timeline, run.label)
        if fig is None:
            continue
        name = "timeline.png" if len(runs) == 1 else f"timeline-{i + 1}-{_slug(run.label)}.png"
        entries.append(FigureEntry(
            f"Fleet timeline: {run.label}", save(fig, out / name),
            "A deterministic sample of devices (evenly spread over the ids of those ever "
            "selected), from events.jsonl. Bars show downloading, training and uploading; "
            "work that went on past a deadline is late, past an early close (target met) "
            "surplus. Blank means not selected or idle: the log does not record which "
            "devices were offline. Grey bands alternate between rounds.",
        ))
    return entries


def _privacy(runs: Sequence[RunData], out: Path) -> list[FigureEntry]:
    fig = epsilon_figure(runs)
    if fig is None:
        return []
    caption = ("Differential-privacy ε after each round at the run's δ, for runs with DP "
               "(lower is more private). The curve is the per-round upper bound metrics.jsonl "
               "logs (RDP for DP-FedAvg, the closed-form bound for DP-FTRL): cheap at every "
               "round and never below the run's final ε.")
    if any(final_epsilon(r) is not None for r in runs):
        caption += (" A filled star at the last round marks the final ε the table states, the "
                    "tightest bound the accountant has (PLD under Poisson sampling, the exact "
                    "search over participation for DP-FTRL); it may lie below the curve's last "
                    "point.")
    if any("empirical" in (r.summary.get("privacy") or {}) for r in runs):
        caption += (" A hollow diamond at the last round marks a run's empirical ε estimate "
                    "from canaries (docs/privacy.md): what the final model alone revealed "
                    "about a worst-case client; an estimate, not a guarantee.")
    return [FigureEntry("Privacy budget", save(fig, out / "epsilon.png"), caption)]


def _traffic(runs: Sequence[RunData], out: Path) -> list[FigureEntry]:
    fig = bytes_figure(runs)
    if fig is None:
        return []
    return [FigureEntry("Bytes per round", save(fig, out / "bytes.png"),
                        "Simulated network traffic per round: models sent to the cohort, "
                        "updates sent back (including late ones), and any other byte counter "
                        "a run logs, such as secure aggregation's.")]


def _extras(runs: Sequence[RunData], out: Path) -> list[FigureEntry]:
    fig = extras_figure(runs)
    if fig is None:
        return []
    return [FigureEntry("Other per-round measurements", save(fig, out / "measurements.png"),
                        "Every other numeric per-round field of metrics.jsonl that is not "
                        "zero throughout: round duration, aggregation measurements, "
                        "rejected updates by reason, and so on.")]


def _rounds_arg(text: str) -> Optional[int]:
    if text == "all":
        return None
    return _positive(text)


_positive = whole_number(1)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fedactors report",
        description="Plot finished runs; several runs are overlaid for comparison.",
    )
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="a finished run directory")
    p.add_argument("--out", type=Path, help="report directory (default: DIR/report for one "
                   "run, ./report-A-vs-B for several)")
    p.add_argument("--timeline-devices", type=_positive, default=DEFAULT_SAMPLE,
                   help=f"devices in the fleet timeline (default {DEFAULT_SAMPLE})")
    p.add_argument("--timeline-rounds", type=_rounds_arg, default=DEFAULT_ROUNDS,
                   help=f"rounds in the fleet timeline, or 'all' (default {DEFAULT_ROUNDS})")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        page = write_report(args.dirs, args.out, args.timeline_devices, args.timeline_rounds)
    except RunDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"report: {page}")
    return 0
