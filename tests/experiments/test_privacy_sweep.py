"""The privacy sweep: accuracy against ε over a grid of noise, clip and cohort."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fedactors.experiments import privacy_sweep

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_experiment_command_writes_csv_and_png(tmp_path: Path) -> None:
    path = tmp_path / "scenario.py"
    path.write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        + "from tests.privacy.test_runtime_privacy import _scenario\nscenario = _scenario()\n"
    )
    out = tmp_path / "exp"
    code = privacy_sweep.main([str(path), "--noise", "0,1.0", "--clip", "1.0", "--cohort", "6",
                             "--seeds", "0,1", "--rounds", "2", "--out", str(out), "--quiet"])
    assert code == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    kinds = [r["kind"] for r in rows]
    assert kinds.count("run") == 4 and kinds.count("aggregate") == 2
    assert kinds.count("baseline") == 2 and kinds.count("baseline-aggregate") == 1
    assert {r["epsilon"] for r in rows if r["kind"] == "run" and r["noise"] == "0.0"} == {"inf"}
    png = (out / "accuracy_vs_epsilon.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def _aggregate(held, violations=None, noise=1.0):
    return {"kind": "aggregate", "aggregator": "DPMean", "noise": noise, "clip": 1.0,
            "cohort": 6, "epsilon": 1.884, "accuracy": 0.5, "accuracy_std": 0.0, "seeds": 2,
            "assumption_held": held, "violations": violations}


def test_an_epsilon_whose_assumption_broke_is_marked_with_its_violations() -> None:
    table = privacy_sweep.markdown([
        _aggregate(False, "missing reports: cut by the deadline | availability: online only"),
        _aggregate(True, noise=2.0),
    ])
    assert f"| 1.88 {privacy_sweep.BROKEN} |" in table
    assert "| 1.88 |" in table  # the setting whose assumption held is plain
    assert "* missing reports: cut by the deadline" in table
    assert "* availability: online only" in table


def test_a_run_held_assumption_keeps_a_plain_table() -> None:
    table = privacy_sweep.markdown([_aggregate(True)])
    assert privacy_sweep.BROKEN not in table and "not a guarantee" not in table


def test_aggregate_breaks_if_any_seed_broke_and_keeps_each_violation_once() -> None:
    rows = [dict(_aggregate(True), kind="run", rounds=2, stopped="rounds", delta=1e-5),
            dict(_aggregate(False, "a | b"), kind="run", rounds=2, stopped="rounds", delta=1e-5),
            dict(_aggregate(False, "b"), kind="run", rounds=2, stopped="rounds", delta=1e-5)]
    out = privacy_sweep.aggregate(rows)
    assert out["assumption_held"] is False and out["violations"] == "a | b"


def test_the_baseline_of_a_secure_scenario_drops_secure_aggregation() -> None:
    import dataclasses

    from fedactors import Clipped, SecureAggregation, WeightedMean
    from tests.privacy.test_runtime_privacy import _scenario
    secure = dataclasses.replace(_scenario(), aggregator=Clipped(1.0, WeightedMean(weighted=False)),
                                 secure_aggregation=SecureAggregation.complete())
    baseline = privacy_sweep.configure(secure, privacy_sweep.Setting(6))
    assert baseline.secure_aggregation is None and baseline.privacy is None
    private = privacy_sweep.configure(secure, privacy_sweep.Setting(6, 1.0, 1.0))
    assert private.secure_aggregation is secure.secure_aggregation


def test_a_fedbuff_scenario_is_refused_naming_the_mode(tmp_path: Path, capsys) -> None:
    path = tmp_path / "fedbuff.py"
    path.write_text(
        f"import sys, dataclasses\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from fedactors import FedBuff, Rounds\n"
        "from tests.privacy.test_runtime_privacy import _scenario\n"
        "scenario = dataclasses.replace(_scenario(), mode=FedBuff(buffer_size=6, concurrency=8),\n"
        "                               rounds=Rounds(count=2))\n"
    )
    code = privacy_sweep.main([str(path), "--noise", "1", "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: mode: {path} is a FedBuff scenario; the sweep sets synchronous "
                   "cohort sizes (--cohort), which FedBuff does not use"]
    assert not (tmp_path / "o").exists()
