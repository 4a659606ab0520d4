"""Local training on Ray: the same batches, run by workers on this machine or a cluster.

Only the *training* moves. The actors, the virtual clock, the network, the
server's aggregation and evaluation all stay in the driver process; when a
device collects its result, :meth:`Executor.collect` hands every pending task
to :meth:`RayExecutor.run_batch`, which splits them into contiguous chunks,
one per worker, and returns the results in submission order. Nothing about
simulated time changes: training costs no simulated time whatever runs it.

**How the scenario reaches the workers: by value, with cloudpickle.** Each
worker builds its own :class:`ModelRunner` from the scenario's model builder,
loss and local optimizer factory. Those are functions defined in the
scenario file, which :mod:`fedactors.scenarios.loader` executes as a module
that is *not* registered in ``sys.modules``; cloudpickle therefore serialises
them (and the constants they use) by value, so a worker needs neither the
file nor its path. We pickle them once, up front, so an unpicklable scenario
fails in the driver with a clear error. What is pickled by reference and so
must be importable on every worker: ``fedactors`` itself (shipped with
``runtime_env={"py_modules": [...]}`` when connecting to a cluster), and
TensorFlow/Keras/numpy (installed on the cluster's nodes).

**Bit for bit the same as the local sequential executor.** Each worker turns
on TensorFlow op determinism and seeds Keras from the run's ``("keras",)``
seed, as the driver does, and trains with the same compiled loop. Batch order
comes from the task's own generator (``("device", round, id)``), which is
shipped with the task; the worker sends back the generator's final state and
the driver restores it, because the device keeps drawing from that generator
after training (DP noise shares in ``encode``). Limits: a model with
stochastic layers (dropout) draws from its runner's Keras seed state, which
differs when tasks are spread over several runners; and nodes with different
CPU instruction sets may round differently. Neither applies to the test.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from fedactors.errors import ConfigError
from fedactors.training.executor import Executor, TrainResult, TrainTask
from fedactors.training.spec import LocalTraining, ModelSpec

#: The directory holding the fedactors package, shipped to cluster workers.
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


class _TrainWorker:
    """A Ray actor: one ModelRunner, built once, trains chunk after chunk."""

    def __init__(self, payload: bytes, threads: int) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import cloudpickle
        import keras
        import tensorflow as tf

        from fedactors.training.model_runner import ModelRunner

        spec, training, keras_seed = cloudpickle.loads(payload)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(keras_seed)
        self.runner = ModelRunner(spec, training)

    def pid(self) -> int:
        """This worker's process id (tests kill it to check the retry)."""
        return os.getpid()

    def train(self, weights: list[np.ndarray], chunk: list[tuple]) -> list[tuple]:
        out = []
        for which, x, y, rng in chunk:
            delta, loss = self.runner.train(weights[which], x, y, rng)
            out.append((delta, loss, rng.bit_generator.state))
        return out


def _connect(num_cpus: Optional[int]) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    # A run shows only fedactors' own output (README): Ray's "Started a local Ray
    # instance" is logged at INFO, and its FutureWarning tip is about Ray's own API.
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if address:
            # A cluster: ship this fedactors source tree; TensorFlow must be installed there.
            ray.init(address=address, runtime_env={"py_modules": [str(_PACKAGE_DIR)]}, **quiet)
        else:
            # A local instance: workers run this interpreter; point them at this source tree.
            path = os.pathsep.join(p for p in (str(_PACKAGE_DIR.parent),
                                               os.environ.get("PYTHONPATH")) if p)
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3"}},
                     **quiet)


def chunk_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous [start, end) ranges covering ``range(n)``, sizes differing by <= 1."""
    parts = max(1, min(parts, n))
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


#: How often one chunk is re-run on a fresh worker before the run fails.
MAX_RETRIES = 3


class RayExecutor(Executor):
    """Runs each batch of train tasks on ``workers`` Ray actors (one CPU each)."""

    def __init__(self, spec: ModelSpec, training: LocalTraining, keras_seed: int,
                 workers: Optional[int] = None) -> None:
        super().__init__()
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):
            raise ConfigError("ray_workers", f"must be a whole number >= 1, got {workers!r}")
        try:
            import cloudpickle
            import ray
        except ImportError:
            raise ConfigError(
                "backend", "'ray' needs Ray: pip install 'fedactors[ray]' (ray[default]>=2.9)"
            ) from None
        try:
            payload = cloudpickle.dumps((spec, training, int(keras_seed)))
        except Exception as exc:  # whatever the scenario holds that cannot travel
            raise ConfigError(
                "backend", f"the scenario's model cannot be sent to Ray workers: {exc}"
            ) from None
        _connect(workers)
        n = workers or max(1, int(ray.available_resources().get("CPU", 1)))
        self._remote = ray.remote(num_cpus=1)(_TrainWorker)
        self._payload = payload
        self.workers = [self._remote.remote(payload, 1) for _ in range(n)]

    @classmethod
    def factory(cls, spec: ModelSpec, training: LocalTraining, keras_seed: int,
                workers: Optional[int] = None):
        """An ``executor_factory`` for :func:`fedactors.simulation.run_scenario`."""
        return lambda runner: cls(spec, training, keras_seed, workers)

    def run_batch(self, tasks: Sequence[TrainTask]) -> list[TrainResult]:

        if not tasks:
            return []
        # A cohort shares one global weights array: send each distinct array once per chunk.
        refs = []
        for start, end in chunk_bounds(len(tasks), len(self.workers)):
            arrays: list[np.ndarray] = []
            index: dict[int, int] = {}
            chunk = []
            for task in tasks[start:end]:
                which = index.setdefault(id(task.weights), len(arrays))
                if which == len(arrays):
                    arrays.append(task.weights)
                chunk.append((which, task.x, task.y, task.rng))
            worker = self.workers[len(refs)]
            refs.append((worker.train.remote(arrays, chunk), arrays, chunk))
        results = [r for i, part in enumerate(refs) for r in self._result(i, *part)]
        out = []
        for task, (delta, loss, rng_state) in zip(tasks, results):
            task.rng.bit_generator.state = rng_state  # as if trained here
            out.append(TrainResult(task.device, task.round, np.asarray(delta), float(loss)))
        return out

    def _result(self, i: int, ref, arrays: list[np.ndarray], chunk: list[tuple]) -> list[tuple]:
        """Worker ``i``'s chunk; a worker that died is replaced and the chunk re-run.

        The chunk's generators are still in their pre-training state in the
        driver (results carry the new state back), so the re-run trains exactly
        what the lost one would have: the run's result does not change.
        """
        import ray

        for attempt in range(MAX_RETRIES + 1):
            try:
                return ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                if attempt == MAX_RETRIES:
                    raise
                self.incident("executor.retry", worker=i, attempt=attempt + 1,
                              reason=str(exc).strip().splitlines()[0][:200])
                self.workers[i] = self._remote.remote(self._payload, 1)
                ref = self.workers[i].train.remote(arrays, chunk)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Stop the workers (the Ray instance itself stays up for the next run)."""
        import ray

        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
