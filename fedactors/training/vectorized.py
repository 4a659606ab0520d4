"""Train a whole cohort in one TensorFlow computation over stacked weights.

The per-device loop pays TensorFlow's dispatch cost (~ms) for every step of
every device; a cohort of 10,000 then costs minutes. Here the cohort's weights
are stacked to ``(C, *shape)`` per variable and every step runs all clients at
once with the batched layer math of :mod:`fedactors.training.batched`. Each
client still has its own weights, its own data, its own fresh optimizer state
and its own batch order (the same :func:`batch_schedule` draw as the
per-device path): shorter clients are padded and masked, and a client whose
steps are done is frozen, so its result is what its own loop would give, up to
float rounding.

Models, losses or optimizers the batched math does not cover cannot build a
``VectorizedExecutor`` (``Unsupported``); :func:`fedactors.training.choice.executor_for`
then uses the per-device ``SequentialExecutor``, with one logged warning and its
``fallback_reason``.

Dropout masks are drawn from a seed derived from the chunk's device streams:
deterministic for a seed, but not the masks the per-device path would draw
(those come from Keras' global seed generator, in device order).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Optional

import numpy as np
import tensorflow as tf

from fedactors.arrays import stack_rows
from fedactors.training.batched import (
    LayerPlan,
    OptimizerPlan,
    check_combination,
    has_dropout,
    plan_layers,
    plan_loss,
    plan_optimizer,
)
from fedactors.training.executor import Executor, TrainResult, TrainTask
from fedactors.training.model_runner import ModelRunner, batch_bounds, shuffle_epochs

#: Working-memory budget of one vectorized chunk; bigger cohorts run in chunks.
DEFAULT_MEMORY_BUDGET = 768 * 2**20
#: Knuth's multiplicative-hash constant (about 2**32 / golden ratio): spreads the
#: devices' dropout keys over 31 bits before they are XORed into one cohort seed.
DROPOUT_KEY_MIX = 2654435761
#: Offset between two training steps' dropout seeds; each Dropout layer adds its
#: own index (below this), so no two (step, layer) pairs share a seed.
STEP_SEED_STRIDE = 1024


def cohort_schedule(
    sizes: Sequence[int], epochs: int, batch_size: int, rngs: Sequence[np.random.Generator]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every client's batches as padded gather indices.

    Returns ``idx`` (S, C, B) indices into each client's own examples, ``mask``
    (S, C, B) 1.0 for a real example, ``active`` (S, C) whether the client
    still has a step, and ``steps`` (C,). Draws each client's order from its
    own generator exactly as :func:`~fedactors.training.model_runner.batch_schedule` does for
    the sequential path.
    """
    sizes = np.asarray(sizes, np.int64)
    c = len(sizes)
    steps = np.zeros(c, np.int32)
    per_size = {}
    for n in np.unique(sizes):
        # Clients of one size share their step boundaries: index them together.
        starts, ends = batch_bounds(int(n), epochs, batch_size)
        per_size[int(n)] = (starts, ends)
        steps[sizes == n] = len(starts)
    s_max = int(steps.max(initial=0))
    # Aligned, so that TensorFlow reads them where they are (``_as_tensor``).
    idx = _aligned_empty((s_max, c, batch_size), np.int32)
    mask = _aligned_empty((s_max, c, batch_size), np.float32)
    idx[...] = 0
    mask[...] = 0
    offsets = np.arange(batch_size, dtype=np.int32)
    for n, (starts, ends) in per_size.items():
        members = np.flatnonzero(sizes == n)
        positions = starts[:, None] + offsets[None, :]  # (S_n, B)
        valid = positions < ends[:, None]
        # The group's orders as rows of one array, each shuffled by its own device.
        stacked = np.empty((len(members), epochs * int(n)), np.int64)  # (G, epochs * n)
        stacked[...] = np.tile(np.arange(n), epochs)
        for row, j in zip(stacked, members.tolist()):
            shuffle_epochs(row, int(n), rngs[j])
        picked = stacked[:, np.minimum(positions, epochs * n - 1)]  # (G, S_n, B)
        idx[: len(starts), members] = np.where(valid, picked, 0).transpose(1, 0, 2)
        mask[: len(starts), members] = valid[:, None, :]
    active = np.arange(s_max)[:, None] < steps[None, :]
    return idx, mask, active, steps


