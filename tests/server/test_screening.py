"""Batched screens give, update by update, the verdicts of the one-at-a-time ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedactors.aggregation.clipping import l2_norm
from fedactors.server.screening import (
    MALFORMED,
    NONFINITE,
    OUT_OF_BOUNDS,
    Expectation,
    norm_outliers,
    screen_contribution,
    screen_contributions,
)

#: A bound float32 cannot hold: float32(0.1) is above it, though a float32
#: comparison (which rounds the bound first) would say it is equal.
BOUND = 0.1


def _expect(bounded_size: int = 2) -> Expectation:
    return Expectation(
        spec={"d": ((3, 2), np.dtype(np.float32)), "w": ((bounded_size,), np.dtype(np.float32)),
              "c": ((2,), np.dtype(np.complex64)), "n": ((1,), np.dtype(np.int64))},
        bounds={"w": BOUND})


def _variant(kind: int, rng: np.random.Generator, expect: Expectation):
    size = expect.spec["w"][0][0]
    good = {"d": rng.standard_normal((3, 2)).astype(np.float32),
            "w": rng.uniform(-BOUND, BOUND, size).astype(np.float32),
            "c": rng.standard_normal(2).astype(np.complex64),
            "n": np.array([int(rng.integers(9))], np.int64)}
    if kind == 0:
        return good
    if kind == 1:
        return {**good, "d": np.where(rng.random((3, 2)) < 0.3, np.nan, good["d"]).astype(np.float32)}
    if kind == 2:
        return {**good, "c": np.array([1, complex(0, np.inf)], np.complex64)}
    if kind == 3 and size:
        w = good["w"].copy()
        w[int(rng.integers(size))] = np.float32(BOUND) * rng.choice([-1, 1])
        return {**good, "w": w}
    if kind == 4:  # non-finite and beyond the bound: non-finite is what is said
        w = np.full(size, 5.0, np.float32)
        return {**good, "w": w, "d": np.full((3, 2), np.inf, np.float32)}
    if kind == 5:
        return {**good, "n": np.array([1], np.int32)}
    if kind == 6:
        return {k: v for k, v in good.items() if k != "c"}
    if kind == 7:
        return [good]
    if kind == 8:
        return {**good, "d": good["d"].ravel()}
    return {**good, "w": np.full(size, np.float32(-BOUND) * 0.999, np.float32)}


@pytest.mark.parametrize("bounded_size", [2, 0])
def test_a_batch_gets_each_updates_own_verdict(bounded_size: int) -> None:
    expect = _expect(bounded_size)
    rng = np.random.default_rng(5)
    batch = [_variant(int(k), rng, expect) for k in rng.integers(0, 10, 300)]
    want = [screen_contribution(c, expect) for c in batch]
    assert screen_contributions(batch, expect) == want
    kinds = set(want)
    assert kinds >= ({None, NONFINITE, MALFORMED} | ({OUT_OF_BOUNDS} if bounded_size else set()))


def test_float32_of_a_bound_is_beyond_it() -> None:
    expect = _expect()
    rng = np.random.default_rng(0)
    over = {**_variant(0, rng, expect), "w": np.full(2, BOUND, np.float32)}
    assert float(np.float32(BOUND)) > BOUND
    assert screen_contribution(over, expect) == OUT_OF_BOUNDS
    assert screen_contributions([over, _variant(0, rng, expect)], expect) == [OUT_OF_BOUNDS, None]


def test_an_empty_batch_and_a_batch_of_nothing_well_formed() -> None:
    expect = _expect()
    assert screen_contributions([], expect) == []
    assert screen_contributions([None, {"x": 1}], expect) == [MALFORMED, MALFORMED]


def test_norm_outliers_takes_each_norm_as_l2_does() -> None:
    """The outlier ratio is reported: the batched norms must be ``l2``'s, bit for bit."""
    rng = np.random.default_rng(3)
    rows = {s: {"d": (rng.standard_normal(737) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)}
            for s in range(60)}
    rows[17] = {"d": np.full(737, 1e6, np.float32)}
    norms = {s: l2_norm(r["d"]) for s, r in rows.items()}
    median = sorted(norms.values())[(len(norms) - 1) // 2]
    out = norm_outliers(rows, ("d",), 3.0)
    assert out and out == {s: ("d", n / median) for s, n in norms.items() if n > 3.0 * median}
    assert all(math.isfinite(ratio) for _, ratio in out.values())
