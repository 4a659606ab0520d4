"""Device actors: one mailbox each, activated when mail arrives.

Devices are *virtual actors*: an actor exists (with its mailbox and task) only
while it has work, and its lasting identity is its row in the fleet plus its
data. That is how the runtime holds 100,000 registered devices without
100,000 idle tasks.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from fedactors.aggregation.base import Aggregator
from fedactors.aggregation.clipping import l2_norm
from fedactors.data.federated import FederatedData
from fedactors.devices.byzantine import Attack
from fedactors.devices.fleet import Fleet
from fedactors.errors import one_line
from fedactors.messages import TrainRequest, Update
from fedactors.reporting.events import EventLog
from fedactors.runtime.alarms import Alarm, AlarmClock, WakeUps
from fedactors.secagg.envelopes import ToDevice
from fedactors.seeding import SeedTree
from fedactors.training.executor import Executor, TrainingFailed, TrainResult, TrainTask


@dataclass
class RoundTally:
    """Ground truth the simulator knows and the server does not: who went silent when."""

    dropped: dict[int, dict[int, float]]
    #: Per round and device, (L2 norm of the delta handed to the aggregator, the round's
    #: clip bound), for stages that clip; kept only when ``clip_norms`` is on (sync rounds).
    norms: dict[int, dict[int, tuple[float, float]]] = field(default_factory=dict)
    clip_norms: bool = False
    #: Per round, how many devices kept a non-finite update out of secure aggregation
    #: (they are also recorded as dropped: the server only sees them go silent).
    withheld: dict[int, int] = field(default_factory=dict)

    @classmethod
    def empty(cls, clip_norms: bool = False) -> RoundTally:
        return cls({}, {}, clip_norms)

    def record_norm(self, round_: int, device: int, norm: float, bound: float) -> None:
        self.norms.setdefault(round_, {})[device] = (norm, bound)

    def take_norms(self, round_: int) -> dict[int, tuple[float, float]]:
        """The round's recorded norms; forgotten once taken (the round is over)."""
        return self.norms.pop(round_, {})

    def record_drop(self, round_: int, device: int, t: float) -> None:
        self.dropped.setdefault(round_, {})[device] = t

    def record_withheld(self, round_: int) -> None:
        self.withheld[round_] = self.withheld.get(round_, 0) + 1

    def take_withheld(self, round_: int) -> int:
        """How many of the round's devices withheld a non-finite update; forgotten once
        taken."""
        return self.withheld.pop(round_, 0)

    def take(self, round_: int, t: float) -> set[int]:
        """Who went silent in ``round_`` by ``t``; the round is over, so its record
        is forgotten (a long run must not keep every round's drops)."""
        return {d for d, when in self.dropped.pop(round_, {}).items() if when <= t}


@dataclass
class DeviceWorld:
    """What every device actor shares: the simulated world around it."""

    fleet: Fleet
    data: FederatedData
    executor: Executor
    aggregator: Aggregator
    seeds: SeedTree
    network: Any  # fedactors.runtime.network.Network
    log: EventLog
    tally: RoundTally
    epochs: int
    #: Byzantine devices and their attack (see fedactors.devices.byzantine).
    attacks: Mapping[int, Attack] = field(default_factory=dict)
    #: Device-side secure aggregation state (``SecAggParticipants``), if it is on.
    secagg: Optional[Any] = None
    #: What a request's number counts: synchronous "round"s, or FedBuff's "dispatch"es.
    work: str = "round"


@dataclass(frozen=True)
class Dropping:
    """A device going silent part-way through its work for ``round``."""

    round: int


@dataclass(frozen=True)
class Training:
    """A device training for ``request``; ``rng`` draws its batches (and, seeded, its encoding's noise)."""

    request: TrainRequest
    rng: np.random.Generator = field(repr=False)
    num_examples: int

    @property
    def round(self) -> int:
        return self.request.round


