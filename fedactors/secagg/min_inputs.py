"""The fewest inputs a securely aggregated sum may have, and who can enforce it.

Two inputs at least, always: a "sum" of one input is that input. With
distributed DP noise each device adds only ``1 / min_survivors`` of the noise,
so a sum of fewer than ``min_survivors`` inputs carries less noise than the
privacy accounting charges: the server must not learn it, not merely decline
to release it afterwards. ``SecAggConfig.min_inputs`` carries the floor into
the protocol, where the server aborts before unmasking a smaller sum and, on
the complete graph, every device refuses to help unmask one.
"""

from __future__ import annotations

from typing import Any

from fedactors.errors import ConfigError
from fedactors.secagg.messages import MIN_INPUTS
from fedactors.secagg.option import SecureAggregation


def min_inputs_for(aggregator: Any) -> int:
    """The fewest masked inputs whose sum the server may unmask under ``aggregator`` (an
    ``Aggregator``: typed loosely, as ``option.check_aggregator``, since secure aggregation
    sits below the aggregation layer)."""
    release = aggregator.private_release()
    if release is None or release.min_survivors is None:
        return MIN_INPUTS
    return max(MIN_INPUTS, int(release.min_survivors))


def check_min_inputs(option: SecureAggregation, aggregator: Any,
                     most_selected: int) -> None:
    """Refuse a malicious server that the devices could not hold to the floor.

    Against an honest-but-curious server the floor holds by the protocol (the
    server aborts). A malicious server skips that check; on the complete graph
    the devices still catch it (each sees the whole alive list), but on a
    SecAgg+ sparse graph each device sees only its own neighbourhood, so a sum
    of fewer than ``min_survivors`` noise shares could be unmasked. Rounds of
    up to ``most_selected`` devices are considered.
    """
    need = min_inputs_for(aggregator)
    if need > MIN_INPUTS and option.malicious and option.uses_sparse_graph(most_selected):
        raise ConfigError(
            "secure_aggregation",
            f"server='malicious' with a sparse (SecAgg+) graph cannot be held to the "
            f"aggregator's min_survivors={need}: no device sees the whole sum, so a lying "
            "server could unmask fewer noise shares than the accounting charges; use "
            "graph='complete', or an honest-but-curious server",
        )
