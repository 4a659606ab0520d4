"""Bad input: one clear line naming the file and field, exit status 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedactors.cli import main

ROOT = Path(__file__).resolve().parents[1]

VALID = """
from fedactors import DeviceClass, NetworkProfile, Rounds, Scenario

def data(fleet, rng):
    raise AssertionError("not reached when validation fails")

scenario = Scenario(
    name="bad",
    model=lambda: None,
    loss="mse",
    data=data,
    fleet=[DeviceClass("phone", count=4, network=NetworkProfile(rtt={rtt}), dropout={dropout})],
    rounds=Rounds(count=2, cohort_size={cohort}, deadline={deadline}),
)
"""


def write(tmp_path: Path, text: str, name: str = "scenario.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_main(capsys, *args: str) -> tuple[int, str]:
    code = main([*args])
    err = capsys.readouterr().err
    return code, err


def scenario_with(**overrides: object) -> str:
    values = {"rtt": 0.05, "dropout": 0.1, "cohort": 2, "deadline": 60.0}
    values.update(overrides)
    return VALID.format(**values)


@pytest.mark.parametrize(
    ("overrides", "field", "line"),
    [
        ({"rtt": -0.5}, "rtt: must be >= 0, got -0.5", 12),
        ({"dropout": 1.5}, "dropout: must be in [0, 1], got 1.5", 12),
        ({"deadline": 0}, "deadline: must be > 0, got 0", 13),
        # A Scenario-level check on a Rounds field: placed at the keyword inside Rounds(...).
        ({"cohort": 10}, "rounds.cohort_size: 10 is larger than the fleet (4 devices)", 13),
    ],
)
def test_invalid_values_name_the_file_line_and_field(capsys, tmp_path, overrides, field, line):
    path = write(tmp_path, scenario_with(**overrides))
    code, err = run_main(capsys, str(path))
    assert code == 2
    assert err.strip() == f"error: {path}:{line}: {field}"


def test_missing_file(capsys, tmp_path) -> None:
    code, err = run_main(capsys, str(tmp_path / "nope.py"))
    assert code == 2 and err.strip() == f"error: {tmp_path / 'nope.py'}: scenario file not found"


def test_syntax_error_names_the_line(capsys, tmp_path) -> None:
    path = write(tmp_path, "x = 1\nscenario = (\n")
    code, err = run_main(capsys, str(path))
    assert code == 2 and err.startswith(f"error: {path}:2: syntax error:")


def test_a_file_that_defines_no_scenario(capsys, tmp_path) -> None:
    path = write(tmp_path, "x = 1\n")
    code, err = run_main(capsys, str(path))
    assert code == 2 and "defines no scenario" in err and str(path) in err


def test_a_scenario_of_the_wrong_type(capsys, tmp_path) -> None:
    path = write(tmp_path, "scenario = {'name': 'x'}\n")
    code, err = run_main(capsys, str(path))
    assert code == 2 and "must be a fedactors.Scenario, got dict" in err


def test_an_exception_in_the_file_is_one_line_not_a_traceback(capsys, tmp_path) -> None:
    path = write(tmp_path, "import fedactors\n\nraise RuntimeError('boom')\n")
    code, err = run_main(capsys, str(path))
    assert code == 2 and err.strip() == f"error: {path}:3: RuntimeError: boom"


@pytest.mark.slow  # the process imports TensorFlow first (cli.import_tensorflow_quietly): ~5-9 s
def test_the_real_process_exits_2_without_a_traceback(tmp_path) -> None:
    # The messages themselves are checked in-process above; this is the real entry point.
    path = write(tmp_path, scenario_with(dropout=-0.1))
    proc = subprocess.run([sys.executable, "-m", "fedactors", str(path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{path}:12: dropout: must be in [0, 1], got -0.1" in proc.stderr


def test_bad_command_line_values_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["scenarios/linear_regression.py", "--rounds", "0"])
    assert exc.value.code == 2
    assert "--rounds: must be >= 1" in capsys.readouterr().err



def test_ray_workers_without_the_ray_backend_is_refused_not_ignored(capsys, tmp_path) -> None:
    # Found from outside: --ray-workers 2 alone trained in this process without a word.
    code, err = run_main(capsys, "scenarios/linear_regression.py", "--ray-workers", "2",
                         "--out", str(tmp_path / "r"))
    assert code == 2 and not (tmp_path / "r").exists()
    assert err.strip().splitlines() == [
        "error: --ray-workers 2: only with --backend ray (training runs in this process "
        "with --backend local)"]

BROKEN_CODE = """
import numpy as np
from fedactors import DeviceClass, FederatedData, Rounds, Scenario


def data(fleet, rng):
    sizes = {{}}
    return sizes["missing"]


def good_data(fleet, rng):
    xy = (np.zeros((4, 1), np.float32), np.zeros(4, np.float32))
    return FederatedData.from_arrays([xy] * fleet.size, xy)


scenario = Scenario(name="broken", model=lambda: None, loss="mse", data={data},
                    fleet=[DeviceClass("d", count=2)], rounds=Rounds(count=1, cohort_size=2))
