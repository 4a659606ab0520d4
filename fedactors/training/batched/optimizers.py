"""Keras SGD and Adam updates over a cohort's stacked weights and optimizer slots."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from fedactors.training.batched.unsupported import Unsupported


@dataclass(frozen=True)
class OptimizerPlan:
    """init(params) -> slots; step(params, grads, slots, t) -> (params, slots)."""

    name: str
    init: Callable[[Sequence[tf.Tensor]], list[tf.Tensor]]
    step: Callable[..., tuple[list[tf.Tensor], list[tf.Tensor]]]


def _sgd(lr: float, momentum: float, nesterov: bool) -> OptimizerPlan:
    def init(params):
        return [tf.zeros_like(p) for p in params] if momentum else []

    def step(params, grads, slots, _t):
        if not momentum:
            return [p - g * lr for p, g in zip(params, grads)], []
        new_p, new_m = [], []
        for p, g, m in zip(params, grads, slots):
            m = m * momentum - g * lr
            new_m.append(m)
            new_p.append(p + (m * momentum - g * lr) if nesterov else p + m)
        return new_p, new_m

    return OptimizerPlan("SGD", init, step)


def _adam(lr: float, beta_1: float, beta_2: float, epsilon: float) -> OptimizerPlan:
    def init(params):
        return [tf.zeros_like(p) for p in params] * 2

    def step(params, grads, slots, t):
        n = len(params)
        t = tf.cast(t, tf.float32)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, t)) / (1 - tf.pow(beta_1, t))
        ms, vs, new_p = [], [], []
        for p, g, m, v in zip(params, grads, slots[:n], slots[n:]):
            m = m + (g - m) * (1 - beta_1)
            v = v + (tf.square(g) - v) * (1 - beta_2)
            ms.append(m)
            vs.append(v)
            new_p.append(p - (m * alpha) / (tf.sqrt(v) + epsilon))
        return new_p, ms + vs

    return OptimizerPlan("Adam", init, step)


def plan_optimizer(optimizer: Any) -> OptimizerPlan:
    """The update rule of a fresh Keras SGD or Adam, with its hyperparameters."""
    cfg = optimizer.get_config()
    for key in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm",
                "loss_scale_factor", "gradient_accumulation_steps"):
        if cfg.get(key) is not None:
            raise Unsupported(f"optimizer: {key}={cfg[key]!r}")
    if cfg.get("use_ema"):
        raise Unsupported("optimizer: use_ema")
    lr = cfg.get("learning_rate")
    if not isinstance(lr, (int, float)):
        raise Unsupported("optimizer: learning-rate schedules are not supported")
    kind = type(optimizer)
    if kind is keras.optimizers.SGD:
        return _sgd(float(lr), float(cfg["momentum"]), bool(cfg["nesterov"]))
    if kind is keras.optimizers.Adam:
        if cfg.get("amsgrad"):
            raise Unsupported("optimizer: Adam(amsgrad=True)")
        return _adam(float(lr), float(cfg["beta_1"]), float(cfg["beta_2"]),
                     float(cfg["epsilon"]))
    raise Unsupported(f"optimizer: {kind.__name__} is not supported")


def check_combination(model: keras.Model, optimizer: OptimizerPlan) -> None:
    """Pairs that are each fine alone but not together."""
    if optimizer.name != "SGD" and any(
        type(layer) is keras.layers.Embedding for layer in model.layers
    ):
        # Keras applies Adam's moment updates to an Embedding's sparse
        # (IndexedSlices) gradient row by row; dense math drifts from it.
        raise Unsupported(f"Embedding with {optimizer.name}: Keras updates it sparsely")
