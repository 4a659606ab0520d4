"""Thousands of phones learn next-character prediction for a keyboard, at night.

3,000 phones, each with its owner's typing (synthetic text from per-user
mixtures of writing styles; see fedactors/data/keyboard.py). As in production
keyboard FL (Bonawitz et al. 2019), a phone can only train while charging,
idle and on Wi-Fi, which mostly happens at night in its own time zone: the
fleet spans UTC-8 to UTC+3, so the number of phones online rises and falls
over the simulated day. Phones are slow and their speeds heavy-tailed
(LogNormal compute and network), and 10% go silent mid-task.

This file runs synchronous FedAvg with a deadline. The same fleet in FedBuff
mode, and the comparison of the two in simulated hours to a target accuracy,
is `python -m fedactors.experiments.sync_vs_async scenarios/smartphone.py`
(docs/async.md).
"""

import keras
import numpy as np

from fedactors import (
    DeviceClass,
    Diurnal,
    LocalTraining,
    LogNormal,
    NetworkProfile,
    Rounds,
    Scenario,
    Uniform,
)
from fedactors.data.keyboard import VOCAB, make_keyboard_data

PHONES = 3000
CONTEXT = 6
MBIT = 1e6

fleet = [
    DeviceClass(
        "phone", count=PHONES,
        # Examples per simulated second: a median phone needs ~100 s for its
        # ~300 examples, a slow one (2 sigma) ~4x that.
        compute=LogNormal(3.0, 0.7),
        network=NetworkProfile(rtt=LogNormal(0.3, 0.8), uplink=LogNormal(1.5 * MBIT, 1.0),
                               downlink=LogNormal(8 * MBIT, 0.8)),
        availability=Diurnal(window_start_h=22.0, window_hours=8.0, tz_offset=Uniform(-8.0, 3.0),
                             share_in_window=0.5, share_outside=0.02),
        dropout=0.1,
        examples=LogNormal(300, 0.5),
    ),
]


def data(fleet, rng: np.random.Generator):
    # Cap the heavy tail: a keyboard cache keeps a bounded history.
    return make_keyboard_data(np.minimum(fleet.examples, 1200), rng, context=CONTEXT)


def model() -> keras.Model:
    return keras.Sequential([
        keras.Input((CONTEXT,)),
        keras.layers.Embedding(VOCAB, 16),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(VOCAB),
    ])


scenario = Scenario(
    name="smartphone",
    description="3,000 phones, night-time availability across time zones, heavy-tailed "
    "speeds: next-character prediction with synchronous FedAvg and a deadline.",
    model=model,
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
    data=data,
    fleet=fleet,
    rounds=Rounds(count=60, cohort_size=50, over_selection=1.3, deadline=300.0, min_reports=25,
                  eval_every=1),
    training=LocalTraining(epochs=1, batch_size=20, optimizer=lambda: keras.optimizers.SGD(0.5)),
    seed=0,
)
