"""The Skellam budget: charged at the shares summed, nominal when not made, no amplification."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedactors import DPMean, Privacy
from fedactors.errors import ConfigError
from fedactors.privacy.accounting import RDP_ORDERS, rdp_epsilon
from fedactors.privacy.participation import Participation
from fedactors.privacy.skellam import TAIL_PROBABILITY, skellam_rdp
from fedactors.privacy.skellam_budget import SkellamBudget, skellam_budget

DIM, DELTA = 100, 1e-5
SEEN = Participation(online=8, selected=4, contributors=(0, 1, 2, 3))


def _budget(target=None, z=2.0, k=3, m=4) -> SkellamBudget:
    release = DPMean.skellam(1.0, z, m, min_survivors=k, scale_bits=10).private_release()
    return skellam_budget(release, Privacy(target_epsilon=target, delta=DELTA), 8, False, DELTA,
                          DIM)


def test_a_release_is_charged_at_the_shares_summed() -> None:
    budget = _budget()
    cal = budget.calibration
    state = budget.charge(budget.initial_state(), SEEN, 4)
    state = budget.charge(state, SEEN, 3)
    expected = (skellam_rdp(RDP_ORDERS, cal.variance * 4 / 3, cal.l1, cal.l2)
                + skellam_rdp(RDP_ORDERS, cal.variance, cal.l1, cal.l2))
    assert budget.epsilon(state) == pytest.approx(rdp_epsilon(expected, DELTA))
    assert state.releases == ((3, 1), (4, 1))
    assert budget.multiplier_charged(4) == pytest.approx(2.0 * math.sqrt(4 / 3))
    assert state.truncation_probability == pytest.approx(7 * DIM * TAIL_PROBABILITY, abs=0)


def test_a_release_not_made_is_charged_at_nominal_and_adds_no_truncation() -> None:
    budget = _budget()
    few = budget.charge(budget.initial_state(), SEEN, 2)
    skipped = budget.charge(budget.initial_state(), SEEN, 4, aggregated=False)
    made = budget.charge(budget.initial_state(), SEEN, 3)
    assert few.releases == skipped.releases == made.releases == ((3, 1),)
    assert budget.epsilon(few) == budget.epsilon(made) > 0
    assert few.releases_not_made == skipped.releases_not_made == 1
    assert few.truncation_probability == 0.0


def test_epsilon_is_close_to_the_gaussian_without_amplification() -> None:
    import dp_accounting

    budget, n = _budget(z=5.0), 20
    state = budget.initial_state()
    for _ in range(n):
        state = budget.charge(state, SEEN, 3)
    acc = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS))
    acc.compose(dp_accounting.GaussianDpEvent(5.0), n)
    gauss = acc.get_epsilon(DELTA)
    # Above the Gaussian of the same multiplier, and within 1% at scale_bits=10.
    assert gauss <= budget.epsilon(state) <= gauss * 1.01


def test_the_target_stops_before_it_is_exceeded() -> None:
    budget = _budget(target=8.0)
    state = budget.initial_state()
    made = 0
    while not budget.would_exceed(state):
        state = budget.charge(state, SEEN, 3)
        made += 1
        assert budget.epsilon(state) <= 8.0
    assert made >= 1 and budget.next_epsilon(state) > 8.0


@pytest.mark.parametrize("privacy,field", [
    (Privacy(target_epsilon=0.01), "privacy.target_epsilon"),
    (Privacy(method="pld"), "privacy.method"),
    (Privacy(min_separation=2), "privacy.min_separation"),
])
def test_impossible_options_are_refused_naming_the_field(privacy: Privacy, field: str) -> None:
    release = DPMean.skellam(1.0, 2.0, 4, scale_bits=10).private_release()
    with pytest.raises(ConfigError, match=f"^{field}"):
        skellam_budget(release, privacy, 8, False, DELTA, DIM)


def test_the_summary_states_the_mechanism_and_the_truncation() -> None:
    budget = _budget()
    state = budget.charge(budget.initial_state(), SEEN, 4)
    block = budget.summary(state, "rounds")
    assert block["accounting"]["mechanism"] == "distributed-skellam"
    assert block["accounting"]["sampling"] == "none"
    assert block["accounting"]["variances_charged_integer"] == [
        [budget.calibration.variance * 4 / 3, 1]]
    assert block["delta_truncation"] == pytest.approx(
        (1 + math.exp(block["epsilon"])) * 4 * DIM * TAIL_PROBABILITY, abs=0)
    assert "no amplification by sampling" in block["assumption"]
    assert np.isfinite(block["epsilon"])
