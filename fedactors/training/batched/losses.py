"""Keras losses per example over a cohort: ``(C, B)`` labels and predictions to ``(C, B)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from fedactors.training.batched.unsupported import Unsupported

#: per_example(y, pred) -> (C, B)
PerExampleLoss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def _match_rank(y: tf.Tensor, pred: tf.Tensor) -> tf.Tensor:
    """(C, B) labels against (C, B, 1) predictions, as Keras squeezes/expands."""
    if len(y.shape) == len(pred.shape) - 1 and pred.shape[-1] == 1:
        return tf.expand_dims(y, -1)
    return y


def _sparse_ce(from_logits: bool) -> PerExampleLoss:
    eps = keras.config.epsilon()

    def loss(y, pred):
        if len(y.shape) == len(pred.shape):
            # One label per example given as (n, 1), which Keras accepts: the
            # training graph leaves every dimension open, so its size 1 is not
            # known until run time (tf.squeeze checks it then).
            y = tf.squeeze(y, -1)
        logits = pred if from_logits else tf.math.log(tf.clip_by_value(pred, eps, 1 - eps))
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(y, tf.int64), logits=logits
        )

    return loss


def _mse(y, pred):
    y = tf.cast(_match_rank(y, pred), pred.dtype)
    return tf.reduce_mean(tf.square(y - pred), axis=-1)


def _binary_ce(from_logits: bool, smoothing: float) -> PerExampleLoss:
    eps = keras.config.epsilon()

    def loss(y, pred):
        y = tf.cast(_match_rank(y, pred), pred.dtype)
        if smoothing:
            y = y * (1.0 - smoothing) + 0.5 * smoothing
        if from_logits:
            each = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=pred)
        else:
            p = tf.clip_by_value(pred, eps, 1.0 - eps)
            each = -(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
        return tf.reduce_mean(each, axis=-1)

    return loss


def plan_loss(loss_fn: Any) -> PerExampleLoss:
    """Per-example loss matching the resolved Keras loss; mean-reduced by the caller."""
    from fedactors.training.model_runner import _FunctionLoss

    if type(loss_fn) is _FunctionLoss:  # a loss name or plain function from the scenario
        fn = loss_fn.fn
        plain = {
            keras.losses.sparse_categorical_crossentropy: lambda: _sparse_ce(False),
            keras.losses.mean_squared_error: lambda: _mse,
            keras.losses.binary_crossentropy: lambda: _binary_ce(False, 0.0),
        }
        if fn in plain:
            return plain[fn]()
        raise Unsupported(f"loss: function {getattr(fn, '__name__', fn)!r}")
    cfg = loss_fn.get_config()
    if cfg.get("reduction", "sum_over_batch_size") != "sum_over_batch_size":
        raise Unsupported(f"loss: reduction {cfg.get('reduction')!r}")
    kind = type(loss_fn)
    if kind is keras.losses.SparseCategoricalCrossentropy:
        if cfg.get("ignore_class") is not None or cfg.get("axis", -1) != -1:
            raise Unsupported("loss: SparseCategoricalCrossentropy with ignore_class/axis")
        return _sparse_ce(bool(cfg.get("from_logits")))
    if kind is keras.losses.MeanSquaredError:
        return _mse
    if kind is keras.losses.BinaryCrossentropy:
        if cfg.get("axis", -1) != -1:
            raise Unsupported("loss: BinaryCrossentropy axis")
        return _binary_ce(bool(cfg.get("from_logits")), float(cfg.get("label_smoothing", 0.0)))
    raise Unsupported(f"loss: {kind.__name__} is not supported")
