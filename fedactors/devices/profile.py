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
    """Round-trip time in seconds; bandwidths in bits per second.

    A message to or from a device takes ``rtt / 2`` plus its real size in bytes
    x 8 / the bandwidth (see ``Fleet.upload_time``). Each value is a number, the
    same for every device of the class, or a distribution (``Constant``,
    ``Uniform``, ``LogNormal``) drawn once per device when the fleet is built;
    numbers are stored as ``Constant``. A bad value raises ``ConfigError`` at
    construction.

    Args:
        rtt: Round-trip time in seconds, >= 0. Default 0.05 (50 ms).
        uplink: Device-to-server bandwidth in bits per second, > 0.
            Default 10e6 (10 Mbit/s).
        downlink: Server-to-device bandwidth in bits per second, > 0.
            Default 50e6 (50 Mbit/s).

    Examples:
        >>> import numpy as np
        >>> from fedactors import DeviceClass, Fleet, LogNormal, NetworkProfile
        >>> NetworkProfile(rtt=0.08, uplink=LogNormal(2e6, 0.7))
        NetworkProfile(rtt=Constant(value=0.08), uplink=LogNormal(median=2000000.0, sigma=0.7),
                       downlink=Constant(value=50000000.0))
        >>> phone = DeviceClass("phone", count=1, network=NetworkProfile(rtt=0.08, uplink=2e6))
        >>> fleet = Fleet.build([phone], np.random.default_rng(0))
        >>> fleet.upload_time(0, nbytes=1_000_000)  # 0.08 s / 2 + 8e6 bits / 2e6 bits/s
        4.04
    """

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

    Every numeric value is a number, the same for every device of the class, or
    a distribution (``Constant``, ``Uniform``, ``LogNormal``) drawn once per
    device when the fleet is built; numbers are stored as ``Constant``. A bad
    value raises ``ConfigError`` naming the field at construction.

    Args:
        name: Non-empty name of the class, unique within the fleet; it is each
            device's kind (``Fleet.kinds``).
        count: How many devices of this class the fleet holds (>= 1). Device
            ids are assigned class by class, in the order the classes are
            listed in ``Scenario.fleet``.
        compute: Local training speed in examples per simulated second (> 0).
            A device's compute time in a round is
            ``epochs * its examples / compute``. Default 1000.0.
        network: The devices' ``NetworkProfile`` (round-trip time and
            bandwidths). Default ``NetworkProfile()``.
        availability: When devices of this class can be selected:
            ``AlwaysOnline()`` (the default), ``OnlineShare``, ``Diurnal`` or
            ``Trace``; its options are checked here.
        dropout: Probability in [0, 1] that a device selected for a round goes
            silent at a uniformly random point of its compute and upload and
            never reports that round. Default 0.0.
        examples: Suggested number of examples per device (>= 1), drawn per
            device, rounded to a whole number (at least 1) and passed to the
            scenario's data function as ``Fleet.examples``. The simulator
            itself weights and times a device by the data that function
            gives it. Default 100.

    Examples:
        >>> import numpy as np
        >>> from fedactors import DeviceClass, Fleet, LogNormal, OnlineShare
        >>> phones = DeviceClass("phone", count=200, compute=LogNormal(300, 0.5),
        ...                      availability=OnlineShare(0.5), dropout=0.1, examples=60)
        >>> phones.examples  # a number becomes a Constant
        Constant(value=60)
        >>> laptops = DeviceClass("laptop", count=20, compute=2000.0)
        >>> Fleet.build([phones, laptops], np.random.default_rng(0)).size
        220
        >>> DeviceClass("phone", count=0)
        Traceback (most recent call last):
            ...
        fedactors.errors.ConfigError: count: must be >= 1, got 0
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
