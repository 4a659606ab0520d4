"""Devices from a partitioned dataset: Flower Datasets over Hugging Face ``datasets``.

The federated benchmarks the field compares on (FEMNIST by writer, Shakespeare
by speaking role, CIFAR-10 split by a Dirichlet label distribution) and the
standard ways to split one's own data (IID, Dirichlet, shards, pathological,
size laws, a natural id column) are Flower Datasets' partitioners. This module
turns a partitioner into the simulator's data: one device per partition, the
server's test set beside them, each device's arrays made only when it trains
(:class:`~fedactors.data.generated.GeneratedData` does the lazy part, with its
memory-bounded cache), so 3,500 FEMNIST writers never sit in memory at once.

Needs the ``datasets`` extra (``pip install -e '.[datasets]'``); the core
install does not. Flower Datasets' usage telemetry is switched off here unless
the environment says otherwise (``FLWR_TELEMETRY_ENABLED``): a simulator run
should not report to anyone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from fedactors.data.generated import GeneratedData
from fedactors.errors import ConfigError, one_line

#: More distinct labels than this are not classes worth a table per device.
MAX_CLASSES = 1000
#: What installs the optional dependency, said by every error about it.
INSTALL_HINT = "pip install -e '.[datasets]'"

#: ``preprocess(columns) -> (x, y)``: a partition's (or the test split's) columns
#: as NumPy arrays, to float32 features and int32 (or float32) labels.
Preprocess = Callable[[Mapping[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]


def require_flwr_datasets(what: str = "data") -> Any:
    """Import Flower Datasets (telemetry off), or say in one line how to install it."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    try:
        import flwr_datasets
    except ImportError as exc:
        raise ConfigError(what, f"needs Flower Datasets, which is not installed ({one_line(exc)}); "
                          f"install it with: {INSTALL_HINT}") from None
    return flwr_datasets


def partitioner_seed(rng: np.random.Generator) -> int:
    """A seed for a partitioner or a ``FederatedDataset`` shuffle, drawn from the
    scenario's data stream: the partition follows the scenario's seed."""
    return int(rng.integers(2**31))


