"""Every file a run writes is strict JSON (``fedactors.reporting.strict_json``): a
diverging model's NaN loss, an infinite norm or ε, is written as null, never as the
``NaN``/``Infinity`` that only Python's own json reads."""

from __future__ import annotations

import json
import math
from contextlib import ExitStack
from pathlib import Path

import pytest

from fedactors.reporting import strict_json
from fedactors.scenarios.loader import load_scenario
from fedactors.simulation import RunOptions, run_scenario
from fedactors.simulation.outputs import RunDirectory
from fedactors.training.model_runner import Evaluator

ROOT = Path(__file__).resolve().parents[2]


def strict_loads(text: str):
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_become_null_at_any_depth_and_the_rest_is_unchanged(bad) -> None:
    value = {"a": 1.5, "b": [2, bad, {"c": (bad, "x")}], "d": bad, "e": True, "f": None}
    assert strict_loads(strict_json.dumps(value)) == {
        "a": 1.5, "b": [2, None, {"c": [None, "x"]}], "d": None, "e": True, "f": None}
    finite = {"a": 0.1 + 0.2, "b": [1e-300, -0.0], "c": "NaN"}
    assert strict_json.dumps(finite, indent=2) == json.dumps(finite, indent=2)


def test_a_metrics_row_is_written_strict(tmp_path: Path) -> None:
    with ExitStack() as stack:
        RunDirectory(tmp_path, stack).write_row({"round": 1, "update_norm_median": math.inf,
                                                 "loss": math.nan, "time": 2.0})
    row = strict_loads((tmp_path / "metrics.jsonl").read_text())
    assert row == {"round": 1, "update_norm_median": None, "loss": None, "time": 2.0}


def test_a_run_whose_model_diverged_writes_only_strict_json(tmp_path: Path, monkeypatch) -> None:
    # The server refuses non-finite updates, so a diverging model is hard to provoke on
    # purpose; its evaluation is what turns non-finite, so the evaluation says so here.
    real = Evaluator.evaluate

    def diverged(self, flat):
        return {k: math.nan if k == "loss" else v for k, v in real(self, flat).items()}

    monkeypatch.setattr(Evaluator, "evaluate", diverged)
    scenario = load_scenario(ROOT / "scenarios" / "linear_regression.py")
    run_scenario(scenario, RunOptions(out_dir=tmp_path, rounds=2))
    summary = strict_loads((tmp_path / "summary.json").read_text())
    rows = [strict_loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for line in (tmp_path / "events.jsonl").read_text().splitlines():
        strict_loads(line)
    assert len(rows) == 2 and all(row["loss"] is None for row in rows)
    assert summary["final"]["loss"] is None and summary["initial"]["loss"] is None
