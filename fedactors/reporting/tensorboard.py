"""Per-round scalars as TensorBoard event files, so ``tensorboard --logdir DIR`` shows a run.

Written with ``tf.summary.write`` and the scalars plugin's metadata rather than
``tf.summary.scalar``: the latter needs the ``tensorboard`` package installed,
the former only TensorFlow, and TensorBoard reads both the same way.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

#: Metric-row keys that are not per-round measurements of the simulation.
SKIP = frozenset({"round", "wall_seconds"})
GROUPS = {
    "selected": "participation", "reported": "participation", "dropped": "participation",
    "late": "participation", "surplus": "participation", "refused": "participation",
    "time": "time", "duration": "time",
    "epsilon": "privacy",
}


def tag_for(key: str, eval_like: bool) -> str:
    """A TensorBoard tag; the prefix groups related scalars on one dashboard card row."""
    if key in GROUPS:
        return f"{GROUPS[key]}/{key}"
    if "bytes" in key:
        return f"traffic/{key}"
    if key.startswith("rejected_"):
        return f"rejected/{key[9:]}"
    return f"eval/{key}" if eval_like else f"round/{key}"


class TensorBoardWriter:
    """An ``on_round`` callback: one scalar per numeric field of each metrics row, step = round."""

    def __init__(self, log_dir: Path, eval_metrics: tuple[str, ...] = ("loss", "accuracy")) -> None:
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        self._tf = tf
        # Made at the first row: a run refused at load (or stopped before round 1)
        # writes no event file, and the fresh run's own clearing of an earlier
        # run's files (fedactors.simulation.outputs) cannot remove this one.
        self._writer: Any = None
        self._metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class=summary_pb2.DATA_CLASS_SCALAR,
        )
        self._eval = set(eval_metrics)
        self.log_dir = log_dir

    def __call__(self, row: dict[str, Any]) -> None:
        tf = self._tf
        step = int(row["round"])
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        with self._writer.as_default():
            for key, value in row.items():
                if key in SKIP or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                if not math.isfinite(value):
                    continue
                tf.summary.write(tag_for(key, key in self._eval),
                                 tf.constant(float(value), dtype=tf.float32), step=step,
                                 metadata=self._metadata)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
