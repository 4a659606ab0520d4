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


def _wrong_on_device_1(mistake):
    def make(device: int, n: int, rng: np.random.Generator):
        x, y = _make(device, n, rng)
        return mistake(x, y) if device == 1 else (x, y)
    return make


@pytest.mark.parametrize(("mistake", "says"), [
    (lambda x, y: (x.astype(np.float64), y), "generated x is float64, the test set's float32"),
    (lambda x, y: (x[:, :2], y), r"generated x has examples of shape \(2,\), the test set's \(3,\)"),
    (lambda x, y: (x, y.astype(np.int64)), "generated y is int64, the test set's int32"),
    (lambda x, y: (np.concatenate([x, x]), np.concatenate([y, y])),
     "generated 2 examples, but sizes gives the device 1"),
    (lambda x, y: (x, np.concatenate([y, y])), "generated 2 labels for 1 examples"),
    (lambda x, y: (x.tolist(), y), "generated x is a list, not a numpy array"),
])
def test_a_device_generated_wrong_is_told_what_is_wrong(mistake, says):
    test = _make(0, 10, np.random.default_rng(99))
    data = GeneratedData.create(np.array([5, 1, 8]), _wrong_on_device_1(mistake), test,
                                np.random.default_rng(0))
    with pytest.raises(ConfigError, match=says) as err:
        data.client(1)
    assert err.value.field == "clients[1]"


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


def _changed_on(device: int):
    """``_make`` with one device's data changed (a tokenizer fix on one phone, say)."""
    def make(d: int, n: int, rng: np.random.Generator):
        x, y = _make(d, n, rng)
        return (x + np.float32(1.0), y) if d == device else (x, y)
    return make


def _fleet(make, devices: int, size: int = 4) -> GeneratedData:
    test = _make(0, 10, np.random.default_rng(99))
    return GeneratedData.create(np.full(devices, size), make, test, np.random.default_rng(0))


def test_the_digest_covers_every_device_of_a_fleet_that_is_cheap_to_make():
    """Found from outside: a resume after one device's generated data changed (not device
    0's) was accepted, and ended at weights no uninterrupted run gives."""
    base = _fleet(_make, 60).sha256()
    assert _fleet(_make, 60).sha256() == base
    for device in (0, 13, 59):
        assert _fleet(_changed_on(device), 60).sha256() != base, device


def test_a_big_fleet_digest_covers_a_spread_sample(monkeypatch):
    import fedactors.data.generated as generated

    monkeypatch.setattr(generated, "DIGEST_BYTES", 1000)  # 1,000 devices of 64 bytes: big
    data = _fleet(_make, 1000)
    covered = data.digest_devices()
    assert covered[0] == 0 and covered[-1] == 999 and len(covered) == generated.DIGEST_SAMPLE
    assert _fleet(_changed_on(covered[5]), 1000).sha256() != data.sha256()
    unseen = next(d for d in range(1000) if d not in covered)
    assert _fleet(_changed_on(unseen), 1000).sha256() == data.sha256()  # as documented
