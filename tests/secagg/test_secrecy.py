"""What SecAgg hides, not only what it computes.

The correctness tests (test_simulate.py, test_server.py) would still pass if a
device sent its input with only the pairwise masks (they cancel in the sum),
or if its secrets were shared with a threshold one too low (any t shares still
reconstruct). These tests check the two secrecy properties directly:

* the self-mask: a server that has learned everything about a device's
  pairwise masks (its key-agreement secret s_u^SK, as it would from t key
  shares if it lied that u dropped) still sees x_u + PRG(b_u), not x_u;
* the threshold: of every secret a device Shamir-shares (b_u and s_u^SK), any
  t of the shares its holders received reconstruct it, and no t - 1 of them do.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedactors.secagg import client, keys, prg, server, shamir
from fedactors.secagg.graph import complete_graph, harary_graph
from fedactors.secagg.messages import MaskedInput, SecAggResult

from .helpers import DIM, K, run_to_delivery

MOD = np.uint64((1 << K) - 1)


def graphs():
    ids = list(range(1, 13))
    return [
        pytest.param(complete_graph(list(range(1, 6)), 3), id="secagg-5-of-t3"),
        pytest.param(complete_graph(list(range(1, 8)), 5), id="secagg-7-of-t5"),
        # SecAgg+: |N[u]| = 7 (degree 6), t = 4 per neighbourhood.
        pytest.param(harary_graph(ids, 6, np.random.default_rng(3), 4), id="secagg+-12"),
    ]


def run_masked(graph, seed=0):
    """Rounds 0-2, honest and without drops: (config, device states, masked y, inputs, server)."""
    cfg, states, dl, inputs, srv, _ = run_to_delivery(seed=seed, graph=graph, round_id=7)
    masked = {}
    for u in sorted(graph.ids):
        states[u], m = client.masked_input(states[u], dl[u], inputs[u])
        assert isinstance(m, MaskedInput)
        masked[u] = m.y
    return cfg, states, masked, inputs, srv


def shares_of(states, graph, u, which):
    """The shares of device u's secret (``"b"`` or ``"s"``) as its holders hold them."""
    held = {v: (states[v].held_b if which == "b" else states[v].held_s) for v in graph.holders(u)}
    return {v: h[u] for v, h in held.items()}


@pytest.mark.parametrize("graph", graphs())
def test_removing_every_pairwise_mask_still_leaves_the_input_hidden_by_the_self_mask(graph):
    cfg, states, masked, inputs, srv = run_masked(graph)
    for u in sorted(graph.ids):
        # The server's strongest position short of b_u: it reconstructs u's key-agreement
        # secret from t key shares (as it could by claiming u dropped) ...
        t = graph.thresholds[u]
        s_shares = shares_of(states, graph, u, "s")
        pair = keys.keypair_from_private_bytes(
            shamir.reconstruct([s_shares[v] for v in sorted(s_shares)[:t]], t))
        assert pair.public == srv.public_keys[u][1]
        # ... and from it and the public keys, every pairwise mask u applied.
        residual = masked[u].copy()
        for v in sorted(graph.neighbours[u]):
            p = prg.expand(keys.mask_seed(pair.private, srv.public_keys[v][1], cfg.round_id),
                           cfg.dim, cfg.modulus_bits)
            if v < u:  # u added +PRG(s_uv) for v < u and -PRG(s_uv) for v > u
                residual -= p
            else:
                residual += p
        residual &= MOD
        # What is left is not the input: the self-mask still hides it (a coordinate may
        # match by chance with probability 2**-16).
        x = inputs[u]
        assert np.mean(residual == x) < 0.05, f"device {u}'s input is exposed"
        # It is exactly x_u + PRG(b_u): b_u is all that stands between the server and x_u.
        self_mask = prg.expand(states[u].b_seed, cfg.dim, cfg.modulus_bits)
        np.testing.assert_array_equal(residual, (x + self_mask) & MOD)
    # And hiding it costs nothing: the unmasked sum is still exact.
    srv, req = server.collect_masked(
        srv, [MaskedInput(u, masked[u], K) for u in sorted(graph.ids)])
    responses = []
    for u, r in req.items():
        states[u], resp = client.unmask(states[u], r)
        responses.append(resp)
    _, result = server.finish(srv, responses)
    assert isinstance(result, SecAggResult)
    expected = np.zeros(DIM, np.uint64)
    for x in inputs.values():
        expected += x
    np.testing.assert_array_equal(result.total, expected & MOD)


@pytest.mark.parametrize("graph", graphs())
@pytest.mark.parametrize("which", ["b", "s"])
def test_any_t_shares_of_a_device_secret_reconstruct_it_and_no_t_minus_1_do(graph, which):
    cfg, states, _, _, _ = run_masked(graph, seed=1)
    rng = np.random.default_rng(11)
    for u in sorted(graph.ids):
        secret = states[u].b_seed if which == "b" else states[u].s_pair.private_bytes()
        shares = shares_of(states, graph, u, which)
        holders = sorted(shares)
        t = graph.thresholds[u]
        assert len(holders) >= t > 1
        for _ in range(8):
            subset = rng.choice(holders, t, replace=False)
            assert shamir.reconstruct([shares[v] for v in subset], t) == secret
            # t - 1 of them, interpolated as if t - 1 were enough, give something else
            # (or shares no secret can come from): they carry no information.
            fewer = [shares[v] for v in subset[: t - 1]]
            try:
                guess = shamir.reconstruct(fewer, t - 1)
            except shamir.ShamirError:
                continue
            assert guess != secret, (
                f"device {u}: {t - 1} shares of its {which} secret reconstruct it "
                f"(threshold {t})")
