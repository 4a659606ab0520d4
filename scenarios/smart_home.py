"""A fleet of smart-home devices learns to recognise household activities.

40 households each own a hub, a camera, a speaker, a thermostat, two smart
plugs and a door sensor. Each device sees only its own sensors (a plug knows
power draw, a thermostat temperature and humidity, ...) and each home has its
own routine, so the data is non-IID by feature and by label. Devices differ
as much as real ones do: a wired hub trains 100x faster than a battery door
sensor on a weak radio, and the flaky ones go silent mid-round. The server
selects 30% more devices than it needs and cuts stragglers at a 20-second
deadline. The data model is documented in docs/data.md.
"""

import keras
import numpy as np

from fedactors import (
    DeviceClass,
    LocalTraining,
    LogNormal,
    NetworkProfile,
    OnlineShare,
    Rounds,
    Scenario,
)
from fedactors.data.smart_home import ACTIVITIES, NUM_FEATURES, make_smart_home_data

HOUSEHOLDS = 40
MBIT = 1e6

fleet = [
    # Mains-powered, wired or strong Wi-Fi, rarely off.
    DeviceClass("hub", count=HOUSEHOLDS, compute=LogNormal(4000, 0.3),
                network=NetworkProfile(rtt=0.02, uplink=20 * MBIT, downlink=100 * MBIT),
                dropout=0.02, examples=LogNormal(250, 0.3)),
    DeviceClass("camera", count=HOUSEHOLDS, compute=LogNormal(1200, 0.4),
                network=NetworkProfile(rtt=0.05, uplink=LogNormal(4 * MBIT, 0.5), downlink=20 * MBIT),
                dropout=0.05, examples=LogNormal(200, 0.4)),
    DeviceClass("speaker", count=HOUSEHOLDS, compute=LogNormal(800, 0.4),
                network=NetworkProfile(rtt=0.05, uplink=LogNormal(2 * MBIT, 0.5), downlink=10 * MBIT),
                availability=OnlineShare(0.9), dropout=0.05, examples=LogNormal(150, 0.4)),
    # Microcontrollers on low-power radios: slow to train, slow to talk.
    DeviceClass("thermostat", count=HOUSEHOLDS, compute=LogNormal(15, 0.5),
                network=NetworkProfile(rtt=0.3, uplink=LogNormal(0.25 * MBIT, 0.6), downlink=1 * MBIT),
                availability=OnlineShare(0.85), dropout=0.12, examples=LogNormal(100, 0.4)),
    DeviceClass("plug", count=2 * HOUSEHOLDS, compute=LogNormal(8, 0.6),
                network=NetworkProfile(rtt=0.4, uplink=LogNormal(0.1 * MBIT, 0.6), downlink=0.5 * MBIT),
                availability=OnlineShare(0.8), dropout=0.15, examples=LogNormal(80, 0.4)),
    DeviceClass("door_sensor", count=HOUSEHOLDS, compute=LogNormal(4, 0.5),
                network=NetworkProfile(rtt=0.5, uplink=LogNormal(0.05 * MBIT, 0.6), downlink=0.25 * MBIT),
                availability=OnlineShare(0.6), dropout=0.25, examples=LogNormal(60, 0.4)),
]


def data(fleet, rng: np.random.Generator):
    kinds = fleet.kinds
    # Device i of a class belongs to household i mod HOUSEHOLDS (plugs come in pairs).
    households = np.concatenate(
        [np.arange(c.count) % HOUSEHOLDS for c in fleet.classes]
    )
    return make_smart_home_data(kinds, households, fleet.examples, rng)


def model() -> keras.Model:
    return keras.Sequential([
        keras.Input((NUM_FEATURES,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(len(ACTIVITIES)),
    ])


scenario = Scenario(
    name="smart_home",
    description="Activity recognition across 40 households' hubs, cameras, speakers, "
    "thermostats, plugs and door sensors, with deadlines and dropouts.",
    model=model,
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
    data=data,
    fleet=fleet,
    rounds=Rounds(count=40, cohort_size=30, over_selection=1.3, deadline=20.0, min_reports=10),
    training=LocalTraining(epochs=2, batch_size=20, optimizer=lambda: keras.optimizers.SGD(0.1)),
    seed=0,
)
