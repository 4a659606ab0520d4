"""Each release's metrics row, passed down a chain of small steps.

Like structlog's processors: a step gets the release and the row built so
far, does one thing, and may return a reason to stop the run (the first
reason ends the chain). :func:`run_scenario` chains them as
failures → row → wall clock → keep → write → checkpoint → callbacks → time limit.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fedactors.devices.actor import DeviceFailed
from fedactors.errors import ScenarioError
from fedactors.runtime import checkpoint, snapshot
from fedactors.runtime.snapshot import WorldSnapshot
from fedactors.server.outcome import ReleaseOutcome, metrics_row

#: One link of the chain: (release, row so far) -> a reason to stop, or None.
Step = Callable[[ReleaseOutcome, dict], Optional[str]]


class Recorder:
    """Runs every step on each release's row, in order; the server's ``on_round``."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)

    def __call__(self, outcome: ReleaseOutcome) -> Optional[str]:
        row: dict[str, Any] = {}
        for step in self.steps:
            stop = step(outcome, row)
            if stop:
                return stop
        return None


def failure_line(exc: BaseException, path: Optional[Path]) -> BaseException:
    """A device's failure as the one line a user reads (other failures unchanged)."""
    if isinstance(exc, DeviceFailed):
        return ScenarioError(f"{path or 'scenario'}: {exc}")
    return exc


def stop_on_failure(failures: list[BaseException], path: Optional[Path]) -> Step:
    """Nothing after a device's failure is valid: no row for it."""

    def step(outcome: ReleaseOutcome, row: dict) -> None:
        if failures:
            raise failure_line(failures[0], path)

    return step


class Traffic:
    """The network's byte counters at the previous row, so each row gets its own."""

    def __init__(self, network: Any, baseline: tuple[int, int] = (0, 0)) -> None:
        self.network = network
        self.baseline = tuple(baseline)

    def take(self) -> tuple[int, int]:
        """Bytes down and up since the previous call."""
        now = (self.network.bytes_down, self.network.bytes_up)
        since = (now[0] - self.baseline[0], now[1] - self.baseline[1])
        self.baseline = now
        return since


def ground_truth_row(tally: Any, traffic: Traffic) -> Step:
    """The server's view plus the simulator's ground truth and this row's traffic."""

    def step(outcome: ReleaseOutcome, row: dict) -> None:
        row.update(metrics_row(outcome, tally, traffic.take()))

    return step


def clipping(tally: Any) -> Step:
    """For stages that clip: the share of the round's reported deltas that were clipped
    and their median L2 norm before clipping, with the round's bound, and how many were
    not finite (zeroed by the stage). Ground truth the simulator sees and the protocol
    never releases (not covered by any ε)."""

    def step(outcome: ReleaseOutcome, row: dict) -> None:
        norms = tally.take_norms(outcome.round)
        pairs = [norms[d] for d in outcome.reported if d in norms]
        if pairs:
            values = np.array([n for n, _ in pairs])
            row["clipped_fraction"] = float(np.mean([n > b for n, b in pairs]))
            row["update_norm_median"] = float(np.median(values))
            row["clip_bound"] = float(max(b for _, b in pairs))
            # A non-finite delta (its norm was recorded as infinite) is zeroed by the
            # stage: the device took part with nothing, which the report must show.
            row["nonfinite_zeroed"] = int(np.isinf(values).sum())

    return step


def withheld(tally: Any) -> Step:
    """Under secure aggregation: how many devices kept a non-finite update out of the
    protocol (among the ``dropped``: the server only saw them go silent). Ground truth."""

    def step(outcome: ReleaseOutcome, row: dict) -> None:
        row["nonfinite_withheld"] = tally.take_withheld(outcome.round)

    return step


