"""Per-round clip diagnostics: the share of reported deltas clipped and their median
norm before clipping, as the simulator sees them (never released by the protocol)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedactors.aggregation.clipping import Clipped
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.data.generated import GeneratedData
from fedactors.scenarios.loader import load_scenario
from fedactors.secagg.option import SecureAggregation
from fedactors.simulation import RunOptions, run_scenario

ROOT = Path(__file__).resolve().parents[2]


def line(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-1.0, 1.0, (n, 1)).astype(np.float32)
    return x, (2.0 * x[:, 0] + 1.0).astype(np.float32)


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


def poisoned(fleet, rng):
    """Device 1's data holds a NaN. Generated data is checked in full on device 0 only (as
    a lazily made fleet is), so the NaN gets through to device 1's training."""
    def make(device, n, stream):
        x, y = line(n, stream)
        if device == 1:
            x[0, 0] = np.nan
        return x, y

    return GeneratedData.create([100] * fleet.size, make, line(200, rng), rng)


def test_a_device_whose_update_is_not_finite_is_counted_as_zeroed_and_warned() -> None:
    # Device 1's data holds a NaN: its delta is NaN every round, the clipping stage
    # zeroes it (the device takes part with nothing), and the run must say so.
    base = load_scenario(ROOT / "scenarios/linear_regression.py")

    scenario = replace(base, data=poisoned, aggregator=Clipped(1.0, WeightedMean()))
    result = run_scenario(scenario, RunOptions(rounds=2, device_events=False))
    assert [r["nonfinite_zeroed"] for r in result.records] == [1, 1]
    warning = [w for w in result.summary["warnings"] if w.startswith("clipping:")]
    assert warning and "2 reported updates" in warning[0]
    clean = _rows(replace(base, aggregator=Clipped(1.0, WeightedMean())))
    assert [r["nonfinite_zeroed"] for r in clean] == [0, 0]


def test_under_secure_aggregation_a_non_finite_update_is_withheld_counted_and_warned() -> None:
    # The device keeps it out of the protocol (the server only sees it go silent): counted
    # among the dropped, and told as what it was.
    base = load_scenario(ROOT / "scenarios/linear_regression.py")
    scenario = replace(base, data=poisoned,
                       aggregator=Clipped(1.0, WeightedMean(weighted=False)),
                       fleet=[replace(base.fleet[0], count=4)],
                       rounds=replace(base.rounds, cohort_size=4),
                       secure_aggregation=SecureAggregation.complete())
    result = run_scenario(scenario, RunOptions(rounds=2, device_events=False))
    rows = result.records
    assert [r["nonfinite_withheld"] for r in rows] == [1, 1]
    assert all(r["dropped"] >= 1 and r["reported"] == 3 for r in rows)
    warning = [w for w in result.summary["warnings"] if "non-finite" in w]
    assert len(warning) == 1 and "2 devices in all" in warning[0]
