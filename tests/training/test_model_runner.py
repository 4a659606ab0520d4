"""The per-device training loop: a pure function of the device's task."""

from __future__ import annotations

import keras
import numpy as np

from fedactors.training.model_runner import ModelRunner, batch_schedule
from fedactors.training.spec import LocalTraining, ModelSpec


def spec() -> ModelSpec:
    def build() -> keras.Model:
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                                 keras.layers.Dropout(0.5), keras.layers.Dense(3)])
    return ModelSpec(build, keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


def test_training_with_dropout_depends_only_on_the_task() -> None:
    runner = ModelRunner(spec(), LocalTraining(epochs=2, batch_size=8))
    weights = runner.initial_weights()
    first, _ = runner.train(weights, *data(1, 37), np.random.default_rng(5))
    runner.train(weights, *data(2, 50), np.random.default_rng(6))  # someone else in between
    again, _ = runner.train(weights, *data(1, 37), np.random.default_rng(5))
    np.testing.assert_array_equal(first, again)
    other_seed, _ = runner.train(weights, *data(1, 37), np.random.default_rng(7))
    assert not np.array_equal(first, other_seed)


def test_batch_schedule_covers_every_example_once_per_epoch() -> None:
    order, starts, ends = batch_schedule(23, 3, 5, np.random.default_rng(0))
    assert len(order) == 69 and len(starts) == 3 * 5
    for e in range(3):
        assert sorted(order[e * 23:(e + 1) * 23]) == list(range(23))
    assert list(ends - starts) == [5, 5, 5, 5, 3] * 3


def test_the_batch_order_is_one_rng_permutation_per_epoch() -> None:
    # The stream every shipped scenario's weights rest on: each epoch's order is
    # ``rng.permutation(n)``, drawn in turn, and the stream goes on from there.
    for n, epochs, seed in [(1, 1, 0), (7, 1, 1), (100, 1, 2), (23, 3, 3), (0, 2, 4)]:
        order, _, _ = batch_schedule(n, epochs, 5, np.random.default_rng(seed))
        reference = np.random.default_rng(seed)
        expected = [reference.permutation(n) for _ in range(epochs)]
        assert order.dtype == np.int32
        np.testing.assert_array_equal(order, np.concatenate(expected))
        rng = np.random.default_rng(seed)
        batch_schedule(n, epochs, 5, rng)
        assert rng.random() == reference.random()


def test_tensorflows_retracing_advice_is_held_back_and_nothing_else(caplog) -> None:
    # Found from outside: the experiment commands printed "WARNING:tensorflow:5 out of the
    # last 9 calls to <function Evaluator.__init__.<locals>.<lambda>> triggered tf.function
    # retracing" between their own lines; every run builds its functions afresh, as meant.
    import logging

    import tensorflow as tf

    import fedactors.training.model_runner  # noqa: F401  (installs the filter)

    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        tf.get_logger().warning("5 out of the last 9 calls to <function f> triggered "
                                "tf.function retracing. Tracing is expensive")
        tf.get_logger().warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
