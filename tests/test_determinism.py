"""Same scenario and seed: identical metrics and bit-identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedactors.scenarios.loader import load_scenario
from fedactors.simulation import WALL_CLOCK_KEYS, RunOptions, run_scenario

ROOT = Path(__file__).resolve().parents[1]


def _without_wall_clock(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK_KEYS} for row in rows]


def test_two_runs_with_the_same_seed_are_identical() -> None:
    scenario = load_scenario(ROOT / "scenarios/smart_home.py")
    a = run_scenario(scenario, RunOptions(rounds=4, keep_events=True))
    b = run_scenario(scenario, RunOptions(rounds=4, keep_events=True))
    assert a.summary["weights_sha256"] == b.summary["weights_sha256"]
    assert _without_wall_clock(a.records) == _without_wall_clock(b.records)
    assert a.events == b.events
    c = run_scenario(scenario, RunOptions(rounds=4, seed=1))
    assert c.summary["weights_sha256"] != a.summary["weights_sha256"]


def _cli_run(out: Path, env: dict[str, str]) -> tuple[list[dict], str]:
    subprocess.run(
        [sys.executable, "-m", "fedactors", "scenarios/smart_home.py", "--rounds", "5",
         "--out", str(out), "--quiet", "--no-report"],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return _without_wall_clock(rows), json.loads((out / "summary.json").read_text())[
        "weights_sha256"
    ]


@pytest.mark.slow
def test_runs_match_across_processes_thread_counts_and_machine_load(tmp_path: Path) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    plain = _cli_run(tmp_path / "plain", env)
    # Load both cores with busy processes and give TensorFlow a different
    # thread pool: thread timing changes, results must not.
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        loaded = _cli_run(
            tmp_path / "loaded",
            dict(env, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1"),
        )
    finally:
        for p in burners:
            p.kill()
    assert loaded == plain
    events = [(tmp_path / d / "events.jsonl").read_bytes() for d in ("plain", "loaded")]
    assert events[0] == events[1]
