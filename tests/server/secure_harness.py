"""The exact-instant harness of harness.py, with secure aggregation on."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from fedactors.aggregation.base import Aggregate, Aggregator, Contributions, RoundContext
from fedactors.aggregation.clipping import Clipped
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.data.federated import FederatedData
from fedactors.devices.fleet import Fleet
from fedactors.devices.profile import DeviceClass
from fedactors.reporting.events import EventLog
from fedactors.scenarios.spec import Scenario
from fedactors.secagg import protocol
from fedactors.secagg.costs import CryptoCosts
from fedactors.secagg.option import SecureAggregation
from fedactors.seeding import SeedTree
from fedactors.server.rounds import Rounds
from fedactors.simulation import assemble
from tests.server.harness import DIM, DeviceIdDelta, World


def patch_protocol(monkeypatch: Any, mode: str = "real", **steps: Any) -> None:
    """Replace some steps of the ``mode`` protocol for one test: the runtime calls every
    step through ``fedactors.secagg.protocol.PROTOCOLS[mode]``, chosen per round."""
    current = protocol.PROTOCOLS[mode]
    monkeypatch.setitem(protocol.PROTOCOLS, mode, dataclasses.replace(current, **steps))


class Recording(Aggregator[Any]):
    """Wraps a stage and keeps every ``Contributions`` the server handed it."""

    def __init__(self, inner: Aggregator) -> None:
        self.inner = inner
        self.seen: list[Contributions] = []
        self.needs_individual_updates = inner.needs_individual_updates

    def initial_state(self, dim: int) -> Any:
        return self.inner.initial_state(dim)

    def client_params(self, state: Any) -> Any:
        return self.inner.client_params(state)

    def encode(self, params, delta, num_examples, rng):
        return self.inner.encode(params, delta, num_examples, rng)

    def aggregate(self, state: Any, contributions: Contributions, ctx: RoundContext) -> Aggregate:
        self.seen.append(contributions)
        return self.inner.aggregate(state, contributions, ctx)

    def contribution_bounds(self, params, dim):
        return self.inner.contribution_bounds(params, dim)

    def private_release(self):
        return self.inner.private_release()


def clipped_mean(clip: float = 100.0) -> Aggregator:
    return Clipped(clip, WeightedMean(weighted=False))


def build_secure_world(classes: Sequence[DeviceClass], rounds: Rounds,
                       secure: SecureAggregation, aggregator: Optional[Aggregator] = None,
                       seed: int = 0, crypto_time: bool = False) -> World:
    """A secure world whose instants are exact: the protocol's compute is free unless
    ``crypto_time`` keeps ``secure.costs`` (tests of the cost model set it)."""
    if secure is not None and not crypto_time:
        secure = dataclasses.replace(secure, costs=CryptoCosts.free())
    loop = asyncio.get_running_loop()
    seeds = SeedTree(seed)
    fleet = Fleet.build(classes, seeds.generator("fleet"))
    clients = [
        (np.zeros((int(n), 1), np.float32), np.zeros(int(n), np.float32)) for n in fleet.examples
    ]
    data = FederatedData.from_arrays(clients, clients[0])
    scenario = Scenario(name="secure-harness", model=lambda: None, loss="mse",
                        data=lambda f, r: data, fleet=list(classes), rounds=rounds,
                        aggregator=aggregator or clipped_mean(), secure_aggregation=secure)
    log = EventLog(loop.time, keep=True)
    actors = assemble(loop=loop, fleet=fleet, data=data, executor=DeviceIdDelta(),
                      scenario=scenario, evaluate=lambda w: {}, seeds=seeds, log=log,
                      initial_weights=np.zeros(DIM, np.float32))
    return World(actors, log, fleet)
