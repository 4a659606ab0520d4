"""The ε figure agrees with the report's table: the curve is labelled as the per-round upper
bound it is, and the final ε the table states is drawn at the last round.

A new-user trial found epsilon.png ending at DP-FTRL's closed-form bound (9.89) under a
caption saying "ε spent", beside a table saying 8.08 (Poisson runs: 2.886 against 2.428).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from fedactors.reporting.plots import epsilon_figure
from fedactors.reporting.report import write_report
from fedactors.reporting.rundir import load_run


def with_privacy(dp_run: Path, tmp_path: Path, name: str, epsilon) -> Path:
    """The DP-looking tiny run (row ε = 0.5 * round) with a summary stating ``epsilon``."""
    out = tmp_path / name
    shutil.copytree(dp_run, out)
    summary = json.loads((out / "summary.json").read_text())
    summary["privacy"] = {"epsilon": epsilon, "delta": 1e-5, "assumption_held": True}
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def table_epsilon(html: str) -> float:
    row = html[html.index("ε (accountant; δ"):]
    return float(re.search(r"<td>([0-9.]+); δ=", row).group(1))


@pytest.mark.parametrize("final", [1.2345678, 0.4])
def test_the_final_epsilon_of_the_table_is_drawn_at_the_last_round(
        dp_run: Path, tmp_path: Path, final: float) -> None:
    run_dir = with_privacy(dp_run, tmp_path, "tighter", final)
    run = load_run(run_dir)
    curve_last = run.rows[-1]["epsilon"]
    assert final < curve_last  # the trial's situation: the per-round bound is looser
    page = write_report([run_dir], tmp_path / "report")
    html = page.read_text()
    fig = epsilon_figure([run])
    (star,) = [line for line in fig.axes[0].get_lines() if line.get_marker() == "*"]
    assert list(star.get_xdata()) == [run.rows[-1]["round"]]
    assert list(star.get_ydata()) == [final]
    # The figure's number is the table's, to the digits the table shows.
    assert f"{table_epsilon(html):.4g}" in star.get_label()
    assert table_epsilon(html) == pytest.approx(final, rel=1e-3)
    # The caption says what the curve is, and what the star is.
    caption = html[html.index("<b>Privacy budget.</b>"):]
    caption = caption[:caption.index("</figcaption>")]
    assert "upper bound" in caption and "star" in caption and "ε spent" not in caption
    assert "upper bound" in fig.axes[0].get_ylabel()


def test_a_run_without_a_finite_final_epsilon_gets_no_star(dp_run: Path, tmp_path: Path) -> None:
    """ε = ∞ (null in summary.json) or no privacy block: nothing to mark, and no caption
    about a star."""
    for run_dir in (with_privacy(dp_run, tmp_path, "infinite", None), dp_run):
        fig = epsilon_figure([load_run(run_dir)])
        assert not [line for line in fig.axes[0].get_lines() if line.get_marker() == "*"]
    html = write_report([dp_run], tmp_path / "plain").read_text()
    assert "star" not in html


def _with_relation(dp_run: Path, tmp_path: Path, name: str, relation: str) -> Path:
    out = with_privacy(dp_run, tmp_path, name, 2.0)
    summary = json.loads((out / "summary.json").read_text())
    summary["privacy"]["accounting"] = {"neighboring": relation}
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def test_the_table_states_each_epsilon_s_neighbouring_relation_and_warns_when_they_differ(
        dp_run: Path, tmp_path: Path) -> None:
    # A new-user trial compared a replace-one ε with add-or-remove-one ones, unwarned.
    fixed = _with_relation(dp_run, tmp_path, "fixed", "replace-one")
    poisson = _with_relation(dp_run, tmp_path, "poisson", "add-or-remove-one")
    html = write_report([fixed, poisson], tmp_path / "both").read_text()
    assert "2; δ=1e-05; replace-one" in html and "2; δ=1e-05; add-or-remove-one" in html
    assert "not comparable numbers" in html
    same = write_report([poisson, _with_relation(dp_run, tmp_path, "p2", "add-or-remove-one")],
                        tmp_path / "same").read_text()
    assert "not comparable numbers" not in same
