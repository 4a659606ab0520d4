"""One Keras model and optimizer, reused to train any device's copy of the weights.

Building a Keras model per device (or calling ``fit``) costs ~100 ms each; the
runner builds once and trains a device by assigning its weights, resetting the
optimizer and running a compiled loop over the device's batches.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from fedactors.errors import ConfigError
from fedactors.training.spec import LocalTraining, ModelSpec
from fedactors.training.weights import WeightsLayout


def _not_retracing_advice(record: logging.LogRecord) -> bool:
    """Drop TensorFlow's "N out of the last M calls ... triggered tf.function retracing".

    Every run builds its own models and compiled functions (so no run inherits
    another's state), so a process that runs many scenarios (the experiment
    commands, a notebook) traces many functions once each, as meant; the advice
    to reuse them only buried the experiments' own output (found from outside).
    """
    return "triggered tf.function retracing" not in record.getMessage()


if _not_retracing_advice not in tf.get_logger().filters:
    tf.get_logger().addFilter(_not_retracing_advice)


def build_model(spec: ModelSpec) -> keras.Model:
    model = spec.build()
    if not isinstance(model, keras.Model):
        raise ConfigError("model", f"must return a keras.Model, got {type(model).__name__}")
    if not model.built or not model.weights:
        raise ConfigError("model", "must return a built model (start it with keras.Input(shape))")
    return model


def resolve_loss(loss: object) -> keras.losses.Loss:
    """A Loss object that reduces to a scalar mean, whatever form the scenario gave."""
    resolved = keras.losses.get(loss) if isinstance(loss, str) else loss
    if isinstance(resolved, keras.losses.Loss):
        return resolved
    if callable(resolved):
        return _FunctionLoss(resolved)
    raise TypeError(f"loss: must be a Keras loss name, object or function, got {loss!r}")


class _FunctionLoss(keras.losses.Loss):
    """A per-example loss function reduced to its mean, as ``compile`` would.

    Like ``compile``, (n,) labels are matched to (n, 1) predictions.
    """

    def __init__(self, fn) -> None:
        super().__init__(name=getattr(fn, "__name__", "loss"))
        self.fn = fn

    def call(self, y_true, y_pred):
        if y_pred.shape.rank == len(y_true.shape) + 1 and y_pred.shape[-1] == 1:
            y_true = tf.expand_dims(y_true, -1)
        return self.fn(y_true, y_pred)


def batch_schedule(
    num_examples: int, epochs: int, batch_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled example order for every epoch, and each step's [start, end) in it.

    Each epoch is a fresh permutation; its last batch may be short, as in Keras.
    """
    return (shuffled_order(num_examples, epochs, rng), *batch_bounds(num_examples, epochs, batch_size))


def shuffled_order(num_examples: int, epochs: int, rng: np.random.Generator) -> np.ndarray:
    """The epochs' example order: a fresh permutation per epoch, concatenated.

    The only draws of :func:`batch_schedule`; a cohort's schedule calls it once per
    device and shares the (draw-free) step bounds among devices of one size.
    """
    order = np.tile(np.arange(num_examples, dtype=np.int32), epochs)
    shuffle_epochs(order, num_examples, rng)
    return order


def shuffle_epochs(order: np.ndarray, num_examples: int, rng: np.random.Generator) -> None:
    """Shuffle each epoch's ``num_examples`` of ``order`` (1-D) in place.

    ``rng.permutation(n)`` is ``arange(n)`` shuffled in place, and the swaps do not
    depend on the dtype: the very same draws for any row of ``arange`` copies, so a
    cohort shuffles the rows of one array instead of making one per device. (int64
    rows take numpy's faster 8-byte path: 2.5 against 3.2 us per 100 examples.)
    """
    if len(order) == num_examples:
        rng.shuffle(order)
        return
    for start in range(0, len(order), num_examples):
        rng.shuffle(order[start : start + num_examples])


