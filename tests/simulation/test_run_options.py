"""RunOptions checks every field when it is made: one ConfigError naming the field, before
anything in a run directory is touched (found from outside: rounds="3" from a notebook
cleared a finished run, then failed inside the server with a bare TypeError)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedactors.errors import ConfigError, ScenarioError
from fedactors.scenarios.loader import load_scenario
from fedactors.simulation import RunOptions, run_scenario

LINEAR = "scenarios/linear_regression.py"


@pytest.mark.parametrize("field, value, says", [
    ("rounds", "3", "must be a whole number"),
    ("rounds", 2.5, "must be a whole number"),
    ("rounds", 0, "must be >= 1"),
    ("rounds", -2, "must be >= 1"),
    ("rounds", True, "must be a whole number"),
    ("seed", "1", "must be a whole number"),
    ("seed", True, "must be a whole number"),
    ("seed", -1, "must be >= 0"),
    ("until", "x", "must be a number"),
    ("until", -5, "must be >= 0"),
    ("until", float("nan"), "must be finite"),
    ("ray_workers", 0, "must be >= 1"),
    ("device_events", "no", "must be True or False"),
    ("checkpoint", 1, "must be True or False"),
    ("resume", None, "must be True or False"),
    ("keep_events", "yes", "must be True or False"),
    ("out_dir", 3, "must be a path"),
    ("scenario_path", b"s.py", "must be a path"),
    ("executor", "fast", "must be one of"),
    ("backend", "gpu", "must be one of"),
])
def test_a_bad_field_is_named_when_the_options_are_made(field, value, says) -> None:
    with pytest.raises(ConfigError) as caught:
        RunOptions(**{field: value})
    assert str(caught.value).startswith(f"{field}: {says}")


def test_numpy_integers_and_strings_are_taken_as_what_they_mean(tmp_path: Path) -> None:
    options = RunOptions(seed=np.int64(3), rounds=np.int32(2), out_dir=str(tmp_path / "run"),
                         scenario_path="s.py", until=np.float64(4.5))
    assert (options.seed, options.rounds, options.until) == (3, 2, 4.5)
    assert type(options.seed) is int and type(options.rounds) is int
    assert options.out_dir == tmp_path / "run" and isinstance(options.scenario_path, Path)


def test_a_run_directory_given_as_a_string_is_written(tmp_path: Path) -> None:
    run_scenario(load_scenario(LINEAR), RunOptions(out_dir=str(tmp_path / "run"), rounds=1))
    assert (tmp_path / "run" / "summary.json").is_file()


def test_a_run_directory_that_is_a_file_is_refused_from_python_too(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out, says in ((afile, "the run directory is a file"),
                      (afile / "sub", "cannot write the run directory")):
        with pytest.raises(ScenarioError, match=f"^{out}: {says}"):
            run_scenario(load_scenario(LINEAR), RunOptions(out_dir=out, rounds=1))
    assert afile.read_text() == "mine"
