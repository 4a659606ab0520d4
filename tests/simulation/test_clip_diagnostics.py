"""Per-round clip diagnostics: the share of reported deltas clipped and their median
norm before clipping, as the simulator sees them (never released by the protocol)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fedactors.aggregation.clipping import Clipped
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.scenarios.loader import load_scenario
from fedactors.simulation import RunOptions, run_scenario

ROOT = Path(__file__).resolve().parents[2]


def _rows(scenario, rounds: int = 2) -> list[dict]:
    return run_scenario(scenario, RunOptions(rounds=rounds, device_events=False)).records


def test_a_bound_below_every_norm_clips_all_and_above_every_norm_none() -> None:
    base = load_scenario(ROOT / "scenarios/linear_regression.py")
    tight = _rows(replace(base, aggregator=Clipped(1e-6, WeightedMean())))
    loose = _rows(replace(base, aggregator=Clipped(1e6, WeightedMean())))
    assert [r["clipped_fraction"] for r in tight] == [1.0, 1.0]
    assert [r["clipped_fraction"] for r in loose] == [0.0, 0.0]
    assert [r["clip_bound"] for r in tight] == [1e-6, 1e-6]
    # Round 1 trains from the same initial weights on the same streams: the norms before
    # clipping are the same whatever the bound.
    assert tight[0]["update_norm_median"] == loose[0]["update_norm_median"] > 0
    plain = _rows(base)
    assert not {"clipped_fraction", "update_norm_median", "clip_bound"} & set(plain[0])


@pytest.mark.slow
def test_a_dp_run_reports_its_clipping_beside_the_accountant() -> None:
    rows = _rows(load_scenario(ROOT / "scenarios/healthcare.py"), rounds=3)
    for row in rows:
        assert 0.0 <= row["clipped_fraction"] <= 1.0 and row["update_norm_median"] > 0
        assert row["clip_bound"] == pytest.approx(row["clip_norm"])
