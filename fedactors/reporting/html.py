"""One self-contained HTML page: figures inlined as base64 PNG, CSS inline.

Self-contained so a report can be mailed, attached to an issue or opened on
a plane: nothing is fetched from anywhere.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from fedactors.reporting.rundir import RunData
from fedactors.reporting.style import run_colour
from fedactors.reporting.units import (
    delta_text,
    empirical_text,
    format_duration,
    neighbors_text,
)

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
figure { margin: 1em 0 2em 0; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 0.9em; color: #555; margin-top: 0.4em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px;
          vertical-align: -0.1em; margin-right: 0.4em; }
.muted { color: #777; font-size: 0.9em; }
"""


@dataclass(frozen=True)
class FigureEntry:
    """A saved figure and the words that explain it."""

    title: str
    path: Path
    caption: str



def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def _simulated_seconds(run: RunData) -> float:
    if "simulated_seconds" in run.summary:
        return float(run.summary["simulated_seconds"])
    return float(run.rows[-1]["time"]) if run.rows else 0.0


def _accountant_epsilon(privacy: dict[str, Any]) -> str:
    if not privacy:
        return "–"
    eps = privacy.get("epsilon")
    held = "" if privacy.get("assumption_held", True) else " (assumption broken)"
    if "epsilon_guaranteed" in privacy:  # the bound that holds without the broken sampling
        holds = privacy["epsilon_guaranteed"]
        held = f" (assumption broken; ε that holds: {'∞' if holds is None else _fmt(float(holds))})"
    relation = neighbors_text(privacy)
    over = f"; {relation}" if relation else ""
    return f"{'∞' if eps is None else _fmt(float(eps))}; δ={delta_text(privacy)}{over}{held}"


def _summary_table(runs: Sequence[RunData]) -> str:
    head = "".join(
        f'<th><span class="swatch" style="background:{run_colour(i)}"></span>'
        f"{escape(run.label)}</th>" for i, run in enumerate(runs)
    )
    lines = [("directory", [escape(str(r.path)) for r in runs]),
             ("seed", [_fmt(r.summary.get("seed", "–")) for r in runs]),
             ("rounds", [f"{r.summary.get('rounds', len(r.rows))} "
                         f"({escape(str(r.summary.get('stopped', '?')))})" for r in runs]),
             ("devices", [_fmt(r.summary.get("devices", "–")) for r in runs]),
             ("simulated time", [format_duration(_simulated_seconds(r)) for r in runs])]
    for key in ("selected", "reported", "dropped", "late", "surplus", "refused"):
        lines.append((f"{key} (all rounds)",
                      [str(sum(int(row.get(key, 0) or 0) for row in r.rows)) for r in runs]))
    finals = []
    for run in runs:
        final = run.summary.get("final") or {}
        finals += [k for k in final if k not in finals]
    for key in finals:
        lines.append((f"final {escape(key)}",
                      [_fmt((r.summary.get("final") or {}).get(key, "–")) for r in runs]))
    privacy = [r.summary.get("privacy") or {} for r in runs]
    if any(privacy):
        lines.append(("ε (accountant; δ; neighbouring datasets)",
                      [_accountant_epsilon(p) for p in privacy]))
    if any("empirical" in p for p in privacy):
        # Next to the guarantee, never in its place: the row says it is an estimate.
        lines.append(("ε empirical (canaries, an estimate, not a guarantee)",
                      [escape(empirical_text(p["empirical"])) if "empirical" in p else "–"
                       for p in privacy]))
    body = "".join(
        f"<tr><td>{name}</td>{''.join(f'<td>{v}</td>' for v in values)}</tr>"
        for name, values in lines
    )
    return f"<table><tr><th>measure</th>{head}</tr>{body}</table>"


def _warnings(runs: Sequence[RunData]) -> str:
    """Every run's warnings as a list, or a line saying a run had none."""
    items = []
    for run in runs:
        warnings = [w for w in run.summary.get("warnings", []) if isinstance(w, str)]
        who = f"{escape(run.label)}: " if len(runs) > 1 else ""
        if not warnings:
            items.append(f"<li>{who}none: every guarantee the run states held, and nothing "
                         "fell back.</li>")
        items += [f"<li>{who}{escape(w)}</li>" for w in warnings]
    return "<ul class=\"warnings\">" + "".join(items) + "</ul>"


def _figure(entry: FigureEntry) -> str:
    data = base64.b64encode(entry.path.read_bytes()).decode("ascii")
    return (f"<figure><img alt=\"{escape(entry.title)}\" src=\"data:image/png;base64,{data}\">"
            f"<figcaption><b>{escape(entry.title)}.</b> {escape(entry.caption)}</figcaption>"
            "</figure>")


def render_html(runs: Sequence[RunData], sections: Sequence[tuple[str, Sequence[FigureEntry]]],
                notes: Sequence[str] = ()) -> str:
    """The whole page as a string; ``sections`` are (heading, figures) in display order.
    A "Warnings" section follows the runs' table: each run's weakened guarantees and
    fallbacks (summary.json's ``warnings``), or that it had none."""
    title = "fedactors report: " + ", ".join(r.label for r in runs)
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        "<p class=\"muted\">Times are simulated (the virtual clock), not wall-clock. "
        "Evaluation metrics are on the server's held-out data.</p>",
        "<h2>Runs</h2>", _summary_table(runs),
    ]
    parts += [f"<p class=\"muted\">{escape(note)}</p>" for note in notes]
    parts += ["<h2>Warnings</h2>", _warnings(runs)]
    for heading, entries in sections:
        if not entries:
            continue
        parts.append(f"<h2>{escape(heading)}</h2>")
        parts += [_figure(e) for e in entries]
    parts.append("</body></html>\n")
    return "\n".join(parts)
