"""Checkpoints: atomic, verified, refused when they do not match, and a run
killed with SIGKILL and resumed ends exactly where an uninterrupted run does."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from fedactors import FederatedData
from fedactors.devices.actor import Training
from fedactors.errors import ScenarioError
from fedactors.runtime import checkpoint
from fedactors.scenarios.loader import load_scenario
from fedactors.seeding import STREAMS_VERSION
from fedactors.simulation import WALL_CLOCK_KEYS, RunOptions, run_scenario

ROOT = Path(__file__).resolve().parents[2]
LINEAR = ROOT / "scenarios/linear_regression.py"


def _options(out: Path, **kw) -> RunOptions:
    return RunOptions(out_dir=out, scenario_path=LINEAR, **kw)


@pytest.mark.parametrize(("name", "total", "first"), [
    ("linear_regression", 8, 5),
    pytest.param("healthcare", 4, 2, marks=pytest.mark.slow),  # DP: the accountant's state too
    # Secure aggregation, 280 devices: slow. The fast secure resume check is
    # test_stateful_runs_resume_in_process_to_the_same_end[secagg_plus] below.
    pytest.param("smart_home_secure", 3, 1, marks=pytest.mark.slow),
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


def test_resuming_on_other_data_is_refused(tmp_path: Path) -> None:
    # The file is the same, but what its data function returns is not (an imported
    # module or a file it reads changed): the rounds run so far trained on other arrays.
    scenario = load_scenario(LINEAR)
    run_scenario(scenario, _options(tmp_path, rounds=2))

    def shifted(fleet, rng):
        data = scenario.data(fleet, rng)
        return FederatedData.from_arrays([(x, y + 1.0) for x, y in data.clients], data.test)

    with pytest.raises(ScenarioError, match="cannot resume: the data differs"):
        run_scenario(dataclasses.replace(scenario, data=shifted),
                     _options(tmp_path, rounds=3, resume=True))
    run_scenario(scenario, _options(tmp_path, rounds=3, resume=True))  # the same data: resumes


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


def test_a_refused_resume_starts_no_executor(tmp_path: Path) -> None:
    # Found from outside: `--resume --backend ray` on a run begun locally started a Ray
    # cluster (seconds) before it was refused. Only the executor's own fallback needs it.
    scenario = load_scenario(LINEAR)
    run_scenario(scenario, _options(tmp_path, rounds=2))
    built = []

    def recording(runner):
        from fedactors.training.executor import SequentialExecutor

        built.append(runner)
        return SequentialExecutor(runner)

    with pytest.raises(ScenarioError, match=r"cannot resume: the seed differs"):
        run_scenario(scenario, _options(tmp_path, rounds=3, seed=4, resume=True),
                     executor_factory=recording)
    assert built == []
    run_scenario(scenario, _options(tmp_path, rounds=3, resume=True), executor_factory=recording)
    assert len(built) == 1


def test_resuming_where_the_executor_falls_back_otherwise_is_refused(tmp_path: Path) -> None:
    # The options are the same, but the machine trains otherwise: as when a conv model's
    # run began without TF_ENABLE_ONEDNN_OPTS (per-device fallback) and resumes with it.
    from fedactors.training.executor import SequentialExecutor

    def falling_back(runner) -> SequentialExecutor:
        executor = SequentialExecutor(runner)
        executor.fallback_reason = "layer conv2d: no grouped-convolution gradients here"
        return executor

    scenario = load_scenario(LINEAR)
    run_scenario(scenario, _options(tmp_path, rounds=2), executor_factory=falling_back)
    with pytest.raises(ScenarioError, match=r"cannot resume: this run would train as asked, "
                                            r"the checkpointed run trained one device at a time"):
        run_scenario(scenario, _options(tmp_path, rounds=3, resume=True))
    resumed = run_scenario(scenario, _options(tmp_path, rounds=3, resume=True),
                           executor_factory=falling_back)
    assert resumed.summary["rounds"] == 3


def test_resuming_with_another_model_or_local_training_is_refused(tmp_path: Path) -> None:
    # Built by the scenario's functions, so invisible in its settings: a learning rate or
    # a layer changed in a module the scenario imports.
    import dataclasses

    import keras

    scenario = load_scenario(LINEAR)
    run_scenario(scenario, _options(tmp_path, rounds=2))
    faster = dataclasses.replace(scenario, training=dataclasses.replace(
        scenario.training, optimizer=lambda: keras.optimizers.SGD(0.3)))
    with pytest.raises(ScenarioError, match="the model or the local training"):
        run_scenario(faster, _options(tmp_path, rounds=3, resume=True))


def test_resuming_to_fewer_rounds_than_done_is_refused(tmp_path: Path) -> None:
    scenario = load_scenario(LINEAR)
    run_scenario(scenario, _options(tmp_path, rounds=3))
    with pytest.raises(ScenarioError, match="already has 3 rounds, more than the 2 asked for"):
        run_scenario(scenario, _options(tmp_path, rounds=2, resume=True))
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 3  # nothing was cut


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
    # Named: found from outside, the line listed six candidates for one changed field.
    with pytest.raises(ScenarioError, match=r"cannot resume: the scenario's settings differ "
                                            r"from the checkpointed run's \(aggregator; a module"):
        run_scenario(noisier, RunOptions(out_dir=tmp_path, scenario_path=healthcare, rounds=2,
                                         resume=True))
    resumed = run_scenario(scenario, RunOptions(out_dir=tmp_path, scenario_path=healthcare,
                                                rounds=2, resume=True))
    assert len(resumed.records) == 2


def test_a_seeded_fingerprint_does_not_name_its_randomness() -> None:
    # Seeded runs do not name their randomness (as before the option existed); system ones
    # do, and cannot be resumed as the other.
    scenario = load_scenario(LINEAR)
    seeded = _options(Path("x")).fingerprint(scenario, 0, "built")
    assert [k for k, _ in seeded.options] == ["device_events", "executor", "backend", "settings",
                                              "settings_parts", "built", "streams"]
    # A checkpoint written before settings_parts existed still matches (and resumes).
    old = dataclasses.replace(seeded, options=tuple(
        (k, v) for k, v in seeded.options if k != "settings_parts"))
    assert seeded.mismatch(old) == "" and old.mismatch(seeded) == ""
    system = _options(Path("x")).fingerprint(
        dataclasses.replace(scenario, randomness="system"), 0, "built")
    assert system.options == (*seeded.options, ("randomness", "system"))
    assert seeded.mismatch(seeded) == "" and system.mismatch(system) == ""
    assert system.mismatch(seeded) == ("the randomness differs (checkpoint: seeded, now: system); "
                                       "a run keeps the randomness it was started with")
    assert "checkpoint: system, now: seeded" in seeded.mismatch(system)


def test_a_checkpoint_from_another_stream_derivation_is_refused_by_name() -> None:
    # Written before streams were BLAKE2b keys (no "streams" option): resuming it now would
    # draw every later round from other streams, so the run would silently not replay.
    now = _options(Path("x")).fingerprint(load_scenario(LINEAR), 0, "built")
    assert dict(now.options)["streams"] == STREAMS_VERSION == 2
    old = dataclasses.replace(now, options=tuple(o for o in now.options if o[0] != "streams"))
    assert now.mismatch(old) == ("the checkpoint was written with seed streams v1, this "
                                 "fedactors derives v2: resuming would not replay the run "
                                 "(start it again)")


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


def _kill_at_a_random_moment_then_resume(tmp_path: Path, scenario: str, rounds: int,
                                         kill_after: tuple[int, int], seed: int) -> Path:
    """Run ``scenario`` through the CLI twice: once uninterrupted (``ref``) and once
    SIGKILLed a random time after a random round, then ``--resume``d. Assert both end
    with the same weights, the same metrics rows (bar wall-clock keys) and the same
    event log, byte for byte. Returns the resumed run's directory."""
    # The reference runs alongside the victim: on a loaded machine it only slows the
    # victim down, which moves the moment of the kill, not what the test checks.
    reference = _cli(scenario, "--rounds", str(rounds), "--out", str(tmp_path / "ref"))
    rng = np.random.default_rng(seed)
    victim: Optional[subprocess.Popen] = None
    try:
        for attempt in range(3):
            out = tmp_path / f"killed{attempt}"
            kill_after_rounds = int(rng.integers(*kill_after))
            extra = float(rng.uniform(0, 0.05))
            victim = _cli(scenario, "--rounds", str(rounds), "--out", str(out))
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
        assert reference.wait(timeout=300) == 0, reference.stderr.read()
    finally:
        for process in (reference, victim):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    done = checkpoint.load(out).round
    assert 1 <= done < rounds
    resumed = _cli("--resume", str(out))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()

    summary = json.loads((out / "summary.json").read_text())
    expected = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert summary["rounds"] == expected["rounds"] == rounds
    assert summary["weights_sha256"] == expected["weights_sha256"]
    assert _rows(out / "metrics.jsonl") == _rows(tmp_path / "ref" / "metrics.jsonl")
    assert (out / "events.jsonl").read_bytes() == (tmp_path / "ref" / "events.jsonl").read_bytes()
    return out


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    _kill_at_a_random_moment_then_resume(tmp_path, "scenarios/smart_home.py", 30, (2, 12), 20261125)


