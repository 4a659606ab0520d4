"""The floor on a secure sum's inputs (``fedactors.secagg.min_inputs``): with distributed
noise, no party may unmask a sum of fewer than ``min_survivors`` noise shares."""

from __future__ import annotations

import numpy as np
import pytest

from fedactors.aggregation.clipping import Clipped
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.errors import ConfigError
from fedactors.privacy.dp_mean import DPMean
from fedactors.secagg import client, modeled, server
from fedactors.secagg.graph import complete_graph, harary_graph
from fedactors.secagg.messages import Abort, SecAggConfig, SecAggResult, UnmaskRequest
from fedactors.secagg.min_inputs import check_min_inputs, min_inputs_for
from fedactors.secagg.option import SecureAggregation
from tests.secagg.helpers import K, run_to_unmask


def distributed(min_survivors: int) -> DPMean:
    return DPMean.fixed(1.0, 1.0, 10, distributed_noise=True, min_survivors=min_survivors)


def test_the_floor_is_min_survivors_under_distributed_noise_and_two_otherwise() -> None:
    assert min_inputs_for(distributed(7)) == 7
    assert min_inputs_for(Clipped(1.0, distributed(7))) == 7  # forwarded through wrappers
    assert min_inputs_for(DPMean.fixed(1.0, 1.0, 10)) == 2  # central noise: the server adds it
    assert min_inputs_for(Clipped(1.0, WeightedMean(weighted=False))) == 2
    assert min_inputs_for(distributed(1)) == 2  # a sum of one input is that input


def test_the_config_refuses_a_floor_below_two() -> None:
    graph = complete_graph([1, 2, 3], 2)
    for bad in (1, 0, True, 2.0):
        with pytest.raises(ValueError, match="min_inputs"):
            SecAggConfig(0, graph, K, 4, min_inputs=bad)


@pytest.mark.parametrize("dropped, aborts", [((5, 6), True), ((6,), False)])
def test_the_server_unmasks_no_sum_below_the_floor(dropped, aborts) -> None:
    # Six devices, threshold 3, floor 5: every neighbourhood could be recovered either
    # way; only the floor stops the four-input sum.
    cfg, _, req, inputs, srv = run_to_unmask(n=6, t=3, drop_before_masked=dropped,
                                             min_inputs=5)
    if aborts:
        assert isinstance(req, Abort) and "min_survivors is 5" in req.reason
        assert srv.phase == "aborted"
    else:
        assert not isinstance(req, Abort)
        assert len(req) == 5


def _lying_request(cfg, states, dropped):
    """What a server that skips its own floor check would send each survivor."""
    alive = tuple(sorted(u for u in states if u not in dropped))
    return {u: UnmaskRequest(u, alive, tuple(sorted(dropped))) for u in alive}


def test_on_the_complete_graph_every_device_refuses_to_unmask_a_short_sum() -> None:
    # A lying server unmasks four inputs under a floor of five: nobody helps it.
    cfg, states, _, inputs, _ = run_to_unmask(n=6, t=3, drop_before_masked=(5, 6),
                                              min_inputs=5)
    for u, req in _lying_request(cfg, states, (5, 6)).items():
        _, out = client.unmask(states[u], req)
        assert isinstance(out, Abort) and "min_inputs 5" in out.reason, u
    # At the floor, the same lie-free request is answered and the sum comes out exact.
    cfg, states, _, inputs, srv = run_to_unmask(n=6, t=3, drop_before_masked=(6,),
                                                min_inputs=5)
    replies = [client.unmask(states[u], req)[1]
               for u, req in _lying_request(cfg, states, (6,)).items()]
    assert not any(isinstance(r, Abort) for r in replies)
    _, result = server.finish(srv, replies)
    assert isinstance(result, SecAggResult)
    want = sum(inputs[u].astype(np.int64) for u in range(1, 6)) % 2**K
    np.testing.assert_array_equal(result.total.astype(np.int64), want)


def test_modeled_devices_refuse_the_same_short_sums() -> None:
    for n, t, alive, refuses in ((6, 3, 4, True), (6, 3, 5, False)):
        cfg = SecAggConfig(0, complete_graph(list(range(1, n + 1)), t), K, 4, min_inputs=5)
        state = modeled.ModeledClient(cfg, 1, "masked")
        _, out = modeled.unmask(state, modeled.UnmaskCounts(1, alive, n - alive))
        assert isinstance(out, Abort) == refuses
        if refuses:
            assert "min_inputs 5" in out.reason


def test_a_sparse_neighbourhood_cannot_see_the_whole_sum() -> None:
    # Each device of a sparse graph sees only its own holders: a short list there says
    # nothing about the sum, so only the server's check (and the load check) can apply.
    ids = list(range(1, 21))
    graph = harary_graph(ids, 6, np.random.default_rng(0), 3)
    cfg = SecAggConfig(0, graph, K, 4, min_inputs=15)
    assert client.short_sum(cfg, 1, 5) is None
    assert client.short_sum(SecAggConfig(0, complete_graph(ids, 3), K, 4, min_inputs=15),
                            1, 14) is not None


def test_a_malicious_server_on_a_sparse_graph_is_refused_under_distributed_noise() -> None:
    sparse = SecureAggregation(graph="sparse", server="malicious")
    with pytest.raises(ConfigError) as err:
        check_min_inputs(sparse, distributed(8), most_selected=10)
    assert err.value.field == "secure_aggregation" and "min_survivors=8" in str(err.value)
    # Held to the floor by the devices (complete graph) or by the protocol (honest server),
    # or no floor above two to hold: accepted.
    check_min_inputs(SecureAggregation(graph="complete", server="malicious"), distributed(8), 10)
    check_min_inputs(SecureAggregation(graph="sparse"), distributed(8), 10)
    check_min_inputs(sparse, Clipped(1.0, WeightedMean(weighted=False)), 10)
    auto = SecureAggregation(server="malicious")
    check_min_inputs(auto, distributed(8), most_selected=auto.sparse_above)  # stays complete
    with pytest.raises(ConfigError):
        check_min_inputs(auto, distributed(8), most_selected=auto.sparse_above + 1)
