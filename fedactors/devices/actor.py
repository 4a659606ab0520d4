"""Device actors: one mailbox each, activated when mail arrives.

Devices are *virtual actors*: an actor exists (with its mailbox and task) only
while it has work, and its lasting identity is its row in the fleet plus its
data. That is how the runtime holds 100,000 registered devices without
100,000 idle tasks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from fedactors.aggregation.base import Aggregator
from fedactors.data.federated import FederatedData
from fedactors.devices.byzantine import Attack
from fedactors.devices.fleet import Fleet
from fedactors.messages import TrainRequest, Update
from fedactors.reporting.events import EventLog
from fedactors.runtime.loop import DELIVERY
from fedactors.secagg.envelopes import ToDevice
from fedactors.seeding import SeedTree
from fedactors.training.executor import Executor, TrainTask


@dataclass
class RoundTally:
    """Ground truth the simulator knows and the server does not: who went silent when."""

    dropped: dict[int, dict[int, float]]

    @classmethod
    def empty(cls) -> RoundTally:
        return cls({})

    def record_drop(self, round_: int, device: int, t: float) -> None:
        self.dropped.setdefault(round_, {})[device] = t

    def dropped_by(self, round_: int, t: float) -> set[int]:
        return {d for d, when in self.dropped.get(round_, {}).items() if when <= t}


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


class DeviceActor:
    """One device while it has work: a mailbox drained in order, one message at a time.

    The actor is driven by callbacks on the virtual clock rather than by an
    asyncio Task: training is "start, then one timer for when the simulated
    compute is over", so a Task (its creation, its step handles, its done
    callback and the future of ``asyncio.sleep``) bought nothing but cost
    several event-loop handles per device and round. Mail that arrives while
    a timer is pending waits in the mailbox, exactly as it waited behind the
    Task's ``await`` before.
    """

    __slots__ = ("id", "world", "mailbox", "round", "ticket", "_timer", "_directory")

    def __init__(self, device: int, world: DeviceWorld, directory: DeviceDirectory) -> None:
        self.id = device
        self.world = world
        self.mailbox: deque = deque()
        self.round: Optional[int] = None  # the round being worked on, if any
        self.ticket: Optional[int] = None  # its training submitted to the executor
        self._timer: Optional[asyncio.TimerHandle] = None  # set while it waits on the clock
        self._directory = directory

    @property
    def waiting(self) -> bool:
        return self._timer is not None

    def drain(self) -> None:
        """Handle mail until the actor waits on the clock or the mailbox is empty."""
        try:
            while self._timer is None and self.mailbox:
                message = self.mailbox.popleft()
                if isinstance(message, TrainRequest):
                    self.round = message.round
                    self._start_training(message)
                    if self._timer is None:  # finished without waiting (not a current path)
                        self.round = None
                elif isinstance(message, ToDevice) and self.world.secagg is not None:
                    self.world.secagg.handle(self.id, message)
                else:
                    self.world.log.device(self.id, "message.unknown",
                                          kind=type(message).__name__)
        except Exception as exc:  # a bug in a device must stop the run, not vanish
            self._directory.failed(self, exc)
            return
        if self._timer is None:
            self._directory.deactivate(self)

    def stop(self) -> None:
        """Abandon the current work and mail (the round is closed or the run is over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.mailbox.clear()

    def _start_training(self, request: TrainRequest) -> None:
        w, d, r = self.world, self.id, request.round
        loop = asyncio.get_running_loop()
        rng = w.seeds.generator("device", r, d)
        num_examples = w.data.num_examples(d)
        compute_time = w.epochs * num_examples / float(w.fleet.compute[d])
        w.log.device(d, "request.received", round=r, compute_s=compute_time)

        if rng.random() < w.fleet.dropout[d]:
            # Silent part-way through its work: no update, no goodbye.
            upload = w.fleet.upload_time(d, request.nbytes)
            self._timer = loop.call_later(rng.random() * (compute_time + upload), self._resume,
                                          self._dropped, r, priority=DELIVERY)
            return

        x, y = w.data.client(d)
        self.ticket = w.executor.submit(TrainTask(d, r, request.weights, x, y, rng))
        self._timer = loop.call_later(compute_time, self._resume, self._trained, request, rng,
                                      num_examples, priority=DELIVERY)

    def _resume(self, step, *args: Any) -> None:
        """A timer fired: finish the waiting step, then go on with the mailbox."""
        self._timer = None
        try:
            step(*args)
        except Exception as exc:
            self._directory.failed(self, exc)
            return
        self.round = None
        self.drain()

    def _dropped(self, r: int) -> None:
        w = self.world
        w.tally.record_drop(r, self.id, asyncio.get_running_loop().time())
        w.log.device(self.id, "dropped", round=r)

    def _trained(self, request: TrainRequest, rng: np.random.Generator, num_examples: int) -> None:
        w, d, r = self.world, self.id, request.round
        result = w.executor.collect(self.ticket)
        self.ticket = None
        delta = result.delta
        attack = w.attacks.get(d)
        if attack is not None:  # tamper before encode, as a compromised stock client would
            delta = attack.apply(delta)
        contribution = w.aggregator.encode(request.params, delta, num_examples, rng)
        if request.secagg is not None and w.secagg is not None:
            # Secure aggregation: the contribution leaves only masked (protocol round 2).
            w.secagg.start(d, r, request.secagg, contribution, rng)
            return
        update = Update(r, d, contribution)
        upload = w.network.to_server(d, update)
        w.log.device(d, "update.sent", round=r, nbytes=update.nbytes, upload_s=upload,
                     train_loss=result.loss)


class DeviceDirectory:
    """Routes mail to device actors, activating them on demand."""

    def __init__(self, world: DeviceWorld, on_failure) -> None:
        self.world = world
        self.active: dict[int, DeviceActor] = {}
        self._on_failure = on_failure

    def deliver(self, device: int, message: Any) -> None:
        actor = self.active.get(device)
        if actor is None:
            actor = self.active[device] = DeviceActor(device, self.world, self)
            actor.mailbox.append(message)
            actor.drain()
        else:
            # Busy (waiting on the clock): the mail is handled when it is done.
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
                actor.ticket = None
            self.world.log.device(device, "cut", round=round_)
            actor.round = None
            actor.stop()
            self.deactivate(actor)

    async def shutdown(self) -> None:
        """Stop every device still working when the run ends."""
        for actor in list(self.active.values()):
            actor.stop()
            self.deactivate(actor)

    def deactivate(self, actor: DeviceActor) -> None:
        if self.active.get(actor.id) is actor:
            del self.active[actor.id]

    def failed(self, actor: DeviceActor, exc: Exception) -> None:
        actor.stop()
        self.deactivate(actor)
        self._on_failure(exc)
