"""Array helpers the hot paths share."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stack_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """``np.stack(rows)``: the same array, made about five times faster for many rows.

    A round stacks one row per device several times (its training data's batch
    orders, the updates the server screens and sums); ``np.stack`` expands each
    row to a view and concatenates those (3.3 ms for 1,000 rows of 738
    float32 on the development machine), where ``np.array`` copies the rows
    in C (0.6 ms). Both take the rows' common dtype and copy each value
    exactly. Rows of different shapes, or none, raise ``np.stack``'s own error.
    """
    try:
        out = np.array(rows)
    except ValueError:  # rows of different shapes: np.stack says so in its own words
        return np.stack(rows)
    if len(rows) == 0 or out.ndim != np.ndim(rows[0]) + 1:
        return np.stack(rows)  # none to stack, or not rows np.stack would take as such
    return out
