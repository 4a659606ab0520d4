"""(k, t) against a server that lies about dropouts: the equivocation bound, recomputed here
with scipy, on top of the honest-but-curious bounds (which must not move)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from scipy.stats import binom

from fedactors.secagg.parameters import (
    CompleteThresholds,
    complete_threshold,
    equivocation_log2,
    plus_parameters,
)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    plus_parameters.cache_clear()
    complete_threshold.cache_clear()
    yield
    plus_parameters.cache_clear()
    complete_threshold.cache_clear()


def _abort(n: int, k: int, t: int, d: float) -> float:
    return n * float(binom.cdf(t - 1, k + 1, 1 - d))


def _collude(n: int, k: int, t: int, g: float) -> float:
    return n * float(binom.sf(t - 1, k, g))


def _equivocate(n: int, k: int, t: int, g: float) -> float:
    """n * P[Bin(k, g) >= 2t - k - 1], which is n (a certainty) when 2t <= k + 1."""
    m = 2 * t - k - 1
    return float(n) if m <= 0 else n * float(binom.sf(m - 1, k, g))


def _split(n: int, k: int, d: float, g: float) -> float:
    if k >= n - 1:
        return 0.0
    q = 1 - (1 - d) * (1 - g)
    return math.comb(n, 2) * ((1 - q) * q ** (k / 2)) ** 2


def _bits(bound: float) -> float:
    return math.inf if bound == 0.0 else -math.log2(bound)


def _meets(n, k, t, d, g, f, s) -> bool:
    return (_abort(n, k, t, d) <= 2.0**-f and _collude(n, k, t, g) <= 2.0**-s
            and _equivocate(n, k, t, g) <= 2.0**-s and _split(n, k, d, g) <= 2.0**-s)


def test_honest_but_curious_parameters_are_unchanged():
    for n, want in [(100, (88, 37)), (1000, (100, 42)), (10_000, (108, 44))]:
        p = plus_parameters(n)
        assert (p.degree, p.threshold, p.meets_targets) == (*want, True)
        assert p == plus_parameters(n, malicious=False)


def test_the_defaults_table_under_a_malicious_server():
    got = {n: plus_parameters(n, malicious=True) for n in (100, 1000, 10_000)}
    assert [(p.degree, p.threshold, p.meets_targets) for p in got.values()] == [
        (99, 59, False), (766, 459, True), (846, 506, True)]


CASES = [
    (1000, 0.3, 0.1, 20.0, 40.0),
    (10_000, 0.3, 0.1, 20.0, 40.0),
    (100, 0.1, 0.02, 10.0, 20.0),
    (200, 0.1, 0.02, 10.0, 20.0),
    (60, 0.05, 0.0, 10.0, 20.0),    # nobody corrupt: t > (k+1)/2 is still needed
    (40, 0.05, 0.0, 8.0, 12.0),
    (500, 0.1, 0.05, 20.0, 40.0),
]


@pytest.mark.parametrize("n, d, g, f, s", CASES)
def test_malicious_parameters_meet_every_bound_with_smallest_k_and_largest_t(n, d, g, f, s):
    p = plus_parameters(n, d, g, f, s, malicious=True)
    k, t = p.degree, p.threshold
    assert p.meets_targets and k % 2 == 0 and k < n - 1
    assert 2 * t - k - 1 > 0  # a strict majority of N[u]
    assert _meets(n, k, t, d, g, f, s)
    assert 2.0 ** -p.security_log2 == pytest.approx(
        max(_collude(n, k, t, g), _equivocate(n, k, t, g), _split(n, k, d, g)), rel=1e-6)
    assert 2.0 ** -p.failure_log2 == pytest.approx(_abort(n, k, t, d), rel=1e-6)
    if t <= k:  # the largest t: one more breaks the abort bound
        assert _abort(n, k, t + 1, d) > 2.0**-f
    # No smaller even degree has any threshold meeting all four.
    for k2 in range(max(2, k - 6), k, 2):
        assert not any(_meets(n, k2, t2, d, g, f, s) for t2 in range(1, k2 + 2))
    # The honest-but-curious choice needs no more.
    assert plus_parameters(n, d, g, f, s).degree <= k


def test_equivocation_bound_is_the_binomial_tail_and_certain_without_a_majority():
    n, k, g = 500, 40, 0.1
    for t in range(1, k + 2):
        want = _equivocate(n, k, t, g)
        if want > 0.0:  # past double precision only the log-space value is finite
            assert equivocation_log2(n, k, t, g) == pytest.approx(math.log2(want), rel=1e-9)
    # 2t <= k + 1: two disjoint sets of t honest signers fit, whatever the corruption.
    assert equivocation_log2(n, k, (k + 1) // 2, 0.0) == pytest.approx(math.log2(n))
    assert equivocation_log2(n, k, k // 2 + 1, 0.0) == -math.inf


@pytest.mark.parametrize("n, d, g, f, s", [
    (100, 0.3, 0.1, 20.0, 40.0), (200, 0.3, 0.1, 20.0, 40.0), (300, 0.1, 0.05, 20.0, 40.0),
    (50, 0.05, 0.02, 10.0, 20.0),
    (20, 0.05, 0.02, 10.0, 20.0),   # exactly one t works under a malicious server (14)
    (20, 0.2, 0.02, 10.0, 20.0),    # exactly one t works under an honest one (8)
])
@pytest.mark.parametrize("malicious", [False, True])
def test_complete_threshold_is_exactly_the_range_meeting_both_targets(n, d, g, f, s, malicious):
    c = complete_threshold(n, d, g, f, s, malicious)
    k = n - 1

    def sec(t: int) -> float:
        return max(_collude(n, k, t, g), _equivocate(n, k, t, g) if malicious else 0.0)

    def balance(t: int) -> float:
        return min(_bits(_abort(n, k, t, d)) / f, _bits(sec(t)) / s)

    want = [t for t in range(1, n + 1) if _abort(n, k, t, d) <= 2.0**-f and sec(t) <= 2.0**-s]
    assert list(c.thresholds) == want
    if want:
        assert c.meets_targets and (c.lowest, c.highest) == (want[0], want[-1])
    else:
        # None works: the t that best balances the two margins, as plus_parameters falls back to.
        assert not c.meets_targets and c.lowest == c.highest
        assert balance(c.lowest) == pytest.approx(max(balance(t) for t in range(1, n + 1)))


def test_complete_threshold_under_a_malicious_server_needs_a_majority():
    c = complete_threshold(300, 0.1, 0.05, 20.0, 40.0, malicious=True)
    h = complete_threshold(300, 0.1, 0.05, 20.0, 40.0)
    assert c.meets_targets and h.meets_targets
    assert 2 * c.lowest - 300 > 0 and c.lowest > h.lowest and c.highest == h.highest


def test_complete_threshold_says_when_no_threshold_works():
    c = complete_threshold(100, malicious=True)
    assert c == CompleteThresholds(100, 59, 59, False) and list(c.thresholds) == []
    p = plus_parameters(100, malicious=True)
    assert p.complete and not p.meets_targets and p.threshold == c.lowest


def test_one_device():
    assert complete_threshold(1, malicious=True) == CompleteThresholds(1, 1, 1, True)
    assert plus_parameters(1, malicious=True).meets_targets


def test_malicious_degree_is_monotone_in_corruption():
    ks = [plus_parameters(2000, 0.1, g, 20.0, 40.0, malicious=True).degree
          for g in (0.0, 0.02, 0.05, 0.08)]
    assert ks == sorted(ks) and np.all(np.diff(ks) >= 0)


@pytest.mark.parametrize("graph", ["complete", "sparse"])
def test_a_malicious_server_always_faces_a_majority_threshold_even_below_the_targets(graph):
    # Over-selection raises the effective dropout until no (k, t) meets the targets; the
    # fallback may then give up liveness (more aborts) but never the majority that the
    # consistency check needs (below it a lying server unmasks a device with no help).
    from fedactors import SecureAggregation

    option = SecureAggregation(graph=graph, server="malicious")
    for selected in range(5, 201, 7):
        admitted = max(2, int(selected / 1.3))
        p = (option.complete_parameters(selected, admitted) if graph == "complete"
             else option.plus_parameters(selected, admitted))
        assert 2 * p.threshold > p.degree + 1, (selected, p)
