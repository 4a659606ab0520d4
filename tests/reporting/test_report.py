from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from fedactors.reporting.report import main, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_good_png(path: Path) -> None:
    """A real picture: PNG bytes, a sensible size and more than a few colours."""
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    pixels = image.imread(path)
    height, width = pixels.shape[:2]
    assert width >= 400 and height >= 200, (path, pixels.shape)
    # One integer per pixel (np.unique over rows, axis=0, is ~100x slower on a figure).
    channels = np.round(pixels * 255).astype(np.uint32).reshape(-1, pixels.shape[-1])
    packed = np.zeros(len(channels), np.uint32)
    for i in range(channels.shape[1]):
        packed = (packed << 8) | channels[:, i]
    colours = np.unique(packed)
    assert len(colours) > 20, (path, len(colours))


@pytest.fixture(scope="module")
def single_report(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run's report, written once through ``fedactors report RUN --out DIR``."""
    out = tmp_path_factory.mktemp("report") / "r"
    assert main([str(tiny_run), "--out", str(out)]) == 0
    return out / "report.html"


def test_single_run_report(single_report: Path) -> None:
    page = single_report
    names = {p.name for p in page.parent.glob("*.png")}
    assert {"loss.png", "mean_absolute_error.png", "participation.png", "bytes.png",
            "timeline.png"} <= names
    assert "epsilon.png" not in names  # no DP in this run
    for png in page.parent.glob("*.png"):
        assert_good_png(png)
    html = page.read_text()
    assert html.count('src="data:image/png;base64,') == len(names)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<script" not in html.lower() and "<link" not in html.lower()


def test_overlay_of_two_runs(tiny_run: Path, dp_run: Path, tmp_path: Path) -> None:
    page = write_report([tiny_run, dp_run], tmp_path / "cmp")
    out = page.parent
    for name in ("loss.png", "participation.png", "bytes.png", "epsilon.png",
                 "measurements.png"):
        assert_good_png(out / name)
    assert len(list(out.glob("timeline-*.png"))) == 2
    html = page.read_text()
    # Same scenario twice: labels fall back to the directory names.
    assert "linear_regression (lr)" in html and "linear_regression (lr-dp)" in html


def test_cli_writes_the_page_where_told_and_refuses_a_missing_dir(
        single_report: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    assert single_report.is_file() and single_report.name == "report.html"

    missing = tmp_path / "nope"
    assert main([str(tiny_run), str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing}: no such run directory"]


def test_missing_file_and_bad_json(tmp_path: Path, tiny_run: Path, capsys) -> None:
    empty = tmp_path / "half"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text('{"round": 1, "time": 1.0}\n')
    assert main([str(empty)]) == 2
    assert str(empty / "summary.json") in capsys.readouterr().err

    (empty / "summary.json").write_text("{}")
    (empty / "events.jsonl").write_text("")
    (empty / "metrics.jsonl").write_text('{"round": 1, "time": 1.0}\nnot json\n')
    assert main([str(empty)]) == 2
    assert f"{empty / 'metrics.jsonl'}:2" in capsys.readouterr().err


def test_run_writes_report_and_tensorboard_unless_told_not_to(tmp_path: Path) -> None:
    from fedactors.cli import main as cli_main

    scenario = str(Path(__file__).resolve().parents[2] / "scenarios" / "linear_regression.py")
    assert cli_main([scenario, "--rounds", "2", "--quiet", "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "report" / "report.html").is_file()
    assert list((tmp_path / "a" / "tensorboard").glob("events.out.tfevents.*"))
    assert cli_main([scenario, "--rounds", "2", "--quiet", "--no-report",
                     "--out", str(tmp_path / "b")]) == 0
    assert not (tmp_path / "b" / "report").exists()


def test_learning_curves_start_at_round_zero_the_initial_model(tiny_run: Path) -> None:
    from fedactors.reporting.plots import metric_figure
    from fedactors.reporting.rundir import load_run

    run = load_run(tiny_run)
    initial = run.summary["initial"]
    assert set(initial) >= {"loss"} and initial["loss"] > run.summary["final"]["loss"]
    by_round = metric_figure([run], "loss").axes[0]
    rounds, values = by_round.lines[0].get_data()
    assert list(rounds) == [0, 1, 2, 3] and values[0] == initial["loss"]
    # Whole-number ticks only: no round 2.5.
    assert all(float(t).is_integer() for t in by_round.get_xticks())


def test_the_initial_model_is_in_the_run_start_event(tiny_run: Path) -> None:
    start = json.loads((tiny_run / "events.jsonl").read_text().splitlines()[0])
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert start["event"] == "run.start" and start["initial"] == summary["initial"]


def test_the_report_lists_every_warning_or_says_there_were_none(tiny_run: Path,
                                                                 tmp_path: Path) -> None:
    quiet = tmp_path / "quiet"
    shutil.copytree(tiny_run, quiet)
    summary = json.loads((quiet / "summary.json").read_text())
    assert summary["warnings"] == []
    warned = tmp_path / "warned"
    shutil.copytree(tiny_run, warned)
    summary["warnings"] = ["privacy: the <sampling> assumption did not hold", "executor: fell back"]
    (warned / "summary.json").write_text(json.dumps(summary))
    html = write_report([quiet], tmp_path / "q").read_text()
    assert "<h2>Warnings</h2>" in html and "none: every guarantee" in html
    html = write_report([warned], tmp_path / "w").read_text()
    section = html.split("<h2>Warnings</h2>", 1)[1].split("<h2>", 1)[0]
    assert "the &lt;sampling&gt; assumption did not hold" in section and "fell back" in section
    assert "none:" not in section


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("name, figures, fields", [
    ("smart_home_secure.py", {"timeline.png", "bytes.png", "measurements.png"}, set()),
    ("healthcare.py", {"epsilon.png", "participation.png", "measurements.png"},
     {"epsilon", "clipped_fraction", "update_norm_median", "clip_bound"}),
    ("smart_home_byzantine.py", {"measurements.png", "timeline.png"},
     {"byzantine_selected", "byzantine_reported", "byzantine_used"}),
], ids=["secure", "dp", "byzantine"])
def test_a_real_secure_dp_or_byzantine_run_gets_its_figures(name, figures, fields,
                                                           tmp_path: Path) -> None:
    from fedactors.scenarios.loader import load_scenario
    from fedactors.simulation import RunOptions, run_scenario

    out = tmp_path / "run"
    run_scenario(load_scenario(ROOT / "scenarios" / name), RunOptions(rounds=2, out_dir=out))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(fields <= set(row) for row in rows)
    page = write_report([out], tmp_path / "report")
    names = {p.name for p in page.parent.glob("*.png")}
    assert figures | {"loss.png"} <= names, names
    for png in page.parent.glob("*.png"):
        assert_good_png(png)
    html = page.read_text()
    assert "<h2>Warnings</h2>" in html
    assert html.count('src="data:image/png;base64,') == len(names)
    if name == "smart_home_secure.py":  # the protocol's steps are on the timeline
        from fedactors.reporting.timeline import SECAGG_KINDS, timeline_from_file

        timeline = timeline_from_file(out / "events.jsonl")
        assert all(timeline.count(k) for k in SECAGG_KINDS if k != "sign_view")


def test_an_unreadable_partition_table_is_left_out_with_a_note(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "partitions.json").write_text('{"labels": [0, 1], "counts": [[1]]}')
    page = write_report([run], tmp_path / "r")
    assert not (page.parent / "labels.png").exists()
    html = page.read_text()
    assert "partitions.json is unreadable" in html and "one row per device" in html


def _edit_jsonl(path: Path, edit) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(edit(row)) + "\n" for row in rows))


@pytest.mark.parametrize("file, edit, named", [
    ("summary.json", lambda s: {**s, "final": 5}, "'final' is 5, expected an object"),
    ("summary.json", lambda s: {**s, "final": {"loss": "low"}}, "'final.loss' is \"low\""),
    ("summary.json", lambda s: {**s, "simulated_seconds": "x"}, "'simulated_seconds' is \"x\""),
    ("summary.json", lambda s: {**s, "rounds": True}, "'rounds' is true, expected an integer"),
    ("summary.json", lambda s: {**s, "privacy": {"epsilon": "2.1", "delta": 1e-5}},
     "'privacy.epsilon' is \"2.1\", expected a number"),
    ("summary.json", lambda s: {**s, "privacy": {"empirical": {"epsilon": 1.0,
                                                               "canaries_inserted": "10"}}},
     "'privacy.empirical.canaries_inserted' is \"10\""),
    ("metrics.jsonl", lambda r: {**r, "selected": "many"}, ":1: 'selected' is \"many\""),
    ("metrics.jsonl", lambda r: {**r, "bytes_up": [1]}, ":1: 'bytes_up' is [1]"),
    ("metrics.jsonl", lambda r: {**r, "loss": "low"}, ":1: 'loss' is \"low\""),
    ("events.jsonl", lambda e: {**e, "t": "soon"}, ":1: 't' is \"soon\""),
    ("events.jsonl", lambda e: {**e, "cohort": ["a"]} if e["event"] == "round.start" else e,
     "'cohort' is [\"a\"], expected a list of integers"),
], ids=["final-int", "final-metric", "seconds", "rounds-bool", "epsilon", "canaries",
        "count", "bytes", "metric", "event-time", "cohort"])
def test_a_damaged_run_file_is_refused_in_one_line_naming_the_field(
        file, edit, named, tiny_run: Path, tmp_path: Path, capsys) -> None:
    """A hand-edited or damaged run directory gets one line naming the file and field,
    exit 2, not a traceback from deep inside a figure (found by a new-user trial)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    if file == "summary.json":
        (run / file).write_text(json.dumps(edit(json.loads((run / file).read_text()))))
    else:
        _edit_jsonl(run / file, edit)
    assert main([str(run), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {run / file}") and named in err[0], err
    assert not (tmp_path / "r" / "report.html").exists()


def test_null_stands_for_a_non_finite_or_absent_value(tiny_run: Path, tmp_path: Path) -> None:
    """What runs write as null (an unseeded run's seed, a non-finite metric, ε = ∞) still
    reports: the shape check refuses other types, not nulls."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    summary = json.loads((run / "summary.json").read_text())
    summary.update(seed=None, final={**summary["final"], "loss": None},
                   privacy={"epsilon": None, "delta": 1e-5, "assumption_held": True})
    (run / "summary.json").write_text(json.dumps(summary))
    _edit_jsonl(run / "metrics.jsonl", lambda r: {**r, "loss": None})
    assert "∞" in write_report([run], tmp_path / "r").read_text()
