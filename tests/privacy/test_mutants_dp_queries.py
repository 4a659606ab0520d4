"""The tensorflow-privacy import workaround of fedactors.privacy.dp_queries, run again.

The workaround runs once, when the module is first imported. Under mutmut 3 a mutant is
switched on only after that import, so its three functions are called again here, in this
process, on a fresh ``sys.modules`` (restored afterwards), and the whole import is repeated
in a fresh interpreter, which inherits the mutant from the environment (found by mutation
testing; tests/privacy/test_tfp_compat.py checks the installed workaround itself).
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import pickle
import pickletools
import subprocess
import sys
import types
from collections import namedtuple
from pathlib import Path

import pytest

import fedactors
from fedactors.privacy import dp_queries
from fedactors.privacy.dp_queries import TfPrivacyImportError

TOP, SUB = "tensorflow_privacy", "tensorflow_privacy.privacy"
DOC = "stub installed by fedactors.privacy.dp_queries"
#: Query classes whose states a DP run checkpoints.
QUERIES = (dp_queries.GaussianSumQuery, dp_queries.NormalizedQuery,
           dp_queries.QuantileEstimatorQuery, dp_queries.QuantileAdaptiveClipSumQuery)


def installed_root() -> Path:
    """tensorflow_privacy's directory, as its distribution records it."""
    dist = importlib.metadata.distribution("tensorflow-privacy")
    return Path(dist.locate_file("tensorflow_privacy")).resolve()


def pinned_requirement() -> str:
    """The tensorflow-privacy requirement fedactors declares (pyproject.toml)."""
    reqs = importlib.metadata.requires("fedactors") or []
    return next(r.split(";")[0].strip() for r in reqs if r.startswith("tensorflow-privacy"))


def state_classes(cls: type) -> dict[str, type]:
    return {name: value for name, value in vars(cls).items()
            if isinstance(value, type) and issubclass(value, tuple) and hasattr(value, "_fields")}


def global_names(payload: bytes) -> set[str]:
    """The modules a pickle names (GLOBAL, or the strings STACK_GLOBAL consumes)."""
    return {str(arg).split(" ")[0] for op, arg, _ in pickletools.genops(payload)
            if op.name in ("GLOBAL", "SHORT_BINUNICODE", "BINUNICODE", "UNICODE")
            and isinstance(arg, str) and arg.startswith(("tensorflow_privacy", "fedactors"))}


@pytest.fixture
def restored(monkeypatch):
    """Whatever the workaround changes (sys.modules entries, the parent's attribute, the
    state classes' names) is put back after the test."""
    for name in (TOP, SUB, f"{SUB}.dp_query"):
        if name in sys.modules:
            monkeypatch.setitem(sys.modules, name, sys.modules[name])
    top = sys.modules.get(TOP)
    if top is not None and hasattr(top, "privacy"):
        monkeypatch.setattr(top, "privacy", top.privacy)
    names = {state: (state.__qualname__, state.__module__)
             for cls in QUERIES for state in state_classes(cls).values()}
    yield monkeypatch
    for state, (qualname, module) in names.items():  # (monkeypatch cannot undo these on a type)
        state.__qualname__, state.__module__ = qualname, module


def imported_package(name: str, path: Path) -> types.ModuleType:
    """A package as a successful ``import`` leaves it (a tensorflow-privacy that imports)."""
    module = types.ModuleType(name, "imported normally")
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__spec__.submodule_search_locations = [str(path)]
    module.__path__ = [str(path)]
    return module


@pytest.fixture
def fresh(restored):
    """No tensorflow_privacy package in sys.modules, as before the first import."""
    for name in (TOP, SUB):
        restored.delitem(sys.modules, name, raising=False)
    return restored


def fake_spec(monkeypatch, spec) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == TOP else real(name, *a))


# -- _install_stub_packages ------------------------------------------------------------------


