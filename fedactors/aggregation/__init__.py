"""Pluggable, composable aggregation stages."""

from fedactors.aggregation.base import (
    Aggregate,
    Aggregator,
    Contribution,
    Contributions,
    IndividualUpdatesHidden,
    PlainContributions,
    RoundContext,
    SummedContributions,
)
from fedactors.aggregation.fedavg import WeightedMean

__all__ = [
    "Aggregate",
    "Aggregator",
    "Contribution",
    "Contributions",
    "IndividualUpdatesHidden",
    "PlainContributions",
    "RoundContext",
    "SummedContributions",
    "WeightedMean",
]
