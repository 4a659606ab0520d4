"""Shakespeare: next-character prediction, one device per speaking role (LEAF).

LEAF's text benchmark (Caldas et al. 2018): every line of every play, cut into
80-character windows and the character that follows, partitioned naturally by
(role, play), so each device speaks in its own voice. The data is the Hugging
Face hub's ``flwrlabs/shakespeare``, partitioned by Flower Datasets'
``NaturalIdPartitioner`` on ``character_id``; it has a train split only, so
10% of it (shuffled with the scenario's seed) is divided off as the server's
test set, of which the server evaluates 5,000 windows. (The windows overlap in
time, so that test set is easier than a held-out play would be.)

The fleet is the 600 roles with the most lines (LEAF keeps 660 after its own
filter), all phones. Characters are printable ASCII (96 ids, the last for
anything else); the model is an embedding, a 1-D convolution and a max over
the window, which trains cohort-wide (an LSTM would train device by device).
Needs the ``datasets`` extra (``pip install -e '.[datasets]'``) and, the first
time, the Hugging Face hub.
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

DATASET = "flwrlabs/shakespeare"
WINDOW = 80
VOCAB = 96  # printable ASCII 32..126, then one id for anything else
ROLES = 600
MBIT = 1e6

fleet = [
    DeviceClass("phone", count=ROLES, compute=LogNormal(60.0, 0.6),
                network=NetworkProfile(rtt=LogNormal(0.2, 0.5), uplink=LogNormal(2 * MBIT, 0.8),
                                       downlink=LogNormal(10 * MBIT, 0.6)),
                dropout=0.1),
]


def char_ids(text: np.ndarray, width: int) -> np.ndarray:
    """Each string as ``width`` character ids (printable ASCII, else VOCAB - 1)."""
    raw = np.frombuffer("".join(s[:width].ljust(width) for s in text.tolist()).encode(
        "ascii", "replace"), np.uint8).reshape(len(text), width).astype(np.int32) - 32
    return np.where((raw >= 0) & (raw < VOCAB - 1), raw, VOCAB - 1)


def preprocess(columns):
    return (char_ids(columns["x"], WINDOW).astype(np.float32),
            char_ids(columns["y"], 1)[:, 0].astype(np.int32))


def federated_dataset(rng: np.random.Generator):
    flwr_datasets = require_flwr_datasets()
    from flwr_datasets.partitioner import NaturalIdPartitioner
    from flwr_datasets.preprocessor import Divider

    return flwr_datasets.FederatedDataset(
        dataset=DATASET, partitioners={"train": NaturalIdPartitioner(partition_by="character_id")},
        preprocessor=Divider(divide_config={"train": 0.9, "test": 0.1}, divide_split="train"),
        seed=partitioner_seed(rng))


def data(fleet, rng: np.random.Generator):
    return PartitionedData.from_federated_dataset(
        federated_dataset(rng), features="x", label="y", preprocess=preprocess, rng=rng,
        test_examples=5000, devices=fleet.size,
        order=lambda sizes: assign_by_size(sizes, fleet.class_index))


def model() -> keras.Model:
    return keras.Sequential([
        keras.Input((WINDOW,)),
        keras.layers.Embedding(VOCAB, 8),
        keras.layers.Conv1D(64, 5, activation="relu"),
        keras.layers.GlobalMaxPooling1D(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(VOCAB),
    ])


scenario = Scenario(
    name="shakespeare",
    description="Shakespeare (LEAF), one device per speaking role (Flower Datasets natural-id "
    "partition): 600 roles on phones, next-character prediction, FedAvg with a deadline.",
    model=model,
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
    data=data,
    fleet=fleet,
    rounds=Rounds(count=60, cohort_size=30, over_selection=1.3, deadline=300.0, min_reports=15),
    training=LocalTraining(epochs=1, batch_size=20, optimizer=lambda: keras.optimizers.SGD(0.5)),
    seed=0,
)
