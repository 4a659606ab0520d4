"""FEMNIST: handwritten characters, one device per writer (LEAF).

The federated benchmark of Caldas et al. (LEAF, 2018): 62 classes (digits,
upper- and lower-case letters) of 28x28 handwriting, partitioned naturally by
writer, so each device has its own hand and its own share of characters. The
data is the Hugging Face hub's ``flwrlabs/femnist``, partitioned by Flower
Datasets' ``NaturalIdPartitioner`` on ``writer_id``; it has a train split only,
so 10% of it (shuffled with the scenario's seed) is divided off as the
server's test set, of which the server evaluates 5,000 images.

The fleet is the 3,000 writers with the most samples (LEAF too drops writers
with few samples): 2,000 phones hold the smaller ones, 1,000 tablets the
biggest (``assign_by_size``). Needs the ``datasets`` extra
(``pip install -e '.[datasets]'``) and, the first time, the Hugging Face hub.
"""

import keras
import numpy as np

from fedactors import DeviceClass, LocalTraining, LogNormal, NetworkProfile, Rounds, Scenario
from fedactors.data.partitioned import (
    PartitionedData,
    assign_by_size,
    partitioner_seed,
    require_flwr_datasets,
)

DATASET = "flwrlabs/femnist"
CLASSES = 62
MBIT = 1e6

fleet = [
    DeviceClass("phone", count=2000, compute=LogNormal(30.0, 0.6),
                network=NetworkProfile(rtt=LogNormal(0.2, 0.5), uplink=LogNormal(2 * MBIT, 0.8),
                                       downlink=LogNormal(10 * MBIT, 0.6)),
                dropout=0.1),
    DeviceClass("tablet", count=1000, compute=LogNormal(80.0, 0.4),
                network=NetworkProfile(rtt=0.1, uplink=LogNormal(8 * MBIT, 0.5),
                                       downlink=LogNormal(30 * MBIT, 0.5)),
                dropout=0.05),
]


def preprocess(columns):
    x = columns["image"].astype(np.float32)[..., None] / 255.0
    return x, columns["character"].astype(np.int32)


def federated_dataset(rng: np.random.Generator):
    flwr_datasets = require_flwr_datasets()
    from flwr_datasets.partitioner import NaturalIdPartitioner
    from flwr_datasets.preprocessor import Divider

    return flwr_datasets.FederatedDataset(
        dataset=DATASET, partitioners={"train": NaturalIdPartitioner(partition_by="writer_id")},
        preprocessor=Divider(divide_config={"train": 0.9, "test": 0.1}, divide_split="train"),
        seed=partitioner_seed(rng))


def data(fleet, rng: np.random.Generator):
    return PartitionedData.from_federated_dataset(
        federated_dataset(rng), features="image", label="character", preprocess=preprocess,
        rng=rng, test_examples=5000, devices=fleet.size,
        order=lambda sizes: assign_by_size(sizes, fleet.class_index))


def model() -> keras.Model:
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 5, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 5, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(CLASSES),
    ])


scenario = Scenario(
    name="femnist",
    description="FEMNIST (LEAF), one device per writer (Flower Datasets natural-id partition): "
    "3,000 writers on phones and tablets, 62 classes, FedAvg with a deadline.",
    model=model,
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
    data=data,
    fleet=fleet,
    rounds=Rounds(count=100, cohort_size=50, over_selection=1.3, deadline=300.0, min_reports=25),
    training=LocalTraining(epochs=1, batch_size=20, optimizer=lambda: keras.optimizers.SGD(0.05)),
    seed=0,
)
