"""Asynchronous federated learning with buffered aggregation: FedBuff.

Nguyen et al. 2022, "Federated Learning with Buffered Asynchronous
Aggregation". There are no rounds. The server keeps up to ``concurrency``
devices training at once, each from whatever model version was current when
it was dispatched; every time ``buffer_size`` (K) updates have arrived it
aggregates them, each delta discounted by its *staleness* (how many server
updates happened since the device started), and applies the server optimizer.
K = 1 is FedAsync (Xie et al. 2019).

What is reused from the synchronous server (:class:`ServerActor`): its
aggregation step (aggregator, server optimizer, the refusal of non-finite
models), its evaluation and its state. What differs is the main loop:

* **Dispatch.** Whenever a slot is free (at start, and after each arrival,
  timeout or rejection) the server asks the fleet who is online and picks
  uniformly among the online devices it is not already waiting for. If slots
  stay free (too few devices online) it polls again every ``poll_interval``
  simulated seconds, as a real server sees devices check in.
* **Tickets.** Each dispatch gets a ticket number, carried in
  ``TrainRequest.round`` and echoed in ``Update.round``. Devices derive their
  randomness from ``("device", ticket, id)``, so a device dispatched twice at
  the same model version still draws fresh batches.
* **Timeouts.** ``Rounds.deadline`` is a per-device timeout: a device not
  heard from by then frees its slot (the server cannot tell a dropped device
  from a straggler; an update arriving after its timeout is rejected "late").
  An update arriving exactly at its timeout counts (deliveries rank first).
* **Buffer.** The K accepted updates are aggregated in ticket order (so sums
  are taken in the same order every run). ``ctx.expected_count`` is K: a DP
  aggregator releases one noised sum per buffer.

Seed paths: ``("fedbuff-availability", k)`` and ``("fedbuff-selection", k)``
for the k-th refill, ``("server", v)`` for server update v.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Optional

import numpy as np

from fedactors.errors import ConfigError
from fedactors.messages import TrainRequest, Update
from fedactors.server.actor import ACTOR, ServerActor
from fedactors.server.screening import REJECT_REASONS, Expectation, screen_contribution
from fedactors.server.staleness import Polynomial, StalenessWeight, scale_delta
from fedactors.validation import non_negative_int, positive, positive_int

#: Reasons an arriving message is not used (the synchronous ones plus "stale").


@dataclass(frozen=True)
class FedBuff:
    """The asynchronous mode of a scenario: ``Scenario(mode=FedBuff(...))``.

    ``buffer_size`` K updates per server update (K = 1: FedAsync);
    ``concurrency`` devices training at most at once; ``staleness`` the
    discount applied to each delta; updates staler than ``max_staleness``
    (if given) are rejected; ``poll_interval`` seconds between looks for
    online devices while slots stay free; ``max_idle`` simulated seconds with
    no device training at all end the run (``stopped: "idle"``) instead of
    polling a fleet that never comes online forever.
    """

    buffer_size: int = 10
    concurrency: int = 100
    staleness: StalenessWeight = Polynomial(0.5)
    max_staleness: Optional[int] = None
    poll_interval: float = 60.0
    max_idle: float = 7 * 86400.0

    def __post_init__(self) -> None:
        positive_int("mode.buffer_size", self.buffer_size)
        positive_int("mode.concurrency", self.concurrency)
        if not isinstance(self.staleness, StalenessWeight):
            raise ConfigError(
                "mode.staleness",
                f"must be a StalenessWeight such as Polynomial(0.5), got {self.staleness!r}",
            )
        if self.max_staleness is not None:
            non_negative_int("mode.max_staleness", self.max_staleness)
        positive("mode.poll_interval", self.poll_interval)
        positive("mode.max_idle", self.max_idle)


@dataclass(frozen=True)
class DeviceTimeout:
    """The server's own timer: stop waiting for the device holding ``ticket``."""

    ticket: int
    nbytes: int = 0


@dataclass(frozen=True)
class Poll:
    """The server's own timer: look for online devices to fill free slots."""

    nbytes: int = 0


@dataclass
class _Dispatch:
    device: int
    version: int
    start: float
    timer: asyncio.TimerHandle = field(repr=False)


@dataclass(frozen=True)
class UpdateOutcome:
    """One server update (one buffer), as the server saw it."""

    round: int  # the model version this update produced (1, 2, ...)
    start: float  # when the previous update was applied (or the run started)
    end: float
    dispatched: int  # devices sent a request since the previous update
    reported: tuple[int, ...]  # the buffer's devices, in aggregation (ticket) order
    staleness: tuple[int, ...]
    weights: tuple[float, ...]  # staleness weights applied to each delta
    timed_out: tuple[int, ...]  # tickets whose timeout fired since the previous update
    in_flight: int  # devices the server waits for right after this update
    applied: bool
    rejected: dict[str, int]
    measurements: dict[str, float]
    metrics: dict[str, float]
    closed_by: str = "buffer"


