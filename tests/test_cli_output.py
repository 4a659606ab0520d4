"""What the command line shows and refuses: its own output only, unwritable run
directories refused before training, warnings always printed, zero-round runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINEAR = ROOT / "scenarios/linear_regression.py"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedactors", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_quiet_run_prints_nothing_of_tensorflow(tmp_path: Path) -> None:
    proc = _cli(str(LINEAR), "--rounds", "1", "--quiet", "--no-report", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


@pytest.mark.parametrize("make", ["file", "under-a-file"])
def test_an_unwritable_run_directory_is_refused_before_any_training(tmp_path: Path,
                                                                    make: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    out = blocker if make == "file" else blocker / "run"
    proc = _cli(str(LINEAR), "--quiet", "--out", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}") and "Traceback" not in proc.stderr
    assert blocker.read_text() == "not a directory"


@pytest.mark.slow
def test_a_run_that_finishes_no_round_writes_a_valid_summary_and_report(tmp_path: Path) -> None:
    # Nobody is ever online: FedBuff goes idle before its first buffer.
    scenario = tmp_path / "idle.py"
    scenario.write_text(
        "import dataclasses, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'scenarios')!r})\n"
        "from linear_regression import scenario as base\n"
        "from fedactors import DeviceClass, FedBuff, OnlineShare\n"
        "scenario = dataclasses.replace(base, name='idle',\n"
        "    fleet=[DeviceClass('never', count=2, availability=OnlineShare(0.0))],\n"
        "    mode=FedBuff(buffer_size=1, concurrency=1, poll_interval=60.0, max_idle=600.0))\n"
    )
    out = tmp_path / "run"
    proc = _cli(str(scenario), "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 0 and summary["stopped"] == "idle"
    assert (out / "metrics.jsonl").read_text() == ""
    page = (out / "report" / "report.html").read_text()
    assert "no round finished (stopped: idle)" in page
