"""The smartphone scenario runs in both modes, and the experiment's helpers."""

from __future__ import annotations

import pytest

from fedactors.experiments.sync_vs_async import fedbuff_variant, time_to_target
from fedactors.scenarios.loader import load_scenario
from fedactors.simulation import RunOptions, run_scenario

SCENARIO = "scenarios/smartphone.py"


def test_the_scenario_and_its_fedbuff_variant_build() -> None:
    # Fast: what the slow end-to-end run below starts from.
    scenario = load_scenario(SCENARIO)
    assert scenario.fleet_size >= 2000 and scenario.mode is None
    variant = fedbuff_variant(scenario, 5, None, 4)  # re-validated by Scenario itself
    assert variant.mode.buffer_size == 5
    assert variant.mode.concurrency == scenario.rounds.selected_size
    assert variant.rounds.count == 4 and variant.name == f"{scenario.name}-fedbuff"
    assert (variant.fleet, variant.data, variant.model) == (scenario.fleet, scenario.data,
                                                             scenario.model)


@pytest.mark.slow
def test_both_modes_run_and_fedbuff_rows_carry_staleness() -> None:
    scenario = load_scenario(SCENARIO)
    assert scenario.fleet_size >= 2000
    sync = run_scenario(scenario, RunOptions(rounds=2, device_events=False))
    assert [r["round"] for r in sync.records] == [1, 2]
    fedbuff = run_scenario(fedbuff_variant(scenario, 5, None, 4), RunOptions(device_events=False))
    rows = fedbuff.records
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    assert all(r["reported"] == 5 and r["closed_by"] == "buffer" for r in rows)
    assert set(sync.records[0]) - {"clip_norm"} <= set(rows[0])  # the same keys, and more
    assert {"staleness_mean", "staleness_max", "in_flight"} <= set(rows[0])
    assert all(r["in_flight"] <= scenario.rounds.selected_size for r in rows)
    # Time-limited runs stop after the first update past the limit.
    limited = run_scenario(fedbuff_variant(scenario, 5, None, 1000),
                           RunOptions(device_events=False, until=rows[1]["time"]))
    assert len(limited.records) == 2 and limited.summary["stopped"] == "time-limit"


def test_time_to_target_is_the_first_evaluation_reaching_it() -> None:
    rows = [{"time": 3600.0, "accuracy": 0.1}, {"time": 7200.0}, {"time": 9000.0, "accuracy": 0.5}]
    assert time_to_target(rows, 0.4) == 2.5
    assert time_to_target(rows, 0.6) is None
