"""A small scenario for the Ray backend test: loaded from its file path like any scenario,
so its functions reach the workers by value. DP with distributed noise makes each device
draw from its generator *after* training, which only matches if the worker hands the
generator's state back."""

import keras
import numpy as np

from fedactors import DeviceClass, FederatedData, LocalTraining, LogNormal, Rounds, Scenario
from fedactors.privacy.dp_mean import DPMean

CLASSES = 3


def model() -> keras.Model:
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(CLASSES)])


def blobs(n: int, rng: np.random.Generator):
    y = rng.integers(0, CLASSES, n).astype(np.int32)
    x = (rng.normal(size=(n, 4)) + y[:, None]).astype(np.float32)
    return x, y


def data(fleet, rng: np.random.Generator) -> FederatedData:
    return FederatedData.from_arrays([blobs(int(n), rng) for n in fleet.examples], blobs(300, rng))


scenario = Scenario(
    name="ray_check",
    model=model,
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    data=data,
    fleet=[DeviceClass("node", count=8, compute=LogNormal(50.0, 0.5), examples=LogNormal(60, 0.3))],
    rounds=Rounds(count=3, cohort_size=4, over_selection=1.5, deadline=30.0),
    training=LocalTraining(epochs=2, batch_size=10, optimizer=lambda: keras.optimizers.SGD(0.1)),
    aggregator=DPMean.fixed(clip_norm=1.0, noise_multiplier=0.3, expected_count=4,
                            distributed_noise=True),
)
