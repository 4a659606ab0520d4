"""A finished run directory, read back for reporting.

Reports are built from what a run wrote to disk, never from live simulator
objects, so a report can be redrawn (or compared with another run) long after
the run ended.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REQUIRED = ("summary.json", "metrics.jsonl", "events.jsonl")


class RunDirError(Exception):
    """A run directory that cannot be reported on; the message names the path."""


@dataclass
class RunData:
    """One run: its directory, summary, per-round metrics rows and display label."""

    path: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    label: str = ""
    eval_metrics: list[str] = field(default_factory=list)

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def scenario(self) -> str:
        return str(self.summary.get("scenario", self.path.name))


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a .jsonl file; a bad line raises RunDirError naming it."""
    with open(path) as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RunDirError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(value, dict):
                raise RunDirError(f"{path}:{number}: expected a JSON object")
            yield value


def load_run(path: Path) -> RunData:
    """Read a run directory, checking that it holds a finished run."""
    if not path.is_dir():
        raise RunDirError(f"{path}: no such run directory")
    for name in REQUIRED:
        if not (path / name).is_file():
            raise RunDirError(f"{path / name}: missing (is {path} a finished run directory?)")
    try:
        summary = json.loads((path / "summary.json").read_text())
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path / 'summary.json'}: not valid JSON ({exc.msg})") from None
    if not isinstance(summary, dict):
        raise RunDirError(f"{path / 'summary.json'}: expected a JSON object")
    # A run may end before its first round (a budget, an idle fleet): no rows,
    # but still a run the report describes.
    rows = list(iter_jsonl(path / "metrics.jsonl"))
    for number, row in enumerate(rows, 1):
        for key in ("round", "time"):
            if not isinstance(row.get(key), (int, float)):
                raise RunDirError(f"{path / 'metrics.jsonl'}:{number}: no numeric {key!r}")
    final = summary.get("final")
    names = list(final) if isinstance(final, dict) else []
    for key in ("loss", "accuracy"):
        if key not in names and any(key in row for row in rows):
            names.append(key)
    return RunData(path, summary, rows, eval_metrics=names)


def load_runs(paths: Sequence[Path]) -> list[RunData]:
    """Load several runs and give each a label that tells it apart from the others."""
    runs = [load_run(p) for p in paths]
    names = [r.scenario for r in runs]
    for run in runs:
        if names.count(run.scenario) == 1:
            run.label = run.scenario
        else:
            run.label = f"{run.scenario} ({run.path.resolve().name})"
    labels = [r.label for r in runs]
    for i, run in enumerate(runs):  # same scenario, same dir name: fall back to the full path
        if labels.count(run.label) > 1:
            run.label = f"{run.scenario} ({run.path})"
            labels[i] = run.label
    return runs