def test_the_stubs_are_packages_at_the_installed_directories(fresh) -> None:
    dp_queries._install_stub_packages()
    root = installed_root()
    top, sub = sys.modules[TOP], sys.modules[SUB]
    for module, name, path in ((top, TOP, root), (sub, SUB, root / "privacy")):
        assert isinstance(module, types.ModuleType) and module.__name__ == name
        assert [Path(p).resolve() for p in module.__path__] == [path]
        assert Path(module.__file__).resolve() == path / "__init__.py"
        assert module.__package__ == name
        assert module.__doc__ == DOC
    assert top.privacy is sub  # `import tensorflow_privacy.privacy` binds it on the parent
    assert not hasattr(top, "__version__")  # the real __init__ did not run
    # A submodule is found through the stub's __path__: that is what the stubs are for.
    fresh.delitem(sys.modules, f"{SUB}.dp_query", raising=False)
    spec = importlib.util.find_spec(f"{SUB}.dp_query")
    assert Path(spec.origin).resolve() == root / "privacy" / "dp_query" / "__init__.py"


def test_a_package_already_imported_is_left_alone(fresh) -> None:
    root = installed_root()
    top, sub = imported_package(TOP, root), imported_package(SUB, root / "privacy")
    fresh.setitem(sys.modules, TOP, top)
    fresh.setitem(sys.modules, SUB, sub)
    dp_queries._install_stub_packages()
    assert sys.modules[TOP] is top and sys.modules[SUB] is sub
    assert top.__path__ == [str(root)] and sub.__path__ == [str(root / "privacy")]
    assert not hasattr(top, "privacy")  # nothing bound on a package it did not stub


def test_only_the_missing_package_is_stubbed(fresh) -> None:
    root = installed_root()
    top = imported_package(TOP, root)
    fresh.setitem(sys.modules, TOP, top)
    dp_queries._install_stub_packages()
    assert sys.modules[TOP] is top
    sub = sys.modules[SUB]
    assert sub.__doc__ == DOC and top.privacy is sub
    assert [Path(p).resolve() for p in sub.__path__] == [root / "privacy"]


def test_a_module_that_is_not_a_package_is_replaced_by_a_stub(fresh) -> None:
    root = installed_root()
    fresh.setitem(sys.modules, TOP, imported_package(TOP, root))
    placeholder = types.ModuleType(SUB)  # no __path__: submodules could not be found in it
    fresh.setitem(sys.modules, SUB, placeholder)
    dp_queries._install_stub_packages()
    sub = sys.modules[SUB]
    assert sub is not placeholder and sub.__doc__ == DOC
    assert [Path(p).resolve() for p in sub.__path__] == [root / "privacy"]
    assert sys.modules[TOP].privacy is sub


@pytest.mark.parametrize("spec", [
    None,  # not installed at all
    importlib.machinery.ModuleSpec(TOP, None, is_package=False),  # a module, not a package
])
def test_a_missing_tensorflow_privacy_is_refused_naming_the_fix(fresh, spec) -> None:
    with fresh.context() as mp:
        fake_spec(mp, spec)
        with pytest.raises(TfPrivacyImportError) as err:
            dp_queries._install_stub_packages()
    message = str(err.value)
    assert message.startswith("tensorflow-privacy is not installed")
    assert message.endswith(f"(pip install {pinned_requirement()})")
    assert TOP not in sys.modules and SUB not in sys.modules


@pytest.mark.parametrize("missing", ["", "privacy"])
def test_a_changed_layout_is_refused_naming_the_directory(fresh, tmp_path, missing) -> None:
    root = tmp_path / "tensorflow_privacy"
    if missing:  # the top package is there, its subpackage is not
        root.mkdir()
    expected = os.path.join(str(root), missing) if missing else str(root)
    spec = importlib.machinery.ModuleSpec(TOP, None, is_package=True)
    spec.submodule_search_locations = [str(root)]
    with fresh.context() as mp:
        fake_spec(mp, spec)
        with pytest.raises(TfPrivacyImportError) as err:
            dp_queries._install_stub_packages()
    assert str(err.value) == (
        f"tensorflow-privacy layout changed: expected package directory {expected!r}")
    assert SUB not in sys.modules


