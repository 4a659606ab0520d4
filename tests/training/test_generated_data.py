"""GeneratedData: FederatedData's interface without storing every device's arrays."""

from __future__ import annotations

import numpy as np
import pytest

from fedactors.data.generated import GeneratedData
from fedactors.errors import ConfigError


def _make(_device: int, n: int, rng: np.random.Generator):
    x = rng.standard_normal((n, 3), dtype=np.float32)
    return x, (x.sum(1) > 0).astype(np.int32)


def _data(seed: int = 0) -> GeneratedData:
    test = _make(0, 10, np.random.default_rng(99))
    return GeneratedData.create(np.array([5, 1, 8]), _make, test, np.random.default_rng(seed))


def test_same_arrays_on_every_call_in_any_order():
    a, b = _data(), _data()
    later = b.client(2)
    first = a.client(2)
    np.testing.assert_array_equal(first[0], later[0])
    np.testing.assert_array_equal(a.client(0)[0], b.client(0)[0])
    assert not np.array_equal(a.client(0)[0][:1], a.client(2)[0][:1])
    assert not first[0].flags.writeable


def test_interface_matches_federated_data():
    data = _data()
    assert data.num_devices == 3
    assert [data.num_examples(d) for d in range(3)] == [5, 1, 8]
    assert len(data.client(1)[0]) == 1
    assert data.feature_shape == (3,)
    with pytest.raises(IndexError):
        data.client(-1)


def test_bad_generator_is_reported_at_creation():
    def bad(_d, n, rng):
        return rng.standard_normal((n, 3)), np.zeros(n, np.int32)  # float64

    with pytest.raises(ConfigError, match="float32"):
        GeneratedData.create(np.array([2]), bad, _make(0, 4, np.random.default_rng(0)),
                             np.random.default_rng(0))


def test_runs_through_run_scenario():
    from benchmarks.workloads import scenario
    from fedactors.simulation import RunOptions, run_scenario

    result = run_scenario(scenario("mlp", 50, 10, 2), RunOptions(device_events=False))
    assert [r["reported"] for r in result.records] == [10, 10]


def test_cache_stays_within_its_budget_and_gives_the_same_arrays():
    test = _make(0, 10, np.random.default_rng(99))
    data = GeneratedData.create(np.full(50, 8), _make, test, np.random.default_rng(0),
                                cache_bytes=10 * 8 * (3 * 4 + 4))
    first = [data.client(d)[0].copy() for d in range(50)]
    assert len(data._cache) == 10
    for d in range(50):
        np.testing.assert_array_equal(data.client(d)[0], first[d])
