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
from typing import Any, Optional

REQUIRED = ("summary.json", "metrics.jsonl", "events.jsonl")

# What the report reads, and the JSON each must be where present: a hand-edited or
# damaged file is refused naming the field, rather than failing deep in a figure.
_NUMBER, _INT, _TEXT, _OBJECT, _LIST = "a number", "an integer", "a string", "an object", "a list"
_FLAG, _INTS = "true or false", "a list of integers"
SUMMARY_FIELDS = {
    "scenario": _TEXT, "seed": _INT, "rounds": _INT, "stopped": _TEXT, "devices": _INT,
    "simulated_seconds": _NUMBER, "wall_seconds": _NUMBER, "randomness": _TEXT,
    "initial": _OBJECT, "final": _OBJECT, "warnings": _LIST, "privacy": _OBJECT,
}
PRIVACY_FIELDS = {
    "epsilon": _NUMBER, "delta": _NUMBER, "delta_truncation": _NUMBER, "assumption_held": _FLAG,
    "accounting": _OBJECT, "violations": _LIST, "empirical": _OBJECT,
    "epsilon_guaranteed": _NUMBER,
}
EMPIRICAL_FIELDS = {"epsilon": _NUMBER, "canaries_inserted": _INT}
# A metrics row's counts and sizes, summed and drawn; its evaluation metrics are numbers too.
ROW_NUMBERS = ("round", "time", "selected", "reported", "dropped", "late", "surplus", "refused",
               "epsilon", "canaries")
# The events the timeline reads: simulated times and device ids.
EVENT_FIELDS = {"t": _NUMBER, "round": _INT, "deadline": _NUMBER, "compute_s": _NUMBER,
                "upload_s": _NUMBER, "sender": _INT, "cohort": _INTS}


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


def _is(value: Any, kind: str) -> bool:
    """Whether a JSON value is of ``kind``; null stands for any (a non-finite number is
    written as null, and an unseeded run has no seed)."""
    if value is None:
        return True
    if kind in (_NUMBER, _INT):
        number = int if kind == _INT else (int, float)
        return isinstance(value, number) and not isinstance(value, bool)
    if kind == _INTS:
        return isinstance(value, list) and all(_is(v, _INT) and v is not None for v in value)
    return isinstance(value, {_TEXT: str, _OBJECT: dict, _LIST: list, _FLAG: bool}[kind])


def _check_fields(where: str, value: dict[str, Any], fields: dict[str, str],
                  prefix: str = "") -> None:
    for key, kind in fields.items():
        if key in value and not _is(value[key], kind):
            raise RunDirError(f"{where}: '{prefix}{key}' is {json.dumps(value[key])[:40]}, "
                              f"expected {kind}")


def check_summary(where: str, summary: dict[str, Any]) -> None:
    """Refuse a summary.json whose fields the report reads are not what runs write."""
    _check_fields(where, summary, SUMMARY_FIELDS)
    for block in ("initial", "final"):
        _check_fields(where, summary.get(block) or {},
                      dict.fromkeys(summary.get(block) or {}, _NUMBER), f"{block}.")
    privacy = summary.get("privacy") or {}
    _check_fields(where, privacy, PRIVACY_FIELDS, "privacy.")
    _check_fields(where, privacy.get("empirical") or {}, EMPIRICAL_FIELDS, "privacy.empirical.")


def iter_jsonl(path: Path, fields: Optional[dict[str, str]] = None) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a .jsonl file; a bad line raises RunDirError naming it,
    as does a value in ``fields`` of another JSON type."""
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
            if fields:
                _check_fields(f"{path}:{number}", value, fields)
            yield value


def _is_number(value: Any) -> bool:
    return value is not None and _is(value, _NUMBER)


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
    check_summary(str(path / "summary.json"), summary)
    # A run may end before its first round (a budget, an idle fleet): no rows,
    # but still a run the report describes.
    names = list(summary.get("final") or {})
    numbers = dict.fromkeys((*ROW_NUMBERS, *names, "loss", "accuracy"), _NUMBER)
    rows = list(iter_jsonl(path / "metrics.jsonl", numbers))
    for number, row in enumerate(rows, 1):
        for key in ("round", "time"):
            if not _is_number(row.get(key)):
                raise RunDirError(f"{path / 'metrics.jsonl'}:{number}: no numeric {key!r}")
        _check_fields(f"{path / 'metrics.jsonl'}:{number}", row,
                      {key: _NUMBER for key in row if "bytes" in key})  # traffic, drawn
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