def test_the_first_search_location_is_the_package(fresh, tmp_path) -> None:
    first, second = tmp_path / "a" / "tensorflow_privacy", tmp_path / "b" / "tensorflow_privacy"
    for d in (first, second):
        (d / "privacy").mkdir(parents=True)
    spec = importlib.machinery.ModuleSpec(TOP, None, is_package=True)
    spec.submodule_search_locations = [str(first), str(second)]
    with fresh.context() as mp:
        fake_spec(mp, spec)
        dp_queries._install_stub_packages()
    assert sys.modules[TOP].__path__ == [str(first)]
    assert sys.modules[SUB].__path__ == [str(first / "privacy")]


# -- _load -----------------------------------------------------------------------------------


def test_load_returns_tensorflow_privacys_own_module() -> None:
    module = dp_queries._load("gaussian_query")
    assert module is sys.modules[f"{SUB}.dp_query.gaussian_query"]
    assert module.GaussianSumQuery is dp_queries.GaussianSumQuery
    assert Path(module.__file__).resolve() == installed_root() / "privacy/dp_query/gaussian_query.py"


def test_load_failure_names_the_module_and_the_workaround() -> None:
    with pytest.raises(TfPrivacyImportError) as err:
        dp_queries._load("no_such_query")
    message = str(err.value)
    assert f"could not import {SUB}.dp_query.no_such_query" in message
    assert "fedactors/privacy/dp_queries.py" in message
    assert isinstance(err.value.__cause__, ModuleNotFoundError)
    assert repr(err.value.__cause__) in message


# -- _make_states_picklable ------------------------------------------------------------------


class Query:
    """Shaped like a tensorflow-privacy query: states as nested namedtuples, and other things."""

    _State = namedtuple("_State", ["x"])
    DEFAULT = namedtuple("Default", ["y"])(1)  # an instance: has _fields, is no class

    class _Tuple(tuple):  # a tuple class that is not a namedtuple
        pass

    class _Other:
        pass

    def method(self) -> None:
        pass


def test_only_nested_namedtuple_classes_are_renamed() -> None:
    before = {name: (v.__qualname__, v.__module__)
              for name, v in vars(Query).items() if isinstance(v, type)}
    dp_queries._make_states_picklable(Query)
    assert (Query._State.__qualname__, Query._State.__module__) == (
        "Query._State", "fedactors.privacy.dp_queries")
    for name in ("_Tuple", "_Other"):
        cls = getattr(Query, name)
        assert (cls.__qualname__, cls.__module__) == before[name]
    assert Query.DEFAULT == (1,) and Query.method.__qualname__ == "Query.method"


def test_upstream_state_names_are_made_picklable(restored) -> None:
    # tensorflow-privacy names its states as if at module level: pickle cannot find them.
    cls = dp_queries.GaussianSumQuery
    state_cls = cls._GlobalState
    state_cls.__qualname__ = "_GlobalState"  # (the fixture restores both)
    state_cls.__module__ = f"{SUB}.dp_query.gaussian_query"
    state = cls(l2_norm_clip=1.0, stddev=0.5).initial_global_state()
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(state)
    dp_queries._make_states_picklable(cls)
    payload = pickle.dumps(state)
    assert global_names(payload) == {"fedactors.privacy.dp_queries"}
    restored_state = pickle.loads(payload)
    assert type(restored_state) is state_cls
    assert float(restored_state.l2_norm_clip) == 1.0 and float(restored_state.stddev) == 0.5


def test_every_state_class_is_named_after_this_module(restored) -> None:
    # Running the renaming again (a reload of the module) changes nothing.
    names = {cls: {n: (s.__qualname__, s.__module__) for n, s in state_classes(cls).items()}
             for cls in QUERIES}
    dp_queries._make_states_picklable(*QUERIES)
    for cls in QUERIES:
        states = state_classes(cls)
        assert states, cls
        for name, state in states.items():
            assert (state.__qualname__, state.__module__) == names[cls][name] == (
                f"{cls.__name__}.{name}", "fedactors.privacy.dp_queries")


# -- the whole import, in a fresh interpreter ------------------------------------------------

