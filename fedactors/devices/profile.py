"""Device classes: what a kind of device in the fleet is like.

A class describes a population ("40 cameras, compute ~ LogNormal(300, 0.4)
examples/s, 20% dropout"); the fleet draws each device's own values from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from fedactors.devices.availability import AlwaysOnline, Availability
from fedactors.devices.distributions import Distribution, as_distribution
from fedactors.errors import ConfigError
from fedactors.validation import positive_int, probability

Value = Union[float, Distribution]


@dataclass(frozen=True)
class NetworkProfile:
    """Round-trip time in seconds; bandwidths in bits per second."""

    rtt: Value = 0.05
    uplink: Value = 10e6
    downlink: Value = 50e6

    def __post_init__(self) -> None:
        for name, minimum, strict in (("rtt", 0.0, False), ("uplink", 0.0, True),
                                      ("downlink", 0.0, True)):
            dist = as_distribution(getattr(self, name))
            dist.check(name, minimum, strict)
            object.__setattr__(self, name, dist)


@dataclass(frozen=True)
class DeviceClass:
    """A kind of device and how many of it the fleet holds.

    ``compute`` is local training speed in examples per simulated second;
    ``dropout`` the probability that a device goes silent part-way through a
    round; ``examples`` how many examples each device holds (the scenario's
    data function may use it).
    """

    name: str
    count: int
    compute: Value = 1000.0
    network: NetworkProfile = field(default_factory=NetworkProfile)
    availability: Availability = field(default_factory=AlwaysOnline)
    dropout: float = 0.0
    examples: Value = 100

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", f"must be a non-empty string, got {self.name!r}")
        positive_int("count", self.count)
        compute = as_distribution(self.compute)
        compute.check("compute", 0.0, True)
        object.__setattr__(self, "compute", compute)
        examples = as_distribution(self.examples)
        examples.check("examples", 1.0, False)
        object.__setattr__(self, "examples", examples)
        if not isinstance(self.network, NetworkProfile):
            raise ConfigError("network", f"must be a NetworkProfile, got {self.network!r}")
        if not isinstance(self.availability, Availability):
            raise ConfigError(
                "availability", f"must be an Availability model, got {self.availability!r}"
            )
        self.availability.validate("availability")
        probability("dropout", self.dropout)