class FedBuffServer(ServerActor):
    """The server actor in FedBuff mode (see the module docstring)."""

    def __init__(self, *, mode: FedBuff, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        # The inherited aggregation step takes its expected count from
        # rounds.cohort_size and skips below rounds.min_reports: a buffer is a
        # "cohort" of exactly K reports.
        self.rounds = replace(self.rounds, cohort_size=mode.buffer_size, min_reports=1)
        self.in_flight: dict[int, _Dispatch] = {}
        self._busy: set[int] = set()
        self._buffered: set[int] = set()  # devices whose update is in the current buffer
        self._finished: set[int] = set()  # tickets whose update was received or refused
        self._next_ticket = 0
        self._expect: Optional[tuple[int, Expectation]] = None  # (model version, expectation)
        self._refills = 0
        self._poll_pending = False
        self.max_in_flight = 0
        self._dispatched = 0

    # -- dispatch ----------------------------------------------------------
    def _refill(self) -> None:
        free = self.mode.concurrency - len(self.in_flight)
        if free <= 0:
            return
        loop = asyncio.get_running_loop()
        now, k = loop.time(), self._refills
        self._refills += 1
        online = self.fleet.online(now, self.seeds.generator("fedbuff-availability", k))
        # Not a device already waited for, nor one whose update is in the current
        # buffer: each device contributes at most once per buffer (one DP release).
        taken = self._busy | self._buffered
        idle = online[~np.isin(online, np.fromiter(taken, np.int64, len(taken)))]
        n = min(free, len(idle))
        if n:
            chosen = np.sort(self.seeds.generator("fedbuff-selection", k).choice(idle, n, replace=False))
            params = self.aggregator.client_params(self.state.aggregator_state)
            for d in chosen:
                self._dispatch(int(d), now, params)
        if len(self.in_flight) < self.mode.concurrency and not self._poll_pending:
            self._poll_pending = True
            self.network.server_timer(self.mode.poll_interval, Poll())

    def _dispatch(self, device: int, now: float, params: Any) -> None:
        ticket = self._next_ticket
        self._next_ticket += 1
        request = TrainRequest(ticket, self.state.weights, now + self.rounds.deadline, params)
        self.network.to_device(device, request)
        timer = self.network.server_timer(self.rounds.deadline, DeviceTimeout(ticket))
        self.in_flight[ticket] = _Dispatch(device, self.state.round, now, timer)
        self._busy.add(device)
        self.max_in_flight = max(self.max_in_flight, len(self.in_flight))
        self._dispatched += 1
        self.log.emit(ACTOR, "device.dispatched", ticket=ticket, device=device,
                      version=self.state.round, in_flight=len(self.in_flight))

    def _release(self, ticket: int) -> _Dispatch:
        job = self.in_flight.pop(ticket)
        job.timer.cancel()
        self._busy.discard(job.device)
        self._finished.add(ticket)
        return job

    # -- screening ---------------------------------------------------------
    def _screen_async(self, message: Any) -> Optional[str]:
        """Why ``message`` is not a usable update (None if it is)."""
        if not isinstance(message, Update):
            return "malformed"
        ticket = message.round
        if ticket >= self._next_ticket:
            return "future"
        job = self.in_flight.get(ticket)
        if job is None:
            return "duplicate" if ticket in self._finished else "late"
        if message.sender != job.device:
            return "foreign"
        return screen_contribution(message.contribution, self._expectation())

    def _expectation(self) -> Expectation:
        """What a well-formed update looks like under the current model version.

        It only changes when the aggregator's state does, at a server update,
        so it is built once per version rather than once per arriving update.
        """
        if self._expect is None or self._expect[0] != self.state.round:
            params = self.aggregator.client_params(self.state.aggregator_state)
            dim = int(self.state.weights.shape[0])
            self._expect = (self.state.round, Expectation.for_round(self.aggregator, params, dim))
        return self._expect[1]

    # -- the main loop -----------------------------------------------------
    async def run(self, count: int, on_round: Callable[[UpdateOutcome], Optional[str]]) -> str:
        """Run until ``count`` more server updates; ``on_round`` may stop early."""
        loop = asyncio.get_running_loop()
        buffer: list[tuple[int, Update, int]] = []  # (ticket, update, staleness)
        rejected: dict[str, int] = {}
        timed_out: list[int] = []
        self._dispatched = 0
        start = loop.time()
        target = self.state.round + count
        self.log.emit(ACTOR, "fedbuff.start", buffer_size=self.mode.buffer_size,
                      concurrency=self.mode.concurrency, updates=count)
        self._refill()
        idle_since: Optional[float] = None
        while self.state.round < target:
            message = await self.mailbox.get()
            if isinstance(message, Poll):
                self._poll_pending = False
                self._refill()
                if self.in_flight:
                    idle_since = None
                elif idle_since is None:
                    idle_since = loop.time()
                elif loop.time() - idle_since >= self.mode.max_idle:
                    # Nobody has been online to train for max_idle: the virtual
                    # clock would otherwise jump from poll to poll forever.
                    self.log.emit(ACTOR, "run.stopped", round=self.state.round, reason="idle",
                                  idle_seconds=loop.time() - idle_since)
                    return "idle"
                continue
            if isinstance(message, DeviceTimeout):
                if message.ticket in self.in_flight:
                    job = self._release(message.ticket)
                    timed_out.append(message.ticket)
                    self.log.emit(ACTOR, "device.timeout", ticket=message.ticket, device=job.device)
                    self._refill()
                continue
            reason = self._screen_async(message)
            staleness = 0
            if reason is None:
                staleness = self.state.round - self.in_flight[message.round].version
                if self.mode.max_staleness is not None and staleness > self.mode.max_staleness:
                    reason = "stale"
                    self._release(message.round)
            if reason:
                rejected[reason] = rejected.get(reason, 0) + 1
                self.log.emit(ACTOR, f"update.{reason}", version=self.state.round,
                              sender=getattr(message, "sender", None),
                              ticket=getattr(message, "round", None))
                self._refill()
                continue
            self._release(message.round)
            buffer.append((message.round, message, staleness))
            self._buffered.add(message.sender)
            self.log.emit(ACTOR, "update.received", version=self.state.round, sender=message.sender,
                          ticket=message.round, staleness=staleness, buffered=len(buffer))
            if len(buffer) == self.mode.buffer_size:
                outcome = self._apply_buffer(buffer, start, rejected, timed_out)
                buffer, rejected, timed_out, start = [], {}, [], loop.time()
                self._buffered.clear()
                self._dispatched = 0
                self._refill()  # new dispatches start from the new model
                stop = on_round(outcome)
                if stop:
                    self.log.emit(ACTOR, "run.stopped", round=outcome.round, reason=stop)
                    return stop
            else:
                self._refill()
        return "completed"

    def _apply_buffer(self, buffer: list[tuple[int, Update, int]], start: float,
                      rejected: dict[str, int], timed_out: list[int]) -> UpdateOutcome:
        buffer = sorted(buffer, key=lambda item: item[0])
        staleness = np.array([s for _, _, s in buffer], np.int64)
        weights = self.mode.staleness(staleness)
        dim = self.state.weights.shape[0]
        accepted = {
            ticket: replace(update, contribution=scale_delta(dict(update.contribution), w, dim))
            for (ticket, update, _), w in zip(buffer, weights)
        }
        version = self.state.round + 1
        applied, measurements = self._aggregate(version, accepted, len(buffer))
        metrics = self.evaluate(self.state.weights) if version % self.rounds.eval_every == 0 else {}
        self.log.emit(ACTOR, "buffer.aggregated", round=version, applied=applied,
                      staleness=staleness, **metrics)
        return UpdateOutcome(
            round=version, start=start, end=asyncio.get_running_loop().time(),
            dispatched=self._dispatched,
            reported=tuple(u.sender for _, u, _ in buffer),
            staleness=tuple(int(s) for s in staleness),
            weights=tuple(float(w) for w in weights), timed_out=tuple(timed_out),
            in_flight=len(self.in_flight), applied=applied, rejected=dict(rejected),
            measurements=measurements, metrics=metrics,
        )


def server_class(mode: Optional[FedBuff]) -> Callable[..., ServerActor]:
    """The server actor for a scenario's ``mode`` (None: synchronous rounds)."""
    return ServerActor if mode is None else partial(FedBuffServer, mode=mode)


def fedbuff_metrics_row(outcome: UpdateOutcome, tally: Any, traffic: tuple[int, int]) -> dict:
    """One metrics.jsonl line per server update, with the synchronous keys where they mean
    something: ``selected`` = devices dispatched since the previous update, ``dropped`` /
    ``late`` = timeouts of devices that had gone silent / were still working."""
    dropped = sum(1 for ticket in outcome.timed_out if tally.dropped.pop(ticket, None))
    staleness = np.asarray(outcome.staleness, np.float64)
    row: dict[str, Any] = {
        "round": outcome.round,
        "time": outcome.end,
        "duration": outcome.end - outcome.start,
        "selected": outcome.dispatched,
        "reported": len(outcome.reported),
        "dropped": dropped,
        "late": len(outcome.timed_out) - dropped,
        "surplus": 0,
        "closed_by": outcome.closed_by,
        "applied": outcome.applied,
        "bytes_down": traffic[0],
        "bytes_up": traffic[1],
        "in_flight": outcome.in_flight,
        "staleness_mean": float(staleness.mean()) if staleness.size else 0.0,
        "staleness_max": int(staleness.max()) if staleness.size else 0,
    }
    for reason in REJECT_REASONS:
        row[f"rejected_{reason}"] = outcome.rejected.get(reason, 0)
    row.update(outcome.measurements)
    row.update(outcome.metrics)
    return row
