"""Complete-graph SecAgg states the margins its threshold really has.

An honest-but-curious complete graph takes t from ``threshold_fraction``; the
stated ``max_dropout`` / ``max_corrupt`` and targets must still be checked
against that t, or a run reports "targets met" for a t that a third of corrupt
devices breaks at once (a new-user trial: t = 2 of 20 at max_corrupt 0.3).
"""

from __future__ import annotations

import math

import pytest
from scipy.stats import binom

from fedactors.secagg.option import SecureAggregation
from fedactors.secagg.parameters import complete_threshold


def union_log2(n: int, tail: float) -> float:
    """-log2 of the union bound n * tail (inf when the tail is 0), computed independently."""
    bound = n * tail
    return math.inf if bound == 0.0 else -math.log2(bound)


def margins(n: int, t: int, dropout: float, corrupt: float) -> tuple[float, float]:
    """Abort: some device has < t surviving holders among all n; collusion: some device has
    >= t corrupt holders among the other n - 1 (docs/secure_aggregation.md)."""
    return (union_log2(n, float(binom.cdf(t - 1, n, 1.0 - dropout))),
            union_log2(n, float(binom.sf(t - 1, n - 1, corrupt))))


def test_a_low_threshold_against_many_corrupt_devices_is_reported_below_target() -> None:
    """The trial's run: t = 2 of 20 with max_corrupt 0.3 bounds collusion by nothing."""
    option = SecureAggregation.complete(threshold_fraction=0.05, max_corrupt=0.3)
    p = option.complete_parameters(20, 20)
    assert (p.degree, p.threshold) == (19, 2)
    assert not p.meets_targets
    assert p.security_log2 <= 0  # the bound is at least 1: no guarantee at all
    assert p.security_log2 == pytest.approx(margins(20, 2, 0.3, 0.3)[1])


def test_where_no_threshold_meets_the_targets_the_default_is_a_majority_and_says_so() -> None:
    """20 devices at 30% dropout: no t meets both targets; the default keeps secrecy first
    (t = 11 of 20) and reports the abort margin it misses."""
    assert not complete_threshold(20, 0.3, 0.1).meets_targets
    p = SecureAggregation.complete().complete_parameters(20, 20)
    assert p.threshold == 11 and not p.meets_targets
    assert p.failure_log2 < SecureAggregation().failure_log2
    assert p.failure_log2 == pytest.approx(margins(20, 11, 0.3, 0.1)[0])


def test_the_stated_range_ends_where_the_docs_say() -> None:
    """docs/secure_aggregation.md: at the defaults no t meets both targets below 89
    devices, and from 189 the majority itself does."""
    assert not complete_threshold(88, 0.3, 0.1).meets_targets
    assert complete_threshold(89, 0.3, 0.1).meets_targets
    assert not SecureAggregation.complete(threshold_fraction=0.5).complete_parameters(
        188, 188).meets_targets
    majority = SecureAggregation.complete(threshold_fraction=0.5).complete_parameters(189, 189)
    assert majority.threshold == 95 and majority.meets_targets


@pytest.mark.parametrize("n", [89, 100, 150, 188])
def test_where_thresholds_meet_the_targets_the_default_takes_the_largest(n: int) -> None:
    """From 89 devices some t meets both targets at the defaults, but a majority misses
    the abort one below 189: the default takes the largest t that meets both."""
    span = complete_threshold(n, 0.3, 0.1)
    p = SecureAggregation.complete().complete_parameters(n, n)
    assert span.meets_targets and p.meets_targets
    assert p.threshold == max(span.thresholds) < n // 2 + 1
    # Set explicitly, the fraction still rules (and is reported when it misses).
    majority = SecureAggregation.complete(threshold_fraction=0.5).complete_parameters(n, n)
    assert majority.threshold == n // 2 + 1 and not majority.meets_targets


def test_a_threshold_inside_the_working_range_meets_the_targets() -> None:
    """At 100 devices t = 41 meets both targets (complete_threshold: 40..43), and says so."""
    option = SecureAggregation.complete(threshold_fraction=0.4)
    p = option.complete_parameters(100, 100)
    assert p.threshold == 41 and p.meets_targets
    fail, sec = margins(100, 41, 0.3, 0.1)
    assert (p.failure_log2, p.security_log2) == (pytest.approx(fail), pytest.approx(sec))
    assert p.failure_log2 >= option.failure_log2 and p.security_log2 >= option.security_log2


@pytest.mark.parametrize("n", [3, 10, 40, 100, 160])
@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.5, 0.8])
@pytest.mark.parametrize("dropout, corrupt", [(0.3, 0.1), (0.1, 0.05), (0.0, 0.0), (0.05, 0.3)])
def test_targets_are_met_exactly_when_the_threshold_is_in_the_working_range(
        n: int, fraction: float, dropout: float, corrupt: float) -> None:
    """meets_targets agrees with complete_threshold's range of t, and the margins it states
    are the independently computed union bounds."""
    option = SecureAggregation.complete(threshold_fraction=fraction, max_dropout=dropout,
                                        max_corrupt=corrupt)
    p = option.complete_parameters(n, n)
    span = complete_threshold(n, dropout, corrupt, option.failure_log2, option.security_log2)
    assert p.meets_targets == (p.threshold in span.thresholds)
    fail, sec = margins(n, p.threshold, dropout, corrupt)
    assert p.failure_log2 == pytest.approx(fail)
    assert p.security_log2 == pytest.approx(sec)


def test_over_selection_counts_as_dropout_on_the_complete_graph_too() -> None:
    """Admitting 30 of 39 selected devices: survival (1 - max_dropout) * 30 / 39."""
    p = SecureAggregation.complete().complete_parameters(39, 30)
    fail, _ = margins(39, 20, 1.0 - 0.7 * 30 / 39, 0.1)
    assert p.failure_log2 == pytest.approx(fail)
    assert p.failure_log2 < SecureAggregation.complete().complete_parameters(39, 39).failure_log2


def test_with_nobody_dropping_or_colluding_any_threshold_meets_the_targets() -> None:
    """No dropout and no corruption: nothing can abort or collude, for any t."""
    option = SecureAggregation.complete(max_dropout=0.0, max_corrupt=0.0)
    p = option.complete_parameters(6, 6)
    assert p.meets_targets and p.failure_log2 == math.inf and p.security_log2 == math.inf
