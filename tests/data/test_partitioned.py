"""Devices from Flower Datasets partitioners: the partitioner's partitions, exactly,
made lazily, and following the scenario's seed."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

pytest.importorskip("flwr_datasets", reason="needs the datasets extra: pip install -e '.[datasets]'")

from datasets import Dataset  # noqa: E402
from flwr_datasets.partitioner import (  # noqa: E402
    DirichletPartitioner,
    IidPartitioner,
    NaturalIdPartitioner,
    ShardPartitioner,
)

from fedactors.data.partitioned import (  # noqa: E402
    PartitionedData,
    assign_by_size,
    partitioner_seed,
    require_flwr_datasets,
)
from fedactors.errors import ConfigError  # noqa: E402

CLASSES = 10


def _arrays(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n).astype(np.int32)
    x = (rng.standard_normal((n, 4)) + y[:, None]).astype(np.float32)
    return x, y


def _test_set() -> tuple[np.ndarray, np.ndarray]:
    return _arrays(50, seed=99)


@pytest.mark.parametrize("make", [
    lambda seed: DirichletPartitioner(20, "label", alpha=0.5, min_partition_size=5, seed=seed),
    lambda seed: ShardPartitioner(20, "label", shard_size=50, seed=seed),
    lambda seed: IidPartitioner(20),
], ids=["dirichlet", "shard", "iid"])
def test_each_device_holds_exactly_its_partition(make) -> None:
    x, y = _arrays()
    data = PartitionedData.from_arrays(x, y, make(7), test=_test_set(),
                                       rng=np.random.default_rng(0))
    reference = make(7)  # the same partitioner, called directly
    reference.dataset = Dataset.from_dict({"x": x, "label": y})
    assert data.num_devices == reference.num_partitions
    labels, counts = data.label_counts()
    for device in range(data.num_devices):
        want = reference.load_partition(int(data.order[device])).with_format("numpy")[:]
        got_x, got_y = data.client(device)
        np.testing.assert_array_equal(got_x, want["x"])
        np.testing.assert_array_equal(got_y, want["label"])
        assert data.num_examples(device) == len(want["label"])
        values, n = np.unique(want["label"], return_counts=True)
        assert dict(zip(values.tolist(), n.tolist())) == {
            v: int(c) for v, c in zip(labels, counts[device]) if c}
    assert counts.sum() == sum(data.num_examples(d) for d in range(data.num_devices))


def test_the_partition_follows_the_scenario_seed() -> None:
    x, y = _arrays()

    def partition(seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)  # the scenario's data stream
        part = DirichletPartitioner(20, "label", alpha=0.3, min_partition_size=5,
                                    seed=partitioner_seed(rng))
        data = PartitionedData.from_arrays(x, y, part, test=_test_set(), rng=rng)
        return [data.client(d)[1] for d in range(data.num_devices)]

    a, b, c = partition(1), partition(1), partition(2)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(len(u) == len(w) and np.array_equal(u, w) for u, w in zip(a, c))


def test_devices_are_made_when_asked_and_memory_stays_bounded() -> None:
    x, y = _arrays(5000)
    calls: list[int] = []
    part = IidPartitioner(500)

    def preprocess(columns):
        calls.append(1)
        return columns["x"].astype(np.float32), columns["label"].astype(np.int32)

    one = 10 * (4 * 4 + 4)  # a device's bytes: 10 examples of 4 float32 features, int32 labels
    data = PartitionedData.from_arrays(x, y, part, test=_test_set(), rng=np.random.default_rng(0),
                                       preprocess=preprocess, cache_bytes=20 * one)
    assert len(calls) <= 2  # the test set, and device 0 checked once at load
    for device in range(data.num_devices):
        data.client(device)
        assert data._cached[0] <= 20 * one
    assert len(data._cache) <= 20
    assert len(calls) >= 500


def test_assign_by_size_gives_the_last_class_the_biggest_partitions() -> None:
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 1000, 50)
    class_index = np.repeat([0, 1, 2], [25, 15, 10])
    rng.shuffle(class_index)  # devices of one class need not be contiguous
    order = assign_by_size(sizes, class_index)
    assert sorted(order.tolist()) == list(range(50))
    by_class = [sizes[order[class_index == k]] for k in range(3)]
    assert by_class[0].max() <= by_class[1].min() and by_class[1].max() <= by_class[2].min()
    # More partitions than devices: the biggest ones are used.
    fewer = assign_by_size(sizes, np.zeros(10, np.int64))
    assert sorted(sizes[fewer].tolist()) == sorted(sizes.tolist())[-10:]
    with pytest.raises(ConfigError, match="50 partitions for 60 devices"):
        assign_by_size(sizes, np.zeros(60, np.int64))


def test_fewer_devices_than_partitions_take_a_seeded_subset() -> None:
    x, y = _arrays()
    def build(seed):
        return PartitionedData.from_arrays(x, y, IidPartitioner(40), test=_test_set(),
                                           rng=np.random.default_rng(seed), devices=15)
    a, b, c = build(4), build(4), build(5)
    assert a.num_devices == 15 and len(set(a.order.tolist())) == 15
    assert a.order.tolist() == b.order.tolist() == sorted(a.order.tolist())
    assert c.order.tolist() != a.order.tolist()  # a draw, not the first 15


def test_a_device_holds_the_partition_its_order_names() -> None:
    x, y = _arrays()
    data = PartitionedData.from_arrays(
        x, y, ShardPartitioner(10, "label", shard_size=100, seed=3), test=_test_set(),
        rng=np.random.default_rng(0), order=lambda sizes: np.arange(len(sizes))[::-1])
    reference = ShardPartitioner(10, "label", shard_size=100, seed=3)
    reference.dataset = Dataset.from_dict({"x": x, "label": y})
    assert data.order.tolist() == list(range(9, -1, -1))
    for device in range(10):
        want = reference.load_partition(9 - device).with_format("numpy")["label"]
        np.testing.assert_array_equal(data.client(device)[1], want)


def test_a_natural_id_partition_and_a_test_dataset_through_preprocess() -> None:
    rng = np.random.default_rng(0)
    writers = np.repeat([f"w{i}" for i in range(12)], rng.integers(3, 9, 12))
    table = Dataset.from_dict({"pixels": rng.random((len(writers), 2, 2)).astype(np.float32),
                               "writer": writers,
                               "char": rng.integers(0, 5, len(writers)).astype(np.int64)})
    part = NaturalIdPartitioner(partition_by="writer")
    part.dataset = table
    test = Dataset.from_dict({"pixels": np.zeros((6, 2, 2), np.float32), "writer": ["t"] * 6,
                              "char": np.arange(6) % 5})
    data = PartitionedData.from_partitioner(part, test=test, features="pixels", label="char",
                                            rng=np.random.default_rng(1))
    assert data.test[0].shape == (6, 2, 2) and data.test[1].dtype == np.int32
    sizes = sorted(data.num_examples(d) for d in range(data.num_devices))
    assert sizes == sorted(np.unique(writers, return_counts=True)[1].tolist())


def test_bad_input_is_one_line_naming_what_is_wrong(monkeypatch) -> None:
    x, y = _arrays()
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="must be a Flower Datasets Partitioner"):
        PartitionedData.from_partitioner(object(), test=_test_set(), features="x", label="label",
                                         rng=rng)
    with pytest.raises(ConfigError, match="has no dataset"):
        PartitionedData.from_partitioner(IidPartitioner(4), test=_test_set(), features="x",
                                         label="label", rng=rng)
    part = IidPartitioner(4)
    part.dataset = Dataset.from_dict({"x": x, "label": y})
    with pytest.raises(ConfigError, match="no column 'pixels'"):
        PartitionedData.from_partitioner(part, test=_test_set(), features="pixels", label="label",
                                         rng=rng)
    with pytest.raises(ConfigError, match="own partition"):
        PartitionedData.from_arrays(x, y, IidPartitioner(4), test=_test_set(), rng=rng,
                                    order=np.array([0, 0, 1, 2]))
    monkeypatch.setitem(sys.modules, "flwr_datasets", None)  # not installed
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[datasets\]'"):
        require_flwr_datasets()


def test_the_hub_clients_retry_lines_are_held_back_during_a_fetch(caplog) -> None:
    import logging

    from fedactors.data.partitioned import _quiet_hub

    hub = logging.getLogger("huggingface_hub.utils._http")
    with caplog.at_level(logging.WARNING):
        with _quiet_hub():
            hub.warning("Retrying in 8s [Retry 5/5].")
        hub.warning("after the fetch")
    assert [r.getMessage() for r in caplog.records] == ["after the fetch"]


def test_regression_targets_have_no_label_table() -> None:
    x, _ = _arrays(400)
    y = np.random.default_rng(1).standard_normal(400).astype(np.float32)
    data = PartitionedData.from_arrays(x, y, IidPartitioner(8), rng=np.random.default_rng(0),
                                       test=(x[:20], y[:20]))
    assert data.label_counts() is None and data.client(0)[1].dtype == np.float32


def test_more_mistakes_get_one_line(monkeypatch) -> None:
    import datasets as hf
    from flwr_datasets import FederatedDataset

    x, y = _arrays()
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="must be a Flower Datasets Partitioner, got 'dirichlet'"):
        PartitionedData.from_arrays(x, y, "dirichlet", test=_test_set(), rng=rng)
    table = hf.Dataset.from_dict({"x": x, "label": y})
    monkeypatch.setattr(hf, "load_dataset", lambda *a, **k: hf.DatasetDict(
        {"train": table, "test": table.select(range(10))}))
    fds = FederatedDataset(dataset="me/data", partitioners={"train": IidPartitioner(4)})
    with pytest.raises(ConfigError, match=r"no partitioned split 'training'; it partitions \['train'\]"):
        PartitionedData.from_federated_dataset(fds, features="x", label="label", rng=rng,
                                               split="training")


def test_a_fleet_of_another_size_is_told_how_to_match_it(tmp_path) -> None:
    import keras

    from fedactors import DeviceClass, LocalTraining, Rounds, Scenario
    from fedactors.errors import ScenarioError
    from fedactors.simulation import RunOptions, run_scenario

    x, y = _arrays(600)
    scenario = Scenario(
        name="mismatch", model=lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(10)]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        data=lambda fleet, rng: PartitionedData.from_arrays(x, y, IidPartitioner(15),
                                                            test=_test_set(), rng=rng),
        fleet=[DeviceClass("phone", count=12)], rounds=Rounds(count=1, cohort_size=4),
        training=LocalTraining(batch_size=10, optimizer=lambda: keras.optimizers.SGD(0.1)))
    with pytest.raises(ScenarioError, match="15 devices, but the fleet has 12; pass devices=fleet"):
        run_scenario(scenario, RunOptions(out_dir=tmp_path))
    # A fleet bigger than the partitions: devices=fleet.size cannot help, so it is not
    # what the line says; it says how many partitions the fleet needs.
    bigger = dataclasses.replace(scenario, fleet=[DeviceClass("phone", count=20)])
    with pytest.raises(ScenarioError, match="15 devices, but the fleet has 20; its partitioner "
                                            "has 15 partitions.*num_partitions=20") as err:
        run_scenario(bigger, RunOptions(out_dir=tmp_path))
    assert "pass devices" not in str(err.value)


def test_more_devices_than_partitions_is_refused_saying_how_many_are_needed() -> None:
    x, y = _arrays()
    with pytest.raises(ConfigError, match="20 devices but IidPartitioner has 15 partitions.*"
                                          "num_partitions=20.*at most 15"):
        PartitionedData.from_arrays(x, y, IidPartitioner(15), test=_test_set(),
                                    rng=np.random.default_rng(0), devices=20)
