"""The vectorized executor must give each device what its own loop gives."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from fedactors.training.batched import Unsupported, layers
from fedactors.training.choice import executor_for
from fedactors.training.executor import SequentialExecutor, TrainTask
from fedactors.training.model_runner import ModelRunner, batch_schedule
from fedactors.training.spec import LocalTraining, ModelSpec
from fedactors.training.vectorized import VectorizedExecutor, cohort_schedule

SIZES = [7, 23, 3, 12, 1]  # unequal on purpose: padding, short batches, frozen clients


def _mlp() -> keras.Model:
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(3),
    ])


def _convnet() -> keras.Model:
    return keras.Sequential([
        keras.Input((10, 10, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(5, 3, padding="same", strides=2, activation="tanh"),
        keras.layers.AveragePooling2D(2, padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ])


def _binary() -> keras.Model:
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(5, activation="tanh"),
        keras.layers.LayerNormalization(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])


def _tasks(runner: ModelRunner, feature_shape, labels, seed: int = 0) -> list[TrainTask]:
    rng = np.random.default_rng(seed)
    weights = runner.initial_weights()
    tasks = []
    for device, n in enumerate(SIZES):
        x = rng.normal(size=(n, *feature_shape)).astype(np.float32)
        y = labels(rng, n)
        tasks.append(TrainTask(device, 1, weights, x, y, np.random.default_rng([seed, device])))
    return tasks


def _fresh(tasks: list[TrainTask], seed: int = 0) -> list[TrainTask]:
    """The same tasks with fresh generators, so both executors draw the same orders."""
    return [replace(t, rng=np.random.default_rng([seed, t.device])) for t in tasks]


def _classes(rng, n):
    return rng.integers(0, 3, n).astype(np.int32)


def _assert_same(model, loss, optimizer, shape, labels=_classes, epochs=2, batch=5):
    keras.utils.set_random_seed(0)
    runner = ModelRunner(ModelSpec(model, loss), LocalTraining(epochs, batch, optimizer))
    vectorized = VectorizedExecutor(runner)
    assert vectorized.fallback_reason is None
    tasks = _tasks(runner, shape, labels)
    got = vectorized.run_batch(tasks)
    want = SequentialExecutor(runner).run_batch(_fresh(tasks))
    for g, w in zip(got, want):
        assert g.device == w.device
        np.testing.assert_allclose(g.delta, w.delta, rtol=1e-4, atol=2e-6)
        assert g.loss == pytest.approx(w.loss, rel=1e-5, abs=1e-6)
    return vectorized


def test_mlp_sgd_momentum_matches_per_device_loop():
    _assert_same(_mlp, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                 lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), (6,))


def test_mlp_adam_matches_per_device_loop():
    _assert_same(_mlp, "sparse_categorical_crossentropy",
                 lambda: keras.optimizers.Adam(0.01), (6,), epochs=3, batch=4)


@pytest.fixture
def grouped_conv():
    """The batched convolutions need TensorFlow's grouped-convolution gradients: CPU
    kernels without oneDNN (its default on CPUs without AVX-512) refuse them, and the
    executor then falls back (tested by patching the probe, below)."""
    if not layers.grouped_conv_trains():
        pytest.skip("this TensorFlow cannot differentiate grouped convolutions (oneDNN off)")


@pytest.mark.usefixtures("grouped_conv")
def test_convnet_matches_per_device_loop():
    _assert_same(_convnet, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                 lambda: keras.optimizers.SGD(0.05), (10, 10, 1))


def test_binary_crossentropy_and_layer_norm_match():
    _assert_same(_binary, keras.losses.BinaryCrossentropy(),
                 lambda: keras.optimizers.SGD(0.1),
                 (6,), labels=lambda rng, n: rng.integers(0, 2, n).astype(np.float32))


def test_mse_regression_matches():
    _assert_same(_binary, "mse", lambda: keras.optimizers.Adam(0.02), (6,),
                 labels=lambda rng, n: rng.normal(size=n).astype(np.float32))


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy",
                                  keras.losses.SparseCategoricalCrossentropy(from_logits=True)])
def test_sparse_labels_as_a_column_match(loss):
    # (n, 1) labels, as Keras takes them: the training graph leaves every dimension
    # open, so that 1 is not known when it is traced.
    _assert_same(_mlp, loss, lambda: keras.optimizers.SGD(0.1), (6,),
                 labels=lambda rng, n: _classes(rng, n)[:, None])


@pytest.mark.parametrize("epochs", [1, 2])
def test_cohort_schedule_is_each_devices_batch_schedule(epochs: int):
    # Devices of one size are shuffled together (rows of one array): each must
    # still get its own stream's order, and leave its stream where its own would.
    sizes = [5, 11, 2, 5, 5, 11, 0]
    rngs = [np.random.default_rng(i) for i in range(len(sizes))]
    idx, mask, active, steps = cohort_schedule(sizes, epochs, 4, rngs)
    for c, n in enumerate(sizes):
        own = np.random.default_rng(c)
        order, starts, ends = batch_schedule(n, epochs, 4, own)
        assert steps[c] == len(starts)
        assert not active[len(starts):, c].any()
        for s, (a, b) in enumerate(zip(starts, ends)):
            np.testing.assert_array_equal(idx[s, c][mask[s, c] > 0], order[a:b])
        assert rngs[c].random() == own.random()


class _Scale(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x


def test_unsupported_layer_falls_back_once_with_a_reason(caplog):
    def model():
        return keras.Sequential([keras.Input((6,)), _Scale(), keras.layers.Dense(3)])

    runner = ModelRunner(ModelSpec(model, keras.losses.SparseCategoricalCrossentropy(True)),
                         LocalTraining(1, 5))
    with caplog.at_level(logging.INFO, logger="fedactors.training.choice"):
        executor = executor_for("vectorized", "local", runner)
    assert isinstance(executor, SequentialExecutor)  # fully the per-device loop, not half-built
    assert "_Scale" in executor.fallback_reason
    assert len([r for r in caplog.records if "per-device loop" in r.message]) == 1
    tasks = _tasks(runner, (6,), _classes)
    got = executor.run_batch(tasks)
    want = SequentialExecutor(runner).run_batch(_fresh(tasks))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.delta, w.delta)


def test_unsupported_optimizer_falls_back():
    runner = ModelRunner(ModelSpec(_mlp, keras.losses.SparseCategoricalCrossentropy(True)),
                         LocalTraining(1, 5, lambda: keras.optimizers.RMSprop(0.01)))
    with pytest.raises(Unsupported, match="RMSprop"):
        VectorizedExecutor(runner)
    assert "RMSprop" in executor_for("auto", "local", runner).fallback_reason


def test_a_cpu_that_cannot_train_grouped_convolutions_falls_back_with_the_fix(monkeypatch):
    # TensorFlow without oneDNN (the default on CPUs without AVX-512) computes a
    # grouped convolution but raises on its gradients, mid-run.
    monkeypatch.setattr(layers, "grouped_conv_trains", lambda: False)
    runner = ModelRunner(ModelSpec(_convnet, keras.losses.SparseCategoricalCrossentropy(True)),
                         LocalTraining(1, 5))
    executor = executor_for("vectorized", "local", runner)
    assert isinstance(executor, SequentialExecutor)
    assert "TF_ENABLE_ONEDNN_OPTS=1" in executor.fallback_reason
    assert "conv" in executor.fallback_reason  # names the layer
    mlp = ModelRunner(ModelSpec(_mlp, "mse"), LocalTraining(1, 5))
    assert isinstance(executor_for("vectorized", "local", mlp), VectorizedExecutor)


def test_sequential_kind_is_the_per_device_loop():
    runner = ModelRunner(ModelSpec(_mlp, "mse"), LocalTraining(1, 5))
    assert isinstance(executor_for("sequential", "local", runner), SequentialExecutor)


def test_vectorized_run_is_close_to_sequential(smart_home_two_rounds):
    # The vectorized run is the session's shared one (tests/conftest.py); that a second
    # run with the same seed is bit-identical is tests/test_determinism.py's check.
    from fedactors.scenarios.loader import load_scenario
    from fedactors.simulation import RunOptions, run_scenario

    vectorized = smart_home_two_rounds
    assert vectorized.events[0]["executor"] == "VectorizedExecutor"
    scenario = load_scenario(Path(__file__).parents[2] / "scenarios" / "smart_home.py")
    sequential = run_scenario(scenario, RunOptions(rounds=2, executor="sequential"))
    np.testing.assert_allclose(vectorized.weights, sequential.weights, rtol=1e-4, atol=1e-5)


def _sequence_model() -> keras.Model:
    inputs = keras.Input((12,))
    h = keras.layers.Embedding(7, 4)(inputs)
    h = keras.layers.Conv1D(5, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling1D(2)(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    h = keras.layers.Dropout(0.0)(h)
    return keras.Model(inputs, keras.layers.Dense(3)(h))


@pytest.mark.usefixtures("grouped_conv")
def test_functional_embedding_conv1d_chain_matches():
    # Token ids arrive as float32 features, as FederatedData requires.
    keras.utils.set_random_seed(0)
    runner = ModelRunner(
        ModelSpec(_sequence_model, keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
        LocalTraining(2, 5, lambda: keras.optimizers.SGD(0.1, momentum=0.9)),
    )
    vectorized = VectorizedExecutor(runner)
    assert vectorized.fallback_reason is None
    rng = np.random.default_rng(3)
    weights = runner.initial_weights()
    tasks = [TrainTask(d, 1, weights, rng.integers(0, 7, (n, 12)).astype(np.float32),
                       _classes(rng, n), np.random.default_rng([0, d]))
             for d, n in enumerate(SIZES)]
    got = vectorized.run_batch(tasks)
    want = SequentialExecutor(runner).run_batch(_fresh(tasks))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.delta, w.delta, rtol=1e-4, atol=2e-6)


@pytest.mark.usefixtures("grouped_conv")  # its model has a Conv1D, planned first
def test_embedding_with_adam_falls_back():
    runner = ModelRunner(
        ModelSpec(_sequence_model, keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
        LocalTraining(1, 5, lambda: keras.optimizers.Adam(0.01)),
    )
    assert "Embedding with Adam" in executor_for("auto", "local", runner).fallback_reason


def test_dropout_is_deterministic_per_cohort():
    def model():
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                                 keras.layers.Dropout(0.5), keras.layers.Dense(3)])

    runner = ModelRunner(ModelSpec(model, keras.losses.SparseCategoricalCrossentropy(True)),
                         LocalTraining(1, 5))
    executor = VectorizedExecutor(runner)
    assert isinstance(executor, VectorizedExecutor) and executor.fallback_reason is None
    tasks = _tasks(runner, (6,), _classes)
    first = executor.run_batch(tasks)
    again = executor.run_batch(_fresh(tasks))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.delta, b.delta)


def _frozen_tasks(tasks: list[TrainTask]) -> list[TrainTask]:
    """Read-only copies of the tasks' data, as FederatedData and GeneratedData hand out."""
    out = []
    for t in tasks:
        x, y = t.x.copy(), t.y.copy()
        x.flags.writeable = y.flags.writeable = False
        out.append(replace(t, x=x, y=y))
    return out


