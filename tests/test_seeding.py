"""SeedTree: seeded streams by path, and secret streams from the seed or from the OS."""

from __future__ import annotations

import copy
import hashlib
import pickle

import numpy as np
import pytest

from fedactors import seeding
from fedactors.seeding import SeedTree, SystemBits, system_generator


def test_streams_depend_on_the_path_not_on_the_order_they_were_made_in() -> None:
    a, b = SeedTree(3), SeedTree(3)
    first = a.generator("device", 2, 7).random(4)
    b.generator("cohort", 1).random(100)  # another stream drawn first changes nothing
    assert np.array_equal(b.generator("device", 2, 7).random(4), first)
    assert not np.array_equal(a.generator("device", 2, 8).random(4), first)
    assert not np.array_equal(SeedTree(4).generator("device", 2, 7).random(4), first)


def test_a_stream_is_pcg64_seeded_by_blake2b_of_the_root_and_the_path() -> None:
    # The derivation documented in docs/architecture.md, recomputed here from its definition:
    # a reimplementation elsewhere (or a replay from a paper's appendix) gets the same draws.
    digest = hashlib.blake2b(
        b"fedactors.seeding.v2" + (1).to_bytes(4, "little") + bytes([3])
        + b"s" + (6).to_bytes(4, "little") + b"device" + b"i" + (2).to_bytes(8, "little")
        + b"i" + (7).to_bytes(8, "little"), digest_size=32).digest()
    # Its first 32 bytes are the PCG64 seed words (checked below for StreamKey).
    expected = np.random.Generator(np.random.PCG64(seeding.StreamKey(digest)))
    assert np.array_equal(SeedTree(3).generator("device", 2, 7).random(5), expected.random(5))


def test_paths_that_differ_anywhere_give_other_streams() -> None:
    tree = SeedTree(0)
    paths = [("ab", "c"), ("a", "bc"), ("a", 1), ("a", "1"), (1, "a"), ("a",), ("a", 0),
             ("a", 2**64 - 1), ()]
    keys = [tree.key(*p).digest for p in paths]
    assert len(set(keys)) == len(paths)
    # numpy integers name the same stream as Python ints; the root seed is part of the key.
    assert tree.key("a", np.int64(5)).digest == tree.key("a", 5).digest
    assert SeedTree(1).key("a").digest != tree.key("a").digest
    assert SeedTree(256).key("a").digest != SeedTree(1).key("a").digest


@pytest.mark.parametrize("part, error", [(-1, ValueError), (2**64, ValueError), (True, TypeError),
                                         (1.0, TypeError), (None, TypeError)])
def test_a_path_part_that_has_no_encoding_is_refused(part: object, error: type) -> None:
    with pytest.raises(error, match="seed path"):
        SeedTree(0).key("a", part)


def test_a_negative_root_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="root seed must be >= 0, got -1"):
        SeedTree(-1)


def test_a_stream_key_gives_its_digest_first_then_more_words_and_numbered_children() -> None:
    key = SeedTree(0).key("x")
    assert key.generate_state(4, np.uint64).tobytes() == key.digest
    assert key.generate_state(8, np.uint32).tobytes() == key.digest
    long = key.generate_state(20, np.uint64)  # past the digest: hashed blocks, all distinct
    assert long[:4].tobytes() == key.digest and len(set(long.tolist())) == 20
    with pytest.raises(ValueError, match="uint32 or uint64"):
        key.generate_state(2, np.int32)
    # Children are numbered on from earlier spawns, as SeedSequence.spawn's are.
    first, second = key.spawn(2)
    (third,) = key.spawn(1)
    again = SeedTree(0).key("x").spawn(3)
    assert [c.digest for c in again] == [first.digest, second.digest, third.digest]
    assert len({first.digest, second.digest, third.digest, key.digest}) == 4
    # A generator on it spawns (secure aggregation's simulation does).
    children = SeedTree(0).generator("x").spawn(2)
    assert children[0].random() != children[1].random()


def test_seeded_secrets_are_the_seed_tree_streams_bit_for_bit() -> None:
    # The default: a run's noise and secrets replay from its seed, exactly as before.
    tree = SeedTree(0)
    assert tree.randomness == "seeded"
    assert np.array_equal(tree.secret("server", 3).normal(size=8),
                          SeedTree(0).generator("server", 3).normal(size=8))
    stream = tree.generator("device", 1, 5)
    assert tree.secret_after(stream) is stream


