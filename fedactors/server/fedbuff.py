"""Asynchronous federated learning with buffered aggregation: FedBuff.

Nguyen et al. 2022, "Federated Learning with Buffered Asynchronous
Aggregation". There are no rounds. The server keeps up to ``concurrency``
devices training at once, each from whatever model version was current when
it was dispatched; every time ``buffer_size`` (K) updates have arrived it
aggregates them, each delta discounted by its *staleness* (how many server
updates happened since the device started), and applies the server optimizer.
K = 1 is FedAsync (Xie et al. 2019).

What is shared with the synchronous driver is the release step
(:mod:`fedactors.server.release`: aggregator, server optimizer, the refusal
of non-finite models, the privacy charge and budget check, evaluation), the
server state and the update screen; neither driver inherits from the other.
What differs is how contributions are collected:

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
  aggregator releases one noised sum per buffer, accounted per buffer with no
  amplification by sampling (:mod:`fedactors.privacy.budget`); a device is
  never in one buffer twice, and with a privacy target the run stops before a
  buffer would be released past it.
* **No secure aggregation.** Buffers are summed in plain; a scenario asking
  for both is refused at load (:mod:`fedactors.scenarios.spec`).

Seed paths: ``("fedbuff-availability", k)`` and ``("fedbuff-selection", k)``
for the k-th refill, ``("server", v)`` for server update v.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Optional, Union

import numpy as np

from fedactors.aggregation.base import PlainContributions
from fedactors.devices.fleet import Fleet
from fedactors.errors import ConfigError
from fedactors.messages import TrainRequest, Update
from fedactors.privacy.participation import Participation
from fedactors.reporting.events import EventLog
from fedactors.seeding import SeedTree
from fedactors.server.actor import ServerActor
from fedactors.server.outcome import ReleaseOutcome
from fedactors.server.release import ACTOR, ReleaseStep, ServerState
from fedactors.server.rounds import Rounds
from fedactors.server.screening import Expectation, screen_contribution
from fedactors.server.staleness import (
    Polynomial,
    StalenessWeight,
    clip_to_release,
    scale_delta,
)
from fedactors.validation import non_negative_int, positive, positive_int


@dataclass(frozen=True)
class FedBuff:
    """The asynchronous mode of a scenario: ``Scenario(mode=FedBuff(...))``.

    ``buffer_size`` K updates per server update (K = 1: FedAsync);
    ``concurrency`` devices training at most at once; ``staleness`` the
    discount applied to each delta; updates staler than ``max_staleness``
    (if given) are rejected; ``poll_interval`` seconds between looks for
    online devices while slots stay free; ``max_idle`` simulated seconds with
    no device training at all end the run (``stopped: "idle"``) instead of
    polling a fleet that never comes online forever, and so do ``max_idle``
    seconds without a server update while devices keep failing to deliver
    (``stopped: "stalled"``: e.g. only devices too slow for the deadline left
    to give work to).

    The scenario's ``Rounds`` still gives ``count`` (server updates),
    ``deadline`` (a per-device timeout, seconds) and ``eval_every``. A DP
    aggregator releases one noised sum per buffer: its ``expected_count`` must
    equal ``buffer_size`` and ``staleness`` weights must stay in [0, 1]. Secure
    aggregation is refused in this mode. See docs/async.md.

    Args:
        buffer_size: K, accepted updates aggregated into each server update
            (>= 1, at most the fleet size: a buffer holds distinct devices).
            K = 1 is FedAsync (Xie et al. 2019). Default 10.
        concurrency: The most devices the server waits for at once (>= 1);
            a freed slot is refilled from the devices online. Default 100.
        staleness: A ``StalenessWeight`` from ``fedactors.server.staleness``
            mapping an update's staleness ``s`` (server updates since its
            device was dispatched) to the factor its delta is multiplied by:
            ``Polynomial(a)`` = ``(1 + s) ** -a``, ``Hinge(slope, cutoff)``,
            ``Unweighted()``. Default ``Polynomial(0.5)``, i.e. ``1/sqrt(1+s)``.
        max_staleness: Reject updates with staleness above this many server
            updates (counted as ``rejected_stale``); ``None`` (default) accepts
            any staleness.
        poll_interval: Simulated seconds (> 0) between looks for online
            devices while slots stay free. Default 60.0.
        max_idle: Simulated seconds (> 0) with no device training at all, or
            with no server update, after which the run ends (``stopped:
            "idle"`` or ``"stalled"``). Default 604800.0 (7 days).

    Examples:
        >>> from fedactors import FedBuff
        >>> from fedactors.server.staleness import Polynomial
        >>> mode = FedBuff(buffer_size=10, concurrency=50, staleness=Polynomial(0.5),
        ...                max_staleness=20)
        >>> [round(float(w), 3) for w in mode.staleness([0, 3, 8])]  # weights by staleness
        [1.0, 0.5, 0.333]
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


