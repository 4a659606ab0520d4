"""smart_home (scenarios/smart_home.py) with secure aggregation on.

Same fleet, data, model and rounds; the server now learns only the sum of
the surviving devices' clipped deltas, through SecAgg run between the device
actors and the server actor (with 39 selected devices, below the sparse-graph
threshold, so the complete graph of the original protocol). Each device clips
its delta to L2 norm 2 on the device (Clipped), so every coordinate is within
[-2, 2] and the fixed-point sum cannot wrap; see docs/secure_aggregation.md
for the modulus, the quantization error and what the server learns.

Devices also go silent during the protocol: 2% before each of their four
protocol messages, on top of their class's training dropout.
"""

import dataclasses

import smart_home

from fedactors import SecureAggregation
from fedactors.aggregation.clipping import Clipped
from fedactors.aggregation.fedavg import WeightedMean

scenario = dataclasses.replace(
    smart_home.scenario,
    name="smart_home_secure",
    description="smart_home with SecAgg: the server sees only the sum of clipped deltas.",
    aggregator=Clipped(2.0, WeightedMean(weighted=False)),
    secure_aggregation=SecureAggregation(step_timeout=10.0, step_dropout=0.02),
)
