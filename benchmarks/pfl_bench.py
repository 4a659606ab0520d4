"""The reference workload on pfl-research's simulator (TensorFlow backend), in its own venv.

Run by benchmarks/run.py with benchmarks/.venv-pfl/bin/python (pfl 0.6.0,
TensorFlow with tf-keras). Prints one JSON line, with flower_bench.py's keys
plus ``workers``, ``accuracy`` and the correctness checks' figures.

``python -m benchmarks.pfl_bench CLIENTS ROUNDS [WORKERS]``: pfl's
``FederatedAveraging`` over a ``SimulatedBackend`` with a ``TFModel``; every
client in every round (``minimize_reuse`` sampling over CLIENTS users), each
client's data ``make_client("mlp", 100, default_rng([7, cid]))`` made when it
is sampled, as flower_bench.py does; local training one epoch of batch 20 with
SGD 0.1, FedAvg applied with a central SGD of learning rate 1; no evaluation
inside pfl's rounds (our own accuracy on 1,000 held-out examples after each
round is one forward pass).

Workers: pfl's TensorFlow backend runs several worker processes with no MPI
or Horovod: each process gets ``PFL_WORKER_ADDRESSES`` (all workers'
host:port) and its ``PFL_WORKER_RANK``, and pfl makes a TensorFlow
``MultiWorkerMirroredStrategy`` over them; each worker trains its share of
the cohort and the sums are all-reduced every round. This script, run without
``PFL_WORKER_RANK``, is the launcher: it starts WORKERS (default 2) copies of
itself on free localhost ports, samples their processes' resident memory and
prints rank 0's line.

``TF_USE_LEGACY_KERAS=1`` is set before TensorFlow is imported: pfl's
``TFModel`` keys the model's variables by ``variable.name``, which Keras 3
shortens to ``kernel``/``bias``, so the first Dense layer would silently drop
out of the average. The run checks that it does not: the variable map holds
every trainable variable, and the model after round 1 equals FedAvg computed
in NumPy from the same start (flower_bench.py's ``train`` on the same batches).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np

from benchmarks.flower_bench import CLASSES, HIDDEN, _tree_rss, init_weights, train
from benchmarks.workloads import BATCH, EXAMPLES, FEATURES, LR, make_client

RANK = "PFL_WORKER_RANK"
ADDRESSES = "PFL_WORKER_ADDRESSES"


class _InOrder:
    """pfl's ``Dataset.iter`` takes the batches in order: the reference must too."""

    @staticmethod
    def permutation(n: int) -> np.ndarray:
        return np.arange(n)


def fedavg_reference(weights: list[np.ndarray], clients: int) -> list[np.ndarray]:
    """One round of FedAvg (equal weights: every client has 100 examples) in NumPy."""
    deltas = [np.zeros_like(w, dtype=np.float64) for w in weights]
    for cid in range(clients):
        x, y = make_client("mlp", EXAMPLES, np.random.default_rng([7, cid]))
        for d, new, old in zip(deltas, train(weights, x, y, _InOrder()), weights):
            d += new - old
    return [w + (d / clients).astype(np.float32) for w, d in zip(weights, deltas)]


def _exit_with_launcher() -> None:
    """A worker whose launcher was killed (run.py's timeout) stops too."""
    launcher = os.getppid()
    while True:
        time.sleep(1.0)
        if os.getppid() != launcher:
            os._exit(1)


