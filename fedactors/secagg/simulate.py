"""Run all four rounds (five in malicious-server mode) in one process, for tests and benchmarks.

The actor runtime replaces this driver; it exists so the protocol can be checked end to end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Optional, Union

import numpy as np

from fedactors.secagg import client, keys, server
from fedactors.secagg.graph import CommGraph
from fedactors.secagg.messages import Abort, SecAggConfig, SecAggResult

# drop_at[u] = s means device u sends nothing from its step s on, steps numbering the messages
# a device sends: 0 advertise keys (0 = never advertises), 1 share keys, 2 masked input, then
# 3 unmask response; in malicious mode 3 is the signed view and the unmask response is 4.
ADVERTISE, SHARE, MASKED, UNMASK = 0, 1, 2, 3
SIGN_VIEW, MALICIOUS_UNMASK = 3, 4

#: ``tamper(step, received, replies) -> replies``: a lying server. Called after each server
#: step (``"collect_keys"``, ``"collect_shares"``, ``"collect_masked"``, ``"collect_views"``)
#: with the messages that step received and its honest replies (a dict, or an Abort); what it
#: returns is what the devices get. The server's own bookkeeping stays honest.
Tamper = Callable[[str, Sequence, Union[dict, Abort]], Union[dict, Abort]]


@dataclass
class SimulationTrace:
    result: Union[SecAggResult, Abort]
    server_inbox: list = field(default_factory=list)  # every message the server received
    client_states: dict = field(default_factory=dict)
    client_aborts: dict = field(default_factory=dict)
    bytes_to_server: int = 0
    bytes_from_server: int = 0


def signing_keys(ids: Sequence[int], rngs: Mapping[int, np.random.Generator]
                 ) -> dict[int, keys.SigningKey]:
    """Each device's long-term key, from a child of its generator: its protocol stream (and so
    its X25519 keys, shares and masks) is the same with or without the consistency check."""
    return {u: keys.generate_signing_key(rngs[u].spawn(1)[0]) for u in ids}


def run_protocol(
    inputs: Mapping[int, np.ndarray], graph: CommGraph, modulus_bits: int,
    rng: np.random.Generator, drop_at: Mapping[int, int] | None = None, round_id: int = 0,
    malicious: bool = False, tamper: Optional[Tamper] = None,
) -> SimulationTrace:
    """Inputs are already-quantized uint vectors in [0, 2**modulus_bits).

    ``malicious``: run the malicious-server mode (signed views, a PKI of every device's key).
    ``tamper``: make the server lie (see ``Tamper``)."""
    drop_at = dict(drop_at or {})
    ids = sorted(inputs)
    if set(ids) != set(graph.ids):
        raise ValueError("inputs and graph must cover the same device ids")
    dim = int(np.asarray(inputs[ids[0]]).shape[0])
    rngs = dict(zip(ids, rng.spawn(len(ids))))
    signing = signing_keys(ids, rngs) if malicious else {}
    pki = MappingProxyType({u: k.public for u, k in signing.items()})
    cfg = SecAggConfig(round_id, graph, modulus_bits, dim, malicious, pki)
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
        states[u], msg = client.advertise_keys(cfg, u, rngs[u], signing.get(u))
        if sends(u, ADVERTISE):
            inbox.append(msg)
    steps = [
        (server.collect_keys, lambda u, m: client.share_keys(states[u], m, rngs[u]), SHARE),
        (server.collect_shares, lambda u, m: client.masked_input(states[u], m, inputs[u]), MASKED),
    ]
    if malicious:
        steps.append((server.collect_masked,
                      lambda u, m: client.sign_view(states[u], m, signing[u]), SIGN_VIEW))
    steps.append((server.collect_views if malicious else server.collect_masked,
                  lambda u, m: client.unmask(states[u], m),
                  MALICIOUS_UNMASK if malicious else UNMASK))
    for server_step, client_step, step in steps:
        received = deliver(inbox)
        srv, replies = server_step(srv, received)
        if tamper is not None:
            replies = tamper(server_step.__name__, received, replies)
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
