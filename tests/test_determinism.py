"""Same scenario and seed: identical metrics and bit-identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


# -- System randomness: the noise and the secrets change, nothing else does --------------

def _tiny_secure_dp(distributed: bool, randomness: str = "seeded"):
    """Eight devices, cohorts of four, DP-FedAvg under SecAgg: central or distributed noise."""
    import keras

    from fedactors import DeviceClass, LocalTraining, Rounds, Scenario, SecureAggregation
    from fedactors.data.federated import FederatedData
    from fedactors.privacy.dp_mean import DPMean

    def data(fleet, rng):
        w = np.array([1.0, -2.0, 0.5], np.float32)
        xs = [rng.normal(size=(int(n), 3)).astype(np.float32) for n in fleet.examples]
        xt = rng.normal(size=(40, 3)).astype(np.float32)
        return FederatedData.from_arrays([(x, (x @ w > 0).astype(np.int32)) for x in xs],
                                         (xt, (xt @ w > 0).astype(np.int32)))

    aggregator = (DPMean.fixed(1.0, 2.0, 4, distributed_noise=True, min_survivors=3)
                  if distributed else DPMean.fixed(1.0, 2.0, 4))
    return Scenario(
        name="tiny-secure-dp", model=lambda: keras.Sequential([keras.Input((3,)),
                                                               keras.layers.Dense(2)]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), data=data,
        fleet=[DeviceClass("fast", count=4, compute=40.0, dropout=0.1, examples=20),
               DeviceClass("slow", count=4, compute=10.0, dropout=0.1, examples=20)],
        rounds=Rounds(count=3, cohort_size=4, over_selection=1.5, deadline=60.0),
        training=LocalTraining(batch_size=10, optimizer=lambda: keras.optimizers.SGD(0.1)),
        aggregator=aggregator,
        secure_aggregation=SecureAggregation(threshold_fraction=0.3, step_dropout=0.05),
        randomness=randomness,
    )


def _traced_run(monkeypatch: pytest.MonkeyPatch, scenario) -> dict:
    """Run ``scenario`` and record what each kind of draw gave."""
    from fedactors.devices import actor, secagg_participant
    from fedactors.privacy import noise
    from fedactors.secagg import client
    from tests.server.secure_harness import patch_protocol

    seen: dict = {"noise": [], "keys": [], "masked": [], "training_streams": []}
    central, share = noise.central, noise.device_share
    advertise, masked_input = client.advertise_keys, client.masked_input
    start = secagg_participant.SecAggParticipants.start
    finish = actor.DeviceActor._finish

    def record_noise(original, where: str):
        def wrapped(rng, *args):
            out = original(rng, *args)
            if where == "server" or seen.get("in_device"):
                seen["noise"].append(np.array(out))
            return out
        return wrapped

    def in_device(self, work):
        # Only a device's own share, not the server's secagg-probe (a seeded zero-delta
        # encode whose output is thrown away once its shapes are read).
        seen["in_device"] = True
        try:
            return finish(self, work)
        finally:
            seen["in_device"] = False

    def record_keys(config, device_id, rng, *signing):
        state, msg = advertise(config, device_id, rng, *signing)
        seen["keys"].append((config.round_id, device_id, msg.c_public, msg.s_public))
        return state, msg

    def record_masked(state, msg, x):
        state, out = masked_input(state, msg, x)
        seen["masked"].append(getattr(out, "y", None))
        return state, out

    def record_stream(self, device, round_, setup, contribution, rng, delta=None):
        # The device's training stream as training left it (what stochastic rounding reads).
        seen["training_streams"].append((round_, device, rng.bit_generator.state["state"]))
        return start(self, device, round_, setup, contribution, rng, delta)

    monkeypatch.setattr(noise, "central", record_noise(central, "server"))
    monkeypatch.setattr(noise, "device_share", record_noise(share, "device"))
    monkeypatch.setattr(actor.DeviceActor, "_finish", in_device)
    patch_protocol(monkeypatch, advertise_keys=record_keys, masked_input=record_masked)
    monkeypatch.setattr(secagg_participant.SecAggParticipants, "start", record_stream)
    try:
        result = run_scenario(scenario, RunOptions(keep_events=True))
    finally:
        monkeypatch.undo()  # the next run wraps the originals, not these spies
    # Who was selected, trained, dropped, sent which protocol message, and when.
    seen["events"] = [(e["t"], e["actor"], e["event"], e.get("round"), e.get("sender"),
                       e.get("step")) for e in result.events]
    seen["rows"] = [{k: r[k] for k in ("selected", "reported", "dropped", "late", "time",
                                       "secagg_survivors", "epsilon")} for r in result.records]
    seen["summary"] = result.summary
    return seen


@pytest.mark.parametrize("distributed", [False, True], ids=["central-noise", "distributed-noise"])
def test_system_randomness_gives_different_noise_on_each_run_while_everything_else_stays_seeded(
        monkeypatch: pytest.MonkeyPatch, distributed: bool) -> None:
    seeded = _traced_run(monkeypatch, _tiny_secure_dp(distributed))
    first, second = (_traced_run(monkeypatch, _tiny_secure_dp(distributed, "system"))
                     for _ in range(2))
    assert seeded["noise"] and seeded["keys"] and any(y is not None for y in seeded["masked"])
    assert all(r["secagg_survivors"] >= 3 for r in seeded["rows"])  # the protocol went through

    # Everything but the noise and the secrets: as seeded, draw for draw.
    for run in (first, second):
        assert run["events"] == seeded["events"]
        assert run["rows"] == seeded["rows"]
        assert [k[:2] for k in run["keys"]] == [k[:2] for k in seeded["keys"]]
        assert len(run["noise"]) == len(seeded["noise"])
    # The training streams: the same draws on both system runs (seeded, the device's
    # noise share also came from that stream, so only central noise leaves it as it is).
    assert first["training_streams"] == second["training_streams"]
    if not distributed:
        assert first["training_streams"] == seeded["training_streams"]

    # The noise, the keys and the masks: fresh on every run, none of them the seeded ones.
    for a, b in ((first, second), (first, seeded), (second, seeded)):
        assert all(not np.array_equal(x, y) for x, y in zip(a["noise"], b["noise"]))
        assert all(x[2:] != y[2:] for x, y in zip(a["keys"], b["keys"]))
        assert all(x is None or not np.array_equal(x, y)
                   for x, y in zip(a["masked"], b["masked"]))
        assert a["summary"]["weights_sha256"] != b["summary"]["weights_sha256"]

    assert seeded["summary"]["randomness"] == "seeded" and "reproducible" not in seeded["summary"]
    for run in (first, second):
        assert run["summary"]["randomness"] == "system" and run["summary"]["reproducible"] is False
        assert "not the seed" in run["summary"]["reproducible_note"]
        assert any(w.startswith("randomness:") for w in run["summary"]["warnings"])
