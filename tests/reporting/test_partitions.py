"""The run's partition table: written whole, read back as written, drawn by the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedactors.reporting.partitions import (
    FILE,
    MAX_DEVICES,
    UnreadablePartitions,
    label_distribution_figure,
    read_partitions,
    write_partitions,
)


def test_written_then_read_back_as_it_was(tmp_path) -> None:
    counts = np.array([[3, 0, 1], [0, 5, 2]])
    write_partitions(tmp_path, "Dirichlet", [0, 1, "x"], counts)
    table = read_partitions(tmp_path)
    assert table == {"description": "Dirichlet", "labels": [0, 1, "x"], "counts": counts.tolist()}
    assert [p.name for p in tmp_path.iterdir()] == [FILE]  # no temporary file left behind


def test_a_missing_table_is_none_and_a_malformed_one_says_why(tmp_path) -> None:
    assert read_partitions(tmp_path) is None
    for bad, why in [("{", "not JSON"), ("[]", "a JSON list"), ("{}", "no list of labels"),
                     (json.dumps({"labels": [0], "counts": [[1, 2]]}), r"shape \(1, 2\)"),
                     (json.dumps({"labels": [0], "counts": [1, 2]}), "one row per device"),
                     (json.dumps({"labels": [0], "counts": [["a"]]}), "numbers"),
                     (json.dumps({"labels": [0], "counts": [[-1]]}), "whole numbers"),
                     (json.dumps({"labels": [0], "counts": [[0.5]]}), "whole numbers")]:
        (tmp_path / FILE).write_text(bad)
        with pytest.raises(UnreadablePartitions, match=why):
            read_partitions(tmp_path)


def test_the_figure_draws_one_bar_per_device_up_to_its_limit() -> None:
    rng = np.random.default_rng(0)
    few = {"labels": list(range(4)), "counts": rng.integers(0, 9, (12, 4)).tolist()}
    fig = label_distribution_figure(few, "run")
    ax = fig.axes[0]
    assert len(ax.patches) == 12 * 4 and ax.get_xlabel() == "device"
    tops = np.zeros(12)
    for bar in ax.patches:
        tops[round(bar.get_x() + bar.get_width() / 2)] = max(
            tops[round(bar.get_x() + bar.get_width() / 2)], bar.get_y() + bar.get_height())
    np.testing.assert_array_equal(tops, np.array(few["counts"]).sum(axis=1))
    many = {"labels": [0, 1], "counts": rng.integers(0, 9, (MAX_DEVICES + 50, 2)).tolist()}
    ax = label_distribution_figure(many, "run").axes[0]
    assert len(ax.patches) == MAX_DEVICES * 2 and f"first {MAX_DEVICES}" in ax.get_xlabel()


def test_past_a_hundred_labels_each_device_gets_its_total_alone() -> None:
    counts = np.random.default_rng(1).integers(0, 3, (10, 500))
    ax = label_distribution_figure({"labels": list(range(500)), "counts": counts.tolist()},
                                   "run").axes[0]
    assert len(ax.patches) == 10
    np.testing.assert_array_equal(sorted(b.get_height() for b in ax.patches),
                                  sorted(counts.sum(axis=1)))
