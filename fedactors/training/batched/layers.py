"""Keras layers over a whole cohort's stacked weights: one forward function per layer.

Weights are ``(C, *shape)`` and activations ``(C, B, *features)``; each client's
slice is computed exactly as its own Keras layer would compute it. A model is
planned layer by layer from its own configs; anything not reproduced
faithfully raises :class:`Unsupported` with the reason.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from fedactors.training.batched.unsupported import Unsupported

#: forward(params, x, step_seed) -> y; params are the layer's stacked weights
#: in ``layer.weights`` order, x is (C, B, *features).
Forward = Callable[[Sequence[tf.Tensor], tf.Tensor, tf.Tensor], tf.Tensor]


@dataclass(frozen=True)
class LayerPlan:
    name: str
    forward: Forward
    #: Index into ``model.weights`` of each of the layer's weights.
    weight_index: tuple[int, ...]
    #: Floats per example held for the backward pass (memory estimate).
    activation_floats: int


def _no_extras(layer: keras.layers.Layer, *attrs: str) -> None:
    """Regularizers and constraints change the loss or the update: not batched."""
    for attr in attrs:
        if getattr(layer, attr, None) is not None:
            raise Unsupported(f"layer {layer.name}: {attr} is set")
    if getattr(layer, "lora_enabled", False):
        raise Unsupported(f"layer {layer.name}: LoRA is enabled")
    policy = getattr(layer, "dtype_policy", None)
    if policy is not None and getattr(policy, "compute_dtype", "float32") != "float32":
        raise Unsupported(f"layer {layer.name}: compute dtype {policy.compute_dtype}")


_WEIGHT_EXTRAS = (
    "kernel_regularizer", "bias_regularizer", "activity_regularizer",
    "kernel_constraint", "bias_constraint",
)


def _client_bias(b: tf.Tensor, rank: int) -> tf.Tensor:
    """(C, n) -> (C, 1, ..., 1, n) to broadcast over an activation of ``rank``."""
    shape = tf.concat([tf.shape(b)[:1], tf.ones([rank - 2], tf.int32), tf.shape(b)[1:]], 0)
    return tf.reshape(b, shape)


def _dense(layer: keras.layers.Dense) -> Forward:
    _no_extras(layer, *_WEIGHT_EXTRAS)
    activation, use_bias = layer.activation, layer.use_bias

    def forward(params, x, _seed):
        kernel = params[0]
        # (C, B, ..., in) @ (C, in, out): one batched matmul for the cohort.
        shape = tf.shape(x)
        flat = tf.reshape(x, [shape[0], -1, shape[-1]])
        y = tf.matmul(flat, kernel)
        y = tf.reshape(y, tf.concat([shape[:-1], tf.shape(kernel)[-1:]], 0))
        if use_bias:
            y = y + _client_bias(params[1], len(x.shape))
        return activation(y)

    return forward


#: What to do when the CPU kernels cannot train a grouped convolution.
ONEDNN_HINT = ("set TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow is imported to train "
               "convolutions vectorized")


@functools.cache
def grouped_conv_trains() -> bool:
    """Whether TensorFlow can differentiate a grouped convolution in this process.

    Its CPU kernels without oneDNN (the default on CPUs without AVX-512, such
    as many AMD EPYC and older Intel parts) compute a grouped convolution but
    refuse its gradients; the batched convolution below needs them. Tried
    once per process on a tiny input, in a graph as training runs it.
    """
    images, filters = tf.ones([1, 3, 3, 4]), tf.ones([2, 2, 2, 2])

    @tf.function
    def gradients():
        with tf.GradientTape() as tape:
            tape.watch([images, filters])
            out = tf.nn.conv2d(images, filters, strides=1, padding="VALID")
        return tape.gradient(out, [images, filters])

    try:
        gradients()
    except tf.errors.OpError:  # "Gradients for grouped convolutions are not supported on CPU"
        return False
    return True


def _conv(layer: keras.layers.Layer, rank: int) -> Forward:
    """Conv1D/Conv2D as one grouped convolution: client c is group c.

    Clients go to the channel axis, (B, H, W, C*cin), and the stacked kernels
    to the output axis, (kh, kw, cin, C*cout); a grouped conv then applies
    each client's kernel to that client's channels only.
    """
    _no_extras(layer, *_WEIGHT_EXTRAS)
    if not grouped_conv_trains():
        raise Unsupported(f"layer {layer.name}: this TensorFlow cannot differentiate grouped "
                          f"convolutions on this CPU; {ONEDNN_HINT}")
    cfg = layer.get_config()
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise Unsupported(f"layer {layer.name}: data_format {cfg['data_format']}")
    if cfg.get("groups", 1) != 1:
        raise Unsupported(f"layer {layer.name}: groups={cfg['groups']}")
    if cfg["padding"] not in ("valid", "same"):
        raise Unsupported(f"layer {layer.name}: padding {cfg['padding']!r}")
    strides = list(cfg["strides"])
    dilation = list(cfg["dilation_rate"])
    if rank == 1:
        strides, dilation = [1, *strides], [1, *dilation]
    if max(strides) > 1 and max(dilation) > 1:
        raise Unsupported(f"layer {layer.name}: strides and dilation together")
    padding = cfg["padding"].upper()
    activation, use_bias = layer.activation, layer.use_bias

    def forward(params, x, _seed):
        kernel = params[0]
        if rank == 1:
            x = tf.expand_dims(x, 2)  # (C, B, 1, L, ch)
            kernel = tf.expand_dims(kernel, 1)
        shape, kshape = tf.shape(x), tf.shape(kernel)
        c, b = shape[0], shape[1]
        # (C, B, H, W, cin) -> (B, H, W, C*cin), client-major channels.
        images = tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]),
                            tf.concat([[b], shape[2:4], [c * shape[4]]], 0))
        # (C, kh, kw, cin, cout) -> (kh, kw, cin, C*cout), client-major outputs.
        filters = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]),
                             tf.concat([kshape[1:4], [c * kshape[4]]], 0))
        y = tf.nn.conv2d(images, filters, strides=strides, padding=padding, dilations=dilation)
        out = tf.shape(y)
        y = tf.reshape(y, tf.concat([out[:3], [c, kshape[4]]], 0))
        y = tf.transpose(y, [3, 0, 1, 2, 4])  # (C, B, H', W', cout)
        if use_bias:
            y = y + _client_bias(params[1], 5)
        if rank == 1:
            y = tf.squeeze(y, 2)
        return activation(y)

    return forward


def _pool(layer: keras.layers.Layer, rank: int, kind: str) -> Forward:
    cfg = layer.get_config()
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise Unsupported(f"layer {layer.name}: data_format {cfg['data_format']}")
    size = tuple(cfg["pool_size"])
    strides = tuple(cfg["strides"] or size)
    if rank == 1:
        size, strides = (1,) + size, (1,) + strides
    padding = cfg["padding"].upper()
    op = tf.nn.max_pool2d if kind == "max" else tf.nn.avg_pool2d

    def forward(_params, x, _seed):
        if rank == 1:
            x = tf.expand_dims(x, 2)
        shape = tf.shape(x)
        images = tf.reshape(x, tf.concat([[shape[0] * shape[1]], shape[2:]], 0))
        y = op(images, ksize=list(size), strides=list(strides), padding=padding)
        y = tf.reshape(y, tf.concat([shape[:2], tf.shape(y)[1:]], 0))
        return tf.squeeze(y, 2) if rank == 1 else y

    return forward


def _global_pool(layer: keras.layers.Layer, rank: int, kind: str) -> Forward:
    cfg = layer.get_config()
    if cfg.get("data_format", "channels_last") != "channels_last" or cfg.get("keepdims"):
        raise Unsupported(f"layer {layer.name}: data_format/keepdims")
    axes = list(range(2, 2 + rank))
    reduce = tf.reduce_max if kind == "max" else tf.reduce_mean
    return lambda _params, x, _seed: reduce(x, axis=axes)


def _flatten(layer: keras.layers.Layer) -> Forward:
    if layer.get_config().get("data_format", "channels_last") != "channels_last":
        raise Unsupported(f"layer {layer.name}: channels_first Flatten")

    def forward(_params, x, _seed):
        shape = tf.shape(x)
        return tf.reshape(x, [shape[0], shape[1], -1])

    return forward


def _reshape(layer: keras.layers.Reshape) -> Forward:
    target = list(layer.target_shape)

    def forward(_params, x, _seed):
        return tf.reshape(x, tf.concat([tf.shape(x)[:2], target], 0))

    return forward


def _dropout(layer: keras.layers.Dropout, index: int) -> Forward:
    if layer.noise_shape is not None:
        raise Unsupported(f"layer {layer.name}: noise_shape is set")
    rate = float(layer.rate)

    def forward(_params, x, seed):
        if rate <= 0.0:
            return x
        u = tf.random.stateless_uniform(tf.shape(x), seed=seed + tf.constant([0, index], tf.int64))
        return tf.where(u >= rate, x / (1.0 - rate), tf.zeros_like(x))

    return forward


def _embedding(layer: keras.layers.Embedding) -> Forward:
    _no_extras(layer, "embeddings_regularizer", "activity_regularizer", "embeddings_constraint")
    if layer.mask_zero:
        raise Unsupported(f"layer {layer.name}: mask_zero")

    def forward(params, x, _seed):
        return tf.gather(params[0], tf.cast(x, tf.int32), batch_dims=1)

    return forward


def _layer_norm(layer: keras.layers.LayerNormalization) -> Forward:
    _no_extras(layer, "beta_regularizer", "gamma_regularizer", "beta_constraint",
               "gamma_constraint")
    axis = layer.axis if isinstance(layer.axis, int) else tuple(layer.axis)
    rank = len(layer.input.shape) if hasattr(layer, "input") else None
    if axis not in (-1, (-1,)) and not (rank and axis in (rank - 1, (rank - 1,))):
        raise Unsupported(f"layer {layer.name}: LayerNormalization over axis {layer.axis}")
    if layer.rms_scaling:
        raise Unsupported(f"layer {layer.name}: rms_scaling")
    scale, center, eps = layer.scale, layer.center, float(layer.epsilon)

    def forward(params, x, _seed):
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        y = (x - mean) * tf.math.rsqrt(var + eps)
        i = 0
        if scale:
            y = y * _client_bias(params[i], len(x.shape))
            i += 1
        if center:
            y = y + _client_bias(params[i], len(x.shape))
        return y

    return forward


def _activation(layer: keras.layers.Activation) -> Forward:
    fn = layer.activation
    return lambda _params, x, _seed: fn(x)


def _layer_forward(layer: keras.layers.Layer, index: int) -> Forward:
    L = keras.layers
    kind = type(layer)
    table: dict[type, Callable[[], Forward]] = {
        L.Dense: lambda: _dense(layer),
        L.Conv2D: lambda: _conv(layer, 2),
        L.Conv1D: lambda: _conv(layer, 1),
        L.MaxPooling2D: lambda: _pool(layer, 2, "max"),
        L.AveragePooling2D: lambda: _pool(layer, 2, "avg"),
        L.MaxPooling1D: lambda: _pool(layer, 1, "max"),
        L.AveragePooling1D: lambda: _pool(layer, 1, "avg"),
        L.GlobalAveragePooling2D: lambda: _global_pool(layer, 2, "avg"),
        L.GlobalMaxPooling2D: lambda: _global_pool(layer, 2, "max"),
        L.GlobalAveragePooling1D: lambda: _global_pool(layer, 1, "avg"),
        L.GlobalMaxPooling1D: lambda: _global_pool(layer, 1, "max"),
        L.Flatten: lambda: _flatten(layer),
        L.Reshape: lambda: _reshape(layer),
        L.Dropout: lambda: _dropout(layer, index),
        L.Embedding: lambda: _embedding(layer),
        L.LayerNormalization: lambda: _layer_norm(layer),
        L.Activation: lambda: _activation(layer),
    }
    # Exact types only: a subclass may override call() with different math.
    if kind not in table:
        raise Unsupported(f"layer {layer.name}: {kind.__name__} is not supported")
    return table[kind]()


def _layer_chain(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers in call order, if the model is a single chain."""
    if isinstance(model, keras.Sequential):
        return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    # A functional model is a keras.Function (a graph of layers); a subclassed one is not.
    if not isinstance(model, keras.Function):
        # A subclassed model's call() is arbitrary Python.
        raise Unsupported(f"model: subclassed model {type(model).__name__}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise Unsupported("model: more than one input or output")
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    previous = model.inputs[0]
    for layer in layers:
        try:
            if layer.input is not previous:
                raise Unsupported(f"model: layer {layer.name} is not fed by the layer before it")
        except (AttributeError, ValueError):
            raise Unsupported(f"model: layer {layer.name} is called more than once") from None
        previous = layer.output
    if previous is not model.outputs[0]:
        raise Unsupported("model: the last layer is not the output")
    return layers


def _activation_floats(layer: keras.layers.Layer) -> int:
    """Per-example floats of a layer's output (a memory estimate for chunking)."""
    try:
        return int(np.prod(layer.output.shape[1:]))
    except (AttributeError, ValueError, TypeError):
        return 0


def plan_layers(model: keras.Model) -> list[LayerPlan]:
    """Per-layer batched math for a chain model; raises Unsupported otherwise."""
    if model.losses:
        raise Unsupported("model: it adds its own losses (regularizers)")
    position = {id(v): i for i, v in enumerate(model.weights)}
    plans, covered = [], set()
    for i, layer in enumerate(_layer_chain(model)):
        forward = _layer_forward(layer, i)
        if layer.non_trainable_weights:
            raise Unsupported(f"layer {layer.name}: has non-trainable weights")
        index = tuple(position[id(v)] for v in layer.weights)
        covered.update(index)
        plans.append(LayerPlan(layer.name, forward, index, _activation_floats(layer)))
    if covered != set(range(len(model.weights))):
        raise Unsupported("model: some weights belong to no supported layer")
    if set(position[id(v)] for v in model.trainable_variables) != covered:
        raise Unsupported("model: frozen (non-trainable) weights")
    return plans


def has_dropout(model: keras.Model) -> bool:
    return any(type(layer) is keras.layers.Dropout for layer in model.layers)