# -- resuming state that changes every round ---------------------------------------------
#
# The runs above resume a server whose aggregator and optimizer are stateless: restoring
# the weights alone would pass them. The two scenarios below carry state from round to
# round that the weights do not determine, so a resume that dropped it would diverge.

_TOY = '''
import keras
import numpy as np

from fedactors import FederatedData


def model() -> keras.Model:
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])


def data(fleet, rng: np.random.Generator) -> FederatedData:
    w = np.array([1.0, -2.0, 0.5, 1.5], np.float32)

    def sample(n: int):
        x = rng.normal(size=(n, 4)).astype(np.float32)
        return x, (x @ w > 0).astype(np.int32)

    return FederatedData.from_arrays([sample(int(n)) for n in fleet.examples], sample(100))
'''

#: Adaptive-clipping DP with FedAdam: the clip norm follows a noised quantile estimate
#: (aggregator state) and FedAdam keeps first and second moments (optimizer state); both
#: move every round.
ADAPTIVE_FEDADAM = _TOY + '''
from fedactors import DeviceClass, FedAdam, LocalTraining, Privacy, Rounds, Scenario
from fedactors.privacy.dp_mean import DPMean

scenario = Scenario(
    name="resume_adaptive_fedadam",
    model=model,
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    data=data,
    fleet=[DeviceClass("fast", count=6, compute=40.0, examples=20),
           DeviceClass("slow", count=6, compute=10.0, examples=20)],
    rounds=Rounds(count=40, cohort_size=6, deadline=60.0),
    training=LocalTraining(batch_size=10, optimizer=lambda: keras.optimizers.SGD(0.1)),
    aggregator=DPMean.adaptive_clipping(initial_clip_norm=0.1, noise_multiplier=0.5,
                                        expected_count=6, learning_rate=0.3),
    server_optimizer=FedAdam(learning_rate=0.05),
    privacy=Privacy(delta=1e-5),
    seed=3,
)
'''

