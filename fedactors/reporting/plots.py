"""Per-round figures from metrics.jsonl: learning curves, participation, privacy, traffic.

Every function takes one or more runs and returns a matplotlib ``Figure`` (or
``None`` when no run has the data), built without pyplot so no figure state
is shared between calls. Several runs are overlaid on the same axes, one
colour per run, so runs can be compared at a glance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from fedactors.reporting.rundir import RunData
from fedactors.reporting.style import (
    OUTCOME_COLOURS,
    byte_unit,
    paper_style,
    run_colour,
    time_unit,
)

#: Keys of a metrics row with a figure of their own (or no use in a plot).
STRUCTURAL_KEYS = frozenset({
    "round", "time", "selected", "reported", "dropped", "late", "surplus", "refused", "closed_by",
    "applied", "bytes_down", "bytes_up", "wall_seconds", "epsilon",
})
OUTCOMES = ("reported", "refused", "late", "dropped", "surplus")
OUTCOME_LABELS = {
    "reported": "reported in time",
    "refused": "reported, refused (screened out)",
    "late": "late (no update by the deadline or timeout)",
    "dropped": "dropped out",
    "surplus": "surplus (not needed)",
}
PRETTY = {
    "loss": "Loss",
    "accuracy": "Accuracy",
    "epsilon": "Privacy budget ε",
    "duration": "Round duration (s)",
    "total_weight": "Total example weight",
}


def pretty(key: str) -> str:
    if key.startswith("rejected_"):
        return f"Updates rejected: {key[9:]}"
    return PRETTY.get(key, key.replace("_", " ").capitalize())


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def _series(run: RunData, key: str) -> tuple[list[float], list[float], list[float]]:
    """(rounds, times, values) of the rows that carry a numeric ``key``; an evaluation
    metric starts at round 0, the initial model (summary.json's ``initial``)."""
    rows = [r for r in run.rows if _is_number(r.get(key))]
    initial = run.summary.get("initial")
    start = ([(0, 0.0, float(initial[key]))]
             if rows and isinstance(initial, dict) and _is_number(initial.get(key)) else [])
    points = start + [(r["round"], r["time"], float(r[key])) for r in rows]
    return ([p[0] for p in points], [p[1] for p in points], [p[2] for p in points])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def final_epsilon(run: RunData) -> Optional[float]:
    """The run's final ε as summary.json (and the report's table) states it, if finite."""
    eps = (run.summary.get("privacy") or {}).get("epsilon")
    return float(eps) if _is_number(eps) else None


def _marker(n: int) -> Optional[str]:
    return "o" if n <= 40 else None


def _legend(fig: Figure, runs: Sequence[RunData], axes: Axes) -> None:
    if len(runs) > 1:
        axes.legend(loc="best")


def _max_time(runs: Sequence[RunData]) -> float:
    return max(max(r["time"] for r in run.rows) for run in runs)


def eval_metrics(runs: Sequence[RunData]) -> list[str]:
    """Evaluation metrics of any run, loss and accuracy first."""
    names: list[str] = []
    for run in runs:
        names += [m for m in run.eval_metrics if m not in names]
    return sorted(names, key=lambda m: (m not in ("accuracy", "loss"), m != "accuracy", m))


def metric_figure(runs: Sequence[RunData], key: str) -> Optional[Figure]:
    """``key`` on the held-out set against round (left) and simulated time (right)."""
    if not any(_series(run, key)[0] for run in runs):
        return None
    unit, scale = time_unit(_max_time(runs))
    with paper_style():
        fig = Figure(figsize=(7.2, 2.9))
        by_round, by_time = fig.subplots(1, 2, sharey=True)
        values_all: list[float] = []
        for i, run in enumerate(runs):
            rounds, times, values = _series(run, key)
            if not rounds:
                continue
            values_all += values
            style = dict(color=run_colour(i), marker=_marker(len(rounds)), markersize=3,
                         label=run.label)
            by_round.plot(rounds, values, **style)
            by_time.plot([t / scale for t in times], values, **style)
        by_round.set_xlabel("Round")
        by_round.xaxis.set_major_locator(MaxNLocator(integer=True))
        by_time.set_xlabel(f"Simulated time ({unit})")
        by_round.set_ylabel(f"{pretty(key)} (held-out)")
        if key == "accuracy" and values_all and max(values_all) <= 1.0:
            by_round.set_ylim(0, 1)
        elif _wide_positive(values_all):
            by_round.set_yscale("log")
        by_round.set_xlim(left=0)
        by_time.set_xlim(left=0)
        _legend(fig, runs, by_round)
    return fig


def _wide_positive(values: Sequence[float]) -> bool:
    """Values spanning more than two decades read better on a log axis."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 100


def participation_figure(runs: Sequence[RunData]) -> Figure:
    """What became of each round's selected devices, one stacked-bar panel per run."""
    with paper_style():
        fig = Figure(figsize=(7.2, 0.6 + 2.0 * len(runs)))
        axes = fig.subplots(len(runs), 1, sharex=True, squeeze=False)[:, 0]
        for ax, run in zip(axes, runs):
            rounds = [r["round"] for r in run.rows]
            bottom = [0.0] * len(rounds)
            width = 0.8 if len(rounds) <= 60 else 1.0
            for outcome in OUTCOMES:
                values = [float(r.get(outcome, 0) or 0) for r in run.rows]
                ax.bar(rounds, values, bottom=bottom, width=width, linewidth=0,
                       color=OUTCOME_COLOURS[outcome])
                bottom = [b + v for b, v in zip(bottom, values)]
            ax.step(rounds, [r.get("selected", 0) for r in run.rows], where="mid",
                    color="#333333", linewidth=0.8)
            ax.set_ylabel("Devices")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            if len(runs) > 1:
                ax.set_title(run.label, loc="left")
            ax.grid(axis="x", visible=False)
        axes[-1].set_xlabel("Round")
        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
        handles = [Patch(color=OUTCOME_COLOURS[o], label=OUTCOME_LABELS[o]) for o in OUTCOMES]
        handles.append(_line_handle("selected"))
        fig.legend(handles=handles, loc="outside upper center", ncols=3)
    return fig


def _line_handle(label: str):
    from matplotlib.lines import Line2D

    return Line2D([], [], color="#333333", linewidth=0.8, label=label)


def epsilon_figure(runs: Sequence[RunData]) -> Optional[Figure]:
    """ε after each round, for runs that report ``epsilon``: the curve is metrics.jsonl's
    per-round figure, an upper bound cheap enough to compute every round (RDP, or DP-FTRL's
    closed form); a filled star at the last round is the run's final ε as summary.json and
    the report's table state it (the accountant's tightest, PLD or exact), which may lie
    below the curve's last point."""
    with_dp = [(i, run) for i, run in enumerate(runs) if _series(run, "epsilon")[0]]
    if not with_dp:
        return None
    with paper_style():
        fig = Figure(figsize=(4.8, 2.9))
        ax = fig.subplots()
        marks = False
        for i, run in with_dp:
            rounds, _, values = _series(run, "epsilon")
            ax.plot(rounds, values, color=run_colour(i), marker=_marker(len(rounds)),
                    markersize=3, label=run.label)
            final = final_epsilon(run)
            if final is not None:
                # The figure the table states, where the run ended: the curve's bound may
                # be looser, so the final ε is drawn, never left to be read off the curve.
                marks = True
                ax.plot([rounds[-1]], [final], linestyle="none", marker="*", markersize=9,
                        color=run_colour(i), label=f"{run.label}: final ε {final:.4g} (table)")
            empirical = (run.summary.get("privacy") or {}).get("empirical") or {}
            if _is_number(empirical.get("epsilon")):
                # The canary estimate of the final model, at the last round, beside the
                # accountant's curve: a hollow diamond, so it never reads as a bound.
                marks = True
                ax.plot([rounds[-1]], [empirical["epsilon"]], linestyle="none", marker="D",
                        markersize=6, markerfacecolor="none", color=run_colour(i),
                        label=f"{run.label}: empirical estimate (canaries)")
        ax.set_xlabel("Round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("ε after each round (upper bound)")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        if len(runs) > 1 or marks:
            ax.legend(loc="best")
    return fig


def byte_keys(runs: Sequence[RunData]) -> list[str]:
    """bytes_down, bytes_up, then any other byte counter (e.g. secure aggregation's)."""
    keys = ["bytes_down", "bytes_up"]
    for run in runs:
        for row in run.rows:
            keys += [k for k in row if "bytes" in k and k not in keys and _is_number(row[k])]
    return [k for k in keys if any(_series(run, k)[0] for run in runs)]


def bytes_figure(runs: Sequence[RunData]) -> Optional[Figure]:
    """Traffic per round, one panel per byte counter, runs overlaid."""
    keys = byte_keys(runs)
    if not keys:
        return None
    peak = max(max(_series(run, k)[2], default=0.0) for run in runs for k in keys)
    unit, scale = byte_unit(peak)
    ncols = min(len(keys), 3)
    nrows = math.ceil(len(keys) / ncols)
    with paper_style():
        fig = Figure(figsize=(2.6 * ncols + 0.4, 2.5 * nrows))
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True).ravel()
        for ax, key in zip(axes, keys):
            for i, run in enumerate(runs):
                rounds, _, values = _series(run, key)
                ax.plot(rounds, [v / scale for v in values], color=run_colour(i),
                        drawstyle="steps-mid", label=run.label)
            ax.set_title(_byte_title(key), loc="left")
            ax.set_ylabel(f"{unit} per round")
            if _wide_positive([v for run in runs for v in _series(run, key)[2]]):
                ax.set_yscale("log")
            else:
                ax.set_ylim(bottom=0)
        for ax in axes[len(keys):]:
            ax.set_visible(False)
        for ax in axes[max(0, len(keys) - ncols):len(keys)]:
            ax.set_xlabel("Round")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(runs) > 1:
            axes[0].legend(loc="best")
    return fig


def _byte_title(key: str) -> str:
    return {"bytes_down": "Server → devices", "bytes_up": "Devices → server"}.get(key, pretty(key))


def extra_keys(runs: Sequence[RunData]) -> list[str]:
    """Other numeric per-round measurements worth a look (durations, rejections, ...)."""
    skip = set(STRUCTURAL_KEYS) | set(eval_metrics(runs)) | set(byte_keys(runs))
    keys: list[str] = []
    for run in runs:
        for row in run.rows:
            for key, value in row.items():
                if key in skip or key in keys or not _is_number(value):
                    continue
                if key.startswith("rejected_") and not any(r.get(key) for r in run.rows):
                    continue
                keys.append(key)
    # A counter that is zero in every run says nothing.
    return [k for k in keys if any(any(_series(run, k)[2]) for run in runs)]


def extras_figure(runs: Sequence[RunData]) -> Optional[Figure]:
    """Small multiples of every other per-round measurement, runs overlaid."""
    keys = extra_keys(runs)
    if not keys:
        return None
    ncols = min(len(keys), 3)
    nrows = math.ceil(len(keys) / ncols)
    with paper_style():
        fig = Figure(figsize=(2.6 * ncols + 0.4, 2.3 * nrows))
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, key in zip(axes, keys):
            for i, run in enumerate(runs):
                rounds, _, values = _series(run, key)
                ax.plot(rounds, values, color=run_colour(i), label=run.label,
                        marker=_marker(len(rounds)), markersize=2.5, linewidth=1.2)
            ax.set_title(pretty(key), loc="left")
            ax.set_xlabel("Round")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in axes[len(keys):]:
            ax.set_visible(False)
        if len(runs) > 1:
            axes[0].legend(loc="best")
    return fig
