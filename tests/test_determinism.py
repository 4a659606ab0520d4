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


def test_two_runs_with_the_same_seed_are_identical(smart_home_two_rounds) -> None:
    # The first run is the session's shared one (tests/conftest.py); the second is made
    # here with the same options.
    a = smart_home_two_rounds
    scenario = load_scenario(ROOT / "scenarios/smart_home.py")
    b = run_scenario(scenario, RunOptions(rounds=2, keep_events=True))
    assert a.summary["weights_sha256"] == b.summary["weights_sha256"]
    assert _without_wall_clock(a.records) == _without_wall_clock(b.records)
    assert a.events == b.events and len(a.events) > 100
    c = run_scenario(scenario, RunOptions(rounds=1, seed=1))
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


# -- Hypothesis: reproducible under CI (tests/conftest.py, docs/testing.md) ---------------

def _settings_under(environ: dict[str, str]) -> dict[str, dict]:
    """What a test with pinned settings and one without get, had ``environ`` started the run."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tests.conftest import load_hypothesis_profile

    before = settings.get_current_profile_name()
    try:
        name, _ = load_hypothesis_profile(environ)

        @settings(max_examples=7)  # pins its own count, as many tests here do
        @given(st.integers())
        def pinned(x: int) -> None: ...

        @given(st.integers())
        def unpinned(x: int) -> None: ...

        return {key: {"profile": name, "derandomize": s.derandomize,
                      "print_blob": s.print_blob, "deadline": s.deadline,
                      "max_examples": s.max_examples}
                for key, s in (("pinned", pinned._hypothesis_internal_use_settings),
                               ("unpinned", unpinned._hypothesis_internal_use_settings))}
    finally:
        settings.load_profile(before)


def test_under_ci_every_hypothesis_test_is_derandomized_even_with_its_own_settings() -> None:
    ci = _settings_under({"CI": "true"})
    for name in ("pinned", "unpinned"):
        assert ci[name]["profile"] == "ci"
        assert ci[name]["derandomize"] and ci[name]["print_blob"], ci
        assert ci[name]["deadline"] is None, ci
    assert ci["pinned"]["max_examples"] == 7  # the test's own count is kept
    dev = _settings_under({})
    assert dev["pinned"]["profile"] == "dev" and not dev["pinned"]["derandomize"]
    # HYPOTHESIS_PROFILE wins over CI, and no profile inherits from another.
    assert _settings_under({"CI": "true", "HYPOTHESIS_PROFILE": "thorough"})["unpinned"] == {
        "profile": "thorough", "derandomize": False, "print_blob": True, "deadline": None,
        "max_examples": 1000}


def test_every_hypothesis_test_collected_follows_the_loaded_profile(
        request: pytest.FixtureRequest) -> None:
    # A test that built its settings from an explicit parent, or pinned derandomize or
    # a deadline, would not be reproducible under CI (or would flake on a loaded machine).
    from hypothesis import settings

    profile = settings.default
    checked = 0
    for item in request.session.items:
        own = getattr(getattr(item, "obj", None), "_hypothesis_internal_use_settings", None)
        if own is None:
            continue
        checked += 1
        assert (own.derandomize, own.print_blob, own.deadline) == (
            profile.derandomize, profile.print_blob, profile.deadline), item.nodeid
    if checked == 0:
        pytest.skip("no Hypothesis test collected in this session")