#: SecAgg+ on a genuinely sparse graph (degree 8 among 16) with devices dropping out
#: during training and during the protocol, and FedYogi's moments carried across rounds.
SECAGG_PLUS = _TOY + '''
from fedactors import DeviceClass, FedYogi, LocalTraining, Rounds, Scenario, SecureAggregation
from fedactors.aggregation.clipping import Clipped
from fedactors.aggregation.fedavg import WeightedMean

scenario = Scenario(
    name="resume_secagg_plus",
    model=model,
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    data=data,
    fleet=[DeviceClass("device", count=24, compute=20.0, examples=20, dropout=0.05)],
    rounds=Rounds(count=40, cohort_size=16, deadline=60.0),
    training=LocalTraining(batch_size=10, optimizer=lambda: keras.optimizers.SGD(0.1)),
    aggregator=Clipped(1.0, WeightedMean(weighted=False)),
    server_optimizer=FedYogi(learning_rate=0.05),
    secure_aggregation=SecureAggregation.sparse(step_timeout=10.0, step_dropout=0.03,
                                                max_dropout=0.1, max_corrupt=0.1,
                                                failure_log2=6.0, security_log2=6.0),
    seed=5,
)
'''


def _write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return path


@pytest.mark.parametrize(("name", "source"), [("adaptive_fedadam", ADAPTIVE_FEDADAM),
                                              ("secagg_plus", SECAGG_PLUS)],
                         ids=["adaptive_fedadam", "secagg_plus"])