CHILD = r"""
import json, pickle, sys
state = pickle.loads(sys.stdin.buffer.read())  # must import fedactors.privacy.dp_queries only
import fedactors
from fedactors.privacy import dp_queries as dq
top, sub = sys.modules["tensorflow_privacy"], sys.modules["tensorflow_privacy.privacy"]
gauss = dq.GaussianSumQuery(l2_norm_clip=2.0, stddev=0.5).initial_global_state()
adaptive = dq.QuantileAdaptiveClipSumQuery(
    initial_l2_norm_clip=1.0, noise_multiplier=1.0, target_unclipped_quantile=0.5,
    learning_rate=0.2, clipped_count_stddev=1.0, expected_num_records=10,
).initial_global_state()
json.dump({
    "fedactors": fedactors.__file__,
    "state": [type(state).__module__, type(state).__qualname__, float(state.l2_norm_clip)],
    "stubs": [[m.__name__, m.__doc__, list(m.__path__), m.__file__, m.__package__]
              for m in (top, sub)],
    "parent_attribute": getattr(top, "privacy", None) is sub,
    "real_init_ran": hasattr(top, "__version__") or "tensorflow_privacy.v1" in sys.modules,
    "pickles": [pickle.dumps(gauss).hex(), pickle.dumps(adaptive).hex()],
}, sys.stdout)
"""


@pytest.mark.slow  # a fresh interpreter imports TensorFlow: ~5 s
@pytest.mark.mutation  # kept in mutmut's selection: the only run of the import-time code
def test_a_fresh_interpreter_installs_the_workaround_and_reads_a_checkpointed_state(
        fresh) -> None:
    # In this process (so that mutmut sees this test reach the workaround): the stubs it
    # builds on a clean sys.modules, to compare with the fresh interpreter's below.
    dp_queries._install_stub_packages()
    here = [[m.__name__, m.__doc__, list(m.__path__), m.__file__, m.__package__]
            for m in (sys.modules[TOP], sys.modules[SUB])]
    assert dp_queries._load("gaussian_query").GaussianSumQuery is dp_queries.GaussianSumQuery
    dp_queries._make_states_picklable(*QUERIES)  # again: renames nothing that was named

    sent = dp_queries.QuantileAdaptiveClipSumQuery(
        initial_l2_norm_clip=3.0, noise_multiplier=1.0, target_unclipped_quantile=0.5,
        learning_rate=0.2, clipped_count_stddev=1.0, expected_num_records=10,
    ).initial_global_state().sum_state
    payload = pickle.dumps(sent)
    assert global_names(payload) == {"fedactors.privacy.dp_queries"}

    # The fresh interpreter imports the fedactors this process imported, and inherits the
    # environment (so a mutant switched on here is on there, from its first import).
    package_dir = str(Path(fedactors.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_dir, *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    proc = subprocess.run([sys.executable, "-c", CHILD], input=payload, capture_output=True,
                          cwd=os.getcwd(), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = json.loads(proc.stdout)

    assert Path(out["fedactors"]).resolve() == Path(fedactors.__file__).resolve()
    assert out["state"] == ["fedactors.privacy.dp_queries", "GaussianSumQuery._GlobalState", 3.0]
    root = installed_root()
    for (name, doc, path, file, package), expected in zip(out["stubs"], (root, root / "privacy")):
        assert doc == DOC and package == name
        assert [Path(p).resolve() for p in path] == [expected]
        assert Path(file).resolve() == expected / "__init__.py"
    assert [s[0] for s in out["stubs"]] == [TOP, SUB]
    assert out["stubs"] == here
    assert out["parent_attribute"] is True
    assert out["real_init_ran"] is False

    gauss, adaptive = (bytes.fromhex(p) for p in out["pickles"])
    for received in (gauss, adaptive):
        assert global_names(received) == {"fedactors.privacy.dp_queries"}
    g = pickle.loads(gauss)
    assert type(g) is dp_queries.GaussianSumQuery._GlobalState
    assert (float(g.l2_norm_clip), float(g.stddev)) == (2.0, 0.5)
    a = pickle.loads(adaptive)
    assert type(a) is dp_queries.QuantileAdaptiveClipSumQuery._GlobalState
    assert float(a.sum_state.l2_norm_clip) == 1.0