def test_system_secrets_are_fresh_on_every_call_and_never_the_seeded_stream() -> None:
    tree = SeedTree(0, "system")
    draws = [tree.secret("server", 3).bytes(32) for _ in range(3)]
    assert len(set(draws)) == 3
    assert SeedTree(0).generator("server", 3).bytes(32) not in draws
    assert isinstance(tree.secret("server", 3).bit_generator, SystemBits)


def test_system_secret_after_leaves_the_seeded_stream_untouched() -> None:
    tree = SeedTree(0, "system")
    stream = tree.generator("device", 1, 5)
    before = stream.bit_generator.state
    noise = tree.secret_after(stream)
    assert noise is not stream and isinstance(noise.bit_generator, SystemBits)
    noise.standard_normal(1000)
    assert stream.bit_generator.state == before


def test_other_streams_stay_seeded_under_system_randomness() -> None:
    assert np.array_equal(SeedTree(5, "system").generator("cohort", 2).random(6),
                          SeedTree(5).generator("cohort", 2).random(6))
    assert SeedTree(5, "system").integer("keras") == SeedTree(5).integer("keras")


def test_an_unknown_randomness_is_refused() -> None:
    with pytest.raises(ValueError, match="randomness must be one of"):
        SeedTree(0, "os")


def test_every_bit_comes_from_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    # Known "OS" bytes: the words numpy gets are those bytes, last word first, and the
    # derived values are numpy's own transforms of them.
    calls: list[int] = []

    def urandom(n: int) -> bytes:
        calls.append(n)
        return np.arange(n // 8, dtype="<u8").tobytes()

    monkeypatch.setattr(seeding.os, "urandom", urandom)
    rng = system_generator()
    first = seeding._FIRST
    raw = rng.integers(0, 2**64, size=3, dtype=np.uint64, endpoint=False)
    assert raw.tolist() == [first - 1, first - 2, first - 3]
    assert rng.random() == ((first - 4) >> 11) / 2**53
    assert calls == [8 * first]
    # Fetched in doubling batches (a device's keys need a few words, noise many), capped.
    rng.integers(0, 2**64, size=first - 4 + 2 * first + 4 * first + 1, dtype=np.uint64)
    assert calls == [8 * first, 16 * first, 32 * first, 64 * first]
    rng.integers(0, 2**64, size=4 * seeding._WORDS, dtype=np.uint64)
    assert max(calls) == 8 * seeding._WORDS


def test_the_draws_secure_aggregation_and_dp_noise_use_are_well_formed() -> None:
    rng = system_generator()
    assert len(rng.bytes(32)) == 32 and len(rng.bytes(12)) == 12
    coeffs = rng.integers(0, 65537, size=(40, 16), dtype=np.int64)  # Shamir coefficients
    assert coeffs.min() >= 0 and coeffs.max() < 65537 and len(np.unique(coeffs)) > 500
    normal = rng.normal(0.0, 2.0, 200_000)
    assert abs(normal.mean()) < 0.03 and abs(normal.std() - 2.0) < 0.03
    uniform = rng.random(200_000)
    assert 0.0 <= uniform.min() and uniform.max() < 1.0 and abs(uniform.mean() - 0.5) < 0.005
    # Unbiased bits: half of 640,000 set, to within about 5 standard deviations.
    ones = np.unpackbits(np.frombuffer(rng.bytes(80_000), np.uint8)).mean()
    assert abs(ones - 0.5) < 0.003


@pytest.mark.parametrize("save", [pickle.dumps, copy.deepcopy], ids=["pickle", "deepcopy"])
def test_system_randomness_cannot_be_saved(save) -> None:
    # A checkpoint must never hold a secret stream (it would be on disk, and a resumed
    # run would replay it).
    with pytest.raises(TypeError, match="system randomness has no state to save"):
        save(system_generator())
    with pytest.raises(TypeError, match="no state to save"):
        SystemBits().state  # noqa: B018


def test_a_system_generator_is_freed_as_soon_as_it_is_dropped() -> None:
    # One per device per round: a reference cycle would keep each one's buffer alive
    # until the cycle collector happened to run.
    import gc
    import weakref

    was_enabled = gc.isenabled()
    gc.disable()  # only reference counting may free it
    try:
        bits = SystemBits()
        alive = weakref.ref(bits)
        rng = np.random.Generator(bits)
        rng.standard_normal(100)
        del bits, rng
        assert alive() is None
    finally:
        if was_enabled:
            gc.enable()
