"""Run all four rounds in one process, for tests and benchmarks.

The actor runtime replaces this driver; it exists so the protocol can be checked end to end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from fedactors.secagg import client, server
from fedactors.secagg.graph import CommGraph
from fedactors.secagg.messages import Abort, SecAggConfig, SecAggResult

# drop_at[u] = s means device u sends nothing from step s on (0 = never advertises keys).
ADVERTISE, SHARE, MASKED, UNMASK = 0, 1, 2, 3


@dataclass
class SimulationTrace:
    result: Union[SecAggResult, Abort]
    server_inbox: list = field(default_factory=list)  # every message the server received
    client_states: dict = field(default_factory=dict)
    client_aborts: dict = field(default_factory=dict)
    bytes_to_server: int = 0
    bytes_from_server: int = 0


def run_protocol(
    inputs: Mapping[int, np.ndarray], graph: CommGraph, modulus_bits: int,
    rng: np.random.Generator, drop_at: Mapping[int, int] | None = None, round_id: int = 0,
) -> SimulationTrace:
    """Inputs are already-quantized uint vectors in [0, 2**modulus_bits)."""
    drop_at = dict(drop_at or {})
    ids = sorted(inputs)
    if set(ids) != set(graph.ids):
        raise ValueError("inputs and graph must cover the same device ids")
    dim = int(np.asarray(inputs[ids[0]]).shape[0])
    cfg = SecAggConfig(round_id, graph, modulus_bits, dim)
    rngs = dict(zip(ids, rng.spawn(len(ids))))
    trace = SimulationTrace(result=Abort("server", "start", "not run"))
    states: dict[int, client.ClientState] = {}

    def sends(u: int, step: int) -> bool:
        return drop_at.get(u, 99) > step and u not in trace.client_aborts

    def deliver(msgs: list) -> list:
        trace.server_inbox.extend(msgs)
        trace.bytes_to_server += sum(m.nbytes for m in msgs)
        return msgs

    srv = server.start(cfg)
    inbox = []
    for u in ids:
        states[u], msg = client.advertise_keys(cfg, u, rngs[u])
        if sends(u, ADVERTISE):
            inbox.append(msg)
    steps = [
        (server.collect_keys, lambda u, m: client.share_keys(states[u], m, rngs[u]), SHARE),
        (server.collect_shares, lambda u, m: client.masked_input(states[u], m, inputs[u]), MASKED),
        (server.collect_masked, lambda u, m: client.unmask(states[u], m), UNMASK),
    ]
    for server_step, client_step, step in steps:
        srv, replies = server_step(srv, deliver(inbox))
        if isinstance(replies, Abort):
            trace.result, trace.client_states = replies, states
            return trace
        trace.bytes_from_server += sum(m.nbytes for m in replies.values())
        inbox = []
        for u, m in replies.items():
            if not sends(u, step):
                continue
            states[u], out = client_step(u, m)
            if isinstance(out, Abort):
                trace.client_aborts[u] = out
            else:
                inbox.append(out)
    srv, trace.result = server.finish(srv, deliver(inbox))
    trace.client_states = states
    return trace
