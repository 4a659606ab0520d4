"""What a caller hands run_scenario to watch or stop a run: on_round callbacks and interrupt."""

from __future__ import annotations

import json
from pathlib import Path

from fedactors.scenarios.loader import load_scenario
from fedactors.simulation import RunOptions, run_scenario

LINEAR = "scenarios/linear_regression.py"


def test_interrupt_stops_a_synchronous_run_at_a_rounds_end(tmp_path: Path) -> None:
    # Found from outside: documented as polled, it was never called in synchronous rounds.
    polls: list[int] = []

    def interrupt():
        polls.append(1)
        return "user-stop" if len(polls) == 2 else None

    result = run_scenario(load_scenario(LINEAR), RunOptions(out_dir=tmp_path, rounds=5),
                          interrupt=interrupt)
    assert result.summary["stopped"] == "user-stop" and result.summary["rounds"] == 2
    assert len(polls) == 2
    resumed = run_scenario(load_scenario(LINEAR),
                           RunOptions(out_dir=tmp_path, rounds=5, resume=True))
    fresh = run_scenario(load_scenario(LINEAR), RunOptions(rounds=5))
    assert resumed.summary["weights_sha256"] == fresh.summary["weights_sha256"]


def test_a_callback_that_changes_its_row_changes_nothing_of_the_run(tmp_path: Path) -> None:
    # Found from outside: annotating the row rewrote RunResult.records and summary["final"].
    seen: list[dict] = []

    def annotate(row):
        seen.append(row)
        row["loss"] = -1.0
        row["note"] = "mine"

    result = run_scenario(load_scenario(LINEAR), RunOptions(out_dir=tmp_path, rounds=2),
                          on_round=[annotate, lambda row: seen.append(row)])
    on_disk = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in result.records] == [r["loss"] for r in on_disk]
    assert all(r["loss"] != -1.0 and "note" not in r for r in result.records)
    assert result.summary["final"]["loss"] == on_disk[-1]["loss"]
    assert "note" not in seen[1]  # the second callback got its own copy too