def attackers(byzantine: frozenset[int]) -> Step:
    """The simulator's ground truth about Byzantine devices (the server never knows who
    they are): how many the round selected, how many of their updates it took in, and
    how much of them the release used after the aggregator's defence (``byzantine_used``:
    Krum's choice, a trimmed mean's kept coordinates, summed over the attackers)."""

    def step(outcome: ReleaseOutcome, row: dict) -> None:
        row["byzantine_selected"] = sum(1 for d in outcome.selected if d in byzantine)
        row["byzantine_reported"] = sum(1 for d in outcome.reported if d in byzantine)
        # What the aggregator's defence did with them: each update's share in the release
        # (1 each when it reports none: every update counted in full).
        shares = outcome.shares or (1.0,) * len(outcome.reported)
        if not outcome.applied:  # nothing released this round: nothing of theirs used
            row["byzantine_used"] = 0.0
        elif len(shares) == len(outcome.reported):
            row["byzantine_used"] = float(sum(s for d, s in zip(outcome.reported, shares)
                                              if d in byzantine))

    return step


def wall_clock(start: float) -> Step:
    def step(outcome: ReleaseOutcome, row: dict) -> None:
        row["wall_seconds"] = round(time.perf_counter() - start, 3)

    return step


def keep(records: list[dict]) -> Step:
    def step(outcome: ReleaseOutcome, row: dict) -> None:
        records.append(row)

    return step


def write(directory: Any) -> Step:
    def step(outcome: ReleaseOutcome, row: dict) -> None:
        directory.write_row(row)

    return step


class Checkpointer:
    """Saves ``checkpoint.pkl`` after every release.

    A synchronous round's end is a clean cut: no device is at work, so the
    server's state is saved at once. FedBuff's devices are always at work: its
    checkpoint is the whole world, taken at the end of this instant, when every
    actor waits (:mod:`fedactors.runtime.snapshot`).
    """

    def __init__(self, *, directory: Any, fingerprint: checkpoint.Fingerprint,
                 scenario_path: Optional[Path], rounds: int, loop: Any, actors: Any,
                 records: list[dict], traffic: Traffic, timed: dict, whole_world: bool) -> None:
        self.directory, self.fingerprint, self.scenario_path = directory, fingerprint, scenario_path
        self.rounds, self.loop, self.actors = rounds, loop, actors
        self.records, self.traffic, self.timed = records, traffic, timed
        self.whole_world = whole_world
        self._due = False  # a FedBuff checkpoint waits for the end of the instant

    def __call__(self, outcome: ReleaseOutcome, row: dict) -> None:
        if not self.whole_world:
            self._save()
        elif not self._due:
            self._due = True
            self.loop.call_when_idle(self._save_world)

    def close(self) -> None:
        """The server is done: no instant is left to save."""
        self._due = False

    def _save(self, world: Optional[WorldSnapshot] = None) -> None:
        events_bytes, metrics_bytes = self.directory.sizes()
        server = self.actors.server
        checkpoint.save(self.directory.dir, checkpoint.Checkpoint(
            # Absolute, so that --resume finds the file from any working directory.
            self.fingerprint, str(self.scenario_path.resolve() if self.scenario_path else ""),
            server.state.round, self.loop.time(),
            server.state, tuple(self.records), self.traffic.baseline,
            events_bytes, metrics_bytes, self.rounds, world,
        ))

    def _save_world(self) -> None:
        if not self._due:
            return  # the run ended before this instant did
        self._due = False
        a = self.actors
        self._save(WorldSnapshot(
            a.server.snapshot(), a.directory.snapshot(), snapshot.pending_timers(self.loop, self.timed),
            copy.deepcopy(a.tally.dropped), (a.network.bytes_down, a.network.bytes_up)))


def callbacks(on_round: Sequence[Callable[[dict], Optional[str]]]) -> Step:
    """The caller's callbacks, each given its own copy of the row (found from outside: a
    notebook's callback that annotated the row rewrote the run's records and its
    summary's final figures, which then disagreed with metrics.jsonl); any may ask
    the run to stop (the CLI's Ctrl-C handling does), and every one is called
    regardless."""

    def step(outcome: ReleaseOutcome, row: dict) -> Optional[str]:
        stop = None
        for callback in on_round:
            stop = callback(copy.deepcopy(row)) or stop
        return stop

    return step


def time_limit(until: Optional[float]) -> Step:
    """``RunOptions.until``: stop after the first release ending at or after ``until``."""

    def step(outcome: ReleaseOutcome, row: dict) -> Optional[str]:
        return "time-limit" if until is not None and outcome.end >= until else None

    return step
