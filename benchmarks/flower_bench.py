"""The reference workload on Flower's simulation engine (Ray), in its own venv.

Run by benchmarks/run.py with benchmarks/.venv-flower/bin/python (Flower
needs numpy 2, fedactors numpy 1). Prints one JSON line.

``python -m benchmarks.flower_bench CLIENTS ROUNDS numpy|keras``: each Flower
client trains the reference MLP either with Keras ``fit`` (as the seed loop
does, and as Flower's own TensorFlow examples do) or in NumPy (the same math:
Dense(32, relu) -> Dense(2) logits, softmax cross-entropy, SGD 0.1, batch
20, one epoch). NumPy is much faster per client than Keras ``fit``, so the
NumPy figure is close to Flower's own cost per client update.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import numpy as np

from benchmarks.workloads import BATCH, EXAMPLES, FEATURES, LR, make_client

HIDDEN, CLASSES = 32, 2


def init_weights(rng: np.random.Generator) -> list[np.ndarray]:
    def glorot(fan_in: int, fan_out: int) -> np.ndarray:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)

    return [glorot(FEATURES, HIDDEN), np.zeros(HIDDEN, np.float32),
            glorot(HIDDEN, CLASSES), np.zeros(CLASSES, np.float32)]


def train(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray,
          rng: np.random.Generator) -> list[np.ndarray]:
    """One local epoch of minibatch SGD on softmax cross-entropy."""
    w1, b1, w2, b2 = (w.copy() for w in weights)
    order = rng.permutation(len(x))
    for start in range(0, len(x), BATCH):
        idx = order[start : start + BATCH]
        xb, yb = x[idx], y[idx]
        h = np.maximum(xb @ w1 + b1, 0.0)
        logits = h @ w2 + b2
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(yb)), yb] -= 1.0
        g = p / len(yb)
        gw2, gb2 = h.T @ g, g.sum(0)
        gh = (g @ w2.T) * (h > 0)
        gw1, gb1 = xb.T @ gh, gh.sum(0)
        w1 -= LR * gw1
        b1 -= LR * gb1
        w2 -= LR * gw2
        b2 -= LR * gb2
    return [w1, b1, w2, b2]


_KERAS_MODEL = []  # one model per Ray worker process, reused across clients


def train_keras(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from benchmarks.workloads import keras_model

    if not _KERAS_MODEL:
        _KERAS_MODEL.append(keras_model("mlp"))
    model = _KERAS_MODEL[0]
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0)
    return model.get_weights()


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and every descendant (Ray's raylet and workers)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(name))
            rss[int(name)] = int(fields[21]) * page
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def main() -> None:
    import flwr
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    clients, rounds, trainer = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    stamps: list[float] = []
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            peak[0] = max(peak[0], _tree_rss(os.getpid()))

    class Client(NumPyClient):
        def __init__(self, cid: int) -> None:
            self.cid = cid

        def fit(self, parameters, config):
            rng = np.random.default_rng([int(config.get("round", 0)), self.cid])
            x, y = make_client("mlp", EXAMPLES, np.random.default_rng([7, self.cid]))
            if trainer == "keras":
                return train_keras(parameters, x, y), len(x), {}
            return train(parameters, x, y, rng), len(x), {}

    def client_fn(context: Context):
        return Client(int(context.node_config["partition-id"])).to_client()

    def on_fit_metrics(_metrics):
        stamps.append(time.perf_counter())  # once per round, at aggregation
        return {}

    def server_fn(_context: Context):
        strategy = FedAvg(
            fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients,
            min_available_clients=clients,
            initial_parameters=flwr.common.ndarrays_to_parameters(
                init_weights(np.random.default_rng(0))),
            on_fit_config_fn=lambda r: {"round": r},
            fit_metrics_aggregation_fn=on_fit_metrics,
        )
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    threading.Thread(target=sample, daemon=True).start()
    start = time.perf_counter()
    run_simulation(
        server_app=ServerApp(server_fn=server_fn), client_app=ClientApp(client_fn=client_fn),
        num_supernodes=clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                        "init_args": {"num_cpus": os.cpu_count(), "include_dashboard": False}},
    )
    wall = time.perf_counter() - start
    done.set()
    rounds_wall = [b - a for a, b in zip([start] + stamps, stamps)]
    steady = rounds_wall[1:] or rounds_wall
    print(json.dumps({
        "system": f"flower-{trainer}", "version": flwr.__version__, "kind": "mlp",
        "cohort": clients,
        "rounds": len(stamps), "wall": wall,
        "updates_per_s": clients / float(np.median(steady)) if steady else 0.0,
        "updates_per_s_whole": clients * len(stamps) / wall,
        "round_wall": rounds_wall, "peak_rss": peak[0],
    }))


if __name__ == "__main__":
    main()
