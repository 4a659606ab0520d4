"""Loading a scenario file, with one clear message for each way it can be wrong.

Scenario files are trusted Python, like a pytest conftest: loading one runs
it. What we add is error reporting that names the file, the line and the
field instead of a traceback.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import re
import sys
import traceback
import types
from pathlib import Path

from fedactors.errors import ConfigError, ScenarioError
from fedactors.scenarios.spec import Scenario


def line_in(path: Path, exc: BaseException) -> str:
    """``file:line`` of the deepest frame of ``exc`` inside the scenario file.

    For a bad field in a call spread over several lines, the line of that keyword
    (found from outside: ``dropout=1.5`` on line 12 of a ``DeviceClass(...)`` begun
    on line 11 was reported at line 11).
    """
    where = str(path)
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
            if isinstance(exc, ConfigError) and frame.end_lineno and line is not None and (
                    frame.end_lineno > line):
                line = _keyword_line(path, line, frame.end_lineno,
                                     exc.field.split(".")[-1].split("[")[0]) or line
            where = f"{path}:{line}"
    return where


def _keyword_line(path: Path, first: int, last: int, name: str) -> int | None:
    """The line of the first ``name=`` keyword argument within lines first..last."""
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    lines = sorted(node.value.lineno for node in ast.walk(tree)
                   if isinstance(node, ast.keyword) and node.arg == name
                   and first <= node.value.lineno <= last)
    return lines[0] if lines else None


_UNEXPECTED = re.compile(r"(\w+)(?:\.__init__)?\(\) got an unexpected keyword argument '(\w+)'")


def did_you_mean(exc: BaseException) -> str:
    """`` (did you mean 'dropout'?)`` for a mistyped keyword of a fedactors class, else ""."""
    match = _UNEXPECTED.search(str(exc)) if isinstance(exc, TypeError) else None
    if match is None:
        return ""
    owner, word = match.groups()
    candidates: set[str] = set()
    for name, module in list(sys.modules.items()):
        found = vars(module).get(owner) if name.startswith("fedactors") else None
        if callable(found):
            try:
                candidates.update(inspect.signature(found).parameters)
            except (TypeError, ValueError):  # a builtin without a signature
                continue
    best = difflib.get_close_matches(word, sorted(candidates), n=1)
    return f" (did you mean {best[0]!r}?)" if best else ""


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    module = load_module(path)
    scenario = module.__dict__.get("scenario")
    if scenario is None:
        raise ScenarioError(
            f"{path}: defines no scenario: expected a module-level "
            "`scenario = fedactors.Scenario(...)`"
        )
    if not isinstance(scenario, Scenario):
        raise ScenarioError(
            f"{path}: scenario: must be a fedactors.Scenario, got {type(scenario).__name__}"
        )
    return scenario


def load_module(path: str | Path) -> types.ModuleType:
    """Run a scenario file and return its namespace, reporting failures as ScenarioError."""
    path = Path(path)
    if not path.exists():
        raise ScenarioError(f"{path}: scenario file not found")
    if not path.is_file():
        raise ScenarioError(f"{path}: is not a file")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as exc:
        raise ScenarioError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None

    module = types.ModuleType(f"fedactors_scenario_{path.stem}")
    module.__file__ = str(path)
    # Let a scenario import helper modules that sit beside it.
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        exec(code, module.__dict__)
    except ConfigError as exc:
        raise ScenarioError(f"{line_in(path, exc)}: {exc}") from None
    except Exception as exc:  # the file is user code: any failure is reported, not raised
        raise ScenarioError(
            f"{line_in(path, exc)}: {type(exc).__name__}: {exc}{did_you_mean(exc)}"
        ) from None
    finally:
        sys.path.remove(str(path.parent.resolve()))

    return module
