"""Fixed-point quantizer contracts: config validation, modulus sizing, tight error bounds,
stochastic rounding, and two's-complement decoding (found by mutation testing)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedactors.errors import ConfigError
from fedactors.secagg.quantize import (
    MAX_MODULUS_BITS,
    choose_modulus_bits,
    dequantize_sum,
    error_bound,
    quantize,
)


class FixedDrawRng:
    """Every uniform draw is ``u``: the extremes of Generator.random's range [0, 1)."""

    def __init__(self, u: float) -> None:
        self.u = u

    def random(self, size: Any) -> np.ndarray:
        return np.full(size, self.u)


def _mod_sum(encodings: list[np.ndarray], k: int) -> np.ndarray:
    total = np.zeros_like(encodings[0])
    for e in encodings:
        total = (total + e) & np.uint64((1 << k) - 1)
    return total


# --- configuration errors name the offending field and quote the bad value -----------------


@pytest.mark.parametrize("bad", [-1.0, 0.0, 0, -0.5, float("nan"), float("inf"), "1.0", None])
def test_bad_bound_raises_config_error_naming_bound(bad: Any) -> None:
    """A bound that is not a finite number > 0 is refused as field 'bound', quoting the value."""
    for call in (lambda: choose_modulus_bits(bad, 4, 8), lambda: quantize(np.zeros(2), bad, 8, 20)):
        with pytest.raises(ConfigError) as e:
            call()
        assert e.value.field == "bound"
        assert repr(bad) in str(e.value)


@pytest.mark.parametrize("good", [1, 0.5, 1e-3, np.float32(2.0)])
def test_any_finite_positive_bound_is_accepted(good: Any) -> None:
    """Ints, floats and numpy floats > 0 are valid bounds."""
    k = choose_modulus_bits(good, 3, 8)
    assert quantize(np.array([good, -good]), good, 8, k).dtype == np.uint64


@pytest.mark.parametrize("bad", [-1, 53, 64, 1.5, True, False, "8", np.float64(4.0), None])
def test_bad_scale_bits_raises_config_error_naming_scale_bits(bad: Any) -> None:
    """scale_bits must be a (non-bool) int in [0, 52]; anything else names field 'scale_bits'."""
    for call in (lambda: choose_modulus_bits(1.0, 4, bad), lambda: quantize(np.zeros(2), 1.0, bad, 60)):
        with pytest.raises(ConfigError) as e:
            call()
        assert e.value.field == "scale_bits"
        assert repr(bad) in str(e.value)


@pytest.mark.parametrize("f", [0, 1, 26, 51, 52, np.int32(8)])
def test_every_scale_bits_in_documented_range_round_trips(f: int) -> None:
    """Both ends of [0, 52] are usable: one value at a level decodes exactly."""
    bound = 2.0 ** (10 - int(f))  # keeps Q = 2**10 levels whatever f is
    k = choose_modulus_bits(bound, 2, f)
    x = np.array([bound, -bound, 3 * 2.0 ** -int(f)])
    assert np.array_equal(dequantize_sum(quantize(x, bound, f, k), f, k), x)


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "3", np.float64(2.0), None])
def test_bad_m_max_raises_config_error_naming_m_max(bad: Any) -> None:
    """m_max must be an int >= 1 (bool excluded); the error names 'm_max' and quotes the value."""
    with pytest.raises(ConfigError) as e:
        choose_modulus_bits(1.0, bad, 8)
    assert e.value.field == "m_max"
    assert repr(bad) in str(e.value)


@pytest.mark.parametrize("m_max", [1, 2, np.int64(3)])
def test_small_m_max_is_valid(m_max: int) -> None:
    """A single device (m_max = 1) and numpy ints are valid device counts."""
    k = choose_modulus_bits(1.0, m_max, 4)
    total = _mod_sum([quantize(np.array([1.0, -1.0]), 1.0, 4, k)] * int(m_max), k)
    assert np.array_equal(dequantize_sum(total, 4, k), [float(m_max), -float(m_max)])


def test_modulus_too_large_error_names_scale_bits() -> None:
    """Needing more than 62 bits is reported against 'scale_bits', the knob the user should lower."""
    with pytest.raises(ConfigError) as e:
        choose_modulus_bits(1.0, 2**11, 50)  # 2**61 levels in the sum: a 63-bit modulus
    assert e.value.field == "scale_bits"
    assert str(MAX_MODULUS_BITS) in e.value.message