@dataclass(frozen=True)
class _StopNow:
    """Put in the server's mailbox at the end of the instant a caller asked it to stop."""

    nbytes: int = 0


@dataclass
class _Dispatch:
    device: int
    version: int
    start: float
    timer: Optional[asyncio.TimerHandle] = field(default=None, repr=False)


@dataclass
class _Gathering:
    """What the server has gathered since its last update: the next buffer in the making."""

    start: float
    updates: list[tuple[int, Update, int]] = field(default_factory=list)  # (ticket, update, staleness)
    rejected: dict[str, int] = field(default_factory=dict)
    timed_out: list[tuple[int, int]] = field(default_factory=list)  # (ticket, device)
    dispatched: list[int] = field(default_factory=list)  # devices asked since the last update
    #: Devices whose update for their own job came too stale to use (``max_staleness``).
    refused: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class FedBuffSnapshot:
    """The FedBuff server between two events, for a checkpoint. Its timers (device
    timeouts, the next poll) are saved with every other pending timer of the run
    (:mod:`fedactors.runtime.snapshot`) and come back through ``restore_timer``."""

    state: ServerState
    gathering: _Gathering
    in_flight: tuple[tuple[int, int, int, float], ...]  # (ticket, device, version, start)
    buffered: frozenset[int]
    given_up: frozenset[int]
    next_ticket: int
    refills: int
    poll_pending: bool
    idle_since: Optional[float]
    max_in_flight: int
    #: The aggregator parameters each model version still in flight was sent with
    #: (empty in checkpoints written before updates were screened against them).
    sent_params: tuple[tuple[int, Any], ...] = ()


