"""The canary estimate next to the accountant's ε: terminal table, report page, ε figure."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from fedactors.reporting.plots import epsilon_figure
from fedactors.reporting.report import write_report
from fedactors.reporting.rundir import load_run
from fedactors.reporting.terminal import RunDisplay
from fedactors.reporting.units import empirical_text

EMPIRICAL = {"epsilon": 2.5, "epsilon_canary_bound": 4.0, "canaries_inserted": 1000,
             "canaries_held_out": 1000, "note": "empirical estimate, not a guarantee"}
PRIVACY = {"epsilon": 7.25, "delta": 1e-5, "assumption_held": True, "empirical": EMPIRICAL}


def test_empirical_text() -> None:
    assert empirical_text(EMPIRICAL) == "2.500 (1000 canaries)"
    assert empirical_text({**EMPIRICAL, "epsilon": None}) == "none (the model did not change)"


@pytest.mark.parametrize("privacy, shown", [
    (PRIVACY, True), ({k: v for k, v in PRIVACY.items() if k != "empirical"}, False)])
def test_terminal_shows_the_estimate_under_epsilon(privacy: dict, shown: bool) -> None:
    out = io.StringIO()
    summary = {"scenario": "demo", "seed": 0, "rounds": 1, "stopped": "completed",
               "simulated_seconds": 9.0, "wall_seconds": 1.0, "final": {},
               "weights_sha256": "ab" * 32, "privacy": privacy}
    RunDisplay("demo", 1, console=Console(file=out, force_terminal=False, width=140)).finish(
        summary, [], Path("runs/demo"))
    lines = out.getvalue().splitlines()
    at = next(i for i, line in enumerate(lines) if "ε at δ=1e-05" in line)
    assert "7.250" in lines[at]
    if shown:
        assert "ε empirical (canaries, estimate)" in lines[at + 1]
        assert "2.500 (1000 canaries)" in lines[at + 1]
    else:
        assert "empirical" not in out.getvalue()


@pytest.fixture()
def canary_run(dp_run: Path, tmp_path: Path) -> Path:
    """The DP-looking tiny run with a privacy block that carries a canary estimate."""
    out = tmp_path / "lr-canaries"
    shutil.copytree(dp_run, out)
    summary = json.loads((out / "summary.json").read_text())
    summary["privacy"] = PRIVACY
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def test_report_puts_the_estimate_next_to_epsilon(canary_run: Path, dp_run: Path,
                                                  tmp_path: Path) -> None:
    html = write_report([canary_run, dp_run], tmp_path / "cmp").read_text()
    assert "ε (accountant; δ; neighbouring datasets)" in html and "7.25; δ=1e-05" in html
    row = html[html.index("ε empirical (canaries, an estimate, not a guarantee)"):]
    row = row[:row.index("</tr>")]
    # This run's estimate, and a dash for the run that inserted no canaries.
    assert "2.500 (1000 canaries)" in row and "–" in row
    assert "hollow diamond" in html


def test_figure_marks_the_estimate_at_the_last_round(canary_run: Path, dp_run: Path) -> None:
    with_estimate = epsilon_figure([load_run(canary_run)])
    labels = [line.get_label() for line in with_estimate.axes[0].get_lines()]
    assert any(label.endswith("empirical estimate (canaries)") for label in labels)
    marker = next(line for line in with_estimate.axes[0].get_lines()
                  if line.get_label().endswith("(canaries)"))
    assert list(marker.get_ydata()) == [2.5]
    without = epsilon_figure([load_run(dp_run)])
    assert len(without.axes[0].get_lines()) == 1
