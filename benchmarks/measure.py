"""One benchmark configuration, in its own process; prints one JSON line.

``python -m benchmarks.measure seed|limit|fedactors|profile|decompose KIND COHORT ROUNDS
[DEVICES [always|diurnal]]`` (``decompose`` needs DEVICES)

Each configuration runs in a fresh process so that its peak RSS
(``ru_maxrss``) is its own.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def seed_loop(kind: str, cohort: int, rounds: int) -> dict:
    """The seed-style loop: every client a Keras ``fit``, one after another."""
    import keras

    from benchmarks.workloads import BATCH, EXAMPLES, LR, keras_model, make_client

    keras.utils.set_random_seed(0)
    model = keras_model(kind)
    weights = model.get_weights()
    data = [make_client(kind, EXAMPLES, np.random.default_rng([7, c])) for c in range(cohort)]
    stamps, start = [], time.perf_counter()
    for _ in range(rounds):
        updates = []
        for x, y in data:
            model.set_weights(weights)
            # A fresh optimizer per client and round, as FedAvg prescribes.
            model.compile(optimizer=keras.optimizers.SGD(LR),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0)
            updates.append(model.get_weights())
        weights = [np.mean([u[i] for u in updates], axis=0) for i in range(len(weights))]
        stamps.append(time.perf_counter())
    return _rates("seed-loop", kind, cohort, start, stamps)


def limit_run(kind: str, cohort: int, rounds: int) -> dict:
    """The compute limit: the cohort's training in one compiled graph, nothing else.

    ``tf.vectorized_map`` over the Keras model's ``stateless_call``: every client
    trains its own copy of the global weights on its own data (one epoch of
    batch 20, SGD), then the new weights are averaged (FedAvg with equal
    weights). The cohort's data is made each round, as fedactors must make it
    (one batched draw here, from one generator). No actors, no clock, no
    network, no per-device seed streams, no screening, no evaluation: what is
    left when a simulator adds nothing to the training itself.
    """
    import keras
    import tensorflow as tf

    from benchmarks.workloads import BATCH, EXAMPLES, FEATURES, IMAGE, LR, keras_model

    keras.utils.set_random_seed(0)
    model = keras_model(kind)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    steps = -(-EXAMPLES // BATCH)

    def train_one(args):
        weights, x, y = args
        weights = list(weights)
        for s in range(steps):
            xb, yb = x[s * BATCH:(s + 1) * BATCH], y[s * BATCH:(s + 1) * BATCH]
            with tf.GradientTape() as tape:
                tape.watch(weights)
                out, _ = model.stateless_call(weights, [], xb, training=True)
                value = loss(yb, out)
            grads = tape.gradient(value, weights)
            weights = [w - LR * g for w, g in zip(weights, grads)]
        return weights

    @tf.function(reduce_retracing=True)
    def round_step(global_weights, x, y):
        c = tf.shape(x)[0]
        tiled = [tf.broadcast_to(w, tf.concat([[c], tf.shape(w)], 0)) for w in global_weights]
        trained = tf.vectorized_map(train_one, (tiled, x, y))
        return [tf.reduce_mean(w, 0) for w in trained]

    rng = np.random.default_rng(0)
    weights = [v.numpy() for v in model.trainable_variables]
    shape = (FEATURES,) if kind == "mlp" else IMAGE
    stamps, start = [], time.perf_counter()
    data_s, train_s = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        x = rng.standard_normal((cohort, EXAMPLES, *shape), dtype=np.float32)
        if kind == "mlp":
            y = (x.sum(axis=2) > 0).astype(np.int32)
        else:
            y = (x[:, :, :14].mean(axis=(2, 3, 4)) > x[:, :, 14:].mean(axis=(2, 3, 4))).astype(np.int32)
        data_s.append(time.perf_counter() - t)
        out = round_step([tf.constant(w) for w in weights], tf.constant(x), tf.constant(y))
        weights = [w.numpy() for w in out]
        stamps.append(time.perf_counter())
        train_s.append(stamps[-1] - t - data_s[-1])
    out = _rates("limit", kind, cohort, start, stamps)
    out.update(data_s=data_s, train_s=train_s)
    return out


def fedactors_run(kind: str, cohort: int, rounds: int, devices: int,
                  availability: str = "always") -> dict:
    """The whole simulation through ``run_scenario`` (vectorized executor)."""
    from benchmarks.workloads import scenario
    from fedactors.simulation import RunOptions, run_scenario

    stamps: list[float] = []
    start = time.perf_counter()
    result = run_scenario(scenario(kind, devices, cohort, rounds, availability=availability),
                          RunOptions(device_events=False, executor="vectorized"),
                          on_round=[lambda _row: stamps.append(time.perf_counter())])
    out = _rates("fedactors", kind, cohort, start, stamps)
    out.update(devices=devices, availability=availability,
               accuracy=result.records[-1].get("accuracy"))
    return out


def decompose(kind: str, cohort: int, rounds: int, devices: int) -> dict:
    """``fedactors_run`` with its rounds taken apart: per round, the seconds spent
    making the devices' data (``GeneratedData.client``), in the executor's
    ``run_batch`` (batch orders, staging, the compiled training, copying deltas
    out) and in the compiled training call alone. The rest of a round is the
    simulation's own per-device Python: actors, network, server, evaluation.

    Timing wrappers cost about a microsecond a call, so the round walls here run a
    little slower than the plain measurement's.
    """
    from fedactors.data.generated import GeneratedData
    from fedactors.training.vectorized import VectorizedExecutor

    spent = {"data_s": 0.0, "executor_s": 0.0, "train_s": 0.0}

    def timed(key, fn):
        def call(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - t
        return call

    client, run_batch, run_chunk = (GeneratedData.client, VectorizedExecutor.run_batch,
                                    VectorizedExecutor._run_chunk)

    def chunk(self, *args):
        # The compiled function exists after the first chunk: time its calls from then on.
        if self._train is not None and not getattr(self._train, "timed", False):
            self._train = timed("train_s", self._train)
            self._train.timed = True
        return run_chunk(self, *args)

    GeneratedData.client = timed("data_s", client)
    VectorizedExecutor.run_batch = timed("executor_s", run_batch)
    VectorizedExecutor._run_chunk = chunk
    per_round: dict[str, list[float]] = {key: [] for key in spent}

    def on_round(_row) -> None:  # returns None: a string would stop the run
        stamps.append(time.perf_counter())
        for key in spent:
            per_round[key].append(spent[key])
            spent[key] = 0.0

    from benchmarks.workloads import scenario
    from fedactors.simulation import RunOptions, run_scenario

    stamps: list[float] = []
    start = time.perf_counter()
    run_scenario(scenario(kind, devices, cohort, rounds),
                 RunOptions(device_events=False, executor="vectorized"),
                 on_round=[on_round])
    out = _rates("fedactors-decomposed", kind, cohort, start, stamps)
    out.update(devices=devices, **per_round)
    return out


def _rates(system: str, kind: str, cohort: int, start: float, stamps: list[float]) -> dict:
    """Steady-state rate (median of rounds after the first) and whole-run rate."""
    rounds_wall = [b - a for a, b in zip([start] + stamps, stamps)]
    steady = rounds_wall[1:] or rounds_wall
    return {
        "system": system, "kind": kind, "cohort": cohort, "rounds": len(stamps),
        "wall": stamps[-1] - start,
        "updates_per_s": cohort / float(np.median(steady)),
        "updates_per_s_whole": cohort * len(stamps) / (stamps[-1] - start),
        "round_wall": rounds_wall,
    }


def main(argv: list[str]) -> None:
    what, kind, cohort, rounds = argv[0], argv[1], int(argv[2]), int(argv[3])
    if what == "seed":
        out = seed_loop(kind, cohort, rounds)
    elif what == "limit":
        out = limit_run(kind, cohort, rounds)
    elif what == "decompose":
        out = decompose(kind, cohort, rounds, int(argv[4]))
    elif what == "profile":
        import cProfile
        import pstats

        import fedactors.simulation  # noqa: F401  (imports are not what we profile)

        profiler = cProfile.Profile()
        profiler.enable()
        out = fedactors_run(kind, cohort, rounds, int(argv[4]) if len(argv) > 4 else cohort)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(25)
    else:
        out = fedactors_run(kind, cohort, rounds, int(argv[4]) if len(argv) > 4 else cohort,
                            argv[5] if len(argv) > 5 else "always")
    out["peak_rss"] = _peak_rss()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
