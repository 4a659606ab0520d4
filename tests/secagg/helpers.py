"""Shared fixtures for protocol tests: small deterministic setups."""

from __future__ import annotations

import numpy as np

from fedactors.secagg import client, server
from fedactors.secagg.graph import complete_graph
from fedactors.secagg.messages import SecAggConfig

K = 16
DIM = 64


def random_inputs(ids, rng, dim=DIM, k=K):
    return {u: rng.integers(0, 2**k, size=dim, dtype=np.uint64) for u in ids}


def run_to_delivery(n=5, t=3, seed=0, graph=None, round_id=0, signing=None, min_inputs=2):
    """Run rounds 0-1 honestly; return (config, states, deliveries, inputs, server, rngs).

    ``graph``: the communication graph (default: the complete graph over 1..n, t-of-n).
    ``signing``: every device's ``keys.SigningKey``, for a malicious-mode round (its PKI).
    """
    rng = np.random.default_rng(seed)
    graph = complete_graph(list(range(1, n + 1)), t) if graph is None else graph
    ids = sorted(graph.ids)
    pki = {u: k.public for u, k in (signing or {}).items()}
    cfg = SecAggConfig(round_id, graph, K, DIM, signing is not None, pki, min_inputs)
    inputs = random_inputs(ids, rng)
    rngs = {u: np.random.default_rng([seed, u]) for u in ids}
    states, msgs = {}, []
    for u in ids:
        states[u], m = client.advertise_keys(cfg, u, rngs[u], (signing or {}).get(u))
        msgs.append(m)
    srv = server.start(cfg)
    srv, bc = server.collect_keys(srv, msgs)
    msgs = []
    for u, m in bc.items():
        states[u], out = client.share_keys(states[u], m, rngs[u])
        msgs.append(out)
    srv, dl = server.collect_shares(srv, msgs)
    return cfg, states, dl, inputs, srv, rngs


def run_to_unmask(n=5, t=3, drop_before_masked=(), seed=0, min_inputs=2):
    """Run rounds 0-2 honestly; return (config, client states, unmask requests, inputs, server)."""
    cfg, states, dl, inputs, srv, _ = run_to_delivery(n, t, seed, min_inputs=min_inputs)
    msgs = []
    for u, m in dl.items():
        states[u], out = client.masked_input(states[u], m, inputs[u])
        if u not in drop_before_masked:
            msgs.append(out)
    srv, req = server.collect_masked(srv, msgs)
    return cfg, states, req, inputs, srv
