"""Shamir sharing contracts at the edges: 1-of-n and n = 1, every 16-bit chunk value, and
refusal (never truncation) of shares that are not field elements or not 16-bit chunks
(found by mutation testing)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedactors.secagg.shamir import PRIME, ShamirError, Share, reconstruct, split, split_n


def test_one_holder_one_of_one_round_trips() -> None:
    """n = 1 and threshold = 1 are valid: the single share recovers the secret."""
    rng = np.random.default_rng(31)
    secret = rng.bytes(8)
    shares = split_n(secret, 1, 1, rng)
    assert list(shares) == [1]
    assert reconstruct([shares[1]], 1) == secret


def test_threshold_one_reconstructs_from_any_single_share() -> None:
    """With threshold 1 every holder alone recovers the secret."""
    rng = np.random.default_rng(32)
    secret = rng.bytes(6)
    shares = split_n(secret, 1, 4, rng)
    for x in range(1, 5):
        assert reconstruct([shares[x]], 1) == secret


@pytest.mark.parametrize("bad", [True, 2.5, "3", np.float64(3.0), None])
def test_split_n_refuses_a_non_int_holder_count(bad: Any) -> None:
    """n must be a (non-bool) int; anything else is a ShamirError quoting it."""
    with pytest.raises(ShamirError, match="n must be an int") as e:
        split_n(b"\x01\x02", 1, bad, np.random.default_rng(0))
    assert repr(bad) in str(e.value)


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "2", None])
def test_reconstruct_refuses_a_bad_threshold(bad: Any) -> None:
    """The threshold must be an int >= 1 (bool excluded); the error quotes it."""
    rng = np.random.default_rng(33)
    shares = list(split_n(rng.bytes(4), 2, 3, rng).values())
    with pytest.raises(ShamirError, match="threshold") as e:
        reconstruct(shares, bad)
    assert repr(bad) in str(e.value)


def test_reconstruct_with_no_shares_is_a_shamir_error() -> None:
    """An empty share list is refused by name, not with an index error."""
    with pytest.raises(ShamirError, match="no shares"):
        reconstruct([], 1)


def test_shares_of_different_lengths_are_refused_listing_the_lengths() -> None:
    """Shares of secrets of different lengths cannot be combined."""
    rng = np.random.default_rng(34)
    a = split_n(rng.bytes(4), 2, 3, rng)  # 2 chunks
    b = split_n(rng.bytes(6), 2, 3, rng)  # 3 chunks
    with pytest.raises(ShamirError, match="disagree on secret length") as e:
        reconstruct([a[1], b[2]], 2)
    assert "[2, 3]" in str(e.value)


def test_every_16_bit_chunk_value_round_trips() -> None:
    """Chunks 0x0000 and 0xFFFF (the extremes) survive split and reconstruct."""
    rng = np.random.default_rng(35)
    secret = b"\x00\x00\xff\xff\x01\x00\xfe\xff"
    shares = split_n(secret, 3, 5, rng)
    assert reconstruct([shares[x] for x in (2, 4, 5)], 3) == secret


@pytest.mark.parametrize("y", [PRIME, PRIME + 1, 2**24 - 1, -1])
def test_a_share_value_outside_the_field_is_refused(y: int) -> None:
    """A y outside [0, PRIME) is not a field element: refused, never reduced mod PRIME."""
    rng = np.random.default_rng(36)
    good = split_n(rng.bytes(4), 2, 3, rng)
    bad = Share(2, (y, good[2].y[1]))
    with pytest.raises(ShamirError, match="outside the field"):
        reconstruct([good[1], bad], 2)


def test_a_reconstructed_value_above_16_bits_is_refused_not_truncated() -> None:
    """A field element 0x10000 decodes to no 16-bit chunk: inconsistent shares, not b'\\x00\\x00'."""
    with pytest.raises(ShamirError, match="inconsistent"):
        reconstruct([Share(1, (0x10000, 7))], 1)
    # The largest 16-bit chunk is fine.
    assert reconstruct([Share(1, (0xFFFF, 7))], 1) == b"\xff\xff\x07\x00"


def test_more_than_threshold_shares_still_reconstruct() -> None:
    """Extra shares beyond the threshold do not disturb reconstruction."""
    rng = np.random.default_rng(37)
    secret = rng.bytes(10)
    shares = split(secret, 2, [3, 9, 40], rng)
    assert reconstruct(list(shares.values()), 2) == secret


@pytest.mark.parametrize("y", [(), (0,), (1, 0xFFFF, 0x10000), (PRIME, 2**16 + 2**8 + 1, 2**24 - 1)])
def test_share_serialization_is_lossless_for_every_24_bit_value(y: tuple[int, ...]) -> None:
    """from_bytes inverts to_bytes for any chunk count and any value < 2**24, so a value outside the
    field arrives intact at reconstruct's check instead of being silently altered."""
    s = Share(65536, y)
    data = s.to_bytes()
    assert len(data) == s.nbytes
    assert Share.from_bytes(data) == s


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 6, 8])
def test_share_encoding_of_bad_length_is_refused(size: int) -> None:
    """Bytes that are not a 4-byte id plus whole 3-byte values are a ShamirError quoting the length."""
    with pytest.raises(ShamirError, match="bad length") as e:
        Share.from_bytes(bytes(range(size)))
    assert str(size) in str(e.value)