class FedBuffServer:
    """The server actor in FedBuff mode (see the module docstring)."""

    #: Why the run stalled, in words, once it has (no update for ``max_idle`` while
    #: devices trained); the run states it as a warning.
    stall: Optional[str] = None

    def __init__(
        self,
        *,
        mode: FedBuff,
        rounds: Rounds,
        fleet: Fleet,
        step: ReleaseStep,
        seeds: SeedTree,
        log: EventLog,
        mailbox: asyncio.Queue,
        network: Any,
        initial_weights: np.ndarray,
        # Same signature as the synchronous driver; FedBuff never closes a round
        # on its devices, and secure aggregation is refused at load.
        stop_devices: Callable[[int], None] = lambda r: None,
        secure_aggregation: Any = None,
        pki: Any = None,  # secure aggregation's; never used here
    ) -> None:
        if secure_aggregation is not None:  # the scenario check refuses this first
            raise ConfigError("secure_aggregation", "is not implemented for FedBuff buffers")
        self.mode = mode
        self.rounds = rounds  # its deadline is the per-device timeout
        self.fleet = fleet
        self.step = step
        self.aggregator = step.aggregator
        self.seeds = seeds
        self.log = log
        self.mailbox = mailbox
        self.network = network
        self.state: ServerState = step.initial_state(initial_weights)
        self.in_flight: dict[int, _Dispatch] = {}
        self._busy: set[int] = set()
        self._buffered: set[int] = set()  # devices whose update is in the current buffer
        # Tickets the server stopped waiting for at their timeout: an update for one is
        # "late"; any other ticket below _next_ticket and not in flight was answered
        # (or refused) once already, so another update for it is a "duplicate".
        self._given_up: set[int] = set()
        self._next_ticket = 0
        # What each model version with a device still at work was sent: its update is
        # screened against that version's bounds (a later release re-clips it to its own).
        self._sent_params: dict[int, Any] = {}
        self._at_work: Counter[int] = Counter()  # devices at work, by the version they were sent
        self._expect: dict[int, Expectation] = {}  # by model version
        self._refills = 0
        self._poll_pending = False
        self._poll_timer: Optional[asyncio.TimerHandle] = None
        self._idle_since: Optional[float] = None
        self.max_in_flight = 0
        self._gathering: Optional[_Gathering] = None  # None until the run starts
        self._stopping: Optional[str] = None  # a caller's stop, carried out at the instant's end

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
        # DP-FTRL's separation rule: an update given out now lands in the next
        # release or a later one, so checking against the next one suffices.
        idle = self.step.eligible(self.state, idle)
        n = min(free, len(idle))
        if n:
            chosen = np.sort(self.seeds.generator("fedbuff-selection", k).choice(idle, n, replace=False))
            params = self.aggregator.client_params(self.state.aggregator_state)
            self._sent_params.setdefault(self.state.round, params)
            for d in chosen:
                self._dispatch(int(d), now, params)
        if len(self.in_flight) < self.mode.concurrency and not self._poll_pending:
            self._poll_pending = True
            self._poll_timer = self.network.server_timer(self.mode.poll_interval, Poll())

    def _dispatch(self, device: int, now: float, params: Any) -> None:
        ticket = self._next_ticket
        self._next_ticket += 1
        request = TrainRequest(ticket, self.state.weights, now + self.rounds.deadline, params)
        self.network.to_device(device, request)
        timer = self.network.server_timer(self.rounds.deadline, DeviceTimeout(ticket))
        self.in_flight[ticket] = _Dispatch(device, self.state.round, now, timer)
        self._at_work[self.state.round] += 1
        self._busy.add(device)
        self.max_in_flight = max(self.max_in_flight, len(self.in_flight))
        assert self._gathering is not None
        self._gathering.dispatched.append(device)
        self.log.emit(ACTOR, "device.dispatched", ticket=ticket, device=device,
                      version=self.state.round, in_flight=len(self.in_flight))

    def _release(self, ticket: int) -> _Dispatch:
        job = self.in_flight.pop(ticket)
        if job.timer is not None:
            job.timer.cancel()
        self._busy.discard(job.device)
        self._at_work[job.version] -= 1
        self._forget(job.version)
        return job

    def _forget(self, version: int) -> None:
        """Drop what ``version`` was sent once no device works on it and it is no longer
        the version given out: no update will be screened against it again."""
        if self._at_work[version] <= 0 and version != self.state.round:
            self._at_work.pop(version, None)
            self._sent_params.pop(version, None)
            self._expect.pop(version, None)

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
            # After its timeout the server no longer waits for it; any other ticket
            # it stopped waiting for was already answered (or refused) once.
            return "late" if ticket in self._given_up else "duplicate"
        if message.sender != job.device:
            return "foreign"
        return screen_contribution(message.contribution, self._expectation(job.version))

    def _expectation(self, version: int) -> Expectation:
        """What a well-formed update looks like from a device sent model ``version``:
        within the bounds of what it was sent (a stale update of an honest device may
        exceed the current ones; the release it joins clips it again).

        Built once per version rather than once per arriving update. A version
        restored from a checkpoint that did not record what it was sent is
        screened against the current parameters, as it was then.
        """
        if version not in self._expect:
            params = self._sent_params.get(version)
            if params is None:
                params = self.aggregator.client_params(self.state.aggregator_state)
            dim = int(self.state.weights.shape[0])
            self._expect[version] = Expectation.for_round(self.aggregator, params, dim)
        return self._expect[version]

    def _stalled(self, now: float) -> bool:
        """``max_idle`` seconds since the current buffer began and none delivered yet."""
        return bool(self.in_flight) and now - self._gathering.start >= self.mode.max_idle

    # -- the main loop -----------------------------------------------------
    async def run(self, count: int, on_round: Callable[[ReleaseOutcome], Optional[str]],
                  interrupt: Callable[[], Optional[str]] = lambda: None) -> str:
        """Run until ``count`` more server updates; ``on_round`` may stop early.

        With a privacy target the run stops before a buffer whose release
        would take ε above it: checked before any device is dispatched and
        again right after every release. A server restored from a checkpoint
        carries on where it was cut. ``interrupt`` (polled at every event: a stop
        asked by the caller, e.g. Ctrl-C) ends the run at the end of the current
        instant even if no update comes (every update may miss its deadline): the
        last update's checkpoint stays the one to resume from.
        """
        loop = asyncio.get_running_loop()
        target = self.state.round + count
        self.step.start(self.state)
        if self._gathering is None:  # a new run, not one restored mid-way
            stop = self.step.budget_stop(self.state)
            if stop:
                self.log.emit(ACTOR, "run.stopped", round=self.state.round, reason=stop)
                return stop
            # No update count, as run.start has no round count: a run stopped and
            # resumed to more updates logs the bytes an uninterrupted one does.
            self.log.emit(ACTOR, "fedbuff.start", buffer_size=self.mode.buffer_size,
                          concurrency=self.mode.concurrency)
            self._gathering = _Gathering(loop.time())
            self._refill()
        while self.state.round < target:
            message = await self.mailbox.get()
            if self._stopping is None:
                asked = interrupt()
                if asked:
                    self._stop_at_instant_end(loop, asked)
            gathering = self._gathering
            if isinstance(message, _StopNow):
                self.log.emit(ACTOR, "run.stopped", round=self.state.round, reason=self._stopping)
                return self._stopping
            if isinstance(message, (Poll, DeviceTimeout)) and self._stalled(loop.time()):
                # Devices keep training but none delivers (say only ones too slow for the
                # deadline may be given work): the run would go on forever without an update.
                waited = loop.time() - gathering.start
                late = gathering.rejected.get("late", 0)
                self.log.emit(ACTOR, "run.stopped", round=self.state.round, reason="stalled",
                              seconds_without_update=waited,
                              dispatched=len(gathering.dispatched),
                              timed_out=len(gathering.timed_out), late=late)
                self.stall = (
                    f"no server update for {waited:g} simulated seconds (max_idle) while "
                    f"devices trained: of {len(gathering.dispatched)} dispatched, "
                    f"{len(gathering.timed_out)} timed out ({late} of their updates came "
                    f"after the timeout); is rounds.deadline ({self.rounds.deadline:g} s) "
                    "shorter than a device's compute plus upload?")
                return "stalled"
            if isinstance(message, Poll):
                self._poll_pending = False
                self._poll_timer = None
                self._refill()
                if self.in_flight:
                    self._idle_since = None
                elif self._idle_since is None:
                    self._idle_since = loop.time()
                elif loop.time() - self._idle_since >= self.mode.max_idle:
                    # Nobody has been online to train for max_idle: the virtual
                    # clock would otherwise jump from poll to poll forever.
                    self.log.emit(ACTOR, "run.stopped", round=self.state.round, reason="idle",
                                  idle_seconds=loop.time() - self._idle_since)
                    return "idle"
                continue
            if isinstance(message, DeviceTimeout):
                if message.ticket in self.in_flight:
                    job = self._release(message.ticket)
                    self._given_up.add(message.ticket)
                    gathering.timed_out.append((message.ticket, job.device))
                    self.log.emit(ACTOR, "device.timeout", ticket=message.ticket, device=job.device)
                    self._refill()
                continue
            reason = self._screen_async(message)
            staleness = 0
            if reason is None:
                staleness = self.state.round - self.in_flight[message.round].version
                if self.mode.max_staleness is not None and staleness > self.mode.max_staleness:
                    reason = "stale"
            if reason == "stale":
                # Its own job answered, too late to use: the slot is free and the device
                # counts as refused (it used to be counted nowhere). An update refused
                # for its contents keeps the job open instead: a forged update in the
                # device's name must not cancel the genuine one; if none follows, the
                # device counts as late at its timeout.
                self._release(message.round)
                gathering.refused.append(int(message.sender))
            if reason:
                gathering.rejected[reason] = gathering.rejected.get(reason, 0) + 1
                self.log.emit(ACTOR, f"update.{reason}", version=self.state.round,
                              sender=getattr(message, "sender", None),
                              ticket=getattr(message, "round", None))
                self._refill()
                continue
            self._release(message.round)
            gathering.updates.append((message.round, message, staleness))
            self._buffered.add(message.sender)
            self.log.emit(ACTOR, "update.received", version=self.state.round, sender=message.sender,
                          ticket=message.round, staleness=staleness,
                          buffered=len(gathering.updates))
            if len(gathering.updates) == self.mode.buffer_size:
                outcome = self._apply_buffer(gathering)
                self._gathering = _Gathering(loop.time())
                self._buffered.clear()
                asked = on_round(outcome)
                if asked is None and self.state.round < target:
                    # (After the last update there is no next release to refuse.)
                    stop = self.step.budget_stop(self.state)
                    if stop:  # no further release may happen: stop at once
                        self.log.emit(ACTOR, "run.stopped", round=outcome.round, reason=stop)
                        return stop
                elif self._stopping is None:
                    # A caller's stop (Ctrl-C, a time limit) is carried out at the end of
                    # this instant, as the uninterrupted run would have it: its checkpoint
                    # (taken then) holds this update, and resuming it continues from here.
                    self._stop_at_instant_end(loop, asked)
                self._refill()  # new dispatches start from the new model
            else:
                self._refill()
        return "completed"

    def _stop_at_instant_end(self, loop: asyncio.AbstractEventLoop, reason: str) -> None:
        self._stopping = reason
        loop.call_when_idle(lambda: self.mailbox.put_nowait(_StopNow()))

    def _apply_buffer(self, gathering: _Gathering) -> ReleaseOutcome:
        buffer = sorted(gathering.updates, key=lambda item: item[0])
        staleness = np.array([s for _, _, s in buffer], np.int64)
        weights = self.mode.staleness(staleness)
        if self.step.privacy is not None and np.any((weights < 0) | (weights > 1)):
            # A weight above 1 would scale a clipped update past the sensitivity accounted.
            raise ConfigError("mode.staleness", f"gave weights outside [0, 1] ({weights!r}), "
                                                "which a DP release cannot account")
        dim = self.state.weights.shape[0]
        aggregator = self.step.aggregator
        # The bound this release's noise is sized for: an update sent under a larger one
        # (adaptive clipping shrank it since, a DP-FTRL tree restarted) is clipped again.
        bound = aggregator.clip_bound(aggregator.client_params(self.state.aggregator_state))
        rows, reclipped = [], []
        for (_, update, _), w in zip(buffer, weights):
            contribution = dict(update.contribution)
            if bound is not None:
                contribution, clipped = clip_to_release(contribution, bound, dim)
                if clipped:
                    reclipped.append(int(update.sender))
            rows.append(scale_delta(contribution, w, dim))
        if reclipped:
            self.log.emit(ACTOR, "buffer.reclipped", round=self.state.round + 1,
                          senders=reclipped, clip_norm=bound)
        contributions = PlainContributions(rows)
        released = self.step.release(self.state, contributions,
                                     expected_count=self.mode.buffer_size, selected=len(buffer),
                                     participation=Participation(
                                         contributors=tuple(int(u.sender) for _, u, _ in buffer)))
        previous = self.state.round
        self.state = released.state
        self._forget(previous)  # given out no more; forgotten now if nobody works on it
        version = self.state.round
        self.log.emit(ACTOR, "buffer.aggregated", round=version, applied=released.applied,
                      staleness=staleness, **released.metrics)
        return ReleaseOutcome(
            round=version, start=gathering.start, end=asyncio.get_running_loop().time(),
            selected=tuple(gathering.dispatched),
            reported=tuple(u.sender for _, u, _ in buffer), closed_by="buffer",
            applied=released.applied, rejected=dict(gathering.rejected),
            refused=tuple(gathering.refused),
            measurements=released.measurements if bound is None
            else {**released.measurements, "reclipped": len(reclipped)},
            metrics=released.metrics, given_up=tuple(gathering.timed_out),
            staleness=tuple(int(s) for s in staleness),
            weights=tuple(float(w) for w in weights), in_flight=len(self.in_flight),
            shares=released.shares or (),
        )

    # -- checkpoints -------------------------------------------------------
    def snapshot(self) -> FedBuffSnapshot:
        """The server's whole state; taken between events (the mailbox is empty)."""
        if self._gathering is None or not self.mailbox.empty():
            raise RuntimeError("the FedBuff server is mid-event: no clean cut to checkpoint")
        g = self._gathering
        return FedBuffSnapshot(
            state=self.state,
            gathering=_Gathering(g.start, list(g.updates), dict(g.rejected), list(g.timed_out),
                                 list(g.dispatched), list(g.refused)),
            in_flight=tuple((t, j.device, j.version, j.start) for t, j in self.in_flight.items()),
            buffered=frozenset(self._buffered), given_up=frozenset(self._given_up),
            next_ticket=self._next_ticket,
            refills=self._refills, poll_pending=self._poll_pending, idle_since=self._idle_since,
            max_in_flight=self.max_in_flight,
            sent_params=tuple(sorted(self._sent_params.items(), key=lambda kv: kv[0])),
        )

    def restore(self, snap: FedBuffSnapshot) -> None:
        """Become the server of ``snap``; its timers follow through ``restore_timer``."""
        self.state = snap.state
        g = snap.gathering
        # (A checkpoint from before refusals were counted has none.)
        self._gathering = _Gathering(g.start, list(g.updates), dict(g.rejected),
                                     list(g.timed_out), list(g.dispatched),
                                     list(vars(g).get("refused", ())))
        self.in_flight = {t: _Dispatch(d, v, start) for t, d, v, start in snap.in_flight}
        self._busy = {job.device for job in self.in_flight.values()}
        self._buffered = set(snap.buffered)
        self._given_up = set(snap.given_up)
        self._next_ticket, self._refills = snap.next_ticket, snap.refills
        self._poll_pending, self._idle_since = snap.poll_pending, snap.idle_since
        self.max_in_flight = snap.max_in_flight
        self._sent_params = dict(snap.sent_params)
        self._at_work = Counter(job.version for job in self.in_flight.values())
        self._expect = {}

    def pending_timers(self) -> list[tuple[asyncio.TimerHandle, Any]]:
        timers: list[tuple[asyncio.TimerHandle, Any]] = [
            (job.timer, ("timeout", ticket)) for ticket, job in self.in_flight.items()
            if job.timer is not None]
        if self._poll_timer is not None:
            timers.append((self._poll_timer, ("poll", None)))
        return timers

    def restore_timer(self, what: tuple[str, Optional[int]], when: float, priority: int) -> None:
        kind, ticket = what
        if kind == "timeout":
            assert ticket is not None
            self.in_flight[ticket].timer = self.network.server_timer_at(when, DeviceTimeout(ticket))
        else:
            self._poll_timer = self.network.server_timer_at(when, Poll())


def server_class(mode: Optional[FedBuff]) -> Callable[..., Union[ServerActor, FedBuffServer]]:
    """The server actor for a scenario's ``mode`` (None: synchronous rounds)."""
    return ServerActor if mode is None else partial(FedBuffServer, mode=mode)


