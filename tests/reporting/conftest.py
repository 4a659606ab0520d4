"""One tiny real run (3 rounds of linear regression) shared by the reporting tests."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fedactors.scenarios.loader import load_scenario
    from fedactors.simulation import RunOptions, run_scenario

    out = tmp_path_factory.mktemp("runs") / "lr"
    scenario = load_scenario(ROOT / "scenarios" / "linear_regression.py")
    run_scenario(scenario, RunOptions(rounds=3, out_dir=out))
    return out


@pytest.fixture(scope="session")
def dp_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run as a DP + secure-aggregation run would log it: extra per-round keys."""
    out = tmp_path_factory.mktemp("runs") / "lr-dp"
    shutil.copytree(tiny_run, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    with open(out / "metrics.jsonl", "w") as stream:
        for row in rows:
            row["epsilon"] = 0.5 * row["round"]
            row["secagg_bytes"] = 1000 * row["round"]
            row["secagg_compute_s"] = 0.1 * row["round"]
            stream.write(json.dumps(row) + "\n")
    return out
