"""The Scenario: everything one simulated federated run needs, validated up front."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from fedactors.aggregation.base import Aggregator
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.data.federated import FederatedData
from fedactors.devices.fleet import Fleet
from fedactors.devices.profile import DeviceClass
from fedactors.errors import ConfigError
from fedactors.server.fedbuff import FedBuff
from fedactors.server.optimizers import FedAvgStep, ServerOptimizer
from fedactors.server.rounds import Rounds
from fedactors.training.spec import LocalTraining

#: ``data(fleet, rng)`` returns each device's private data plus the server's test set.
DataBuilder = Callable[[Fleet, np.random.Generator], FederatedData]


@dataclass(frozen=True)
class Scenario:
    """A federated-learning experiment: fleet, data, model, rounds, aggregation.

    See docs/scenarios.md for every field.
    """

    name: str
    model: Callable[[], Any]
    loss: Any
    data: DataBuilder
    fleet: Sequence[DeviceClass]
    rounds: Rounds = field(default_factory=Rounds)
    training: LocalTraining = field(default_factory=LocalTraining)
    metrics: Sequence[Any] = ("accuracy",)
    aggregator: Aggregator = field(default_factory=WeightedMean)
    server_optimizer: ServerOptimizer = field(default_factory=FedAvgStep)
    seed: int = 0
    description: str = ""
    #: None: synchronous rounds; FedBuff(...): asynchronous buffered aggregation.
    mode: Optional[FedBuff] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", f"must be a non-empty string, got {self.name!r}")
        if not callable(self.model):
            raise ConfigError("model", f"must be a function returning a keras.Model, got {self.model!r}")
        if not callable(self.data):
            raise ConfigError("data", f"must be a function (fleet, rng) -> FederatedData, got {self.data!r}")
        fleet = tuple(self.fleet) if isinstance(self.fleet, (list, tuple)) else None
        if not fleet:
            raise ConfigError("fleet", f"must be a non-empty list of DeviceClass, got {self.fleet!r}")
        for i, cls_ in enumerate(fleet):
            if not isinstance(cls_, DeviceClass):
                raise ConfigError(f"fleet[{i}]", f"must be a DeviceClass, got {cls_!r}")
        object.__setattr__(self, "fleet", fleet)
        for name, kind in (("rounds", Rounds), ("training", LocalTraining),
                           ("aggregator", Aggregator), ("server_optimizer", ServerOptimizer)):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(name, f"must be a {kind.__name__}, got {getattr(self, name)!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError("seed", f"must be a whole number >= 0, got {self.seed!r}")
        if self.mode is not None:
            self._check_mode()
        if self.mode is None and self.rounds.cohort_size > self.fleet_size:
            raise ConfigError(
                "rounds.cohort_size",
                f"{self.rounds.cohort_size} is larger than the fleet ({self.fleet_size} devices)",
            )

    @property
    def fleet_size(self) -> int:
        return sum(c.count for c in self.fleet)

    def _check_mode(self) -> None:
        if not isinstance(self.mode, FedBuff):
            raise ConfigError("mode", f"must be None (synchronous rounds) or FedBuff(...), got {self.mode!r}")
        if self.mode.buffer_size > self.fleet_size:
            raise ConfigError(
                "mode.buffer_size",
                f"{self.mode.buffer_size} is larger than the fleet ({self.fleet_size} devices): "
                "a buffer holds distinct devices",
            )
        # A DP aggregator is calibrated for a cohort of expected_count; in FedBuff
        # each release is over one buffer of buffer_size updates.
        expected = getattr(self.aggregator, "expected_count", None)
        if expected is not None and expected != self.mode.buffer_size:
            raise ConfigError(
                "mode.buffer_size",
                f"{self.mode.buffer_size} differs from the aggregator's expected_count {expected}: "
                "each buffer is one DP release over buffer_size updates",
            )
