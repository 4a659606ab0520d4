import numpy as np
import pytest

from fedactors.errors import ConfigError
from fedactors.secagg.encoding import encode, make_layout
from fedactors.secagg.quantize import choose_modulus_bits, dequantize_sum, error_bound, quantize


@pytest.mark.parametrize("stochastic", [False, True])
def test_sum_roundtrip_within_documented_bound(stochastic):
    rng = np.random.default_rng(6)
    bound, f, m = 2.0, 12, 50
    k = choose_modulus_bits(bound, m, f)
    xs = rng.uniform(-3, 3, size=(m, 2000))
    enc = [quantize(x, bound, f, k, rng if stochastic else None) for x in xs]
    total = np.zeros(2000, dtype=np.uint64)
    for e in enc:
        total = (total + e) & np.uint64(2**k - 1)
    err = np.abs(dequantize_sum(total, f, k) - np.clip(xs, -bound, bound).sum(axis=0))
    assert err.max() <= error_bound(m, f, stochastic)
    assert err.max() > 0  # the bound is exercised, not vacuous


def test_modulus_exactly_sufficient():
    k = choose_modulus_bits(1.0, 4, 3)  # Q = 8, sum up to 32 -> needs 2**(k-1) > 32
    assert k == 7
    total = sum(quantize(np.array([1.0]), 1.0, 3, k) for _ in range(4)) & np.uint64(2**k - 1)
    assert dequantize_sum(total, 3, k)[0] == 4.0


def test_too_many_bits_is_clear_error():
    with pytest.raises(ConfigError, match="62"):
        choose_modulus_bits(1.0, 10**6, 50)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("stochastic", [False, True])
def test_non_finite_input_is_refused_not_encoded(bad, stochastic):
    # Clipping keeps NaN and casting NaN to an integer is undefined: refuse it by name.
    x = np.array([0.5, bad, -0.25])
    rng = np.random.default_rng(0) if stochastic else None
    with pytest.raises(ValueError, match="non-finite"):
        quantize(x, 1.0, 8, 12, rng)


def test_encode_names_the_non_finite_key():
    layout = make_layout({"a": (2,), "b": (3,)}, {"a": 1.0, "b": 1.0}, 4, 8)
    ok = {"a": np.array([0.5, -0.5]), "b": np.zeros(3)}
    assert encode(ok, layout, None).dtype == np.uint64
    with pytest.raises(ValueError, match="'b'.*NaN or inf"):
        encode({**ok, "b": np.array([0.0, np.nan, 0.0])}, layout, None)


def test_encoding_every_key_at_once_equals_quantizing_key_by_key() -> None:
    # encode quantizes the whole contribution in one call with per-element bounds; it must
    # give exactly what quantizing each key in layout order with the same generator gives.
    from fedactors.secagg import encoding

    rng = np.random.default_rng(0)
    for _ in range(100):
        shapes = {f"k{i}": tuple(int(s) for s in rng.integers(1, 6, size=rng.integers(0, 3)))
                  for i in range(int(rng.integers(1, 4)))}
        bounds = {k: float(rng.uniform(0.1, 5)) for k in shapes}
        layout = encoding.make_layout(shapes, bounds, 30, int(rng.integers(0, 20)))
        values = {k: rng.standard_normal(s) * 3 for k, s in shapes.items()}
        seed = int(rng.integers(1 << 30))
        for stochastic in (True, False):
            draws = np.random.default_rng(seed) if stochastic else None
            want = np.concatenate([
                quantize(np.reshape(values[f.key], -1), f.bound, layout.scale_bits,
                         layout.modulus_bits, draws) for f in layout.fields])
            got = encoding.encode(values, layout, np.random.default_rng(seed) if stochastic
                                  else None)
            assert got.dtype == want.dtype and np.array_equal(got, want)
