from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from fedactors.reporting.terminal import RunDisplay

ROW = {"round": 1, "time": 90.0, "selected": 13, "reported": 10, "dropped": 1, "late": 2,
       "accuracy": 0.75, "loss": 0.5}


def test_no_bar_when_not_a_terminal() -> None:
    out = io.StringIO()
    with RunDisplay("demo", 3, console=Console(file=out, force_terminal=False)) as display:
        display.update(ROW)
        assert display._progress is None
    assert out.getvalue() == ""


def test_bar_shows_round_time_reports_and_latest_accuracy() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    with RunDisplay("demo", 3, console=console) as display:
        display.update(ROW)
        # Round 2 was not evaluated: the bar keeps the latest accuracy.
        unevaluated = {k: v for k, v in ROW.items() if k not in ("accuracy", "loss")}
        status = display.status({**unevaluated, "round": 2, "time": 150.0, "reported": 11})
        display._progress.refresh()
    assert "acc 0.750" in status and "t=2.5 min" in status and "reported 11/13" in status
    text = out.getvalue()
    assert "round" in text and "1/3" in text and "t=1.5 min" in text and "reported 10/13" in text


def test_tensorboard_scalars(tmp_path: Path) -> None:
    import tensorflow as tf

    from fedactors.reporting.tensorboard import TensorBoardWriter

    with TensorBoardWriter(tmp_path / "tb", ("loss", "accuracy")) as writer:
        writer({**ROW, "closed_by": "deadline", "applied": True, "bytes_up": 10,
                "wall_seconds": 1.0, "epsilon": 0.3})
    files = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(files) == 1
    tags, steps = {}, set()
    for record in tf.data.TFRecordDataset(str(files[0])):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
            assert value.metadata.plugin_data.plugin_name == "scalars"
            tags[value.tag] = float(tf.make_ndarray(value.tensor))
            steps.add(event.step)
    assert steps == {1}  # step = the row's round
    assert tags["eval/accuracy"] == 0.75 and tags["eval/loss"] == 0.5
    assert tags["participation/reported"] == 10 and tags["participation/selected"] == 13
    assert tags["time/time"] == 90.0
    # Written as float32: 0.3 comes back as the nearest float32, not as 0.3.
    assert tags["traffic/bytes_up"] == 10 and tags["privacy/epsilon"] == pytest.approx(0.3, rel=1e-6)
    assert "round/wall_seconds" not in tags and not any("applied" in t for t in tags)
    assert not any("closed_by" in t for t in tags)  # not a number


@pytest.mark.parametrize(("randomness", "title"), [("seeded", "demo (seed 4)"),
                                                   ("system", "demo (seed 4, system randomness)")])
def test_the_summary_title_says_when_the_seed_does_not_replay_the_run(randomness: str,
                                                                       title: str) -> None:
    out = io.StringIO()
    summary = {"scenario": "demo", "seed": 4, "rounds": 1, "stopped": "completed",
               "simulated_seconds": 90.0, "wall_seconds": 1.0, "final": {"loss": 0.5},
               "weights_sha256": "ab" * 32, "randomness": randomness}
    display = RunDisplay("demo", 1, console=Console(file=out, force_terminal=False, width=120))
    display.finish(summary, [ROW], Path("runs/demo"))
    assert out.getvalue().splitlines()[0].strip() == title


@pytest.mark.parametrize("relation", ["replace-one", "add-or-remove-one"])
def test_the_summary_states_the_neighbouring_relation_of_epsilon(relation: str) -> None:
    out = io.StringIO()
    summary = {"scenario": "demo", "seed": 4, "rounds": 1, "stopped": "completed",
               "simulated_seconds": 90.0, "wall_seconds": 1.0, "final": {"loss": 0.5},
               "weights_sha256": "ab" * 32, "randomness": "seeded",
               "privacy": {"epsilon": 2.39, "delta": 1e-4, "assumption_held": False,
                           "accounting": {"neighboring": relation}}}
    display = RunDisplay("demo", 1, console=Console(file=out, force_terminal=False, width=160))
    display.finish(summary, [ROW], Path("runs/demo"))
    assert f"2.390 ({relation} neighbours) (assumption broken)" in out.getvalue()
