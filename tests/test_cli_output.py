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


@pytest.mark.slow
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
        "from fedactors import DeviceClass, FedBuff, OnlineShare, Rounds\n"
        "scenario = dataclasses.replace(base, name='idle',\n"
        "    fleet=[DeviceClass('never', count=2, availability=OnlineShare(0.0))],\n"
        "    rounds=Rounds(count=base.rounds.count, deadline=base.rounds.deadline),\n"
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


def _rows(path: Path) -> int:
    try:
        return len((path / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(2, 130), (15, 143)])
def test_an_interrupted_run_stops_at_a_round_boundary_and_resumes_exactly(
        tmp_path: Path, signum: int, status: int) -> None:
    import time

    smart_home = ROOT / "scenarios/smart_home.py"
    args = ["--rounds", "12", "--quiet", "--no-report", "--no-device-events"]
    out = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "fedactors", str(smart_home), *args,
                             "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _rows(out) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "interrupted" and 2 <= summary["rounds"] < 12
    assert _rows(out) == summary["rounds"]
    assert "--resume" in stderr and "Traceback" not in stderr
    if signum != 2:
        return  # resuming is the same whichever signal stopped the run
    whole = _cli(str(smart_home), *args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    resumed = _cli("--resume", str(out), "--quiet", "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads((out / "summary.json").read_text())
    expected = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert final["weights_sha256"] == expected["weights_sha256"] and final["rounds"] == 12