def worker(clients: int, rounds: int) -> None:
    threading.Thread(target=_exit_with_launcher, daemon=True).start()
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    # Each worker's TensorFlow thread pools sized to its share of the cores: two workers
    # with pools the size of the machine each ran 1,000-client rounds at a median ~440
    # updates/s, with one thread each at ~630 (3 runs each, 2026-12-02).
    workers = len(os.environ.get(ADDRESSES, "").split(",")) if ADDRESSES in os.environ else 1
    threads = max(1, (os.cpu_count() or 1) // workers)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    start = time.perf_counter()
    # pfl's TensorFlow ops start the workers' collective at import (module scope).
    import pfl
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.data.sampling import get_user_sampler
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.internal.ops.selector import get_default_framework_module
    from pfl.metrics import Metrics
    from pfl.model.tensorflow import TFModel

    keras = tf.keras
    assert keras.__name__.startswith("tf_keras"), f"pfl needs tf-keras, got {keras.__name__}"
    # Same global seed on every worker: pfl draws the cohort and its seeds from it.
    np.random.seed(0)
    tf.random.set_seed(0)

    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(HIDDEN, activation="relu"),
        keras.layers.Dense(CLASSES),
    ])
    initial = init_weights(np.random.default_rng(0))  # flower_bench.py's start
    model.set_weights(initial)
    model.compile(optimizer=keras.optimizers.SGD(LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pfl_model = TFModel(model=model, metrics={},
                        central_optimizer=keras.optimizers.SGD(1.0))
    names = list(pfl_model.variable_map)
    assert len(names) == len(model.trainable_variables) == 4, (
        f"pfl sees {names}: variables sharing a name drop out of the average")

    trained = [0]  # clients this worker trained

    def make_dataset(cid: int) -> Dataset:
        trained[0] += 1
        x, y = make_client("mlp", EXAMPLES, np.random.default_rng([7, cid]))
        return Dataset((x, y), user_id=str(cid))

    data = FederatedDataset(make_dataset, get_user_sampler("minimize_reuse", list(range(clients))))
    x_test, y_test = make_client("mlp", 1000, np.random.default_rng([8, 0]))

    def accuracy() -> float:
        logits = model(x_test, training=False).numpy()
        return float((logits.argmax(axis=1) == y_test).mean())

    stamps: list[float] = []
    accuracies: list[float] = []
    after_first: list[list[np.ndarray]] = []

    class Clock(TrainingProcessCallback):
        def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
            stamps.append(time.perf_counter())
            if central_iteration == 0:
                after_first.append(model.keras_model.get_weights())
            accuracies.append(accuracy())
            return False, Metrics()

    class FedAvg(FederatedAveraging):
        """pfl's FedAvg, without its per-user evaluation before and after local training
        (it evaluates in round 0 whatever ``evaluation_frequency`` is)."""

        def get_next_central_contexts(self, *args, **kwargs):
            contexts, model, metrics = super().get_next_central_contexts(*args, **kwargs)
            if contexts is not None:
                contexts = tuple(dataclasses.replace(c, do_evaluation=False) for c in contexts)
            return contexts, model, metrics

    accuracy_initial = accuracy()
    FedAvg().run(
        algorithm_params=NNAlgorithmParams(central_num_iterations=rounds,
                                           evaluation_frequency=rounds + 1,
                                           train_cohort_size=clients, val_cohort_size=None),
        backend=SimulatedBackend(training_data=data, val_data=data),
        model=pfl_model,
        model_train_params=NNTrainHyperParams(local_num_epochs=1, local_learning_rate=LR,
                                              local_batch_size=BATCH),
        model_eval_params=NNEvalHyperParams(local_batch_size=None),
        callbacks=[Clock()],
        send_metrics_to_platform=False,
    )
    wall = time.perf_counter() - start
    if get_default_framework_module().distributed.global_rank != 0:
        return

    # Correctness: every layer moved, and round 1 is FedAvg of the clients' local models.
    final = model.get_weights()
    moved = [float(np.abs(a - b).max()) for a, b in zip(final, initial)]
    assert all(m > 1e-4 for m in moved), f"a layer did not move: {dict(zip(names, moved))}"
    expected = fedavg_reference(initial, clients)
    error = max(float(np.abs(a - b).max()) for a, b in zip(after_first[0], expected))
    first_step = float(np.abs(expected[0] - initial[0]).max())
    assert error < 1e-3 * max(first_step, 1e-3), (
        f"round 1 is not FedAvg: max error {error:.2e} (first kernel's step {first_step:.2e})")

    rounds_wall = [b - a for a, b in zip([start] + stamps, stamps)]
    steady = rounds_wall[1:] or rounds_wall
    print(json.dumps({
        "system": "pfl-research", "version": pfl.__version__, "kind": "mlp",
        "cohort": clients,
        "rounds": len(stamps), "wall": wall,
        "updates_per_s": clients / float(np.median(steady)) if steady else 0.0,
        "updates_per_s_whole": clients * len(stamps) / wall,
        "round_wall": rounds_wall, "peak_rss": 0,
        "workers": get_default_framework_module().distributed.world_size, "tf_threads": threads,
        "clients_on_rank0": trained[0] / max(len(stamps), 1), "tensorflow": tf.__version__,
        "accuracy_initial": accuracy_initial, "accuracy": accuracies[-1],
        "accuracy_rounds": accuracies,
        "variables": names, "moved": moved, "round1_max_error": error,
    }), flush=True)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def launch(clients: int, rounds: int, workers: int) -> int:
    """Start the workers, sum their resident memory, print rank 0's line with it."""
    addresses = ",".join(f"localhost:{p}" for p in _free_ports(workers))
    procs = []
    for rank in range(workers):
        env = dict(os.environ)
        if workers > 1:
            env.update({RANK: str(rank), ADDRESSES: addresses})
        else:
            env.update({RANK: "0"})
            env.pop(ADDRESSES, None)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "benchmarks.pfl_bench", str(clients), str(rounds)],
            env=env, stdout=subprocess.PIPE, text=True))
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            peak[0] = max(peak[0], sum(_tree_rss(p.pid) for p in procs))

    threading.Thread(target=sample, daemon=True).start()
    outputs = [""] * workers
    readers = [threading.Thread(target=lambda i=i: outputs.__setitem__(i, procs[i].stdout.read()))
               for i in range(workers)]
    for r in readers:
        r.start()
    failed = None
    while failed is None and any(p.poll() is None for p in procs):
        failed = next((p for p in procs if p.poll() not in (None, 0)), None)
        time.sleep(0.2)
    failed = failed or next((p for p in procs if p.returncode != 0), None)
    if failed is not None:  # the others would wait for it in the next all-reduce
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p in procs:
        p.wait()
    for r in readers:
        r.join()
    done.set()
    if failed is not None:
        print(f"pfl worker {procs.index(failed)} exited with {failed.returncode}",
              file=sys.stderr)
        return 1
    lines = [ln for ln in outputs[0].splitlines() if ln.startswith("{")]
    if not lines:
        print("pfl worker 0 printed no result", file=sys.stderr)
        return 1
    out = json.loads(lines[-1])
    out["peak_rss"] = peak[0]
    print(json.dumps(out))
    return 0


def main() -> int:
    clients, rounds = int(sys.argv[1]), int(sys.argv[2])
    if RANK in os.environ:
        worker(clients, rounds)
        return 0
    return launch(clients, rounds, int(sys.argv[3]) if len(sys.argv) > 3 else 2)


if __name__ == "__main__":
    raise SystemExit(main())