@dataclass(frozen=True)
class DeviceSnapshot:
    """One device mid-work, at a checkpoint (see :meth:`DeviceDirectory.snapshot`).

    For training: the executor's ``result`` if it already ran (batches run
    ahead of the simulated clock), else the ticket it was ``submitted`` under,
    so that pending tasks are resubmitted in their order and batch the same.
    ``mail``: requests that came while it worked, read after it.
    """

    device: int
    work: Union[Dropping, Training]
    result: Optional[TrainResult]
    submitted: Optional[int]
    mail: tuple[Any, ...]


class DeviceFailed(Exception):
    """A device's work raised: the run stops at once, naming the device."""

    def __init__(self, device: Optional[int], kind: str, round_: Optional[int],
                 cause: BaseException, work: str = "round") -> None:
        who = f"device {device} ({kind})" if device is not None else "a cohort"
        # FedBuff numbers each dispatch, not rounds: "in round 11" would misname it.
        where = f"in round {round_}" if work == "round" else f"on {work} {round_}"
        super().__init__(f"{who} failed {where}: {one_line(cause)}")
        self.device = device
        self.cause = cause


class DeviceActor:
    """One device: its mailbox and the work it is doing, activated by mail (see
    :class:`DeviceDirectory`). A big round makes one per selected device."""

    __slots__ = ("id", "world", "alarms", "mailbox", "round", "ticket", "work", "wake")

    def __init__(self, device: int, world: DeviceWorld, alarms: AlarmClock) -> None:
        self.id = device
        self.world = world
        self.alarms = alarms
        # A plain FIFO: the actor never waits on it (delivery activates the actor, which
        # drains it), so an asyncio.Queue's waiters and futures would be dead weight per device.
        self.mailbox: deque[Any] = deque()
        self.round: Optional[int] = None  # the round being worked on, if any
        self.ticket: Optional[int] = None  # its training submitted to the executor
        self.work: Optional[Union[Dropping, Training]] = None  # what it waits to finish
        self.wake: Optional[Alarm] = None  # when it will have finished

    async def run(self) -> None:
        """Drain the mailbox, then let the actor be deactivated."""
        while self.mailbox:
            message = self.mailbox.popleft()
            if isinstance(message, TrainRequest):
                self.round = message.round
                await self.train(message)
                self.round = None
            elif isinstance(message, ToDevice) and self.world.secagg is not None:
                self.world.secagg.handle(self.id, message)
            else:
                self.world.log.device(self.id, "message.unknown", kind=type(message).__name__)

    async def train(self, request: TrainRequest) -> None:
        w, d, r = self.world, self.id, request.round
        rng = w.seeds.generator("device", r, d)
        num_examples = w.data.num_examples(d)
        compute_time = w.epochs * num_examples / float(w.fleet.compute[d])
        w.log.device(d, "request.received", round=r, compute_s=compute_time)

        if rng.random() < w.fleet.dropout[d]:
            # Silent part-way through its work: no update, no goodbye.
            upload = w.fleet.upload_time(d, request.nbytes)
            self.work = Dropping(r)
            await self._sleep(rng.random() * (compute_time + upload))
            self._go_silent(r)
            return

        x, y = w.data.client(d)
        self.work = Training(request, rng, num_examples)
        self.ticket = w.executor.submit(TrainTask(d, r, request.weights, x, y, rng))
        await self._sleep(compute_time)
        self._finish(self.work)

    def _go_silent(self, r: int) -> None:
        self.work = None
        self.world.tally.record_drop(r, self.id, asyncio.get_running_loop().time())
        self.world.log.device(self.id, "dropped", round=r)

    def _finish(self, work: Training) -> None:
        """Collect the trained delta, encode it and send it (or hand it to SecAgg)."""
        w, d, request, rng = self.world, self.id, work.request, work.rng
        r = request.round
        self.work = None
        result = w.executor.collect(self.ticket)
        self.ticket = None
        delta = result.delta
        attack = w.attacks.get(d)
        if attack is not None:  # tamper before encode, as a compromised stock client would
            delta = attack.apply(delta)
        if w.tally.clip_norms:
            bound = w.aggregator.clip_bound(request.params)
            if bound is not None:  # ground truth for the report, never sent anywhere
                norm = l2_norm(delta)
                w.tally.record_norm(r, d, norm if math.isfinite(norm) else math.inf, bound)
        # encode's draws are noise (distributed DP shares): under system randomness they
        # come from the OS and the training stream, which stochastic rounding continues
        # below, stays seeded.
        noise = w.seeds.secret_after(rng)
        contribution = w.aggregator.encode(request.params, delta, work.num_examples, noise)
        if request.secagg is not None and w.secagg is not None:
            # Secure aggregation: the contribution leaves only masked (protocol round 2).
            # The raw delta too: a non-finite one keeps the device out (encode may zero it).
            w.secagg.start(d, r, request.secagg, contribution, rng, delta)
            return
        update = Update(r, d, contribution)
        upload = w.network.to_server(d, update)
        w.log.device(d, "update.sent", round=r, nbytes=update.nbytes, upload_s=upload,
                     train_loss=result.loss)

    # -- waiting, and resuming a wait from a checkpoint ------------------------
    async def _sleep(self, delay: float) -> None:
        """``asyncio.sleep(delay)``, on an alarm a checkpoint can see (devices that
        finish at one instant share one: :mod:`fedactors.runtime.alarms`)."""
        if delay <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        woken = loop.create_future()
        await self._until(woken, self.alarms.wake_at(loop, loop.time() + delay, self.id, woken))

    async def _until(self, woken: asyncio.Future, alarm: Alarm) -> None:
        self.wake = alarm
        try:
            await woken
        finally:
            alarm.leave(self.id)
            self.wake = None

    async def resume(self, woken: asyncio.Future, alarm: Alarm) -> None:
        """Carry on with ``self.work`` from a checkpoint: wait out the rest of it,
        finish it as :meth:`train` would have, then read any mail that came."""
        work = self.work
        assert work is not None
        self.round = work.round
        await self._until(woken, alarm)
        if isinstance(work, Dropping):
            self._go_silent(work.round)
        else:
            self._finish(work)
        self.round = None
        await self.run()

    def snapshot(self) -> DeviceSnapshot:
        """What this actor is doing, for a checkpoint taken while it waits."""
        if self.work is None or self.wake is None:
            raise RuntimeError(f"device {self.id} is not waiting: no clean cut to checkpoint")
        mail = list(self.mailbox)
        result = submitted = None
        if isinstance(self.work, Training):
            result = self.world.executor.result_if_done(self.ticket)
            submitted = None if result is not None else self.ticket
        return DeviceSnapshot(self.id, self.work, result, submitted, tuple(mail))