#: TensorFlow's CPU kernels assume buffers aligned to this many bytes (Eigen's
#: EIGEN_MAX_ALIGN_BYTES); a tensor viewing misaligned memory aborts the process.
TF_ALIGNMENT = 64


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array whose data starts on a ``TF_ALIGNMENT`` boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + TF_ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % TF_ALIGNMENT
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def _pad_stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """(C, N_max, ...) with zeros past each client's own examples, in aligned memory."""
    n_max = max(len(a) for a in arrays)
    out = _aligned_empty((len(arrays), n_max, *arrays[0].shape[1:]), arrays[0].dtype)
    if all(len(a) == n_max for a in arrays):
        np.stack(arrays, out=out)
        return out
    out[...] = 0
    for j, a in enumerate(arrays):
        out[j, : len(a)] = a
    return out


def _as_tensor(array: np.ndarray) -> tf.Tensor:
    """``array`` as a tensor: shared, not copied, when its memory is aligned and
    contiguous (the caller must then never write to it again)."""
    if array.flags.c_contiguous and array.ctypes.data % TF_ALIGNMENT == 0 and array.size:
        try:
            return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
        except (BufferError, TypeError, ValueError):  # a dtype DLPack cannot describe
            pass
    return tf.constant(array)


class _StagedData:
    """The cohort's stacked examples, as tensors, kept while the same arrays come back.

    Stacking and converting a cohort's data cost about a fifth of a 1,000-client
    round; a fleet that fits in memory sends the very same (read-only) arrays
    every round, so one identity check per client is all that repeat costs.
    The previous cohort's stack is dropped before the next is built, so at most
    one is alive at a time.
    """

    def __init__(self) -> None:
        self._arrays: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
        self._tensors: Optional[tuple[tf.Tensor, tf.Tensor]] = None

    def tensors(self, xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[tf.Tensor, tf.Tensor]:
        old_x, old_y = self._arrays
        if (self._tensors is None or len(xs) != len(old_x)
                or not all(map(operator.is_, xs, old_x)) or not all(map(operator.is_, ys, old_y))
                or any(a.flags.writeable for a in xs) or any(a.flags.writeable for a in ys)):
            self._arrays, self._tensors = ([], []), None
            self._tensors = (_as_tensor(_pad_stack(xs)), _as_tensor(_pad_stack(ys)))
            self._arrays = (xs, ys)
        return self._tensors


class VectorizedExecutor(Executor):
    """Runs every pending task of a batch in one compiled, cohort-wide loop."""

    def __init__(
        self,
        runner: ModelRunner,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        """Plans the cohort-wide math; raises ``Unsupported`` (with the reason) if the
        model, loss or optimizer cannot be reproduced exactly, so an executor is either
        fully built or not built (``training.choice`` then uses the per-device loop)."""
        super().__init__()
        self.runner = runner
        self.memory_budget = memory_budget
        self.layers: list[LayerPlan] = plan_layers(runner.model)
        self.loss = plan_loss(runner.loss_fn)
        self.optimizer: OptimizerPlan = plan_optimizer(runner.training.optimizer())
        check_combination(runner.model, self.optimizer)
        self.dropout = has_dropout(runner.model)
        self.layout = runner.layout
        self._train: Optional[tf.types.experimental.PolymorphicFunction] = None
        # One per chunk position: a cohort bigger than one chunk keeps each chunk's data.
        self._staged: dict[int, _StagedData] = {}

    def run_batch(self, tasks: Sequence[TrainTask]) -> list[TrainResult]:
        out: list[TrainResult] = []
        size = self._chunk_size(tasks)
        for start in range(0, len(tasks), size):
            staged = self._staged.setdefault(start, _StagedData())
            out.extend(self._run_chunk(tasks[start : start + size], staged))
        for start in [k for k in self._staged if k >= len(tasks)]:
            del self._staged[start]  # positions this (smaller) cohort no longer uses
        return out

    def _chunk_size(self, tasks: Sequence[TrainTask]) -> int:
        """Clients per computation so that activations, data and weights fit the budget."""
        if not tasks:
            return 1
        training = self.runner.training
        example = int(np.prod(tasks[0].x.shape[1:])) + 1
        n_max = max(len(t.x) for t in tasks)
        activations = sum(p.activation_floats for p in self.layers) + example
        # Forward values, their gradients and temporaries: ~3 copies per step.
        per_client = 4 * (3 * training.batch_size * activations + n_max * example
                          + 6 * self.layout.dim)
        return max(1, min(len(tasks), self.memory_budget // per_client))

    def _run_chunk(self, tasks: Sequence[TrainTask], staged: _StagedData) -> list[TrainResult]:
        training = self.runner.training
        idx, mask, active, steps = cohort_schedule(
            [len(t.x) for t in tasks], training.epochs, training.batch_size,
            [t.rng for t in tasks],
        )
        # Tasks of one round share one weights array: send it once, not C times.
        unique: dict[int, int] = {}
        rows: list[np.ndarray] = []
        widx = np.empty(len(tasks), np.int32)
        for j, t in enumerate(tasks):
            key = id(t.weights)
            if key not in unique:
                unique[key] = len(rows)
                rows.append(t.weights)
            widx[j] = unique[key]
        seed = np.zeros(2, np.int64)
        if self.dropout:
            # Drawn after the batch order, and only for models with dropout,
            # so every other model uses each device's stream exactly as the
            # per-device path does.
            keys = [int(t.rng.integers(2**31)) for t in tasks]
            seed[0] = int(np.bitwise_xor.reduce(np.array(keys, np.int64) * DROPOUT_KEY_MIX % 2**31))
        x, y = staged.tensors([t.x for t in tasks], [t.y for t in tasks])
        args = (tf.constant(stack_rows(rows)), tf.constant(widx), x, y, _as_tensor(idx),
                _as_tensor(mask), *map(tf.constant, (active, steps, seed)))
        if self._train is None:
            # Every dimension left open: cohort size, data size and step count
            # change from round to round, and a retrace costs ~1 s.
            signature = [tf.TensorSpec([None] * a.shape.rank, a.dtype) for a in args]
            self._train = tf.function(self._train_graph, input_signature=signature)
        delta, loss = self._train(*args)
        delta, losses = delta.numpy(), loss.numpy().tolist()
        return [TrainResult(t.device, t.round, delta[j], losses[j]) for j, t in enumerate(tasks)]

    def _forward(self, params: list[tf.Tensor], x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        for plan in self.layers:
            x = plan.forward([params[i] for i in plan.weight_index], x, seed)
        return x

    def _train_graph(self, unique, widx, x, y, idx, mask, active, steps, seed):
        flat = tf.gather(unique, widx)  # (C, dim)
        c = tf.shape(flat)[0]
        params = [
            tf.reshape(piece, tf.concat([[c], shape], 0))
            for piece, shape in zip(
                tf.split(flat, list(self.layout.sizes), axis=1),
                [tf.constant(s, tf.int32, [len(s)]) for s in self.layout.shapes],
            )
        ]
        slots = self.optimizer.init(params)
        total = tf.zeros([c], tf.float32)
        for i in tf.range(tf.shape(idx)[0]):
            xb = tf.gather(x, idx[i], batch_dims=1)  # (C, B, ...)
            yb = tf.gather(y, idx[i], batch_dims=1)
            m = mask[i]
            with tf.GradientTape() as tape:
                tape.watch(params)
                pred = self._forward(params, xb, seed + tf.stack([tf.constant(0, tf.int64),
                                                                  tf.cast(i, tf.int64) * STEP_SEED_STRIDE]))
                each = tf.cast(self.loss(yb, pred), tf.float32)
                # Each client's own batch mean; summing over clients keeps
                # every client's gradient its own.
                per_client = tf.reduce_sum(each * m, 1) / tf.maximum(tf.reduce_sum(m, 1), 1.0)
                objective = tf.reduce_sum(per_client)
            grads = tape.gradient(objective, params)
            grads = [tf.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
            new_params, new_slots = self.optimizer.step(params, grads, slots, i + 1)
            # Clients out of steps keep their weights and optimizer state.
            a = active[i]
            params = [_keep(a, new, old) for new, old in zip(new_params, params)]
            slots = [_keep(a, new, old) for new, old in zip(new_slots, slots)]
            total += tf.where(a, per_client, 0.0)
        new_flat = tf.concat([tf.reshape(p, [c, -1]) for p in params], 1)
        return new_flat - flat, total / tf.cast(tf.maximum(steps, 1), tf.float32)


def _keep(active: tf.Tensor, new: tf.Tensor, old: tf.Tensor) -> tf.Tensor:
    shape = tf.concat([tf.shape(active), tf.ones([tf.rank(new) - 1], tf.int32)], 0)
    return tf.where(tf.reshape(active, shape), new, old)