@pytest.mark.parametrize("bad", [1, 0, -2, 63, 64])
def test_modulus_bits_outside_2_to_62_is_refused_by_both_directions(bad: int) -> None:
    """quantize and dequantize_sum refuse a modulus outside [2, 62] as field 'modulus_bits'."""
    for call in (lambda: quantize(np.zeros(2), 1.0, 0, bad),
                 lambda: dequantize_sum(np.zeros(2, np.uint64), 0, bad)):
        with pytest.raises(ConfigError) as e:
            call()
        assert e.value.field == "modulus_bits"
        assert repr(bad) in str(e.value)


# --- modulus sizing ---------------------------------------------------------------------------


@pytest.mark.parametrize("bound, m_max, f", [
    (1.0, 1, 0), (1.0, 4, 3), (0.3, 7, 5), (2.5, 100, 12), (1e-3, 10, 20),
    (1.0, 2**10, 50),  # exactly 62 bits: the largest supported modulus
    (1.0, 2**10 - 1, 50),
])
def test_modulus_is_the_smallest_that_cannot_wrap(bound: float, m_max: int, f: int) -> None:
    """k is minimal with m_max * Q < 2**(k-1), and never above the supported maximum."""
    k = choose_modulus_bits(bound, m_max, f)
    levels = m_max * int(np.ceil(bound * 2.0**f))
    assert 2 ** (k - 2) <= levels < 2 ** (k - 1)
    assert k <= MAX_MODULUS_BITS


def test_largest_modulus_is_usable_end_to_end() -> None:
    """At 62 bits, m_max sums of ±bound and single ±1-level values all decode exactly."""
    bound, f, m_max = 1.0, 50, 2**10
    k = choose_modulus_bits(bound, m_max, f)
    assert k == MAX_MODULUS_BITS  # the sum needs all 62 bits
    step = 2.0**-f
    x = np.array([bound, -bound, step, -step, 0.0])
    enc = quantize(x, bound, f, k)
    assert np.array_equal(dequantize_sum(enc, f, k), x)
    total = (enc * np.uint64(m_max)) & np.uint64((1 << k) - 1)
    assert np.array_equal(dequantize_sum(total, f, k), m_max * x)


@pytest.mark.parametrize("k", range(2, 9))
@pytest.mark.parametrize("f", [0, 1, 3])
def test_quantize_accepts_a_modulus_iff_it_holds_plus_minus_bound(k: int, f: int) -> None:
    """Q < 2**(k-1) is accepted and ±bound round-trip; Q = 2**(k-1) is refused as 'modulus_bits'."""
    half = 2 ** (k - 1)
    fits = (half - 1) / 2.0**f
    x = np.array([fits, -fits])
    assert np.array_equal(dequantize_sum(quantize(x, fits, f, k), f, k), x)
    too_big = half / 2.0**f
    with pytest.raises(ConfigError) as e:
        quantize(np.array([too_big]), too_big, f, k)
    assert e.value.field == "modulus_bits"
    assert repr(too_big) in str(e.value)


