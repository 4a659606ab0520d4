import itertools

import numpy as np
import pytest

from fedactors.secagg.shamir import ShamirError, Share, reconstruct, split, split_n


def test_every_t_subset_reconstructs_and_t_minus_1_does_not():
    rng = np.random.default_rng(1)
    secret = rng.bytes(32)
    t, holders = 3, [1, 2, 3, 4, 5]
    shares = split(secret, t, holders, rng)
    for subset in itertools.combinations(holders, t):
        assert reconstruct([shares[x] for x in subset], t) == secret
    for subset in itertools.combinations(holders, t - 1):
        try:
            wrong = reconstruct([shares[x] for x in subset], t - 1)
        except ShamirError:
            continue
        assert wrong != secret


def test_too_few_shares_rejected():
    rng = np.random.default_rng(2)
    shares = split(rng.bytes(32), 3, [1, 2, 3], rng)
    with pytest.raises(ShamirError, match="need 3 shares, got 2"):
        reconstruct([shares[1], shares[2]], 3)


def test_duplicate_and_bad_parameters():
    rng = np.random.default_rng(3)
    with pytest.raises(ShamirError, match="duplicate holder ids"):
        split(rng.bytes(32), 2, [1, 2, 2], rng)
    with pytest.raises(ShamirError, match="got 4"):
        split(rng.bytes(32), 4, [1, 2, 3], rng)
    with pytest.raises(ShamirError, match="got 0"):
        split(rng.bytes(32), 2, [0, 1], rng)
    shares = split(rng.bytes(32), 2, [1, 2], rng)
    with pytest.raises(ShamirError, match="duplicate"):
        reconstruct([shares[1], shares[1]], 2)


def test_share_serialization_roundtrip():
    rng = np.random.default_rng(4)
    s = split(rng.bytes(32), 2, [7, 9], rng)[7]
    assert Share.from_bytes(s.to_bytes()) == s
    assert len(s.to_bytes()) == s.nbytes


def test_split_n_uses_one_based_indices_and_validates_n():
    rng = np.random.default_rng(5)
    secret = rng.bytes(32)
    shares = split_n(secret, 4, 7, rng)
    assert sorted(shares) == list(range(1, 8))
    assert reconstruct([shares[x] for x in (7, 2, 5, 3)], 4) == secret
    with pytest.raises(ShamirError, match="got 0"):
        split_n(secret, 1, 0, rng)
