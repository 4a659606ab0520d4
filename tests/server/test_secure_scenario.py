"""End to end: the shipped secure scenario runs, reports its protocol metrics, reproduces."""

from __future__ import annotations

from pathlib import Path

from fedactors.scenarios.loader import load_scenario
from fedactors.simulation import WALL_CLOCK_KEYS, RunOptions, run_scenario

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("secagg_bytes_up_per_device", "secagg_bytes_down_per_device", "secagg_server_seconds",
        "secagg_survivors", "secagg_aborted")


def test_the_secure_scenario_loads_with_secure_aggregation_on() -> None:
    scenario = load_scenario(ROOT / "scenarios/smart_home_secure.py")
    assert scenario.secure_aggregation is not None
    assert scenario.fleet_size == load_scenario(ROOT / "scenarios/smart_home.py").fleet_size
    assert "secagg_server_seconds" in WALL_CLOCK_KEYS


def test_smart_home_secure_runs_and_reproduces() -> None:
    scenario = load_scenario(ROOT / "scenarios/smart_home_secure.py")
    runs = [run_scenario(scenario, RunOptions(rounds=3, device_events=False)) for _ in range(2)]
    for row in runs[0].records:
        assert set(KEYS) <= set(row)
        assert row["secagg_aborted"] == 0 and row["secagg_survivors"] == row["reported"] >= 10
        assert row["secagg_bytes_up_per_device"] > 0 and row["applied"]
    strip = [[{k: v for k, v in r.items() if k not in WALL_CLOCK_KEYS} for r in run.records]
             for run in runs]
    assert strip[0] == strip[1]
    assert runs[0].summary["weights_sha256"] == runs[1].summary["weights_sha256"]
