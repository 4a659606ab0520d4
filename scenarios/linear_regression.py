"""The tutorial's example done right: two devices fit y = 2x + 1 together.

Each device holds 100 private samples; the server only ever receives model
deltas (weighted by example count) and never sees x or y. The global model
ends with kernel 2 and bias 1.
"""

import keras
import numpy as np

from fedactors import DeviceClass, FederatedData, LocalTraining, Rounds, Scenario


def model() -> keras.Model:
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])


def line(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-1.0, 1.0, (n, 1)).astype(np.float32)
    return x, (2.0 * x[:, 0] + 1.0).astype(np.float32)


def data(fleet, rng: np.random.Generator) -> FederatedData:
    # Device A and device B each draw their own samples; the server gets a
    # separate held-out set for evaluation only.
    return FederatedData.from_arrays([line(100, rng) for _ in range(fleet.size)], line(200, rng))


scenario = Scenario(
    name="linear_regression",
    description="Two devices fit y = 2x + 1 with FedAvg; the server never sees their data.",
    model=model,
    loss="mean_squared_error",
    metrics=["mean_absolute_error"],
    data=data,
    fleet=[DeviceClass("device", count=2, compute=1000.0)],
    rounds=Rounds(count=30, cohort_size=2, deadline=60.0),
    training=LocalTraining(epochs=1, batch_size=10, optimizer=lambda: keras.optimizers.SGD(0.1)),
)
