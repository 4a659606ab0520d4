"""CIFAR-10 split across 100 devices by a Dirichlet(0.5) label distribution.

The standard non-IID image benchmark (Hsu et al. 2019): each device's share of
every class is drawn from Dirichlet(alpha = 0.5), so most devices see a few
classes often and the rest rarely. The data is the Hugging Face hub's
``uoft-cs/cifar10`` (50,000 training images, the 10,000 test images are the
server's), partitioned by Flower Datasets' ``DirichletPartitioner``; the
partition follows the scenario's seed. 70 phones hold the 70 smallest
partitions, 30 laptops the biggest (``assign_by_size``).

Needs the ``datasets`` extra (``pip install -e '.[datasets]'``) and, the first
time, access to the Hugging Face hub (the download is cached).
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

DATASET = "uoft-cs/cifar10"
ALPHA = 0.5
DEVICES = 100
MBIT = 1e6

fleet = [
    DeviceClass("phone", count=70, compute=LogNormal(40.0, 0.5),
                network=NetworkProfile(rtt=0.2, uplink=LogNormal(2 * MBIT, 0.6),
                                       downlink=LogNormal(10 * MBIT, 0.6)),
                dropout=0.05),
    DeviceClass("laptop", count=DEVICES - 70, compute=LogNormal(200.0, 0.4),
                network=NetworkProfile(rtt=0.05, uplink=20 * MBIT, downlink=50 * MBIT)),
]


def preprocess(columns):
    x = columns["img"].astype(np.float32) / 255.0
    return x, columns["label"].astype(np.int32)


def federated_dataset(partitions: int, rng: np.random.Generator):
    flwr_datasets = require_flwr_datasets()
    from flwr_datasets.partitioner import DirichletPartitioner

    partitioner = DirichletPartitioner(num_partitions=partitions, partition_by="label", alpha=ALPHA,
                                       min_partition_size=10, seed=partitioner_seed(rng))
    return flwr_datasets.FederatedDataset(dataset=DATASET, partitioners={"train": partitioner},
                                          seed=partitioner_seed(rng))


def data(fleet, rng: np.random.Generator):
    return PartitionedData.from_federated_dataset(
        federated_dataset(fleet.size, rng), features="img", label="label", preprocess=preprocess,
        rng=rng,
        order=lambda sizes: assign_by_size(sizes, fleet.class_index))


def model() -> keras.Model:
    return keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])


scenario = Scenario(
    name="cifar10_dirichlet",
    description="CIFAR-10 over 100 devices, Dirichlet(0.5) label skew (Flower Datasets): "
    "70 phones with the smallest partitions, 30 laptops with the biggest; FedAvg.",
    model=model,
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
    data=data,
    fleet=fleet,
    rounds=Rounds(count=50, cohort_size=20, over_selection=1.2, deadline=120.0, min_reports=10),
    training=LocalTraining(epochs=1, batch_size=32, optimizer=lambda: keras.optimizers.SGD(0.05)),
    seed=0,
)
