"""stack_rows: np.stack's result and errors, by a faster route."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedactors.arrays import stack_rows

DTYPES = st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.bool_])


@given(st.data(), DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
       st.integers(1, 6))
def test_rows_of_one_shape_stack_to_np_stack_bit_for_bit(data, dtype, shape, count) -> None:
    rows = [data.draw(hnp.arrays(dtype, shape)) for _ in range(count)]
    expected = np.stack(rows)
    out = stack_rows(rows)
    assert out.dtype == expected.dtype and out.shape == expected.shape
    # Bytes, not values: NaN payloads and signed zeros are copied, never recomputed.
    assert out.tobytes() == expected.tobytes()
    rows[0][...] = 0  # a copy, not a view of the rows
    assert out.tobytes() == expected.tobytes()


def test_mixed_dtypes_promote_as_np_stack_does() -> None:
    rows = [np.array([1, 2], np.int32), np.array([0.5, 1.5], np.float32)]
    assert stack_rows(rows).dtype == np.stack(rows).dtype


@pytest.mark.parametrize("rows", [
    [np.ones(3), np.ones(4)],
    [np.ones((2, 3)), np.ones(6)],
    [np.ones(2), np.ones((2, 1))],
    [],
])
def test_rows_np_stack_refuses_raise_its_error(rows) -> None:
    with pytest.raises(ValueError) as expected:
        np.stack(rows)
    with pytest.raises(ValueError, match=str(expected.value)):
        stack_rows(rows)
