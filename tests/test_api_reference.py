"""The API reference a user reads: every public name documented, with an example that runs.

Public names: ``fedactors.__all__`` and the ``__all__`` of ``fedactors.aggregation``,
``fedactors.privacy`` and ``fedactors.data``. For each class and function:

* a docstring in Google style;
* every parameter of its constructor (or signature) named in it, so none is left
  to guess (units go with it: seconds, bits per second, examples, ...);
* an ``Examples:`` section (the header griffe renders as examples) whose ``>>>``
  lines run as doctests, here.

The site (``mkdocs build --strict``, tests/test_docs_site.py) renders the same
docstrings, so what is checked here is what a user reads there.
"""

from __future__ import annotations

import dataclasses
import doctest
import inspect
import re

import pytest

from tests.public_api import public_objects

PUBLIC = public_objects()


def _parameters(obj: object) -> list[str]:
    if dataclasses.is_dataclass(obj):
        return [f.name for f in dataclasses.fields(obj) if f.init and not f.name.startswith("_")]
    target = obj.__init__ if inspect.isclass(obj) else obj
    if inspect.isclass(obj) and target is object.__init__:
        return []
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    return [p.name for p in signature.parameters.values()
            if p.name not in ("self", "cls") and not p.name.startswith("_")
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_public_name_documents_its_parameters_and_shows_an_example(name: str) -> None:
    obj = PUBLIC[name]
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{name} has no docstring"
    missing = [p for p in _parameters(obj) if not re.search(rf"\b{re.escape(p)}\b", doc)]
    assert not missing, f"{name}'s docstring does not name its parameter(s) {missing}"
    assert re.search(r"^Examples:\s*$", doc, re.M) and ">>>" in doc, (
        f"{name}'s docstring has no 'Examples:' section with a >>> line")


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_example_runs(name: str) -> None:
    obj = PUBLIC[name]
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(obj, name, globs={})
    assert tests and any(t.examples for t in tests), f"{name}: no doctest found"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} example(s) failed (run with -s to see)"


def test_the_common_names_are_importable_from_the_top() -> None:
    import fedactors
    import fedactors.aggregation

    for name in ("Clipped", "WeightedMean", "TrimmedMean", "Median", "Krum", "DPMean"):
        assert name in fedactors.__all__ and getattr(fedactors, name)
    for name in ("Clipped", "WeightedMean", "TrimmedMean", "Median", "Krum", "Wrapper"):
        assert name in fedactors.aggregation.__all__
