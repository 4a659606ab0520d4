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