class DeviceDirectory:
    """Routes mail to device actors, activating them on demand."""

    def __init__(self, world: DeviceWorld, on_failure) -> None:
        self.world = world
        self.active: dict[int, DeviceActor] = {}
        self._tasks: dict[int, asyncio.Task] = {}
        self.alarms = AlarmClock()
        #: Called with a DeviceFailed; the run replaces it to stop at once.
        self.on_failure = on_failure
        # Only while a checkpoint is restored: its loop and each device's wake-up future.
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._woken: dict[int, asyncio.Future] = {}

    def deliver(self, device: int, message: Any) -> None:
        actor = self.active.get(device)
        if actor is None:
            actor = self.active[device] = DeviceActor(device, self.world, self.alarms)
            actor.mailbox.append(message)
            task = asyncio.get_running_loop().create_task(actor.run(), name=f"device-{device}")
            task.add_done_callback(lambda t, d=device: self._deactivate(d, t))
            self._tasks[device] = task
        else:
            actor.mailbox.append(message)

    def cancel_round(self, round_: int) -> None:
        """Stop every device still working on ``round_``: the server has closed it.

        Everything observable happens here, synchronously, so the round's end
        is complete the moment the server closes it (checkpoints rely on that).
        """
        for device in sorted(self.active):
            actor = self.active[device]
            if actor.round != round_:
                continue
            if actor.ticket is not None:
                self.world.executor.cancel(actor.ticket)
            self.world.log.device(device, "cut", round=round_)
            actor.round = None
            self._tasks[device].cancel()

    # -- checkpoints (FedBuff: devices are always mid-work) ---------------------
    def snapshot(self) -> tuple[DeviceSnapshot, ...]:
        """Every active device's work, taken at the end of an instant (all wait)."""
        return tuple(self.active[d].snapshot() for d in sorted(self.active))

    def pending_timers(self) -> list[tuple[asyncio.TimerHandle, Any]]:
        """Each alarm devices wait on, as the :class:`WakeUps` of its devices."""
        alarms = {id(actor.wake): actor.wake for actor in self.active.values()
                  if actor.wake is not None and actor.wake.pending}
        return [(alarm.handle, alarm.saved()) for alarm in alarms.values()]

    def restore(self, loop: asyncio.AbstractEventLoop, snapshots: Sequence[DeviceSnapshot]) -> None:
        """Re-create the devices of a checkpoint, their work and their mail.

        Training not yet run is resubmitted in its original order, so the
        executor batches exactly what the uninterrupted run batched; their
        wake-up timers come next, from :meth:`restore_timer`, in the order of
        every pending timer of the checkpoint.
        """
        executor = self.world.executor
        self._loop = loop
        self._woken = {}
        for snap in sorted(snapshots, key=lambda s: (s.submitted is None, s.submitted or 0)):
            actor = self.active[snap.device] = DeviceActor(snap.device, self.world, self.alarms)
            actor.work = snap.work
            if isinstance(snap.work, Training):
                if snap.result is not None:
                    actor.ticket = executor.put_result(snap.result)
                else:
                    x, y = self.world.data.client(snap.device)
                    actor.ticket = executor.submit(TrainTask(
                        snap.device, snap.work.round, snap.work.request.weights, x, y,
                        snap.work.rng))
            for message in snap.mail:
                actor.mailbox.append(message)
            self._woken[snap.device] = loop.create_future()

    def restore_timer(self, what: Any, when: float, priority: int) -> None:
        """Set restored devices' wake-ups (see :meth:`restore`): a :class:`WakeUps`,
        or one device (checkpoints written before devices shared alarms)."""
        assert self._loop is not None, "restore() first"
        for device in what.keys if isinstance(what, WakeUps) else (what,):
            self.active[device].wake = self.alarms.wake_at(
                self._loop, when, device, self._woken[device], priority)

    def start_restored(self) -> None:
        """Start the restored devices' tasks, once all their timers are set."""
        assert self._loop is not None, "restore() first"
        for device in sorted(self._woken):
            actor = self.active[device]
            task = self._loop.create_task(actor.resume(self._woken[device], actor.wake),
                                    name=f"device-{device}")
            task.add_done_callback(lambda t, d=device: self._deactivate(d, t))
            self._tasks[device] = task
        self._woken = {}

    async def shutdown(self) -> None:
        """Stop every device still working when the run ends."""
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _deactivate(self, device: int, task: asyncio.Task) -> None:
        actor = self.active.pop(device)
        del self._tasks[device]
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # A bug in a device (or its model, or its data) must stop the run at
            # once, naming the device whose own work raises.
            if isinstance(exc, TrainingFailed):
                culprit, cause, round_ = exc.device, exc.cause, exc.round
            else:
                culprit, cause, round_ = device, exc, actor.round
            kind = self.world.fleet.kind(culprit) if culprit is not None else "?"
            self.on_failure(DeviceFailed(culprit, kind, round_, cause, self.world.work))
            return
        if actor.mailbox:  # mail that came in as the task ended
            pending, actor.mailbox = list(actor.mailbox), deque()
            for message in pending:
                self.deliver(device, message)
