"""DP-FTRL's accountant: ε from the library's tree bound and from a brute-force count of the
tree's sensitivity, the participation a ledger records, and planned >= observed."""

from __future__ import annotations

import itertools
import math
import pickle
from types import MappingProxyType
from typing import Optional

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp
from hypothesis import given, settings
from hypothesis import strategies as st

from fedactors.privacy.dp_queries import tree_aggregation_accountant
from fedactors.privacy.tree_accounting import TreeLedger, TreeStats, most_participations, tree_rdp

DELTA = 1e-5
#: dp-accounting's default RDP orders, taken here from the library itself.
ORDERS = np.asarray(rdp.RdpAccountant().orders)


# -- an independent account ------------------------------------------------------------


def nodes(leaves: int) -> list[range]:
    """The tree's nodes over releases 1..leaves: every dyadic interval [i 2^l + 1, (i+1) 2^l]
    that lies inside it (a node is only ever released once all its leaves have been)."""
    out, size = [], 1
    while size <= leaves:
        out += [range(i * size + 1, (i + 1) * size + 1) for i in range(leaves // size)]
        size *= 2
    return out


def placements(leaves: int, k: int, gap: int):
    """Every set of at most ``k`` releases of 1..leaves, any two ``gap`` or more apart
    (releases x < y are y - x - 1 apart)."""
    for n in range(1, k + 1):
        for chosen in itertools.combinations(range(1, leaves + 1), n):
            if all(y - x - 1 >= gap for x, y in zip(chosen, chosen[1:])):
                yield chosen


def brute_sensitivity_sq(leaves: int, k: int, gap: int) -> float:
    """Max over placements of sum over nodes of (the device's contributions in the node)^2."""
    tree = nodes(leaves)
    return float(max(sum(sum(1 for x in p if x in node) ** 2 for node in tree)
                     for p in placements(leaves, k, gap)))


def brute_epsilon(z: float, trees: list[tuple[int, int, int]], delta: float = DELTA) -> float:
    """ε of independent trees (leaves, k, gap) each a Gaussian mechanism of noise z over
    sensitivity sqrt(S): one Gaussian event of noise multiplier z / sqrt(S) per tree,
    accounted by dp-accounting's RDP accountant."""
    acc = rdp.RdpAccountant()
    for leaves, k, gap in trees:
        s = brute_sensitivity_sq(leaves, k, gap)
        acc.compose(dp_accounting.GaussianDpEvent(z / math.sqrt(s)))
    return acc.get_epsilon(delta)


def library_epsilon(z: float, trees: list[tuple[int, int, int]], delta: float = DELTA) -> float:
    """tensorflow-privacy's tree RDP, added over trees, converted by dp-accounting."""
    total = sum(np.asarray(tree_aggregation_accountant.compute_rdp_single_tree(
        z, leaves, k, gap, list(ORDERS))) for leaves, k, gap in trees)
    return float(rdp.compute_epsilon(ORDERS, total, delta)[0])


def ledger_after(schedule, z: float = 2.0, restart_every: Optional[int] = None,
                 min_separation: int = 0) -> TreeLedger:
    ledger = TreeLedger(z, restart_every, min_separation)
    for contributors in schedule:
        ledger = ledger.record(contributors)
    return ledger


# -- the tree's sensitivity -------------------------------------------------------------


def test_most_participations_is_the_largest_separated_placement() -> None:
    for leaves in range(0, 13):
        for gap in range(0, 5):
            brute = max((len(p) for p in placements(leaves, leaves, gap)), default=0)
            assert most_participations(leaves, gap) == brute, (leaves, gap)


def test_the_librarys_tree_sensitivity_is_the_brute_force_count() -> None:
    """What the accountant relies on: compute_rdp_single_tree at order 2 with noise 1 is
    2 S / 2 = S, the worst sum of squared per-node counts."""
    for leaves in range(1, 11):
        for gap in range(0, 4):
            for k in range(1, most_participations(leaves, gap) + 1):
                got = float(tree_aggregation_accountant.compute_rdp_single_tree(
                    1.0, leaves, k, gap, 2.0))
                assert got == pytest.approx(brute_sensitivity_sq(leaves, k, gap)), (leaves, k, gap)


@pytest.mark.parametrize("z", [0.8, 3.0])
@pytest.mark.parametrize("gap", [0, 1, 2, 3])
def test_a_tree_of_8_releases_is_charged_the_brute_force_epsilon(z: float, gap: int) -> None:
    ledger = ledger_after([()] * 8, z=z, min_separation=gap)
    want = brute_epsilon(z, [(8, most_participations(8, gap), gap)])
    assert ledger.epsilon_planned(DELTA) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("z,steps,k,gap", [(1.0, 8, 3, 2), (2.5, 13, 4, 1), (4.0, 100, 10, 9),
                                           (0.7, 5, 1, 5)])
def test_tree_rdp_is_the_librarys_at_dp_accountings_orders(z, steps, k, gap) -> None:
    want = tree_aggregation_accountant.compute_rdp_single_tree(z, steps, k, gap, list(ORDERS))
    np.testing.assert_allclose(tree_rdp(z, steps, k, gap), want, rtol=1e-12)


# -- what a ledger records --------------------------------------------------------------


def reference(schedule, restart_every: Optional[int]):
    """Per tree: (releases, most contributions of one device, fewest releases between two)."""
    size = restart_every or max(len(schedule), 1)
    chunks = [schedule[i:i + size] for i in range(0, len(schedule), size)] or [[]]
    if schedule and restart_every and len(schedule) % restart_every == 0:
        chunks.append([])  # the next release opens a fresh tree
    trees = []
    for chunk in chunks:
        at: dict[int, list[int]] = {}
        for t, contributors in enumerate(chunk):
            for d in contributors:
                at.setdefault(d, []).append(t)
        most = max((len(v) for v in at.values()), default=0)
        gaps = [y - x - 1 for v in at.values() for x, y in zip(v, v[1:])]
        trees.append(TreeStats(len(chunk), most, min(gaps) if gaps else None))
    last = {d: t for t, contributors in enumerate(schedule, start=1) for d in contributors}
    return tuple(trees), last


schedules = st.lists(st.frozensets(st.integers(0, 5), max_size=4), max_size=14)


@settings(max_examples=100, deadline=None)
@given(schedules, st.sampled_from([None, 1, 2, 3, 5]))
def test_record_tracks_each_trees_most_participations_and_fewest_releases_between(
        schedule, restart_every) -> None:
    schedule = [sorted(s) for s in schedule]
    ledger = ledger_after(schedule, restart_every=restart_every)
    trees, last = reference(schedule, restart_every)
    assert ledger.releases == len(schedule)
    assert ledger.trees == trees
    assert dict(ledger.last) == last


def test_a_restart_starts_a_fresh_tree_and_rdp_adds_across_trees() -> None:
    z, b = 1.5, 1
    # Trees of releases 1-4 and 5-8. Device 0 at 4 and 6 (either side of the restart),
    # device 1 at 5 and 7.
    schedule = [(), (), (), (0,), (1,), (0,), (1,), ()]
    ledger = ledger_after(schedule, z=z, restart_every=4, min_separation=b)
    assert ledger.trees == (TreeStats(4, 1, None), TreeStats(4, 2, 1), TreeStats())
    # The planned bound: two full trees of 4, each at most 2 contributions 1 apart.
    np.testing.assert_allclose(ledger.rdp_planned(), 2 * np.asarray(tree_rdp(z, 4, 2, b)))
    assert ledger.epsilon_planned(DELTA) == pytest.approx(
        library_epsilon(z, [(4, 2, b), (4, 2, b)]), rel=1e-9)
    assert ledger.epsilon_planned(DELTA) == pytest.approx(
        brute_epsilon(z, [(4, 2, b), (4, 2, b)]), rel=1e-9)
    # The observed bound: one contribution each in the first tree, 2 one apart in the second.
    assert ledger.epsilon_observed(DELTA) == pytest.approx(
        brute_epsilon(z, [(4, 1, 0), (4, 2, 1)]), rel=1e-9)
    # A restart is cheaper than one tree of 8 with the same rule.
    one_tree = ledger_after(schedule, z=z, min_separation=b)
    assert ledger.epsilon_planned(DELTA) < one_tree.epsilon_planned(DELTA)


def test_the_observed_bound_is_the_brute_force_epsilon_of_the_participation_seen() -> None:
    z = 2.0
    # In 8 releases: device 3 three times, 2 and 1 apart; device 4 twice, 3 apart.
    schedule = [(3,), (), (), (3, 4), (), (3,), (), (4,)]
    ledger = ledger_after(schedule, z=z)
    assert ledger.trees == (TreeStats(8, 3, 1),)
    assert ledger.epsilon_observed(DELTA) == pytest.approx(brute_epsilon(z, [(8, 3, 1)]),
                                                           rel=1e-9)
    # With no separation rule the guarantee is one contribution to every release.
    assert ledger.epsilon_planned(DELTA) == pytest.approx(brute_epsilon(z, [(8, 8, 0)]),
                                                          rel=1e-9)


def rule_abiding(schedule, gap: int) -> list[list[int]]:
    """``schedule`` with every contribution the separation rule forbids left out."""
    last: dict[int, int] = {}
    kept = []
    for t, wanted in enumerate(schedule, start=1):
        now = [d for d in sorted(wanted) if d not in last or t - last[d] - 1 >= gap]
        last.update({d: t for d in now})
        kept.append(now)
    return kept


@settings(max_examples=100, deadline=None)
@given(schedules, st.integers(0, 3), st.sampled_from([None, 2, 3, 4, 6]),
       st.sampled_from([0.6, 1.0, 2.5, 6.0]))
def test_planned_is_never_below_observed(schedule, gap, restart_every, z) -> None:
    ledger = ledger_after(rule_abiding(schedule, gap), z=z, restart_every=restart_every,
                          min_separation=gap)
    assert np.all(ledger.rdp_observed() <= ledger.rdp_planned() * (1 + 1e-12))
    assert ledger.epsilon_observed(DELTA) <= ledger.epsilon_planned(DELTA) * (1 + 1e-12)


# -- the separation rule ---------------------------------------------------------------


@pytest.mark.parametrize("gap", [0, 1, 2, 5])
def test_a_device_is_eligible_once_gap_releases_have_passed(gap: int) -> None:
    ledger = ledger_after([(), (), (7,)], min_separation=gap)  # device 7 at release 3
    for nxt in range(4, 4 + gap + 2):
        assert ledger.eligible(7, nxt) == (nxt - 3 - 1 >= gap), nxt
    assert ledger.eligible(8, 4)  # never contributed


def test_the_rule_spans_a_restart() -> None:
    """A device at the last release of a tree still sits out the first ones of the next."""
    ledger = ledger_after([(), (1,)], restart_every=2, min_separation=2)
    assert ledger.trees[-1] == TreeStats()
    assert [ledger.eligible(1, nxt) for nxt in (3, 4, 5)] == [False, False, True]


# -- plain data, and the edges ----------------------------------------------------------


def test_a_ledger_pickles_and_continues_identically() -> None:
    ledger = ledger_after([(0, 1), (2,), (0,)], z=1.3, restart_every=2, min_separation=1)
    copy = pickle.loads(pickle.dumps(ledger))
    assert copy == ledger
    assert isinstance(copy.last, MappingProxyType) and isinstance(copy.in_tree, MappingProxyType)
    assert dict(copy.in_tree) == dict(ledger.in_tree) == {0: 1}
    more = [(1,), (2, 3), ()]
    a, b = ledger, copy
    for contributors in more:
        a, b = a.record(contributors), b.record(contributors)
    assert a == b and a.epsilon_observed(DELTA) == b.epsilon_observed(DELTA)


def test_zero_noise_is_infinite_epsilon_once_anything_is_released() -> None:
    ledger = TreeLedger(0.0, None, 1)
    assert ledger.epsilon_planned(DELTA) == ledger.epsilon_observed(DELTA) == 0.0
    ledger = ledger.record((0,))
    assert ledger.epsilon_planned(DELTA) == math.inf
    assert ledger.epsilon_observed(DELTA) == math.inf


def test_no_release_costs_nothing() -> None:
    ledger = TreeLedger(1.0, 4, 2)
    assert ledger.releases == 0
    assert ledger.epsilon_planned(DELTA) == ledger.epsilon_observed(DELTA) == 0.0
    assert np.all(ledger.rdp_planned() == 0) and np.all(ledger.rdp_observed() == 0)
    assert tree_rdp(1.0, 0, 0, 0) == tuple(0.0 for _ in ORDERS)


def test_one_more_release_is_the_planned_cost_of_one_more_leaf() -> None:
    ledger = ledger_after([(0,), (1,), ()], z=1.0, min_separation=1)
    more = ledger.with_one_more()
    assert more.releases == 4 and more.trees[-1].steps == 4
    assert more.epsilon_planned(DELTA) == pytest.approx(
        brute_epsilon(1.0, [(4, most_participations(4, 1), 1)]), rel=1e-9)
