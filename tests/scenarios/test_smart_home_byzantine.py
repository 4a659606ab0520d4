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


def test_who_attacks_is_recorded_and_counted_per_round(tmp_path) -> None:
    """The run names its Byzantine devices (run.start, summary.json) and counts, per
    round, how many were selected and how many of their updates the server took in,
    so a reader can check the defence against the ground truth."""
    import json
    from dataclasses import replace

    scenario = load_scenario(ROOT / "scenarios/smart_home_byzantine.py")
    scenario = replace(scenario, rounds=replace(scenario.rounds, count=2))
    out = tmp_path / "run"
    result = run_scenario(scenario, RunOptions(out_dir=out, device_events=False))
    summary = json.loads((out / "summary.json").read_text())
    attackers = summary["byzantine"]["devices"]
    assert len(attackers) == round(0.2 * summary["devices"]) and attackers == sorted(attackers)
    start = json.loads((out / "events.jsonl").read_text().splitlines()[0])
    assert start["byzantine"] == attackers
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    for row in result.records:
        (begin,) = [e for e in events if e["event"] == "round.start" and e["round"] == row["round"]]
        received = {e["sender"] for e in events
                    if e["event"] == "update.received" and e["round"] == row["round"]}
        received -= {e["sender"] for e in events  # taken in, then dropped as norm outliers
                     if e["event"] == "update.outlier" and e["round"] == row["round"]}
        assert row["byzantine_selected"] == len(set(begin["cohort"]) & set(attackers)) > 0
        assert row["byzantine_reported"] == len(received & set(attackers))
        # The scenario's trimmed mean cuts the attackers' scaled, flipped values in most
        # coordinates: far less of them is used than was taken in.
        if row["byzantine_reported"]:
            assert 0.0 <= row["byzantine_used"] < 0.5 * row["byzantine_reported"]
