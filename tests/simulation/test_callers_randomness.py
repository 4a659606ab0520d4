"""A run leaves the caller's global random state as it found it (found from outside: a
notebook's random search drew the same learning rate after every run)."""

from __future__ import annotations

import random

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from fedactors.scenarios.loader import load_scenario
from fedactors.simulation import RunOptions, run_scenario

LINEAR = "scenarios/linear_regression.py"


def _draws() -> tuple:
    return (random.random(), float(np.random.uniform()), float(np.random.standard_normal()))


def test_the_callers_global_generators_go_on_as_if_no_run_happened() -> None:
    scenario = load_scenario(LINEAR)
    random.seed(2024)
    np.random.seed(2024)
    first = _draws()
    expected = _draws()
    random.seed(2024)
    np.random.seed(2024)
    assert _draws() == first
    run_scenario(scenario, RunOptions(rounds=1))
    assert _draws() == expected  # not the state the run's seed leaves


def test_tensorflow_and_keras_seeds_and_determinism_are_given_back() -> None:
    from tensorflow.python.eager import context

    scenario = load_scenario(LINEAR)
    tf_config.disable_op_determinism()
    tf.random.set_seed(None)
    keras.utils.set_random_seed(11)
    keras_draw = keras.random.uniform((3,)).numpy()  # from Keras' global generator
    keras.utils.set_random_seed(11)
    keras.random.uniform((3,))
    after_one = keras.random.uniform((3,)).numpy()
    keras.utils.set_random_seed(11)
    assert np.array_equal(keras.random.uniform((3,)).numpy(), keras_draw)
    run_scenario(scenario, RunOptions(rounds=1))
    assert np.array_equal(keras.random.uniform((3,)).numpy(), after_one)  # its stream went on
    assert context.global_seed() == 11 and not tf_config.is_op_determinism_enabled()


def test_a_run_between_the_callers_draws_changes_nothing_of_the_run() -> None:
    scenario = load_scenario(LINEAR)
    np.random.seed(1)
    a = run_scenario(scenario, RunOptions(rounds=2)).summary["weights_sha256"]
    np.random.uniform(size=100)
    random.random()
    b = run_scenario(scenario, RunOptions(rounds=2)).summary["weights_sha256"]
    assert a == b