def default_preprocess(features: Union[str, Sequence[str]], label: str) -> Preprocess:
    """Features as float32 (one column as is, several side by side), labels as int32
    (integers) or float32 (anything else)."""
    names = (features,) if isinstance(features, str) else tuple(features)

    def preprocess(columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        parts = [np.asarray(columns[n], np.float32) for n in names]
        x = parts[0] if len(parts) == 1 else np.stack(parts, axis=1)
        y = np.asarray(columns[label])
        return x, y.astype(np.int32 if y.dtype.kind in "iub" else np.float32)

    return preprocess


def assign_by_size(sizes: np.ndarray, class_index: np.ndarray) -> np.ndarray:
    """Which partition each device gets so that a fleet's device classes follow the
    partitions' sizes: the first class listed gets the smallest partitions, the last
    the biggest ("big writers are tablets, small ones phones").

    ``class_index`` is each device's class (``Fleet.class_index``); returns
    ``order`` with ``order[device]`` a partition id. Ties break by id, so the
    assignment is a pure function of the sizes.
    """
    sizes = np.asarray(sizes)
    class_index = np.asarray(class_index)
    if len(sizes) < len(class_index):
        raise ConfigError("data", f"{len(sizes)} partitions for {len(class_index)} devices: "
                          "each device needs its own partition")
    # The len(class_index) biggest partitions if there are more partitions than devices.
    by_size = np.argsort(sizes, kind="stable")[len(sizes) - len(class_index):]
    devices = np.argsort(class_index, kind="stable")
    order = np.empty(len(class_index), np.int64)
    order[devices] = by_size
    return order


@dataclass(frozen=True)
class PartitionedData(GeneratedData):
    """:class:`GeneratedData` whose device ``d`` holds partition ``order[d]`` of a
    Flower Datasets ``Partitioner``; build it with :meth:`from_partitioner`,
    :meth:`from_federated_dataset` or :meth:`from_arrays`.

    ``label`` names the label column, for :meth:`label_counts` (and the run's
    ``partitions.json``, which the report plots).
    """

    partitioner: Any = field(default=None, repr=False)
    order: np.ndarray = field(default=None, repr=False)
    label: str = "label"
    description: str = ""

    @classmethod
    def from_partitioner(
        cls,
        partitioner: Any,
        *,
        test: Any,
        features: Union[str, Sequence[str]],
        label: str,
        rng: np.random.Generator,
        preprocess: Optional[Preprocess] = None,
        devices: Optional[int] = None,
        order: Union[None, np.ndarray, Callable[[np.ndarray], np.ndarray]] = None,
        cache_bytes: int = 256 * 2**20,
        description: str = "",
    ) -> PartitionedData:
        """Devices from a partitioner that has its dataset assigned.

        Args:
            partitioner: A Flower Datasets ``Partitioner`` (``partitioner.dataset``
                set, or set by a ``FederatedDataset``).
            test: The server's test set: ``(x, y)`` arrays, or a Hugging Face
                ``Dataset`` with the same columns (put through ``preprocess``).
            features: The feature column(s); label: the label column.
            rng: The scenario's data stream (``data(fleet, rng)``'s ``rng``).
            preprocess: Columns to ``(x, y)``; default :func:`default_preprocess`.
            devices: How many devices (the fleet's size); default one per
                partition. Fewer devices than partitions: a uniform random subset
                of the partitions (drawn from ``rng``), in id order.
            order: ``order[d]`` = device ``d``'s partition id, or a function of
                the partitions' sizes that returns it (e.g. ``lambda sizes:
                assign_by_size(sizes, fleet.class_index)``); default as above.
        """
        flwr_datasets = require_flwr_datasets()
        if not isinstance(partitioner, flwr_datasets.partitioner.Partitioner):
            raise ConfigError("data", f"must be a Flower Datasets Partitioner, got {partitioner!r}")
        if not partitioner.is_dataset_assigned():
            raise ConfigError("data", f"{type(partitioner).__name__} has no dataset: assign one "
                              "(partitioner.dataset = ...) or use from_federated_dataset")
        preprocess = preprocess or default_preprocess(features, label)
        columns = [*((features,) if isinstance(features, str) else features), label]
        total = int(partitioner.num_partitions)
        sizes = np.array([partitioner.load_partition(p).num_rows for p in range(total)], np.int64)
        n = total if devices is None else int(devices)
        if n > total:
            raise ConfigError("data", f"{n} devices but {type(partitioner).__name__} has "
                              f"{total} partitions, and each device needs its own: partition "
                              f"into at least {n} (num_partitions={n}) or use a fleet of at "
                              f"most {total}")
        if order is None:
            order = (np.arange(total) if n >= total
                     else np.sort(rng.choice(total, n, replace=False)))
        elif callable(order):
            order = order(sizes)
        order = np.asarray(order, np.int64)
        if (order.shape != (n,) or len(np.unique(order)) != n
                or (n and (order.min() < 0 or order.max() >= total))):
            raise ConfigError("data", f"order must give each of the {n} devices its own partition "
                              f"id in [0, {total}), got {order!r}")
        if np.any(sizes[order] == 0):
            empty = int(np.flatnonzero(sizes[order] == 0)[0])
            raise ConfigError(f"clients[{empty}]", f"partition {int(order[empty])} of "
                              f"{type(partitioner).__name__} is empty")
        order.flags.writeable = False

        def generate(device: int, _n: int, _rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            # The partition is the device's data; the stream GeneratedData offers is not needed.
            part = partitioner.load_partition(int(order[device]))
            return _arrays(part, columns, preprocess)

        test_xy = _arrays(test, columns, preprocess) if _is_hf_dataset(test) else test
        base = GeneratedData.create(sizes[order], generate, test_xy, rng, cache_bytes)
        return cls(base.sizes, base.generate, base.test, base.seeds, base.cache_bytes,
                   partitioner=partitioner, order=order, label=label,
                   description=description or f"{type(partitioner).__name__}, {n} devices "
                                              f"of {total} partitions")

    @classmethod
    def from_federated_dataset(
        cls,
        dataset: Any,
        *,
        features: Union[str, Sequence[str]],
        label: str,
        rng: np.random.Generator,
        split: Optional[str] = None,
        test_split: str = "test",
        test_examples: Optional[int] = None,
        **kwargs: Any,
    ) -> PartitionedData:
        """Devices from a Flower Datasets ``FederatedDataset``: its partitioner of
        ``split`` (the only one if not given) and its ``test_split`` for the server
        (its first ``test_examples`` rows if given: the server evaluates every round).

        Downloads the dataset (first use only: Hugging Face caches it); if it
        cannot be fetched, one line names the dataset. Other arguments as
        :meth:`from_partitioner`.
        """
        require_flwr_datasets()
        name = getattr(dataset, "_dataset_name", type(dataset).__name__)
        try:
            with _quiet_hub():
                partitioners = dataset.partitioners  # the download happens here
            split = split or next(iter(partitioners))
            if split not in partitioners:
                raise ConfigError("data", f"dataset {name!r} has no partitioned split {split!r}; "
                                  f"it partitions {sorted(partitioners)}")
            partitioner = partitioners[split]
            test = dataset.load_split(test_split)
            if test_examples is not None:
                test = test.select(range(min(int(test_examples), test.num_rows)))
        except OSError as exc:  # no network, no such dataset on the hub, ...
            raise ConfigError("data", f"could not fetch dataset {name!r} from the Hugging Face "
                              f"hub: {one_line(exc)}") from None
        except (KeyError, ValueError) as exc:  # a split it does not have
            raise ConfigError("data", f"dataset {name!r}: {one_line(exc)}") from None
        kwargs.setdefault("description", f"{name}, {type(partitioner).__name__} of split "
                                         f"{split!r}, test split {test_split!r}")
        return cls.from_partitioner(partitioner, test=test, features=features, label=label,
                                    rng=rng, **kwargs)

    @classmethod
    def from_arrays(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        partitioner: Any,
        *,
        test: tuple[np.ndarray, np.ndarray],
        rng: np.random.Generator,
        **kwargs: Any,
    ) -> PartitionedData:
        """Partition plain arrays (e.g. ``keras.datasets``') with any partitioner:
        they become a ``Dataset`` with columns ``x`` and ``label``, the partitioner's
        ``partition_by`` (if it has one) being ``"label"``."""
        flwr_datasets = require_flwr_datasets()
        from datasets import Dataset

        if not isinstance(partitioner, flwr_datasets.partitioner.Partitioner):
            raise ConfigError("data", f"must be a Flower Datasets Partitioner, got {partitioner!r}")
        x, y = np.asarray(x), np.asarray(y)
        if len(x) != len(y):
            raise ConfigError("data", f"x has {len(x)} rows, y {len(y)}")
        partitioner.dataset = Dataset.from_dict({"x": x, "label": y})
        return cls.from_partitioner(partitioner, test=test, features="x", label="label",
                                    rng=rng, **kwargs)

    def label_counts(self) -> Optional[tuple[list[Any], np.ndarray]]:
        """Each device's count of each label: ``(labels, counts)`` with
        ``counts[device, j]`` the examples of ``labels[j]`` (read from the label
        column only, not the features); None when the labels are not classes
        (float regression targets, or more than ``MAX_CLASSES`` distinct values)."""
        columns = [np.asarray(self.partitioner.load_partition(int(p))
                              .with_format("numpy")[self.label]) for p in self.order]
        values = np.concatenate(columns) if columns else np.zeros(0, np.int64)
        if values.dtype.kind in "fc":
            return None
        labels, codes = np.unique(values, return_inverse=True)
        if len(labels) > MAX_CLASSES:
            return None
        device = np.repeat(np.arange(len(columns)), [len(c) for c in columns])
        counts = np.zeros((len(columns), len(labels)), np.int64)
        np.add.at(counts, (device, codes), 1)
        return labels.tolist(), counts


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """Hold back the hub clients' own log lines (each retry of an unreachable host is
    one): a failed fetch is reported once, by the ConfigError above."""
    loggers = [logging.getLogger(n) for n in ("huggingface_hub", "datasets", "fsspec")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _is_hf_dataset(value: Any) -> bool:
    try:
        from datasets import Dataset
    except ImportError:
        return False
    return isinstance(value, Dataset)


def _arrays(part: Any, columns: Sequence[str], preprocess: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """A partition's (or split's) columns as NumPy arrays, through ``preprocess``."""
    missing = [c for c in columns if c not in part.column_names]
    if missing:
        raise ConfigError("data", f"no column {missing[0]!r}; the dataset has {part.column_names}")
    table = part.select_columns(list(columns)).with_format("numpy")[:]
    return preprocess(table)
