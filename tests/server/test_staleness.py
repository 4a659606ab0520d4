"""Staleness weights compute without a numpy warning for every staleness a run can see.

A run shows only fedactors' own output; a new-user trial found FedBuff(staleness=Hinge(1.0, 2))
printing numpy's "divide by zero" from the load-time probe of the weights (spec.py), which
evaluates the weights over staleness 0..100,000.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from fedactors import FedBuff
from fedactors.server.staleness import Hinge, Polynomial, Unweighted
from tests.scenarios.test_combinations import COHORT, build

PROBE = np.arange(0, 100_001)  # the staleness values the load-time probe tries


def strictly(weight, staleness):
    """The weights with every numpy floating-point event and every warning an error."""
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        return np.asarray(weight(staleness), np.float64)


# Each (slope, cutoff) puts s = cutoff - 1/slope, where the unclamped denominator
# slope * (s - cutoff) + 1 is zero, on a staleness the probe tries (or below 0).
@pytest.mark.parametrize("slope, cutoff", [(1.0, 2), (0.5, 2), (0.25, 4.0), (2.0, 0.5),
                                           (1.0, 0), (1e-6, 3), (3.0, 100_000)])
def test_hinge_never_divides_by_zero_and_keeps_its_values(slope, cutoff) -> None:
    w = strictly(Hinge(slope, cutoff), PROBE)
    s = PROBE.astype(np.float64)
    below = s <= cutoff
    assert np.all(w[below] == 1.0)
    np.testing.assert_array_equal(w[~below], 1.0 / (slope * (s[~below] - cutoff) + 1.0))
    assert np.all((w > 0) & (w <= 1))
    assert np.all(np.diff(w) <= 0)  # never counts a staler update more


def test_a_steep_hinge_goes_to_zero_without_an_overflow_warning() -> None:
    w = strictly(Hinge(1e305, 0), PROBE)  # slope * s passes float64 at s = 1,798
    assert w[0] == 1.0 and np.all((w[1:] >= 0) & (w[1:] < 1e-304))


@pytest.mark.parametrize("weight", [Polynomial(0.5), Polynomial(0.0), Unweighted()])
def test_the_other_weights_compute_strictly_too(weight) -> None:
    w = strictly(weight, PROBE)
    assert w[0] == 1.0 and np.all((w > 0) & (w <= 1))


def test_loading_fedbuff_with_a_hinge_and_dp_prints_nothing(capfd) -> None:
    """The scenario's probe (FedBuff + a DP aggregator) raises no warning and writes nothing."""
    scenario = build("fedbuff", "dp-fixed", "plain")
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        dataclasses.replace(scenario, mode=FedBuff(buffer_size=COHORT, staleness=Hinge(1.0, 2)))
    out, err = capfd.readouterr()
    assert "RuntimeWarning" not in err and "divide" not in err