@pytest.mark.slow
def test_stateful_runs_resume_in_process_to_the_same_end(tmp_path: Path, name: str,
                                                        source: str) -> None:
    # The fast sibling of the SIGKILL tests below: a clean stop after round 2 of 4.
    path = _write(tmp_path, name, source)
    scenario = load_scenario(path)
    options = partial(RunOptions, scenario_path=path)
    whole = run_scenario(scenario, options(out_dir=tmp_path / "whole", rounds=4))
    run_scenario(scenario, options(out_dir=tmp_path / "split", rounds=2))
    resumed = run_scenario(scenario, options(out_dir=tmp_path / "split", rounds=4, resume=True))
    assert resumed.summary["weights_sha256"] == whole.summary["weights_sha256"]
    assert _rows(tmp_path / "split" / "metrics.jsonl") == _rows(tmp_path / "whole" / "metrics.jsonl")
    assert ((tmp_path / "split" / "events.jsonl").read_bytes()
            == (tmp_path / "whole" / "events.jsonl").read_bytes())


@pytest.mark.slow
def test_sigkill_then_resume_restores_adaptive_clipping_and_fedadam_state(tmp_path: Path) -> None:
    path = _write(tmp_path, "adaptive_fedadam", ADAPTIVE_FEDADAM)
    out = _kill_at_a_random_moment_then_resume(tmp_path, str(path), 40, (2, 25), 20260301)
    rows = _rows(out / "metrics.jsonl")
    # The state really moved: the clip norm changed in every round, and the last rows
    # were released after the resume with the clip norm the killed run had reached.
    clips = [row["clip_norm"] for row in rows]
    assert len(set(clips)) == len(clips)
    assert all(row["clip_norm"] == prev["next_clip_norm"] for prev, row in zip(rows, rows[1:]))


@pytest.mark.slow
def test_sigkill_then_resume_of_secagg_plus_on_a_sparse_graph(tmp_path: Path) -> None:
    path = _write(tmp_path, "secagg_plus", SECAGG_PLUS)
    out = _kill_at_a_random_moment_then_resume(tmp_path, str(path), 40, (2, 25), 20260302)
    rows = _rows(out / "metrics.jsonl")
    # SecAgg+ proper: every round ran on a sparse graph that met its stated targets, and
    # some rounds recovered the sum despite devices dropping mid-protocol.
    assert all(row["secagg_max_degree"] < row["selected"] - 1 for row in rows)
    assert not any(row["secagg_below_target"] for row in rows)
    assert any(row["secagg_survivors"] < row["selected"] for row in rows)
    # Most rounds recover the sum. Not all need to: devices here drop more (5% in training,
    # 3% per protocol step) than the 10% the parameters assume, and at failure_log2=6 a
    # round may abort anyway (3 of 40 do with seed 5, each after 6 of its 16 dropped).
    assert sum(row["secagg_aborted"] for row in rows) <= len(rows) // 8


# -- FedBuff: no clean cut, so the whole world between two instants ----------------------
#
# Devices are always mid-work in FedBuff. Its checkpoint is taken at the end of the
# instant of each server update: devices training (their result computed ahead of the
# clock, or still pending in the executor) or going silent, requests that came while
# they worked, messages on the wire both ways, every per-device timeout and the next
# poll, the server's half-made buffer, the drop tally. The scenario below makes all of
# these happen: spread-out round trips and compute, dropouts, devices offline at times,
# slow devices that always time out, stale updates refused.

FEDBUFF = _TOY + '''
from fedactors import (DeviceClass, FedAdam, FedBuff, LocalTraining, NetworkProfile, OnlineShare,
                       Privacy, Rounds, Scenario, Uniform)
from fedactors.privacy.dp_mean import DPMean

scenario = Scenario(
    name="resume_fedbuff",
    model=model,
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    data=data,
    fleet=[DeviceClass("phone", count=12, compute=Uniform(2.0, 40.0), examples=20, dropout=0.1,
                       network=NetworkProfile(rtt=Uniform(0.1, 6.0)),
                       availability=OnlineShare(0.7)),
           DeviceClass("slow", count=6, compute=1.0, examples=20, dropout=0.2)],
    rounds=Rounds(count=30, deadline=15.0),
    training=LocalTraining(batch_size=10, optimizer=lambda: keras.optimizers.SGD(0.1)),
    aggregator=DPMean.adaptive_clipping(initial_clip_norm=0.1, noise_multiplier=0.5,
                                        expected_count=3, learning_rate=0.3),
    server_optimizer=FedAdam(learning_rate=0.05),
    mode=FedBuff(buffer_size=3, concurrency=8, poll_interval=5.0, max_staleness=1),
    privacy=Privacy(delta=1e-5),
    seed=3,
)
'''


