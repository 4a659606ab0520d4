"""Numbers as the terminal and the report print them (``fedactors.reporting.units``)."""

from __future__ import annotations

from fedactors.reporting.units import delta_text


def test_the_delta_shown_is_the_one_the_epsilon_holds_at() -> None:
    # Skellam's truncated noise shares add to δ: a report showing δ alone overstates.
    assert delta_text({"delta": 1e-5}) == "1e-05"
    assert delta_text({"delta": 1e-5, "delta_truncation": 3.7e-20}) == (
        "1e-05 + 3.7e-20 (truncation)")
    assert delta_text({"delta": 1e-5, "delta_truncation": 0.0}) == "1e-05"
