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
from fedactors.aggregation.robust import Krum, Median, TrimmedMean

__all__ = [
    "Aggregate",
    "Aggregator",
    "Contribution",
    "Contributions",
    "IndividualUpdatesHidden",
    "Krum",
    "Median",
    "PlainContributions",
    "RoundContext",
    "SummedContributions",
    "TrimmedMean",
    "WeightedMean",
]