def test_smallest_modulus_two_bits_round_trips() -> None:
    """A 2-bit modulus with one level each side encodes and decodes {-1, 0, 1}."""
    x = np.array([1.0, -1.0, 0.4, -0.4, 3.0])
    enc = quantize(x, 1.0, 0, 2)
    assert np.array_equal(dequantize_sum(enc, 0, 2), [1.0, -1.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_decoding_is_twos_complement(k: int) -> None:
    """Every total in [0, 2**k) decodes to a distinct integer in [-2**(k-1), 2**(k-1))."""
    totals = np.arange(2**k, dtype=np.uint64)
    decoded = dequantize_sum(totals, 0, k)
    assert sorted(decoded.tolist()) == list(range(-(2 ** (k - 1)), 2 ** (k - 1)))
    assert np.array_equal(decoded % 2**k, totals.astype(np.float64))  # congruent mod 2**k


@pytest.mark.parametrize("stochastic", [False, True])
def test_encodings_lie_in_zero_to_modulus(stochastic: bool) -> None:
    """Each encoding, negative values included, is already reduced into [0, 2**k)."""
    rng = np.random.default_rng(11) if stochastic else None
    for k in (4, 9, 33):
        x = np.linspace(-1.0, 1.0, 41)
        enc = quantize(x, 1.0, 2, k, rng)
        assert enc.dtype == np.uint64
        assert int(enc.max()) < 2**k


# --- rounding error bounds are attained (tight), not just respected ----------------------------


@pytest.mark.parametrize("m, f", [(1, 0), (1, 6), (3, 3), (7, 10)])
def test_deterministic_bound_is_attained_by_ties(m: int, f: int) -> None:
    """m devices each at a half-level tie (rounded to even 0) reach the bound exactly."""
    half_step = 2.0 ** -(f + 1)
    k = choose_modulus_bits(1.0, m, f)
    total = _mod_sum([quantize(np.array([half_step, -half_step]), 1.0, f, k)] * m, k)
    err = np.abs(dequantize_sum(total, f, k) - m * np.array([half_step, -half_step]))
    assert np.all(err == error_bound(m, f, stochastic=False))


@pytest.mark.parametrize("f", [1, 4, 9])
def test_stochastic_bound_is_one_step_and_nearly_attained(f: int) -> None:
    """Stochastic error of one device exceeds the deterministic bound, stays within 2**-f,
    and reaches 15/16 of it (4000 values at 15/16 of a step, seed 3: all-up has prob ~0)."""
    step = 2.0**-f
    x = np.full(4000, (5 + 15 / 16) * step)
    k = choose_modulus_bits(8.0, 1, f)
    err = np.abs(dequantize_sum(quantize(x, 8.0, f, k, np.random.default_rng(3)), f, k) - x)
    assert err.max() > error_bound(1, f, stochastic=False)
    assert err.max() <= error_bound(1, f, stochastic=True)
    assert err.max() >= 15 / 16 * error_bound(1, f, stochastic=True)


# --- stochastic rounding: unbiased per coordinate, independent across coordinates ---------------


def test_stochastic_rounding_is_unbiased_per_coordinate() -> None:
    """Mean of 4000 encodings of each coordinate is within 0.05 steps of it (~ 6 sigma; seed 5)."""
    f = 3
    step = 2.0**-f
    fracs = np.array([1, 2, 3, 4, 5, 6, 7]) / 8
    row = np.concatenate([(4 + fracs) * step, -(2 + fracs) * step])
    x = np.tile(row, (4000, 1))
    k = choose_modulus_bits(1.0, 1, f)
    dec = dequantize_sum(quantize(x, 1.0, f, k, np.random.default_rng(5)), f, k)
    assert np.all(np.abs(dec.mean(axis=0) - row) < 0.05 * step)
    # Each value lands on one of its two neighbouring levels.
    assert np.all(np.abs(dec - x) < step)


def test_stochastic_rounding_is_independent_across_coordinates() -> None:
    """4000 coordinates at a tie round up about half the time (0.5 ± 0.05, ~6 sigma; seed 7)."""
    f = 4
    x = np.full(4000, 2.5 * 2.0**-f)
    k = choose_modulus_bits(1.0, 1, f)
    up = dequantize_sum(quantize(x, 1.0, f, k, np.random.default_rng(7)), f, k) > x
    assert abs(up.mean() - 0.5) < 0.05


@pytest.mark.parametrize("u", [0.0, float(np.nextafter(1.0, 0.0))])
def test_values_on_a_level_are_never_moved_by_stochastic_rounding(u: float) -> None:
    """A value exactly on the grid encodes to itself whatever draw in [0, 1) the generator makes."""
    f = 5
    x = np.array([0.0, 3 * 2.0**-f, -7 * 2.0**-f, 1.0, -1.0])
    k = choose_modulus_bits(1.0, 1, f)
    assert np.array_equal(dequantize_sum(quantize(x, 1.0, f, k, FixedDrawRng(u)), f, k), x)


# --- inputs ------------------------------------------------------------------------------------


def test_float32_input_is_clipped_to_the_exact_float64_bound() -> None:
    """Clipping happens at the float64 bound, not a float32-rounded one (error <= the bound)."""
    bound, f = 0.1, 40  # float32(0.1) differs from 0.1 by ~1.5e-9 >> 2**-41
    k = choose_modulus_bits(bound, 1, f)
    x = np.array([5.0, -5.0, 0.05, -0.0625], dtype=np.float32)
    dec = dequantize_sum(quantize(x, bound, f, k), f, k)
    err = np.abs(dec - np.clip(x.astype(np.float64), -bound, bound))
    assert err.max() <= error_bound(1, f, stochastic=False)


def test_non_finite_error_counts_and_locates_entries_of_a_matrix() -> None:
    """For any shape, the refusal counts the non-finite entries and gives the first flat index."""
    x = np.array([[0.5, np.nan], [np.inf, -np.inf]])
    with pytest.raises(ValueError, match="non-finite") as e:
        quantize(x, 1.0, 4, 8)
    msg = str(e.value)
    assert "3 NaN/inf" in msg
    assert "flat index 1:" in msg and "nan" in msg