"""


def test_an_exception_in_the_data_function_names_the_file_line_and_field(capsys, tmp_path):
    path = write(tmp_path, BROKEN_CODE.format(data="data"))
    code, err = run_main(capsys, str(path), "--out", str(tmp_path / "out"), "--quiet")
    assert code == 2 and err.strip() == f"error: {path}:8: data: KeyError: 'missing'"


def test_a_model_builder_that_returns_no_model_is_one_clear_line(capsys, tmp_path):
    path = write(tmp_path, BROKEN_CODE.format(data="good_data"))
    code, err = run_main(capsys, str(path), "--out", str(tmp_path / "out"), "--quiet")
    assert code == 2 and err.strip() == f"error: {path}: model: must return a keras.Model, got NoneType"


# -- --system-randomness: the flag is the scenario's randomness field --------------------

LINEAR = ROOT / "scenarios/linear_regression.py"


class _Stop(Exception):
    pass


def _scenario_run_with(monkeypatch, *args: str):
    """The scenario ``main`` would run with ``args`` (run_scenario is stopped before any work)."""
    seen = []

    def run_scenario(scenario, options, on_round=(), interrupt=None):
        seen.append(scenario)
        raise _Stop

    monkeypatch.setattr("fedactors.simulation.run_scenario", run_scenario)
    with pytest.raises(_Stop):
        main([*args, "--quiet", "--no-report", "--verbose"])
    return seen[0]


def test_the_system_randomness_flag_sets_the_scenarios_field(monkeypatch, tmp_path) -> None:
    out = str(tmp_path / "out")
    assert _scenario_run_with(monkeypatch, str(LINEAR), "--out", out).randomness == "seeded"
    flagged = _scenario_run_with(monkeypatch, str(LINEAR), "--out", out, "--system-randomness")
    assert flagged.randomness == "system"
    # A scenario that asks for it itself gets it without the flag.
    shipped = str(ROOT / "scenarios")
    path = write(tmp_path, f"import dataclasses, sys\nsys.path.insert(0, {shipped!r})\n"
                 "import linear_regression\n"
                 "scenario = dataclasses.replace(linear_regression.scenario, randomness='system')\n")
    assert _scenario_run_with(monkeypatch, str(path), "--out", out).randomness == "system"


def test_a_bad_randomness_in_a_scenario_is_one_line_exit_2(capsys, tmp_path) -> None:
    path = write(tmp_path, scenario_with().replace(
        "    rounds=Rounds(", "    randomness='os',\n    rounds=Rounds("))
    code, err = run_main(capsys, str(path), "--out", str(tmp_path / "out"))
    assert code == 2
    # Line 13 holds randomness='os' (the Scenario( call begins on line 7).
    assert err.strip() == f"error: {path}:13: randomness: must be 'seeded' or 'system', got 'os'"


def test_a_system_randomness_run_resumes_as_one_and_a_seeded_one_cannot_switch(capsys,
                                                                               tmp_path) -> None:
    import json

    system, seeded = tmp_path / "system", tmp_path / "seeded"
    assert main([str(LINEAR), "--rounds", "2", "--out", str(system), "--system-randomness",
                 "--quiet", "--no-report"]) == 0
    # --resume alone carries on with the randomness the run was started with.
    assert main(["--resume", str(system), "--rounds", "3", "--quiet", "--no-report"]) == 0
    summary = json.loads((system / "summary.json").read_text())
    assert summary["rounds"] == 3 and summary["randomness"] == "system"
    assert summary["reproducible"] is False
    assert "warning: randomness:" in capsys.readouterr().err

    assert main([str(LINEAR), "--rounds", "2", "--out", str(seeded), "--quiet", "--no-report"]) == 0
    code, err = run_main(capsys, "--resume", str(seeded), "--rounds", "3", "--system-randomness",
                         "--quiet", "--no-report")
    assert code == 2
    assert "cannot resume: the randomness differs (checkpoint: seeded, now: system)" in err


def test_a_run_refused_at_load_leaves_the_earlier_run_in_its_directory_whole(capsys, tmp_path) -> None:
    out = tmp_path / "run"
    assert main([str(LINEAR), "--rounds", "2", "--out", str(out), "--quiet"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # Data for fewer devices than the fleet: refused after the scenario file loaded,
    # when the data is built (where a fresh run used to have cleared the directory).
    source = LINEAR.read_text() + (
        "\nfrom dataclasses import replace\n"
        "_data = scenario.data\n"
        "scenario = replace(scenario, data=lambda fleet, rng: FederatedData.from_arrays(\n"
        "    [_data(fleet, rng).client(d) for d in range(fleet.size - 1)], _data(fleet, rng).test))\n")
    bad = write(tmp_path, source)
    code, err = run_main(capsys, str(bad), "--out", str(out), "--quiet")
    assert code == 2 and "data: returned data for" in err
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert main(["--resume", str(out), "--rounds", "3", "--quiet", "--no-report"]) == 0


def test_a_run_started_with_a_relative_path_resumes_from_another_directory(tmp_path,
                                                                           monkeypatch) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "lr.py").write_text(LINEAR.read_text())
    monkeypatch.chdir(tmp_path / "work")
    assert main(["lr.py", "--rounds", "2", "--out", "run", "--quiet", "--no-report"]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["--resume", "work/run", "--rounds", "3", "--quiet", "--no-report"]) == 0
    assert json.loads((tmp_path / "work/run/summary.json").read_text())["rounds"] == 3


def test_a_fresh_run_clears_what_an_earlier_run_left_that_it_would_not_overwrite(tmp_path) -> None:
    from fedactors.simulation.outputs import clear_previous_run

    for name in ("summary.json", "model.keras", "checkpoint.pkl", "events.jsonl", "notes.txt",
                 "tensorboard/events.out.tfevents.1.host", "tensorboard/mine.txt",
                 "report/report.html", "report/accuracy.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("old run")
    clear_previous_run(tmp_path)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    # events.jsonl is truncated by the run itself; the user's own files stay.
    assert left == ["events.jsonl", "notes.txt", "tensorboard/mine.txt"]
    clear_previous_run(tmp_path)  # nothing left to clear: fine
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "draft.md").write_text("not ours")  # a report/ fedactors did not write
    clear_previous_run(tmp_path)
    assert (tmp_path / "report" / "draft.md").exists()
