"""Scenario files: a mistyped keyword gets a suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedactors.errors import ScenarioError
from fedactors.scenarios.loader import load_scenario

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("call, suggestion", [
    ('DeviceClass("x", count=2, dropuot=0.1)', "dropout"),
    ('Rounds(cohort_sise=2)', "cohort_size"),
])
def test_a_mistyped_keyword_names_the_one_meant(tmp_path: Path, call: str, suggestion: str) -> None:
    path = tmp_path / "typo.py"
    path.write_text(f"from fedactors import DeviceClass, Rounds\nthing = {call}\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:2: TypeError")
    assert message.endswith(f"(did you mean {suggestion!r}?)") and "\n" not in message


def test_no_suggestion_for_a_keyword_nothing_resembles(tmp_path: Path) -> None:
    path = tmp_path / "typo.py"
    path.write_text("from fedactors import Rounds\nthing = Rounds(zzzzzz=1)\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize("bad, line, field", [
    ("count=2, dropout=1.5", 4, "dropout"),
    ("count=0", 4, "count"),
])
def test_a_bad_value_in_a_call_over_several_lines_is_placed_at_its_own_line(
        tmp_path: Path, bad: str, line: int, field: str) -> None:
    # Found from outside: the line where DeviceClass( began was named, not the bad keyword's.
    path = tmp_path / "multi.py"
    path.write_text("from fedactors import DeviceClass\n"
                    "fleet = [DeviceClass(\n"
                    "    'a',\n"
                    f"    {bad},\n"
                    "    compute=2.0)]\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"{path}:{line}: {field}:")
