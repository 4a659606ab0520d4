"""The checkpoint file and the resume check, alone (no run): what is written, what is refused.

tests/runtime/test_checkpoint.py holds the end-to-end resume tests; being whole runs, that
file is outside the mutation-testing selection (docs/testing.md, "Mutation testing"), so the
file format and ``Fingerprint.mismatch`` are checked here too, in milliseconds.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest

from fedactors.errors import ScenarioError
from fedactors.runtime import checkpoint
from fedactors.runtime.checkpoint import Checkpoint, Fingerprint
from fedactors.seeding import SEEDED, SYSTEM

SHA_A = "0123456789abcdef" * 4
SHA_B = "fedcba9876543210" * 4
OPTIONS = (("device_events", True), ("executor", "auto"), ("backend", "local"),
           ("settings", "5e771n95"), ("built", "b0117a1b"))


def fingerprint(**changes) -> Fingerprint:
    fields = dict(scenario="smart_home", scenario_sha256=SHA_A, seed=7, options=OPTIONS)
    fields.update(changes)
    return Fingerprint(**fields)


def options(**changes) -> tuple:
    return tuple((k, changes.get(k, v)) for k, v in OPTIONS)


def sample(**changes) -> Checkpoint:
    fields = dict(fingerprint=fingerprint(), scenario_path="scenarios/smart_home.py", round=3,
                  clock=12.5, server_state={"weights": np.arange(4.0)},
                  records=({"round": 1}, {"round": 2}, {"round": 3}), traffic=(10, 20),
                  events_bytes=100, metrics_bytes=50, rounds_target=9)
    fields.update(changes)
    return Checkpoint(**fields)


# -- Fingerprint.mismatch ----------------------------------------------------------


def test_the_same_run_has_no_mismatch() -> None:
    assert fingerprint().mismatch(fingerprint()) == ""
    # The settings digest may be absent (no scenario built): equal is still equal.
    bare = fingerprint(options=(("device_events", False),))
    assert bare.mismatch(fingerprint(options=(("device_events", False),))) == ""


@pytest.mark.parametrize("now", [fingerprint(scenario_sha256=SHA_B),  # the file was edited
                                 fingerprint(scenario="smartphone"),  # another scenario
                                 fingerprint(scenario="smartphone", scenario_sha256=SHA_B)],
                         ids=["file", "name", "both"])
def test_another_scenario_is_named_with_both_files_hashes(now: Fingerprint) -> None:
    saved = fingerprint()
    problem = now.mismatch(saved)
    assert "the scenario differs" in problem
    # Which is which: the checkpoint's scenario first, then the one given now.
    assert problem.index(f"checkpoint: {saved.scenario}") < problem.index(f"now: {now.scenario}")
    assert SHA_A[:12] in problem and (SHA_B[:12] in problem) == (now.scenario_sha256 == SHA_B)


def test_the_scenario_is_checked_before_the_seed_and_the_options() -> None:
    now = fingerprint(scenario_sha256=SHA_B, seed=8, options=options(executor="sequential"))
    assert "the scenario differs" in now.mismatch(fingerprint())


def test_another_seed_is_named_with_both_seeds() -> None:
    problem = fingerprint(seed=8).mismatch(fingerprint(seed=7))
    assert "the seed differs" in problem
    assert "checkpoint: 7" in problem and "now: 8" in problem


def test_another_build_of_the_same_file_is_a_settings_mismatch() -> None:
    problem = fingerprint(options=options(settings="0ther")).mismatch(fingerprint())
    assert "settings differ" in problem
    assert "run options differ" not in problem


@pytest.mark.parametrize("mine, theirs", [("0ther", "b0117a1b"), ("b0117a1b", "0ther")])
def test_another_model_or_local_training_is_a_built_mismatch(mine: str, theirs: str) -> None:
    problem = fingerprint(options=options(built=mine)).mismatch(
        fingerprint(options=options(built=theirs)))
    assert problem.startswith("the model or the local training the scenario builds differs")
    assert "a module it imports changed?)" in problem
    assert "run options differ" not in problem and "settings differ" not in problem


def test_the_settings_are_checked_before_what_the_scenario_builds() -> None:
    now = fingerprint(options=options(settings="0ther", built="0ther"))
    assert "settings differ" in now.mismatch(fingerprint())


@pytest.mark.parametrize("key, value", [("device_events", False), ("executor", "vectorized"),
                                        ("backend", "ray")])
def test_other_run_options_are_named_with_both_values(key: str, value) -> None:
    problem = fingerprint(options=options(**{key: value})).mismatch(fingerprint())
    assert "the run options differ" in problem and "settings differ" not in problem
    # Only what differs, by name (not every option of both runs).
    assert problem == (f"the run options differ: {key} (checkpoint: {dict(OPTIONS)[key]!r}, "
                       f"now: {value!r})")


def test_an_option_only_one_side_has_is_a_mismatch() -> None:
    extra = fingerprint(options=OPTIONS + (("until", 30.0),))
    assert "the run options differ: until (checkpoint: None" in extra.mismatch(fingerprint())
    assert "the run options differ: until (checkpoint: 30.0" in fingerprint().mismatch(extra)


def test_other_data_is_refused_and_a_checkpoint_without_a_data_digest_still_resumes() -> None:
    now = fingerprint(options=OPTIONS + (("data", "d474"),))
    problem = now.mismatch(fingerprint(options=OPTIONS + (("data", "0ther"),)))
    assert problem.startswith("the data differs from the checkpointed run's")
    assert "start the run again" in problem
    assert now.mismatch(fingerprint(options=OPTIONS + (("data", "d474"),))) == ""
    assert now.mismatch(fingerprint()) == ""  # written before the digest existed



@pytest.mark.parametrize("mine, theirs", [(SYSTEM, SEEDED), (SEEDED, SYSTEM)])
def test_another_randomness_is_named_with_both_and_checked_before_the_options(
        mine: str, theirs: str) -> None:
    def with_randomness(value: str, **changes) -> Fingerprint:
        return fingerprint(options=options(**changes) + (("randomness", value),))

    problem = with_randomness(mine, executor="vectorized").mismatch(with_randomness(theirs))
    assert problem == (f"the randomness differs (checkpoint: {theirs}, now: {mine}); "
                       "a run keeps the randomness it was started with")


@pytest.mark.parametrize("side", ["now", "checkpoint"])
def test_a_missing_randomness_is_seeded(side: str) -> None:
    """A checkpoint written before system randomness existed was seeded."""
    system = fingerprint(options=OPTIONS + (("randomness", SYSTEM),))
    seeded = fingerprint(options=OPTIONS + (("randomness", SEEDED),))
    now, saved = (fingerprint(), system) if side == "now" else (system, fingerprint())
    expected = (SEEDED, SYSTEM) if side == "now" else (SYSTEM, SEEDED)
    assert f"checkpoint: {expected[1]}, now: {expected[0]}" in now.mismatch(saved)
    # ...and "seeded" stated or left out is the same randomness (the options tuples differ).
    assert not fingerprint().mismatch(seeded).startswith("the randomness differs")
    assert not seeded.mismatch(fingerprint()).startswith("the randomness differs")

# -- the file ------------------------------------------------------------------------


def test_file_sha256_is_the_digest_of_the_file_s_bytes(tmp_path: Path) -> None:
    path = tmp_path / "scenario.py"
    path.write_bytes(b"ROUNDS = 3\n")
    assert checkpoint.file_sha256(path) == hashlib.sha256(b"ROUNDS = 3\n").hexdigest()
    assert checkpoint.file_sha256(str(path)) == checkpoint.file_sha256(path)
    path.write_bytes(b"ROUNDS = 4\n")
    assert checkpoint.file_sha256(path) == hashlib.sha256(b"ROUNDS = 4\n").hexdigest()


def test_write_atomically_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "state.bin"
    checkpoint.write_atomically(path, b"first")
    assert path.read_bytes() == b"first"
    checkpoint.write_atomically(path, b"second, longer")
    checkpoint.write_atomically(path, b"3rd")  # shorter: no tail of the previous content
    assert path.read_bytes() == b"3rd"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]


def test_save_then_load_gives_back_an_equal_checkpoint(tmp_path: Path) -> None:
    saved = sample(world=("anything", 1))
    checkpoint.save(tmp_path, saved)
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.FILENAME]
    loaded = checkpoint.load(tmp_path)
    assert isinstance(loaded, Checkpoint)
    np.testing.assert_array_equal(loaded.server_state["weights"], saved.server_state["weights"])
    for name in ("fingerprint", "scenario_path", "round", "clock", "records", "traffic",
                 "events_bytes", "metrics_bytes", "rounds_target", "world"):
        assert getattr(loaded, name) == getattr(saved, name), name
    assert checkpoint.load(str(tmp_path)).round == 3  # a str directory is fine too


def test_a_later_save_replaces_the_earlier_one(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, sample(round=3))
    checkpoint.save(tmp_path, sample(round=4, records=({"round": 4},)))
    assert checkpoint.load(tmp_path).round == 4


def test_the_file_is_the_magic_then_the_payload_s_sha256_then_the_payload(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, sample())
    blob = (tmp_path / checkpoint.FILENAME).read_bytes()
    head = len(checkpoint.MAGIC)
    assert blob.startswith(checkpoint.MAGIC)
    assert blob[head:head + 32] == hashlib.sha256(blob[head + 32:]).digest()
    assert pickle.loads(blob[head + 32:]).round == 3


def _write(directory: Path, payload: bytes, magic: bytes = checkpoint.MAGIC) -> None:
    (directory / checkpoint.FILENAME).write_bytes(magic + hashlib.sha256(payload).digest() + payload)


def test_another_format_is_refused_even_with_a_matching_digest(tmp_path: Path) -> None:
    payload = pickle.dumps(sample())
    other = checkpoint.MAGIC.replace(b"v1", b"v2")
    assert len(other) == len(checkpoint.MAGIC)
    _write(tmp_path, payload, magic=other)
    with pytest.raises(ScenarioError, match="damaged or incomplete"):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("cut", [1, 10, 40, 100])
def test_a_truncated_file_is_refused_as_damaged(tmp_path: Path, cut: int) -> None:
    checkpoint.save(tmp_path, sample())
    path = tmp_path / checkpoint.FILENAME
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(ScenarioError, match="damaged or incomplete") as info:
        checkpoint.load(tmp_path)
    assert str(path) in str(info.value)


def test_a_verified_file_that_holds_something_else_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, pickle.dumps({"round": 3}))
    with pytest.raises(ScenarioError, match="not a fedactors checkpoint") as info:
        checkpoint.load(tmp_path)
    assert str(tmp_path / checkpoint.FILENAME) in str(info.value)


def test_no_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no checkpoint to resume from") as info:
        checkpoint.load(tmp_path)
    assert str(tmp_path / checkpoint.FILENAME) in str(info.value)
    (tmp_path / checkpoint.FILENAME).mkdir()  # not a file either
    with pytest.raises(ScenarioError, match="no checkpoint to resume from"):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("now, then", [(True, False), (False, True)])
def test_an_executor_that_falls_back_now_or_did_then_is_named(now: bool, then: bool) -> None:
    # The same options, but the machine trains otherwise (TF_ENABLE_ONEDNN_OPTS changed):
    # resuming would mix two executors' rounding in one model.
    def with_fallback(fell_back: bool) -> Fingerprint:
        return fingerprint(options=OPTIONS + ((("executor_fell_back", True),) if fell_back else ()))

    problem = with_fallback(now).mismatch(with_fallback(then))
    assert problem.startswith(f"this run would train {'one device' if now else 'as asked'}")
    assert f"the checkpointed run trained {'one device' if then else 'as asked'}" in problem
    assert "TF_ENABLE_ONEDNN_OPTS" in problem and "run options differ" not in problem
    assert with_fallback(now).mismatch(with_fallback(now)) == ""


def test_an_executor_option_changed_by_hand_is_named_not_the_fallback_it_also_changes() -> None:
    # Found from outside: --executor sequential on a run whose vectorized executor had
    # fallen back was refused as if the environment had changed (TF_ENABLE_ONEDNN_OPTS).
    then = fingerprint(options=OPTIONS + (("executor_fell_back", True),))
    now = fingerprint(options=tuple((k, "sequential" if k == "executor" else v)
                                    for k, v in OPTIONS))
    problem = now.mismatch(then)
    assert problem == ("the run options differ: executor (checkpoint: 'auto', "
                       "now: 'sequential')"), problem
