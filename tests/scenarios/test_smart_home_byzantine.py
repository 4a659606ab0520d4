"""smart_home with 20% Byzantine devices: FedAvg breaks, the robust stages hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedactors.scenarios.loader import load_scenario
from fedactors.simulation import RunOptions, run_scenario

ROOT = Path(__file__).resolve().parents[2]


def test_the_byzantine_scenario_loads_and_marks_a_fifth_of_the_fleet() -> None:
    scenario = load_scenario(ROOT / "scenarios/smart_home_byzantine.py")
    assert scenario.byzantine is not None and scenario.byzantine.fraction == 0.2
    assert scenario.aggregator.needs_individual_updates


@pytest.mark.slow
def test_fedavg_degrades_and_trimmed_mean_holds_under_attack() -> None:
    import sys

    load_scenario(ROOT / "scenarios/smart_home_byzantine.py")  # checks it loads on its own
    sys.path.insert(0, str(ROOT / "scenarios"))
    try:
        import smart_home_byzantine as sb
    finally:
        sys.path.remove(str(ROOT / "scenarios"))
    options = RunOptions(rounds=8, device_events=False)
    accuracy = {name: run_scenario(sb.VARIANTS[name], options).records[-1]["accuracy"]
                for name in ("fedavg", "trimmed_mean(0.25)")}
    assert accuracy["fedavg"] < 0.2 < 0.45 < accuracy["trimmed_mean(0.25)"]