def _world_cases(world) -> set[str]:
    """Which kinds of mid-run state a FedBuff checkpoint holds."""
    cases = set()
    for device in world.devices:
        kind = type(device.work).__name__.lower()
        if kind == "training":
            kind += "-done" if device.result is not None else "-pending"
        cases.add(kind)
        if device.mail:
            cases.add("mail")
    for timer in world.timers:
        if timer.owner == "network":
            cases.update("to-server" if device is None else "to-device"
                         for device, _ in timer.what.pairs)
        elif timer.owner == "server":
            cases.add(timer.what[0])  # "timeout" or "poll"
    if world.dropped:
        cases.add("drops-tallied")
    return cases


def test_a_fedbuff_run_whose_updates_never_come_still_stops_when_interrupted(tmp_path: Path) -> None:
    # Every device computes for 0.5 s or more against a 0.01 s timeout: no update ever
    # comes, so a stop carried out only at an update (as Ctrl-C was) never happened,
    # and the run went on polling toward max_idle (a week of simulated time).
    from fedactors import Rounds

    path = _write(tmp_path, "fedbuff", FEDBUFF)
    scenario = dataclasses.replace(load_scenario(path), rounds=Rounds(count=30, deadline=0.01),
                                   privacy=None)
    polls = []

    def interrupt():
        polls.append(None)
        return "interrupted" if len(polls) >= 200 else None

    result = run_scenario(scenario, RunOptions(out_dir=tmp_path / "run", scenario_path=path),
                          interrupt=interrupt)
    assert result.summary["stopped"] == "interrupted" and result.summary["rounds"] == 0
    assert len(polls) == 200  # stopped at the end of that instant, asked no more
    events = (tmp_path / "run" / "events.jsonl").read_text()
    assert '"device.timeout"' in events and '"reason":"interrupted"' in events.replace(" ", "")


def test_a_stalled_fedbuff_run_says_why_in_a_warning(tmp_path: Path) -> None:
    from fedactors import FedBuff, Rounds

    path = _write(tmp_path, "fedbuff", FEDBUFF)
    scenario = dataclasses.replace(
        load_scenario(path), rounds=Rounds(count=30, deadline=0.01), privacy=None,
        mode=FedBuff(buffer_size=3, concurrency=8, poll_interval=5.0, max_idle=60.0))
    result = run_scenario(scenario, RunOptions(out_dir=tmp_path / "run", scenario_path=path))
    assert result.summary["stopped"] == "stalled" and result.summary["rounds"] == 0
    (stall,) = [w for w in result.summary["warnings"] if w.startswith("stalled:")]
    assert "no server update for" in stall and "timed out" in stall
    assert "rounds.deadline (0.01 s)" in stall


@pytest.mark.slow
def test_a_fedbuff_run_stopped_mid_way_resumes_to_the_same_end(tmp_path: Path) -> None:
    # The fast sibling of the two tests below.
    path = _write(tmp_path, "fedbuff", FEDBUFF)
    scenario = load_scenario(path)
    options = partial(RunOptions, scenario_path=path, rounds=16)
    whole = run_scenario(scenario, options(out_dir=tmp_path / "whole"))
    run_scenario(scenario, options(out_dir=tmp_path / "split"),
                 on_round=[lambda row: "interrupted" if row["round"] == 9 else None])
    resumed = run_scenario(scenario, options(out_dir=tmp_path / "split", resume=True))
    assert resumed.summary["weights_sha256"] == whole.summary["weights_sha256"]
    assert _rows(tmp_path / "split" / "metrics.jsonl") == _rows(tmp_path / "whole" / "metrics.jsonl")
    assert ((tmp_path / "split" / "events.jsonl").read_bytes()
            == (tmp_path / "whole" / "events.jsonl").read_bytes())
    # Run to 9 updates, then resumed to 16: the same bytes too (its header used to say 9).
    run_scenario(scenario, options(out_dir=tmp_path / "short", rounds=9))
    run_scenario(scenario, options(out_dir=tmp_path / "short", resume=True))
    assert ((tmp_path / "short" / "events.jsonl").read_bytes()
            == (tmp_path / "whole" / "events.jsonl").read_bytes())


