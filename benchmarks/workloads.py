"""The benchmark workloads, as fedactors scenarios and as plain NumPy data.

Reference ("mlp"): each client 100 examples of 20 float features, label =
(sum of features > 0), Dense(32, relu) -> Dense(2) logits, one local epoch of
batch 20, SGD lr 0.1, every client in every round.
Convolutional ("conv"): each client 100 28x28x1 images, label = (mean of the
top half > mean of the bottom half), Conv2D(8,3) -> MaxPool -> Conv2D(16,3) ->
MaxPool -> Flatten -> Dense(2), same training.

The data is generated per device from its own seed stream, so the three
systems benchmarked see data of the same distribution without anyone storing
a 100,000-device array.
"""

from __future__ import annotations

import numpy as np

EXAMPLES = 100
FEATURES = 20
IMAGE = (28, 28, 1)
BATCH = 20
LR = 0.1


def make_client(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One client's (x, y): float32 features, int32 labels in {0, 1}."""
    if kind == "mlp":
        x = rng.standard_normal((n, FEATURES), dtype=np.float32)
        y = (x.sum(axis=1) > 0).astype(np.int32)
    else:
        x = rng.standard_normal((n, *IMAGE), dtype=np.float32)
        y = (x[:, :14].mean(axis=(1, 2, 3)) > x[:, 14:].mean(axis=(1, 2, 3))).astype(np.int32)
    return x, y


def keras_model(kind: str):
    import keras

    if kind == "mlp":
        return keras.Sequential([
            keras.Input((FEATURES,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(2),
        ])
    return keras.Sequential([
        keras.Input(IMAGE),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(2),
    ])


def scenario(kind: str, devices: int, cohort: int, rounds: int, seed: int = 0,
             availability: str = "always"):
    """The workload as a fedactors Scenario: no dropouts, no deadline cut; every device
    always online, or (``availability="diurnal"``) online mostly at night in its own
    time zone (``Diurnal()``'s defaults: about a quarter of the fleet at the start)."""
    import keras

    from fedactors import (
        AlwaysOnline,
        Constant,
        DeviceClass,
        Diurnal,
        LocalTraining,
        NetworkProfile,
        Rounds,
        Scenario,
    )
    from fedactors.data.generated import GeneratedData

    def data(fleet, rng: np.random.Generator):
        test = make_client(kind, 1000, rng)
        return GeneratedData.create(
            np.full(fleet.size, EXAMPLES), lambda _d, n, r: make_client(kind, n, r), test, rng
        )

    return Scenario(
        name=f"bench-{kind}",
        model=lambda: keras_model(kind),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        data=data,
        fleet=[DeviceClass("client", count=devices, compute=Constant(1000.0),
                           network=NetworkProfile(rtt=0.05, uplink=1e7, downlink=1e7),
                           availability=Diurnal() if availability == "diurnal" else AlwaysOnline(),
                           dropout=0.0,
                           examples=Constant(EXAMPLES))],
        rounds=Rounds(count=rounds, cohort_size=cohort, deadline=1e6, min_reports=cohort),
        training=LocalTraining(epochs=1, batch_size=BATCH,
                               optimizer=lambda: keras.optimizers.SGD(LR)),
        seed=seed,
    )
