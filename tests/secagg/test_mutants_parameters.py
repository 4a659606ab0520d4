"""SecAgg+ (k, t) choice checked against its specification, recomputed here with scipy
(found by mutation testing: the three bounds' edge cases, the search for t and the
complete-graph fallback were not pinned down)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import pytest
from scipy.stats import binom

from fedactors.errors import ConfigError
from fedactors.secagg.parameters import (
    PlusParameters,
    abort_log2,
    disconnect_log2,
    plus_parameters,
)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """plus_parameters is cached: start each test empty so every case is really computed."""
    plus_parameters.cache_clear()
    yield
    plus_parameters.cache_clear()


# --- independent recomputation of the documented bounds (docs/secure_aggregation.md) ---------

def _abort(n: int, k: int, t: int, d: float) -> float:
    """n * P[Bin(k+1, 1-d) < t]."""
    return n * float(binom.cdf(t - 1, k + 1, 1 - d))


def _collude(n: int, k: int, t: int, g: float) -> float:
    """n * P[Bin(k, g) >= t]."""
    return n * float(binom.sf(t - 1, k, g))


def _split(n: int, k: int, d: float, g: float) -> float:
    """C(n, 2) * ((1-q) q^(k/2))^2, and 0 on the complete graph."""
    if k >= n - 1:
        return 0.0
    q = 1 - (1 - d) * (1 - g)
    return math.comb(n, 2) * ((1 - q) * q ** (k / 2)) ** 2


def _degrees(n: int) -> list[int]:
    """The degrees tried, smallest first: even k up to n - 2, then the complete graph n - 1."""
    return sorted({min(k, n - 1) for k in range(2, n + 1, 2)})


def _spec(n: int, d: float, g: float, f: float, s: float) -> tuple[int, int] | None:
    """Smallest k for which some t meets all three targets, with the largest such t (or None)."""
    for k in _degrees(n):
        if _split(n, k, d, g) > 2.0**-s:
            continue
        t = np.arange(1, k + 2)
        ok = (n * binom.cdf(t - 1, k + 1, 1 - d) <= 2.0**-f) & (n * binom.sf(t - 1, k, g) <= 2.0**-s)
        if ok.any():
            return k, int(t[ok].max())
    return None


def _bits(bound: float) -> float:
    """-log2 of a probability bound (infinite for a bound of 0)."""
    return math.inf if bound == 0.0 else -math.log2(bound)


def _balance(n: int, t: int, d: float, g: float, f: float, s: float) -> float:
    """On the complete graph: the weaker of the two margins, each relative to its target."""
    k = n - 1
    return min(_bits(_abort(n, k, t, d)) / f, _bits(_collude(n, k, t, g)) / s)


# --- the public bound functions -------------------------------------------------------------

@pytest.mark.parametrize("n, k, d", [(50, 6, 0.3), (1000, 20, 0.1), (7, 6, 0.8)])
def test_abort_bound_is_n_times_the_binomial_tail_for_every_threshold(n: int, k: int, d: float) -> None:
    """abort_log2 is log2(n * P[Bin(k+1, 1-d) < t]) for t = 0..k+2 (t = 0: no abort at all)."""
    assert abort_log2(n, k, 0, d) == -math.inf
    for t in range(1, k + 3):
        assert abort_log2(n, k, t, d) == pytest.approx(math.log2(_abort(n, k, t, d)), rel=1e-9)


@pytest.mark.parametrize("n, k, d, g", [
    (100, 8, 0.3, 0.1), (1000, 20, 0.2, 0.3), (12, 10, 0.5, 0.2), (4, 2, 0.3, 0.1),
])
def test_disconnect_bound_matches_documented_formula_on_sparse_graphs(
    n: int, k: int, d: float, g: float
) -> None:
    """For k < n - 1 (including k = n - 2) the bound is C(n,2)((1-q) q^(k/2))^2, q = 1-(1-d)(1-g)."""
    assert disconnect_log2(n, k, d, g) == pytest.approx(math.log2(_split(n, k, d, g)), rel=1e-12)


@pytest.mark.parametrize("n", [5, 8, 101])
def test_complete_graph_cannot_disconnect(n: int) -> None:
    """With k >= n - 1 every survivor masks with every other: the disconnection bound is 0."""
    for k in (n - 1, n, n + 1):
        assert disconnect_log2(n, k, 0.3, 0.1) == -math.inf


def test_disconnect_bound_is_zero_when_nobody_drops_or_colludes() -> None:
    """q = 0: nobody is removed, so the honest survivors' graph cannot split."""
    assert disconnect_log2(100, 8, 0.0, 0.0) == -math.inf


