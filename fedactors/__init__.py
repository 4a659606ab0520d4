"""fedactors: federated learning simulated with asyncio actors on a virtual clock.

The names a scenario file needs are importable from here; TensorFlow is only
imported when a run starts, so loading and validating a scenario is quick
(``DPMean``, which needs it, is imported when first used).
"""

import importlib
from typing import Any

from fedactors.aggregation import Clipped, Krum, Median, TrimmedMean, WeightedMean
from fedactors.data.federated import FederatedData
from fedactors.devices.availability import AlwaysOnline, Diurnal, OnlineShare, Trace
from fedactors.devices.byzantine import Byzantine, Scaling, SignFlip
from fedactors.devices.distributions import Constant, LogNormal, Uniform
from fedactors.devices.fleet import Fleet
from fedactors.devices.profile import DeviceClass, NetworkProfile
from fedactors.privacy.spec import Privacy
from fedactors.scenarios.spec import Scenario
from fedactors.secagg.costs import CryptoCosts
from fedactors.secagg.option import SecureAggregation
from fedactors.server.fedbuff import FedBuff
from fedactors.server.optimizers import FedAdam, FedAvgStep, FedYogi
from fedactors.server.rounds import Rounds
from fedactors.training.spec import LocalTraining

#: Names imported on first use (they pull in TensorFlow).
_LAZY = {"DPMean": "fedactors.privacy.dp_mean"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedactors' has no attribute {name!r}")


__all__ = [
    "AlwaysOnline",
    "Byzantine",
    "Clipped",
    "Constant",
    "DPMean",
    "DeviceClass",
    "Diurnal",
    "FedAdam",
    "FedAvgStep",
    "FedBuff",
    "FedYogi",
    "FederatedData",
    "Krum",
    "Fleet",
    "LocalTraining",
    "LogNormal",
    "Median",
    "NetworkProfile",
    "OnlineShare",
    "Privacy",
    "Rounds",
    "Scaling",
    "Scenario",
    "SignFlip",
    "SecureAggregation",
    "CryptoCosts",
    "Trace",
    "TrimmedMean",
    "Uniform",
    "WeightedMean",
]
