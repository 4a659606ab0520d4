import numpy as np
import pytest

from fedactors.errors import ConfigError
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
