"""summary.json's final metrics say which round's model they evaluate, and whether
metrics.jsonl has them too (with eval_every > 1 the last round may not be evaluated)."""

from __future__ import annotations

import dataclasses

import pytest

from fedactors.scenarios.loader import load_scenario
from fedactors.simulation import RunOptions, run_scenario


@pytest.mark.parametrize("eval_every,logged", [(1, True), (2, False)])
def test_final_metrics_name_their_round_and_whether_metrics_jsonl_has_them(eval_every, logged):
    scenario = load_scenario("scenarios/linear_regression.py")
    scenario = dataclasses.replace(
        scenario, rounds=dataclasses.replace(scenario.rounds, eval_every=eval_every))
    result = run_scenario(scenario, RunOptions(rounds=3, device_events=False))
    summary = result.summary
    assert summary["final_round"] == 3 and summary["final_in_metrics"] is logged
    evaluated = [r["round"] for r in result.records if "loss" in r]
    assert evaluated == ([1, 2, 3] if logged else [2])
    if logged:
        assert summary["final"]["loss"] == result.records[-1]["loss"]
    else:  # evaluated once more at the end: round 3's model, not round 2's row
        assert summary["final"]["loss"] != result.records[1]["loss"]
