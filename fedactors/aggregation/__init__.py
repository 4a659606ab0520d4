"""Pluggable, composable aggregation stages."""

from fedactors.aggregation.base import (
    Aggregate,
    Aggregator,
    Contribution,
    Contributions,
    IndividualUpdatesHidden,
    PlainContributions,
    PrivateRelease,
    RoundContext,
    SkellamRelease,
    SummedContributions,
    TreeRelease,
    Wrapper,
)
from fedactors.aggregation.clipping import Clipped
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.aggregation.robust import Krum, Median, TrimmedMean

__all__ = [
    "Aggregate",
    "Aggregator",
    "Clipped",
    "Contribution",
    "Contributions",
    "IndividualUpdatesHidden",
    "Krum",
    "Median",
    "PlainContributions",
    "PrivateRelease",
    "TreeRelease",
    "RoundContext",
    "SkellamRelease",
    "SummedContributions",
    "TrimmedMean",
    "WeightedMean",
    "Wrapper",
]
