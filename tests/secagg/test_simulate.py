"""End-to-end guarantees of the protocol as run by the in-process driver."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedactors.secagg import prg
from fedactors.secagg.graph import complete_graph, secagg_plus_graph
from fedactors.secagg.messages import Abort, MaskedInput, SecAggResult, UnmaskResponse
from fedactors.secagg.simulate import run_protocol

from .helpers import DIM, K, random_inputs

N, T = 8, 4
IDS = list(range(1, N + 1))


def _plain_sum(inputs, ids, k=K):
    total = np.zeros_like(next(iter(inputs.values())))
    for u in ids:
        total = total + inputs[u]
    return total & np.uint64(2**k - 1)


def _survivors_each_step(drop_at):
    return [sum(1 for u in IDS if drop_at.get(u, 99) > s) for s in range(4)]


drops = st.dictionaries(st.sampled_from(IDS), st.integers(0, 3), max_size=N)
# At most N - T devices drop, so every step keeps >= T survivors: the exact branch always runs.
survivable_drops = st.dictionaries(st.sampled_from(IDS), st.integers(0, 3), max_size=N - T)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drop_at=survivable_drops, seed=st.integers(0, 2**32 - 1))
def test_exact_sum_for_many_dropout_patterns(drop_at, seed):
    rng = np.random.default_rng(seed)
    inputs = random_inputs(IDS, rng)
    r = run_protocol(inputs, complete_graph(IDS, T), K, rng, drop_at).result
    assert isinstance(r, SecAggResult)
    assert r.contributors == {u for u in IDS if drop_at.get(u, 99) > 2}
    assert r.dropped == set(IDS) - r.contributors
    assert (r.total == _plain_sum(inputs, r.contributors)).all()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drop_at=drops, seed=st.integers(0, 2**32 - 1))
def test_exact_sum_or_clean_abort_for_any_dropout_pattern(drop_at, seed):
    rng = np.random.default_rng(seed)
    inputs = random_inputs(IDS, rng)
    trace = run_protocol(inputs, complete_graph(IDS, T), K, rng, drop_at)
    if min(_survivors_each_step(drop_at)) >= T:
        r = trace.result
        assert isinstance(r, SecAggResult)
        expected_contributors = {u for u in IDS if drop_at.get(u, 99) > 2}
        assert r.contributors == expected_contributors
        assert (r.total == _plain_sum(inputs, r.contributors)).all()
    else:
        assert isinstance(trace.result, Abort) and trace.result.party == "server"


def test_fewer_than_t_survivors_at_unmasking_aborts_cleanly():
    rng = np.random.default_rng(0)
    inputs = random_inputs(IDS, rng)
    drop_at = {u: 3 for u in IDS[: N - T + 1]}  # T-1 devices answer the unmask request
    r = run_protocol(inputs, complete_graph(IDS, T), K, rng, drop_at).result
    assert isinstance(r, Abort) and r.step == "finish" and "need 4" in r.reason


def test_server_never_receives_an_unmasked_input():
    rng = np.random.default_rng(1)
    inputs = random_inputs(IDS, rng)
    trace = run_protocol(inputs, complete_graph(IDS, T), K, rng, {2: 2, 5: 3, 7: 1})
    assert isinstance(trace.result, SecAggResult)
    masked = [m for m in trace.server_inbox if isinstance(m, MaskedInput)]
    assert len(masked) == 6
    for m in masked:
        b = trace.client_states[m.sender].b_seed
        self_only = (inputs[m.sender] + prg.expand(b, DIM, K)) & np.uint64(2**K - 1)
        assert (m.y != self_only).mean() > 0.9
        for x in inputs.values():
            assert (m.y != x).mean() > 0.9
    # No raw input vector appears anywhere else either: other messages carry no arrays.
    for m in trace.server_inbox:
        if not isinstance(m, MaskedInput):
            assert not any(isinstance(v, np.ndarray) for v in vars(m).values())
    # Unmasking never reveals both shares for the same device.
    for m in trace.server_inbox:
        if isinstance(m, UnmaskResponse):
            assert not set(m.b_shares) & set(m.s_shares)


def test_masked_vector_is_uniform_mod_2k():
    # Chi-square on the top 4 bits of one device's masked vector; 15 dof, the 0.1% critical
    # value is 37.7. With a fixed seed this is deterministic; an input of all zeros is the
    # most structured possible, so any leak through the mask would show.
    rng = np.random.default_rng(2)
    dim = 20_000
    inputs = {u: np.zeros(dim, dtype=np.uint64) for u in IDS}
    trace = run_protocol(inputs, complete_graph(IDS, T), K, rng)
    y = next(m.y for m in trace.server_inbox if isinstance(m, MaskedInput))
    counts = np.bincount((y >> np.uint64(K - 4)).astype(np.int64), minlength=16)
    expected = dim / 16
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 37.7
    # The same statistic flags a non-uniform vector (the test can fail).
    skew = np.bincount(np.arange(dim) % 12, minlength=16)
    assert ((skew - expected) ** 2 / expected).sum() > 37.7


def test_secagg_plus_exact_with_dropouts():
    rng = np.random.default_rng(3)
    ids = list(range(1, 61))
    # 5 of 60 drop (~8%): assume 10% dropout, 5% corruption, which keeps the graph sparse.
    g = secagg_plus_graph(ids, rng, dropout=0.1, corrupt=0.05)
    assert g.max_degree() < 59
    inputs = random_inputs(ids, rng)
    drop_at = {u: int(rng.integers(0, 4)) for u in rng.choice(ids, 5, replace=False)}
    r = run_protocol(inputs, g, K, rng, drop_at).result
    assert isinstance(r, SecAggResult)
    assert r.contributors == {u for u in ids if drop_at.get(u, 99) > 2}
    assert (r.total == _plain_sum(inputs, r.contributors)).all()


def test_reproducible_given_rng():
    a = run_protocol(random_inputs(IDS, np.random.default_rng(4)), complete_graph(IDS, T), K,
                     np.random.default_rng(5), {3: 2})
    b = run_protocol(random_inputs(IDS, np.random.default_rng(4)), complete_graph(IDS, T), K,
                     np.random.default_rng(5), {3: 2})
    ya = [m.y for m in a.server_inbox if isinstance(m, MaskedInput)]
    yb = [m.y for m in b.server_inbox if isinstance(m, MaskedInput)]
    assert all((p == q).all() for p, q in zip(ya, yb))
