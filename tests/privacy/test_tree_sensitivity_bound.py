"""The closed-form bound DP-FTRL's per-release rows and budget check use is never below the exact one."""

import math

import pytest

from fedactors.privacy.dp_queries import tree_aggregation_accountant
from fedactors.privacy.tree_accounting import (
    TreeLedger,
    most_participations,
    sensitivity_bound,
)


def exact(steps: int, min_separation: int) -> float:
    k = most_participations(steps, min_separation)
    return tree_aggregation_accountant._max_tree_sensitivity_square_sum(k, min_separation, steps)


@pytest.mark.parametrize("steps", list(range(1, 34)) + [50, 64, 100])
@pytest.mark.parametrize("min_separation", [0, 1, 2, 3, 7, 19])
def test_the_bound_is_never_below_the_exact_search(steps, min_separation):
    assert sensitivity_bound(steps, steps, min_separation) >= exact(steps, min_separation) - 1e-9


@pytest.mark.parametrize("levels", range(0, 8))
def test_without_separation_on_a_full_tree_the_bound_is_exact(levels):
    # Contributing to every leaf is the worst case; node at level h holds 2**h of them.
    steps = 2**levels
    every_node = sum((steps // 2**h) * (2**h) ** 2 for h in range(levels + 1))
    assert sensitivity_bound(steps, steps, 0) == every_node == exact(steps, 0)


def test_one_contribution_touches_one_node_per_level():
    assert sensitivity_bound(100, 1, 0) == math.floor(math.log2(100)) + 1


def test_rows_bound_the_summary_figure_and_grow_with_releases():
    ledger, previous = TreeLedger(noise_multiplier=2.0, restart_every=16, min_separation=3), 0.0
    for release in range(40):
        ledger = ledger.record([release % 5])
        bound = ledger.epsilon_planned_bound(1e-5)
        assert bound >= ledger.epsilon_planned(1e-5) - 1e-9
        assert bound >= previous
        previous = bound