@pytest.mark.parametrize("budget", [None, 1], ids=["one-chunk", "chunk-per-client"])
def test_staged_data_is_always_this_batchs_data(budget):
    """The executor keeps a cohort's stacked data while the same arrays come back;
    whatever it reuses, every batch trains on exactly its own data."""
    keras.utils.set_random_seed(0)
    runner = ModelRunner(ModelSpec(_mlp, keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)), LocalTraining(2, 5, lambda: keras.optimizers.SGD(0.1)))
    kwargs = {} if budget is None else {"memory_budget": budget}
    staged = VectorizedExecutor(runner, **kwargs)

    def fresh(tasks):  # what an executor with nothing staged gives
        return VectorizedExecutor(runner, **kwargs).run_batch(_fresh(tasks))

    def same(got, want):
        for g, w in zip(got, want, strict=True):
            assert g.device == w.device
            np.testing.assert_array_equal(g.delta, w.delta)
            assert g.loss == w.loss

    a = _frozen_tasks(_tasks(runner, (6,), _classes, seed=0))
    b = _frozen_tasks(_tasks(runner, (6,), _classes, seed=1))  # same devices, new data
    same(staged.run_batch(_fresh(a)), fresh(a))
    same(staged.run_batch(_fresh(a)), fresh(a))  # the very same arrays: reused
    same(staged.run_batch(_fresh(b)), fresh(b))
    same(staged.run_batch(_fresh(b[:3])), fresh(b[:3]))  # a smaller cohort
    same(staged.run_batch(_fresh(a[1:] + b[:1])), fresh(a[1:] + b[:1]))
    # Writable arrays may change between batches: they are never reused.
    w = _tasks(runner, (6,), _classes, seed=2)
    same(staged.run_batch(_fresh(w)), fresh(w))
    for t in w:
        t.x[...] *= -1.0
    same(staged.run_batch(_fresh(w)), fresh(w))