@pytest.mark.parametrize("d, g", [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_disconnect_bound_stays_a_probability_when_everyone_is_removed(d: float, g: float) -> None:
    """q = 1 gives a bound of at most 1 (log2 <= 0), not a math domain error."""
    assert disconnect_log2(100, 8, d, g) <= 0.0


def _harary_split_probability(n: int, k: int, q: float) -> float:
    """Exact P[honest survivors split into >= 2 components] on the ring Harary graph H(k, n)."""
    total = 0.0
    for kept_bits in itertools.product((False, True), repeat=n):
        kept = [i for i in range(n) if kept_bits[i]]
        if len(kept) < 2:
            continue
        seen, todo = {kept[0]}, [kept[0]]
        while todo:
            u = todo.pop()
            for v in kept:
                ring = min((u - v) % n, (v - u) % n)
                if v not in seen and 1 <= ring <= k // 2:
                    seen.add(v)
                    todo.append(v)
        if len(seen) < len(kept):
            total += (1 - q) ** len(kept) * q ** (n - len(kept))
    return total


@pytest.mark.parametrize("k", [2, 4, 6])
def test_disconnect_bound_is_an_upper_bound_on_the_exact_split_probability(k: int) -> None:
    """Enumerating every removal pattern on 8 devices: the true split probability is <= the bound."""
    n, d, g = 8, 0.4, 0.25
    q = 1 - (1 - d) * (1 - g)
    exact = _harary_split_probability(n, k, q)
    assert exact > 0.0  # the ring of 8 can split at every sparse degree
    assert exact <= 2.0 ** disconnect_log2(n, k, d, g) * (1 + 1e-12)


# --- plus_parameters against its specification ---------------------------------------------

SPEC_CASES = [
    # (n, dropout, corrupt, failure_log2, security_log2)
    (40, 0.0, 0.1, 20.0, 40.0),     # no dropout: t = k + 1 is safe
    (60, 0.0, 0.3, 20.0, 30.0),
    (9, 0.3, 0.0, 6.0, 10.0),       # odd n: the complete graph k = n - 1 is in the search
    (11, 0.25, 0.05, 5.0, 6.0),
    (12, 0.05, 0.0, 10.0, 10.0),
    (30, 0.2, 0.05, 6.0, 8.0),
    (50, 0.1, 0.02, 10.0, 20.0),
    (200, 0.3, 0.1, 20.0, 40.0),
    (1000, 0.1, 0.05, 20.0, 40.0),
    (300, 0.05, 0.2, 10.0, 20.0),
    # Targets past double precision (2^-1100 underflows to 0): t is found by climbing from 1.
    (50, 0.0, 0.1, 1100.0, 20.0),
    (6, 0.0, 0.3, 1100.0, 20.0),    # only the complete graph (odd k, even k + 1 holders) works
]


@pytest.mark.parametrize("n, d, g, f, s", SPEC_CASES)
def test_plus_parameters_is_the_smallest_degree_with_the_largest_safe_threshold(
    n: int, d: float, g: float, f: float, s: float
) -> None:
    """(k, t) is the smallest degree where some t meets all three targets, and the largest such t."""
    want = _spec(n, d, g, f, s)
    assert want is not None, "case meant to have a sparse or complete solution"
    p = plus_parameters(n, d, g, f, s)
    assert (p.degree, p.threshold) == want and p.meets_targets is True
    # The guarantees reported are the bounds at (k, t), recomputed independently.
    assert 2.0 ** -p.failure_log2 == pytest.approx(_abort(n, p.degree, p.threshold, d), rel=1e-6)
    assert 2.0 ** -p.failure_log2 <= 2.0**-f and 2.0 ** -p.security_log2 <= 2.0**-s


def test_only_the_complete_graph_meets_targets_is_not_a_fallback() -> None:
    """When the complete graph is the first to meet the targets it is returned with meets_targets."""
    # Nobody colludes: only dropout matters, and just the complete graph keeps enough survivors
    # for t = 1 (the sparse degrees all fail the abort target).
    n, d, f, s = 7, 0.5, 3.0, 10.0
    assert _spec(n, d, 0.0, f, s) == (6, 1)
    p = plus_parameters(n, d, 0.0, f, s)
    assert p.complete and p.meets_targets is True and p.threshold == 1
    assert p.failure_log2 >= f


FALLBACK_CASES = [
    (10, 0.9, 0.0, 20.0, 40.0),    # nobody colludes, but even t = 1 aborts too often
    (30, 0.3, 0.1, 20.0, 40.0),
    (20, 0.5, 0.2, 20.0, 40.0),
    (40, 0.2, 0.3, 20.0, 40.0),
    (25, 0.3, 0.25, 20.0, 5.0),
    (16, 0.4, 0.3, 3.0, 30.0),
    (60, 0.35, 0.15, 20.0, 40.0),
    (10, 0.1, 0.05, 20.0, 40.0),   # here the balance peaks just past the bisection's last t
    (10, 0.2, 0.1, 5.0, 30.0),
    (10, 0.5, 0.05, 10.0, 40.0),
]


@pytest.mark.parametrize("n, d, g, f, s", FALLBACK_CASES)
def test_fallback_is_complete_graph_with_best_balanced_threshold(
    n: int, d: float, g: float, f: float, s: float
) -> None:
    """No (k, t) meets the targets: complete graph, t maximising the weaker relative margin."""
    assert _spec(n, d, g, f, s) is None
    p = plus_parameters(n, d, g, f, s)
    assert p.complete and p.degree == n - 1 and p.meets_targets is False
    best = max(_balance(n, t, d, g, f, s) for t in range(1, n + 1))
    assert _balance(n, p.threshold, d, g, f, s) == pytest.approx(best, rel=1e-9)
    # The margins reported are those of the chosen t, and at least one misses its target.
    assert p.failure_log2 == pytest.approx(_bits(_abort(n, n - 1, p.threshold, d)), rel=1e-9)
    assert p.security_log2 == pytest.approx(_bits(_collude(n, n - 1, p.threshold, g)), rel=1e-9)
    assert p.failure_log2 < f or p.security_log2 < s


def test_one_device_needs_no_graph() -> None:
    """n = 1 is valid: no neighbours, the device's own share is enough."""
    p = plus_parameters(1)
    assert isinstance(p, PlusParameters) and p.n == 1 and p.threshold == 1 and p.meets_targets


# --- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, -3, 2.5, True, "10", np.float64(10.0)])
def test_bad_cohort_size_names_n(n: object) -> None:
    """n must be an int >= 1; the ConfigError names n and shows the value."""
    with pytest.raises(ConfigError) as err:
        plus_parameters(n)  # type: ignore[arg-type]
    assert err.value.field == "n" and repr(n) in str(err.value)


@pytest.mark.parametrize("field, kwargs, shown", [
    ("max_dropout", dict(dropout=1.0), "1.0"),
    ("max_dropout", dict(dropout=1.5), "1.5"),
    ("max_dropout", dict(dropout=-0.1), "-0.1"),
    ("max_dropout", dict(dropout="0.3"), "'0.3'"),
    ("max_corrupt", dict(corrupt=1.0), "1.0"),
    ("max_corrupt", dict(corrupt=1.5), "1.5"),
    ("max_corrupt", dict(corrupt=None), "None"),
    ("failure_log2", dict(failure_log2=0.0), "0.0"),
    ("failure_log2", dict(failure_log2=math.nan), "nan"),
    ("security_log2", dict(security_log2=-1.0), "-1.0"),
    ("security_log2", dict(security_log2=math.inf), "inf"),
])
def test_bad_assumption_names_its_field_and_value(field: str, kwargs: dict, shown: str) -> None:
    """A bad assumption raises ConfigError naming the option (as SecureAggregation calls it)."""
    with pytest.raises(ConfigError) as err:
        plus_parameters(100, **kwargs)
    assert err.value.field == field and shown in str(err.value)


def test_no_dropout_or_corruption_is_a_valid_assumption() -> None:
    """dropout = corrupt = 0 are allowed and give a graph that meets the targets."""
    p = plus_parameters(100, 0.0, 0.0)
    assert p.meets_targets and p.threshold == p.degree + 1
