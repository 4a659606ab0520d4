"""The run's partition table: each device's count of each label, and its figure.

A run whose data is a :class:`~fedactors.data.partitioned.PartitionedData`
writes ``partitions.json`` in its run directory when it starts (the data is
live only then); ``python -m fedactors report`` reads it back and draws the
label distribution per device, as Flower Datasets' own plot does, in the
report's style.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

if TYPE_CHECKING:  # the run writes the table; only the report needs matplotlib
    from matplotlib.figure import Figure

FILE = "partitions.json"
#: Devices drawn at most: past that, bars are thinner than a pixel.
MAX_DEVICES = 100
#: Labels stacked at most; past that, each device's total alone.
MAX_STACKED = 100


def write_partitions(run_dir: Path, description: str, labels: list[Any], counts: np.ndarray) -> Path:
    """Write the table atomically (a reader never sees half a file)."""
    path = run_dir / FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({
        "description": description,
        "labels": [v if isinstance(v, (int, float, str)) else str(v) for v in labels],
        "counts": np.asarray(counts, np.int64).tolist(),
    }) + "\n")
    os.replace(tmp, path)
    return path


class UnreadablePartitions(ValueError):
    """A run's ``partitions.json`` is there but is not a partition table (the reason)."""


def read_partitions(run_dir: Path) -> Optional[dict[str, Any]]:
    """The run's table, or None if it has none.

    Raises UnreadablePartitions if the file is there but unreadable: the report
    then leaves the figure out and says why, rather than fail on an optional
    file or drop a section without a word.
    """
    path = run_dir / FILE
    if not path.exists():
        return None
    try:
        table = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadablePartitions(f"not JSON: {exc}") from None
    if not isinstance(table, dict):
        raise UnreadablePartitions(f"a JSON {type(table).__name__}, not an object")
    labels = table.get("labels")
    if not isinstance(labels, list):
        raise UnreadablePartitions("no list of labels")
    try:
        counts = np.asarray(table.get("counts", []), np.float64)
    except (TypeError, ValueError):
        raise UnreadablePartitions("counts is not a table of numbers") from None
    if counts.ndim != 2 or counts.shape[1] != len(labels):
        raise UnreadablePartitions(f"counts must be one row per device of {len(labels)} "
                                   f"counts (one per label), got shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0) or np.any(counts % 1):
        raise UnreadablePartitions("counts must be whole numbers >= 0")
    return table


def label_distribution_figure(table: dict[str, Any], title: str) -> Figure:
    """Stacked bars: one per device (the first ``MAX_DEVICES``), one colour per label."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from fedactors.reporting.style import paper_style

    counts = np.asarray(table["counts"], np.int64)[:MAX_DEVICES]
    labels = table["labels"]
    with paper_style():
        fig = Figure(figsize=(7.2, 3.0))
        ax = fig.subplots()
        colours = _colours(len(labels))
        bottom = np.zeros(len(counts))
        devices = np.arange(len(counts))
        if len(labels) > MAX_STACKED:  # one bar per label would be unreadable and slow
            counts = counts.sum(axis=1, keepdims=True)
            labels, colours = [f"all {len(table['labels']):,} labels"], colours[:1]
        for j, label in enumerate(labels):
            ax.bar(devices, counts[:, j], bottom=bottom, width=0.9 if len(counts) <= 60 else 1.0,
                   linewidth=0, color=colours[j], label=str(label))
            bottom += counts[:, j]
        ax.set_xlabel("device" if len(table["counts"]) <= MAX_DEVICES
                      else f"device (first {MAX_DEVICES} of {len(table['counts']):,})")
        ax.set_ylabel("examples")
        ax.set_title(title)
        ax.set_xlim(-0.6, len(counts) - 0.4)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(labels) <= 20:
            ax.legend(title="label", fontsize="x-small", ncol=2, loc="upper left",
                      bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"]
    return [cmap(i if n <= 20 else i / max(n - 1, 1)) for i in range(n)]
