"""Crash-safe checkpoints: the whole server-side state after every round.

(FedBuff has no round boundary: its checkpoint adds the simulated world at
the end of an update's instant, :mod:`fedactors.runtime.snapshot`.)

A round boundary is a clean cut of the simulated world: closing a round stops
every device still working on it and drops its messages in transit, and every
random stream is derived from the seed by path, not drawn from a running
generator. So what must survive a crash is only: the server's state (global
weights, optimizer, aggregator and privacy-accountant state), the clock, the
metrics rows so far, the traffic counters and how far the append-only logs
had got. Resuming from that replays the rest of the run bit for bit.

The file is written atomically (write, fsync, rename, fsync the directory) and
carries a SHA-256 of its payload, so a half-written or damaged checkpoint is
never loaded. It is a pickle: like a scenario file, it is trusted input — load
only checkpoints your own runs wrote.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedactors.errors import ScenarioError
from fedactors.seeding import SEEDED

FILENAME = "checkpoint.pkl"
MAGIC = b"fedactors-checkpoint-v1\n"


@dataclass(frozen=True)
class Fingerprint:
    """What must not change between a run and its resumption."""

    scenario: str
    scenario_sha256: str
    seed: int
    options: tuple[tuple[str, Any], ...]

    @property
    def fell_back(self) -> bool:
        """Whether the run trained one device at a time because its executor fell back."""
        return bool(dict(self.options).get("executor_fell_back", False))

    def mismatch(self, other: Fingerprint) -> str:
        """A sentence saying what differs, or "" if nothing does."""
        if self.scenario_sha256 != other.scenario_sha256 or self.scenario != other.scenario:
            return (f"the scenario differs (checkpoint: {other.scenario}, file sha256 "
                    f"{other.scenario_sha256[:12]}; now: {self.scenario}, {self.scenario_sha256[:12]})")
        if self.seed != other.seed:
            return f"the seed differs (checkpoint: {other.seed}, now: {self.seed})"
        mine, theirs = dict(self.options), dict(other.options)
        # Only for naming what changed (checkpoints from before it have none).
        parts = dict(mine.pop("settings_parts", ())), dict(theirs.pop("settings_parts", ()))
        if mine.get("settings") != theirs.get("settings"):
            # The file is the same but what it builds is not (an imported module changed).
            changed = [name for name in parts[0] if parts[1] and parts[0][name] != parts[1].get(name)]
            which = (", ".join(changed) if changed else
                     "fleet, rounds, aggregator, mode, secure aggregation or privacy")
            return (f"the scenario's settings differ from the checkpointed run's ({which}; a "
                    "module it imports changed?)")
        if mine.get("built") != theirs.get("built"):
            return ("the model or the local training the scenario builds differs from the "
                    "checkpointed run's (architecture, epochs, batch size or optimizer settings; "
                    "a module it imports changed?)")
        if mine.get("streams") != theirs.get("streams"):
            # Checkpoints from before the option existed used the first derivation.
            return (f"the checkpoint was written with seed streams v{theirs.get('streams', 1)}, "
                    f"this fedactors derives v{mine.get('streams', 1)}: resuming would not replay "
                    "the run (start it again)")
        randomness = (mine.get("randomness", SEEDED), theirs.get("randomness", SEEDED))
        if randomness[0] != randomness[1]:
            return (f"the randomness differs (checkpoint: {randomness[1]}, now: {randomness[0]}); "
                    "a run keeps the randomness it was started with")
        asked = _options_differ(mine, theirs, besides=("executor_fell_back", "data"))
        if asked:
            # An option the user changed (--executor, --backend) is what to name, not the
            # fallback it also changes (found from outside: --executor sequential on a run
            # that had fallen back was blamed on TF_ENABLE_ONEDNN_OPTS).
            return asked
        fell_back = (mine.get("executor_fell_back", False), theirs.get("executor_fell_back", False))
        if fell_back[0] != fell_back[1]:
            # Same options, but the machine now trains otherwise: a resumed run would mix
            # two executors' rounding in one model.
            how = {False: "as asked", True: "one device at a time (the executor fell back)"}
            return (f"this run would train {how[fell_back[0]]}, the checkpointed run trained "
                    f"{how[fell_back[1]]}: resuming would mix two executors' rounding in one "
                    "model (resume in the environment the run began in, e.g. the same "
                    "TF_ENABLE_ONEDNN_OPTS)")
        if "data" in theirs and mine.get("data") != theirs["data"]:
            # (Checkpoints from before the digest existed have none: not compared.)
            return ("the data differs from the checkpointed run's (its rounds trained on other "
                    "arrays; the data function or a module it reads changed?): a resumed run "
                    "would match no uninterrupted one, so start the run again")
        if "data" not in theirs:
            mine.pop("data", None)
        return _options_differ(mine, theirs)


def _options_differ(mine: dict[str, Any], theirs: dict[str, Any],
                    besides: tuple[str, ...] = ()) -> str:
    """"the run options differ: ..." naming each option (but ``besides``) that differs."""
    differ = sorted(k for k in mine.keys() | theirs.keys()
                    if k not in besides and mine.get(k) != theirs.get(k))
    if not differ:
        return ""
    return "the run options differ: " + ", ".join(
        f"{k} (checkpoint: {theirs.get(k)!r}, now: {mine.get(k)!r})" for k in differ)


@dataclass(frozen=True)
class Checkpoint:
    fingerprint: Fingerprint
    scenario_path: str
    round: int
    clock: float
    server_state: Any = field(repr=False)
    records: tuple[dict, ...] = field(repr=False)
    traffic: tuple[int, int]
    events_bytes: int
    metrics_bytes: int
    #: The round count the run was started for, so ``--resume`` alone finishes it.
    rounds_target: int
    #: FedBuff only: devices at work, messages on the wire, every pending timer
    #: (:class:`fedactors.runtime.snapshot.WorldSnapshot`); None after a round's end.
    world: Any = None


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def save(directory: Path, checkpoint: Checkpoint) -> None:
    payload = pickle.dumps(checkpoint, protocol=pickle.HIGHEST_PROTOCOL)
    write_atomically(directory / FILENAME, MAGIC + hashlib.sha256(payload).digest() + payload)


def load(directory: Path) -> Checkpoint:
    path = Path(directory) / FILENAME
    if not path.is_file():
        raise ScenarioError(f"{path}: no checkpoint to resume from (none is written with "
                            "checkpointing off, nor before the first round or server update)")
    blob = path.read_bytes()
    digest, payload = blob[len(MAGIC): len(MAGIC) + 32], blob[len(MAGIC) + 32:]
    if not blob.startswith(MAGIC) or hashlib.sha256(payload).digest() != digest:
        raise ScenarioError(f"{path}: damaged or incomplete checkpoint, refusing to load it")
    checkpoint = pickle.loads(payload)
    if not isinstance(checkpoint, Checkpoint):
        raise ScenarioError(f"{path}: not a fedactors checkpoint")
    return checkpoint
