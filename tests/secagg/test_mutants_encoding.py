"""Contribution layout contracts: key checks, per-key offsets and shapes, one modulus for all
keys, and the device generator reaching the quantizer (found by mutation testing)."""

from __future__ import annotations

import numpy as np
import pytest

from fedactors.errors import ConfigError
from fedactors.secagg.encoding import decode_sum, encode, make_layout
from fedactors.secagg.quantize import error_bound

SHAPES = {"a": (2, 3), "b": (4,), "c": (2, 2), "d": (1,)}  # distinct sizes: offsets matter
BOUNDS = {"a": 1.0, "b": 0.25, "c": 4.0, "d": 2.0}


def _sum_mod(vectors: list[np.ndarray], k: int) -> np.ndarray:
    total = np.zeros_like(vectors[0])
    for v in vectors:
        total = (total + v) & np.uint64((1 << k) - 1)
    return total


def test_missing_bound_raises_config_error_naming_the_keys() -> None:
    """A key without a contribution bound is a ConfigError on 'aggregator' naming key and bounds."""
    with pytest.raises(ConfigError) as e:
        make_layout({"w": (3,), "extra": (1,)}, {"w": 1.0}, 4, 8)
    assert e.value.field == "aggregator"
    assert "'extra'" in e.value.message and "'w'" in e.value.message
    assert "contribution_bounds" in e.value.message


def test_layout_records_its_device_count_and_sizes_one_modulus_for_all_keys() -> None:
    """m_max devices at ±bound on every key decode exactly with the one shared modulus."""
    m_max = 5
    layout = make_layout(SHAPES, BOUNDS, m_max, 6)
    assert layout.m_max == m_max
    assert layout.dim == sum(int(np.prod(s)) for s in SHAPES.values())
    for sign in (1.0, -1.0):
        row = {k: np.full(s, sign * BOUNDS[k]) for k, s in SHAPES.items()}
        total = _sum_mod([encode(row, layout, None)] * m_max, layout.modulus_bits)
        out = decode_sum(total, layout)
        for k in SHAPES:
            assert np.array_equal(out[k], m_max * row[k])


def test_multi_dimensional_keys_round_trip_with_their_shapes() -> None:
    """encode gives one flat vector of layout.dim; decode_sum puts each key back, shaped."""
    rng = np.random.default_rng(21)
    layout = make_layout(SHAPES, BOUNDS, 3, 10)
    rows = [{k: rng.uniform(-1.5 * BOUNDS[k], 1.5 * BOUNDS[k], size=s) for k, s in SHAPES.items()}
            for _ in range(3)]
    encs = [encode(r, layout, None) for r in rows]
    assert all(e.shape == (layout.dim,) and e.dtype == np.uint64 for e in encs)
    out = decode_sum(_sum_mod(encs, layout.modulus_bits), layout)
    assert set(out) == set(SHAPES)
    tol = layout.error_bound(3, stochastic=False)
    for k, s in SHAPES.items():
        assert out[k].shape == s
        want = sum(np.clip(r[k], -BOUNDS[k], BOUNDS[k]) for r in rows)
        assert np.abs(out[k] - want).max() <= tol


def test_wrong_keys_are_refused_naming_both_sides() -> None:
    """A contribution whose keys differ from the layout's is a ValueError listing both."""
    layout = make_layout({"a": (2,), "b": (1,)}, {"a": 1.0, "b": 1.0}, 2, 4)
    with pytest.raises(ValueError, match="do not match") as e:
        encode({"a": np.zeros(2), "z": np.zeros(1)}, layout, None)
    assert "'z'" in str(e.value) and "'b'" in str(e.value)


def test_wrong_size_is_refused_naming_key_and_sizes() -> None:
    """A key with the wrong number of values is a ValueError naming it and both sizes."""
    layout = make_layout({"a": (2, 2), "b": (1,)}, {"a": 1.0, "b": 1.0}, 2, 4)
    with pytest.raises(ValueError, match="'a'") as e:
        encode({"a": np.zeros(5), "b": np.zeros(1)}, layout, None)
    assert "5" in str(e.value) and "4" in str(e.value)


def test_encode_rounds_stochastically_with_the_device_generator() -> None:
    """With an rng, values a quarter step above a level round up ~1/4 of the time
    (4000 coordinates, 0.25 ± 0.05 is ~7 sigma; seed 13); without one, never."""
    f = 4
    layout = make_layout({"x": (4000,)}, {"x": 1.0}, 1, f)
    x = np.full(4000, 2.25 * 2.0**-f)
    up = decode_sum(encode({"x": x}, layout, np.random.default_rng(13)), layout)["x"] > x
    assert abs(up.mean() - 0.25) < 0.05
    assert not (decode_sum(encode({"x": x}, layout, None), layout)["x"] > x).any()


@pytest.mark.parametrize("stochastic", [False, True])
def test_layout_error_bound_is_the_quantizer_bound_for_its_rounding(stochastic: bool) -> None:
    """Layout.error_bound distinguishes stochastic from deterministic rounding like quantize does."""
    layout = make_layout({"x": (3,)}, {"x": 1.0}, 4, 7)
    for m in (1, 4):
        assert layout.error_bound(m, stochastic) == error_bound(m, 7, stochastic)


def test_layout_stochastic_bound_covers_a_stochastic_encoding() -> None:
    """One device's stochastic error exceeds the deterministic bound but not the stochastic one
    (2000 values at 15/16 of a step; seed 17)."""
    f = 7
    lay = make_layout({"x": (2000,)}, {"x": 1.0}, 1, f)
    x = np.full(2000, 3.9375 * 2.0**-f)
    err = np.abs(decode_sum(encode({"x": x}, lay, np.random.default_rng(17)), lay)["x"] - x).max()
    assert lay.error_bound(1, stochastic=False) < err <= lay.error_bound(1, stochastic=True)
