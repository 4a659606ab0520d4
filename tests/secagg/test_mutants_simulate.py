"""In-process driver contracts: traffic accounting, who sends what, and clean refusals
(found by mutation testing)."""

from __future__ import annotations

import numpy as np
import pytest

from fedactors.secagg import server
from fedactors.secagg.graph import complete_graph
from fedactors.secagg.messages import (
    Abort,
    AdvertiseKeys,
    MaskedInput,
    SecAggConfig,
    SecAggResult,
    ShareKeys,
)
from fedactors.secagg.simulate import SimulationTrace, run_protocol

from .helpers import K, random_inputs

IDS = [1, 2, 3, 4, 5]
T = 3
DIM = 16
# Survivable (exact sum) and fatal (server aborts at unmasking / at share collection) patterns.
DROPS = [{}, {2: 0, 4: 2}, {1: 1}, {3: 3}, {1: 3, 2: 3, 3: 3}, {1: 1, 2: 1, 3: 1}]


def _run(drop_at: dict[int, int], seed: int = 0) -> SimulationTrace:
    rng = np.random.default_rng(seed)
    return run_protocol(random_inputs(IDS, rng, dim=DIM), complete_graph(IDS, T), K, rng, drop_at)


def _replayed_reply_bytes(trace: SimulationTrace) -> int:
    """Bytes of every reply the (pure) server sends when fed the trace's inbox step by step."""
    srv = server.start(SecAggConfig(0, complete_graph(IDS, T), K, DIM))
    total = 0
    steps = [(server.collect_keys, AdvertiseKeys), (server.collect_shares, ShareKeys),
             (server.collect_masked, MaskedInput)]
    for step, kind in steps:
        srv, replies = step(srv, [m for m in trace.server_inbox if isinstance(m, kind)])
        if isinstance(replies, Abort):
            return total
        total += sum(m.nbytes for m in replies.values())
    return total


@pytest.mark.parametrize("drop_at", DROPS)
def test_bytes_to_server_counts_every_message_the_server_received(drop_at: dict[int, int]) -> None:
    """bytes_to_server is the total size of the server's inbox over all four steps."""
    trace = _run(drop_at)
    assert trace.bytes_to_server == sum(m.nbytes for m in trace.server_inbox) > 0


@pytest.mark.parametrize("drop_at", DROPS)
def test_bytes_from_server_counts_every_reply_of_every_step(drop_at: dict[int, int]) -> None:
    """bytes_from_server is the total size of the server's replies in rounds 0-2."""
    trace = _run(drop_at)
    assert trace.bytes_from_server == _replayed_reply_bytes(trace) > 0


def test_a_device_dropped_at_advertise_sends_nothing() -> None:
    """drop_at[u] = 0: u never advertises keys, so no message from u reaches the server."""
    trace = _run({2: 0})
    assert isinstance(trace.result, SecAggResult)
    assert all(m.sender != 2 for m in trace.server_inbox)
    assert 2 not in trace.result.contributors
    assert sum(isinstance(m, AdvertiseKeys) for m in trace.server_inbox) == len(IDS) - 1


def test_inputs_and_graph_over_different_ids_are_refused() -> None:
    """The driver refuses inputs that do not cover exactly the graph's devices."""
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="same device ids"):
        run_protocol(random_inputs(IDS[:-1], rng, dim=DIM), complete_graph(IDS, T), K, rng)


def test_a_single_device_run_aborts_cleanly() -> None:
    """With one device the server refuses to unmask a 'sum' of one input: an Abort, no crash."""
    rng = np.random.default_rng(0)
    trace = run_protocol(random_inputs([7], rng, dim=DIM), complete_graph([7], 1), K, rng)
    assert isinstance(trace.result, Abort)
    assert trace.result.party == "server" and trace.result.step == "collect_masked"
