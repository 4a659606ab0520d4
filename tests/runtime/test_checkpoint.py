"""Checkpoints: atomic, verified, refused when they do not match, and a run
killed with SIGKILL and resumed ends exactly where an uninterrupted run does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedactors.errors import ScenarioError
from fedactors.runtime import checkpoint
from fedactors.scenarios.loader import load_scenario
from fedactors.simulation import WALL_CLOCK_KEYS, RunOptions, run_scenario

ROOT = Path(__file__).resolve().parents[2]
LINEAR = ROOT / "scenarios/linear_regression.py"


def _options(out: Path, **kw) -> RunOptions:
    return RunOptions(out_dir=out, scenario_path=LINEAR, **kw)


@pytest.mark.parametrize(("name", "total", "first"), [
    ("linear_regression", 8, 5),
    ("healthcare", 4, 2),  # DP: the accountant's state is checkpointed too
    ("smart_home_secure", 3, 1),  # secure aggregation
])
def test_a_resumed_run_matches_an_uninterrupted_one(tmp_path: Path, name: str, total: int,
                                                     first: int) -> None:
    path = ROOT / "scenarios" / f"{name}.py"
    scenario = load_scenario(path)

    def options(out: str, **kw) -> RunOptions:
        return RunOptions(out_dir=tmp_path / out, scenario_path=path, **kw)

    whole = run_scenario(scenario, options("whole", rounds=total))
    run_scenario(scenario, options("split", rounds=first))
    resumed = run_scenario(scenario, options("split", rounds=total, resume=True))
    assert resumed.summary["weights_sha256"] == whole.summary["weights_sha256"]
    for name in ("events.jsonl", "metrics.jsonl"):
        a, b = (tmp_path / d / name for d in ("whole", "split"))
        if name == "metrics.jsonl":
            strip = lambda p: [{k: v for k, v in json.loads(line).items()  # noqa: E731
                                if k not in WALL_CLOCK_KEYS} for line in p.read_text().splitlines()]
            assert strip(a) == strip(b)
        else:
            assert a.read_bytes() == b.read_bytes()


def test_resuming_with_another_seed_or_scenario_is_refused(tmp_path: Path) -> None:
    scenario = load_scenario(LINEAR)
    run_scenario(scenario, _options(tmp_path, rounds=2))
    with pytest.raises(ScenarioError, match=r"cannot resume: the seed differs \(checkpoint: 0, now: 4\)"):
        run_scenario(scenario, _options(tmp_path, rounds=3, seed=4, resume=True))
    other = tmp_path / "other.py"
    other.write_text(LINEAR.read_text() + "\n# edited\n")
    with pytest.raises(ScenarioError, match="cannot resume: the scenario differs"):
        run_scenario(load_scenario(other),
                     RunOptions(out_dir=tmp_path, scenario_path=other, rounds=3, resume=True))


def test_resuming_after_an_imported_module_changed_the_settings_is_refused(tmp_path: Path) -> None:
    # The scenario file is byte for byte the same, but what it builds is not (as when a
    # module of constants it imports was edited): a resumed run would add the old noise
    # while being accounted at the new one.
    import dataclasses

    from fedactors.privacy.dp_mean import DPMean

    healthcare = ROOT / "scenarios/healthcare.py"
    scenario = load_scenario(healthcare)
    run_scenario(scenario, RunOptions(out_dir=tmp_path, scenario_path=healthcare, rounds=1))
    noisier = dataclasses.replace(scenario, aggregator=DPMean.fixed(1.0, 5.0, 20))
    with pytest.raises(ScenarioError, match="cannot resume: the scenario's settings differ"):
        run_scenario(noisier, RunOptions(out_dir=tmp_path, scenario_path=healthcare, rounds=2,
                                         resume=True))
    resumed = run_scenario(scenario, RunOptions(out_dir=tmp_path, scenario_path=healthcare,
                                                rounds=2, resume=True))
    assert len(resumed.records) == 2


def _checkpoint(tmp_path: Path) -> checkpoint.Checkpoint:
    fp = checkpoint.Fingerprint("s", "ab" * 32, 1, (("device_events", True),))
    return checkpoint.Checkpoint(fp, "s.py", 3, 12.5, {"weights": np.arange(4.0)}, ({"round": 1},),
                                 (10, 20), 100, 50, 9)


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    saved = _checkpoint(tmp_path)
    checkpoint.save(tmp_path, saved)
    loaded = checkpoint.load(tmp_path)
    assert loaded.round == 3 and loaded.clock == 12.5 and loaded.traffic == (10, 20)
    np.testing.assert_array_equal(loaded.server_state["weights"], np.arange(4.0))
    assert not (tmp_path / "checkpoint.pkl.tmp").exists()


def test_a_damaged_or_half_written_checkpoint_is_never_loaded(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, _checkpoint(tmp_path))
    path = tmp_path / checkpoint.FILENAME
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # as if the machine died mid-write
    with pytest.raises(ScenarioError, match="damaged or incomplete"):
        checkpoint.load(tmp_path)
    path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))  # one flipped bit
    with pytest.raises(ScenarioError, match="damaged or incomplete"):
        checkpoint.load(tmp_path)
    with pytest.raises(ScenarioError, match="no checkpoint to resume from"):
        checkpoint.load(tmp_path / "elsewhere")


def _cli(*args: str) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, "-m", "fedactors", *args, "--quiet", "--no-report"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK_KEYS}
            for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    rounds = "30"
    reference = _cli("scenarios/smart_home.py", "--rounds", rounds, "--out", str(tmp_path / "ref"))
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    rng = np.random.default_rng(20261125)
    for attempt in range(3):
        out = tmp_path / f"killed{attempt}"
        kill_after_rounds, extra = int(rng.integers(2, 12)), float(rng.uniform(0, 0.05))
        victim = _cli("scenarios/smart_home.py", "--rounds", rounds, "--out", str(out))
        metrics = out / "metrics.jsonl"
        while victim.poll() is None:
            if metrics.exists() and metrics.read_text().count("\n") >= kill_after_rounds:
                time.sleep(extra)
                victim.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        if victim.wait(timeout=300) == -signal.SIGKILL:
            break
    else:
        pytest.fail("the run finished before it could be killed, three times")

    done = checkpoint.load(out).round
    assert 1 <= done < int(rounds)
    resumed = _cli("--resume", str(out))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()

    summary = json.loads((out / "summary.json").read_text())
    expected = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert summary["weights_sha256"] == expected["weights_sha256"]
    assert _rows(out / "metrics.jsonl") == _rows(tmp_path / "ref" / "metrics.jsonl")
    assert (out / "events.jsonl").read_bytes() == (tmp_path / "ref" / "events.jsonl").read_bytes()