def batch_bounds(num_examples: int, epochs: int,
                 batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each step's [start, end) in the concatenated epochs' order (no randomness)."""
    starts = np.concatenate(
        [np.arange(0, num_examples, batch_size) + e * num_examples for e in range(epochs)]
    ).astype(np.int32)
    ends = np.minimum(starts + batch_size, (starts // num_examples + 1) * num_examples).astype(
        np.int32
    )
    return starts, ends


class ModelRunner:
    """Trains flat weight vectors with a compiled TensorFlow loop."""

    def __init__(self, spec: ModelSpec, training: LocalTraining) -> None:
        self.model = build_model(spec)
        self.variables = list(self.model.weights)
        self.trainable = list(self.model.trainable_variables)
        self.layout = WeightsLayout.of([v.numpy() for v in self.variables])
        self.loss_fn = resolve_loss(spec.loss)
        self.training = training
        self.optimizer = training.optimizer()
        self.optimizer.build(self.trainable)
        self._optimizer_start = [tf.constant(v.numpy()) for v in self.optimizer.variables]
        # Keras keeps dropout (and other layer) randomness in seed-generator
        # state variables. Setting them from each device's own generator makes
        # a device's training a pure function of its task: the same whatever
        # trained before it, on whichever worker, resumed or not.
        self.seed_states = [v for v in self.model.variables
                            if v.path.endswith("seed_generator_state")]
        self._train = None  # compiled on first use, once the data's shapes are known

    def _compile(self, x: np.ndarray, y: np.ndarray):
        # One fixed signature (every size None) means exactly one trace: a
        # resumed run executes the very graph an uninterrupted one does.
        ints = tf.TensorSpec([None], tf.int32)
        signature = [
            tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([None, *x.shape[1:]], tf.as_dtype(x.dtype)),
            tf.TensorSpec([None, *y.shape[1:]], tf.as_dtype(y.dtype)),
            ints, ints, ints, tf.TensorSpec([2], tf.int64),
        ]
        return tf.function(self._train_graph, input_signature=signature)

    def initial_weights(self) -> np.ndarray:
        return self.layout.flatten([v.numpy() for v in self.variables])

    def _assign(self, flat: tf.Tensor) -> None:
        for var, piece, shape in zip(
            self.variables, tf.split(flat, list(self.layout.sizes)), self.layout.shapes
        ):
            var.assign(tf.reshape(piece, shape))

    def _train_graph(self, flat, x, y, order, starts, ends, seed):
        self._assign(flat)
        for i, state in enumerate(self.seed_states):
            state.assign(seed + tf.constant([0, i], tf.int64))
        # FedAvg: every device starts each round with fresh optimizer state.
        for var, start in zip(self.optimizer.variables, self._optimizer_start):
            var.assign(start)
        total = tf.constant(0.0, tf.float32)
        steps = tf.shape(starts)[0]
        for i in tf.range(steps):
            idx = order[starts[i] : ends[i]]
            xb, yb = tf.gather(x, idx), tf.gather(y, idx)
            with tf.GradientTape() as tape:
                loss = self.loss_fn(yb, self.model(xb, training=True))
                if self.model.losses:
                    loss += tf.add_n(self.model.losses)
            grads = tape.gradient(loss, self.trainable)
            self.optimizer.apply_gradients(zip(grads, self.trainable))
            total += tf.cast(loss, tf.float32)
        new = tf.concat([tf.reshape(tf.cast(v, tf.float32), [-1]) for v in self.variables], 0)
        return new - flat, total / tf.cast(tf.maximum(steps, 1), tf.float32)

    def train(
        self, weights: np.ndarray, x: np.ndarray, y: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, float]:
        """Train a copy of ``weights`` on (x, y); return the delta and the mean batch loss."""
        order, starts, ends = batch_schedule(
            len(x), self.training.epochs, self.training.batch_size, rng
        )
        # Drawn after the batch order, and only for models with layer
        # randomness, so models without it consume exactly the same stream.
        seed = rng.integers(0, 2**31 - 1, size=2) if self.seed_states else np.zeros(2)
        if self._train is None:
            self._train = self._compile(x, y)
        delta, loss = self._train(
            tf.constant(weights), tf.constant(x), tf.constant(y), order, starts, ends,
            tf.constant(seed, tf.int64),
        )
        return delta.numpy(), float(loss.numpy())


class MetricFailed(Exception):
    """A metric (not the loss) failed on the dry run's rows: ``name`` is the metric's."""

    def __init__(self, name: str, cause: BaseException) -> None:
        super().__init__(f"metric {name!r}: {type(cause).__name__}: {cause}")
        self.name, self.cause = name, cause


class Evaluator:
    """The server's model, evaluated on the server's own held-out data."""

    def __init__(self, spec: ModelSpec, x: np.ndarray, y: np.ndarray, batch_size: int = 4096):
        self.model = build_model(spec)
        self.layout = WeightsLayout.of(self.model.get_weights())
        self.loss_fn = resolve_loss(spec.loss)
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.metric_names, self._metrics = _resolve_metrics(spec.metrics, self.loss_fn, self.model)
        self._predict = tf.function(
            lambda xb: self.model(xb, training=False),
            input_signature=[tf.TensorSpec([None, *x.shape[1:]], tf.as_dtype(x.dtype))],
        )
        # Prediction, loss and every metric's update in one compiled call per batch:
        # called eagerly, Keras' loss and metrics cost more than the model itself
        # (a tenth of a 1,000-client round on the reference MLP).
        self._batch_step = tf.function(
            self._step,
            input_signature=[tf.TensorSpec([None, *x.shape[1:]], tf.as_dtype(x.dtype)),
                             tf.TensorSpec([None, *y.shape[1:]], tf.as_dtype(y.dtype))],
        )

    @functools.cached_property
    def _load(self) -> Callable[[np.ndarray], None]:
        """``model.set_weights(layout.unflatten(flat))`` as one compiled call: Keras
        checks and assigns each variable eagerly, half of an evaluation of the
        reference MLP (0.95 against 0.42 ms). Assigning is exact either way."""
        variables, sizes, shapes = list(self.model.weights), list(self.layout.sizes), self.layout.shapes

        def load(flat: tf.Tensor) -> None:
            pieces = tf.split(flat, sizes) if sizes else []  # (a model with no weights)
            for variable, piece, shape in zip(variables, pieces, shapes):
                variable.assign(tf.reshape(tf.cast(piece, variable.dtype), shape))

        return tf.function(load, input_signature=[tf.TensorSpec([self.layout.dim], tf.float32)])

    def _step(self, xb: tf.Tensor, yb: tf.Tensor) -> tf.Tensor:
        pred = self.model(xb, training=False)
        for m in self._metrics:
            m.update_state(yb, pred)
        return self.loss_fn(yb, pred)

    def dry_run(self, x: np.ndarray, y: np.ndarray) -> None:
        """Put a few rows of ``(x, y)`` through the model, the loss and every metric.

        Raises whatever TensorFlow raises when the model's output does not fit
        the labels; run before round 1 so a mismatch is a load error, not a
        failure of every device at its deadline. Leaves no state behind.
        """
        rows = min(8, len(x))
        self._dry_rows(x[:rows], y[:rows])
        if rows > 1 and rows in self.output_shape()[1:]:
            # Labels of shape (8,) broadcast against an (8, 8) output, so a regression loss
            # on class ids passes at exactly this count and fails at any other (found from
            # outside: loss="mse" on an 8-class model crashed at the first evaluation).
            self._dry_rows(x[:rows - 1], y[:rows - 1])

    def _dry_rows(self, x: np.ndarray, y: np.ndarray) -> None:
        pred = self._predict(tf.constant(x))
        float(self.loss_fn(y, pred).numpy())
        for name, m in zip(self.metric_names, self._metrics):
            try:
                m.update_state(y, pred)
                m.result()
            except Exception as exc:  # TensorFlow's, whatever it is: say which metric
                raise MetricFailed(name, exc) from exc
            finally:
                m.reset_state()

    def output_shape(self) -> tuple:
        return tuple(self.model.outputs[0].shape) if self.model.outputs else ()

    def input_shape(self) -> tuple:
        """The model's declared input shape (batch first), or () when it declares none."""
        try:
            inputs = self.model.inputs
        except (AttributeError, ValueError):  # a subclassed model called on nothing yet
            return ()
        return tuple(inputs[0].shape) if inputs and len(inputs) == 1 else ()

    def evaluate(self, flat: np.ndarray) -> dict[str, float]:
        self.layout.check_flat(flat)
        self._load(flat)
        for m in self._metrics:
            m.reset_state()
        loss_sum, n = 0.0, len(self.x)
        for start in range(0, n, self.batch_size):
            xb, yb = self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            loss_sum += float(self._batch_step(tf.constant(xb), tf.constant(yb)).numpy()) * len(xb)
        out = {"loss": loss_sum / max(n, 1)}
        for name, m in zip(self.metric_names, self._metrics):
            out[name] = float(m.result().numpy())
        return out


def _resolve_metrics(
    metrics: Sequence[object], loss_fn: keras.losses.Loss, model: keras.Model
) -> tuple[list[str], list[keras.metrics.Metric]]:
    names, objects = [], []
    from_logits = bool(getattr(loss_fn, "get_config", dict)().get("from_logits", False))
    outputs = int(model.outputs[0].shape[-1]) if model.outputs else 1
    for metric in metrics:
        if metric in ("accuracy", "acc"):
            # Keras picks the accuracy flavour from the loss and output; so do we.
            if outputs > 1:
                obj = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
            else:
                obj = keras.metrics.BinaryAccuracy(
                    name="accuracy", threshold=0.0 if from_logits else 0.5
                )
        elif isinstance(metric, str):
            obj = keras.metrics.get(metric)
            if not isinstance(obj, keras.metrics.Metric):
                obj = keras.metrics.MeanMetricWrapper(obj, name=metric)
        else:
            obj = metric
        names.append(obj.name)
        objects.append(obj)
    return names, objects
