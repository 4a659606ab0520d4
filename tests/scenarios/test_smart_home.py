"""The main scenario does what README promises: stragglers are cut, devices
drop out, and the model learns well above chance."""

from __future__ import annotations

import pytest

from fedactors.data.smart_home import ACTIVITIES
from fedactors.scenarios.loader import load_scenario
from fedactors.simulation import RunOptions, run_scenario


def test_smart_home_cuts_stragglers_and_sees_dropouts_from_the_first_rounds(
        smart_home_two_rounds) -> None:
    # Fast: the session's shared 2-round run (tests/conftest.py).
    rows = smart_home_two_rounds.records
    # Every round loses devices to dropouts, and none hears from its whole (over-selected)
    # cohort: it closes at its deadline, cutting stragglers, or at its target, cutting the rest.
    assert all(r["dropped"] > 0 and r["reported"] < r["selected"] for r in rows)
    assert all(r["closed_by"] in ("deadline", "target") for r in rows)
    assert any(r["closed_by"] == "deadline" and r["late"] > 0 for r in rows)


@pytest.mark.slow
def test_smart_home_cuts_stragglers_sees_dropouts_and_learns() -> None:
    result = run_scenario(load_scenario("scenarios/smart_home.py"),
                          RunOptions(rounds=15, device_events=False))
    rows = result.records
    assert sum(r["late"] for r in rows) > 0 and sum(r["dropped"] for r in rows) > 0
    assert {r["closed_by"] for r in rows} == {"deadline", "target"}
    chance = 1 / len(ACTIVITIES)
    assert result.summary["final"]["accuracy"] > 4 * chance
