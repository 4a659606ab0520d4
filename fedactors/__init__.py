"""fedactors: federated learning simulated with asyncio actors on a virtual clock.

The names a scenario file needs are importable from here; TensorFlow is only
imported when a run starts, so loading and validating a scenario is quick.
"""

from fedactors.aggregation import WeightedMean
from fedactors.data.federated import FederatedData
from fedactors.devices.availability import AlwaysOnline, Diurnal, OnlineShare, Trace
from fedactors.devices.distributions import Constant, LogNormal, Uniform
from fedactors.devices.fleet import Fleet
from fedactors.devices.profile import DeviceClass, NetworkProfile
from fedactors.scenarios.spec import Scenario
from fedactors.server.fedbuff import FedBuff
from fedactors.server.optimizers import FedAdam, FedAvgStep, FedYogi
from fedactors.server.rounds import Rounds
from fedactors.training.spec import LocalTraining

__all__ = [
    "AlwaysOnline",
    "Constant",
    "DeviceClass",
    "Diurnal",
    "FedAdam",
    "FedAvgStep",
    "FedBuff",
    "FedYogi",
    "FederatedData",
    "Fleet",
    "LocalTraining",
    "LogNormal",
    "NetworkProfile",
    "OnlineShare",
    "Rounds",
    "Scenario",
    "Trace",
    "Uniform",
    "WeightedMean",
]