@pytest.mark.slow
def test_a_fedbuff_dp_run_under_system_randomness_checkpoints_mid_way_and_resumes(
        tmp_path: Path) -> None:
    # A FedBuff checkpoint pickles the whole world mid-run: no secret stream may be in it
    # (a generator on SystemBits refuses to be pickled, so one there would fail the save).
    path = _write(tmp_path, "fedbuff", FEDBUFF)
    scenario = dataclasses.replace(load_scenario(path), randomness="system")
    options = partial(RunOptions, scenario_path=path, rounds=6, out_dir=tmp_path / "split")
    run_scenario(scenario, options(),
                 on_round=[lambda row: "interrupted" if row["round"] == 3 else None])
    saved = checkpoint.load(tmp_path / "split")
    assert saved.world is not None and dict(saved.fingerprint.options)["randomness"] == "system"
    resumed = run_scenario(scenario, options(resume=True))
    assert resumed.summary["rounds"] == 6 and resumed.summary["randomness"] == "system"
    assert "epsilon" in resumed.summary["privacy"]
    with pytest.raises(ScenarioError, match=r"the randomness differs \(checkpoint: system, now: seeded\)"):
        run_scenario(load_scenario(path), options(resume=True))


@pytest.mark.slow
def test_a_fedbuff_run_stopped_anywhere_resumes_to_the_same_end(tmp_path: Path) -> None:
    path = _write(tmp_path, "fedbuff", FEDBUFF)
    scenario = load_scenario(path)
    options = partial(RunOptions, scenario_path=path, rounds=30)
    whole = run_scenario(scenario, options(out_dir=tmp_path / "whole"))
    assert whole.summary["stopped"] == "completed"
    reference = whole.summary["weights_sha256"]
    cases: set[str] = set()
    wanted = {"training-done", "training-pending", "dropping", "mail", "to-device", "timeout",
              "drops-tallied"}
    # Update 1 included: a stop before any checkpoint existed must leave one behind.
    for tried, stop_at in enumerate((1, 13, 25, 5, 9, 17, 21, 28)):
        if tried >= 3 and cases >= wanted:
            break
        out = tmp_path / f"stopped{stop_at}"
        stopped = run_scenario(scenario, options(out_dir=out), on_round=[
            lambda row, at=stop_at: "interrupted" if row["round"] == at else None])
        assert stopped.summary["stopped"] == "interrupted"
        saved = checkpoint.load(out)
        # The stop waits for the end of the update's instant, whose checkpoint then holds
        # every update the stopped run reported.
        assert saved.round == stopped.summary["rounds"] >= stop_at and saved.world is not None
        cases |= _world_cases(saved.world)
        # A model is stored once per version, however many devices hold it (docs/async.md).
        models = {id(d.work.request.weights) for d in saved.world.devices
                  if isinstance(d.work, Training)}
        versions = {version for _, _, version, _ in saved.world.server.in_flight}
        assert len(models) <= max(len(versions), 1)
        resumed = run_scenario(scenario, options(out_dir=out, resume=True))
        assert resumed.summary["weights_sha256"] == reference
        assert _rows(out / "metrics.jsonl") == _rows(tmp_path / "whole" / "metrics.jsonl")
        assert (out / "events.jsonl").read_bytes() == (tmp_path / "whole" / "events.jsonl").read_bytes()
    # The checkpoints restored really held every kind of mid-run state.
    assert cases >= wanted, cases
    rows = _rows(tmp_path / "whole" / "metrics.jsonl")
    assert sum(row["rejected_stale"] for row in rows) and sum(row["rejected_late"] for row in rows)


@pytest.mark.slow
def test_sigkill_then_resume_of_a_fedbuff_run(tmp_path: Path) -> None:
    path = _write(tmp_path, "fedbuff", FEDBUFF.replace("Rounds(count=30", "Rounds(count=80"))
    out = _kill_at_a_random_moment_then_resume(tmp_path, str(path), 80, (2, 60), 20261201)
    assert checkpoint.load(out).world is not None
