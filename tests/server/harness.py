"""A small simulated world with a stand-in trainer, for exact-instant tests.

The executor returns a fixed delta per device (its id + 1 everywhere), so the
tests exercise the actors, clock and aggregation without TensorFlow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from fedactors.aggregation.base import Aggregator
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.data.federated import FederatedData
from fedactors.devices.availability import Availability
from fedactors.devices.byzantine import Byzantine
from fedactors.devices.fleet import Fleet
from fedactors.devices.profile import DeviceClass, NetworkProfile
from fedactors.privacy.spec import Privacy
from fedactors.reporting.events import EventLog
from fedactors.scenarios.spec import Scenario
from fedactors.seeding import SeedTree
from fedactors.server.fedbuff import FedBuff
from fedactors.server.rounds import Rounds
from fedactors.simulation import Actors, assemble
from fedactors.training.executor import Executor, TrainResult, TrainTask

DIM = 3
#: A link so fast that transfers take nanoseconds: arrival times are ~compute times.
INSTANT = NetworkProfile(rtt=0.0, uplink=1e15, downlink=1e15)


class DeviceIdDelta(Executor):
    def run_batch(self, tasks: Sequence[TrainTask]) -> list[TrainResult]:
        return [
            TrainResult(t.device, t.round, np.full(DIM, t.device + 1.0, np.float32), 0.0)
            for t in tasks
        ]


def device(name: str, seconds: float, examples: int = 100, dropout: float = 0.0,
           count: int = 1, availability: Optional[Availability] = None) -> DeviceClass:
    """``count`` devices that each need ``seconds`` of simulated compute for one epoch."""
    extra = {} if availability is None else {"availability": availability}
    return DeviceClass(name, count=count, compute=examples / seconds, network=INSTANT,
                       dropout=dropout, examples=examples, **extra)


@dataclass
class World:
    actors: Actors
    log: EventLog
    fleet: Fleet


def build_world(classes: Sequence[DeviceClass], rounds: Rounds, seed: int = 0,
                aggregator: Optional[Aggregator] = None,
                byzantine: Optional[Byzantine] = None,
                mode: Optional[FedBuff] = None, privacy: Optional[Privacy] = None) -> World:
    loop = asyncio.get_running_loop()
    seeds = SeedTree(seed)
    fleet = Fleet.build(classes, seeds.generator("fleet"))
    clients = [
        (np.zeros((int(n), 1), np.float32), np.zeros(int(n), np.float32)) for n in fleet.examples
    ]
    data = FederatedData.from_arrays(clients, clients[0])
    scenario = Scenario(name="harness", model=lambda: None, loss="mse", data=lambda f, r: data,
                        fleet=list(classes), rounds=rounds, mode=mode,
                        aggregator=aggregator or WeightedMean(), byzantine=byzantine,
                        privacy=privacy)
    budget = None
    if scenario.aggregator.private_release() is not None:
        from fedactors.privacy.budget import PrivacyBudget

        budget = PrivacyBudget.for_scenario(scenario, fleet.size)
    log = EventLog(loop.time, keep=True)
    actors = assemble(loop=loop, fleet=fleet, data=data, executor=DeviceIdDelta(),
                      scenario=scenario, evaluate=lambda w: {}, seeds=seeds, log=log,
                      initial_weights=np.zeros(DIM, np.float32), privacy=budget)
    return World(actors, log, fleet)


def events(world: World, name: str) -> list[dict]:
    return [e for e in world.log.records if e["event"] == name]
