"""Shared test set-up: quiet TensorFlow, Hypothesis profiles, and async tests on the virtual clock.

Hypothesis profiles (docs/testing.md):

* ``dev`` (the default): random examples, remembered in ``.hypothesis/`` so a
  failure found once is replayed first next time.
* ``ci`` (loaded when the environment variable ``CI`` is set): derandomized,
  so every run of the same code tries the same examples, and a failure prints
  the ``@reproduce_failure`` blob to replay it anywhere.
* ``thorough`` (``HYPOTHESIS_PROFILE=thorough``): 1,000 examples for tests that
  do not pin ``max_examples``, and ten times the pinned number
  (``HYPOTHESIS_SCALE`` to change the factor) for those that do.

``HYPOTHESIS_PROFILE=NAME`` picks any of them explicitly (and wins over
``CI``); so does pytest's ``--hypothesis-profile NAME``.

The profile is loaded here, before any test module is imported, because a
``@settings(max_examples=...)`` decorator takes every setting it does not name
from the profile loaded when it runs: that is how tests that pin their own
``max_examples`` are still derandomized under ``ci``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from fedactors.runtime.loop import VirtualTimeLoop  # noqa: E402

# Each profile starts from Hypothesis's own defaults, not from whatever profile is loaded
# now (Hypothesis itself loads its built-in "ci" profile when it sees CI set).
_BASE = settings.get_profile("default")
settings.register_profile("dev", _BASE, deadline=None, print_blob=True)
settings.register_profile(
    "ci", _BASE, derandomize=True, deadline=None, print_blob=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", _BASE, max_examples=1000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def load_hypothesis_profile(environ) -> tuple[str, str]:
    """Load the profile ``environ`` asks for; return its name and why it was chosen."""
    if environ.get("HYPOTHESIS_PROFILE"):
        name, why = environ["HYPOTHESIS_PROFILE"], "HYPOTHESIS_PROFILE"
    elif environ.get("CI"):
        name, why = "ci", "CI is set"
    else:
        name, why = "dev", "default"
    settings.load_profile(name)
    return name, why


#: Which profile this run uses, and why (shown in pytest's header).
PROFILE, PROFILE_REASON = load_hypothesis_profile(os.environ)
THOROUGH_SCALE = int(os.environ.get("HYPOTHESIS_SCALE", "10"))


def pytest_report_header(config) -> str:
    return f"fedactors hypothesis profile: {PROFILE} ({PROFILE_REASON})"


def pytest_collection_modifyitems(config, items) -> None:
    if settings.get_current_profile_name() != "thorough":
        return
    profile = settings.get_profile("thorough")
    for item in items:
        test = getattr(item, "obj", None)
        # Hypothesis keeps a test's effective settings on the wrapped function. A test
        # without its own @settings has the profile itself (1,000 examples); one that
        # pins max_examples gets THOROUGH_SCALE times that (once per function:
        # parametrized items share it).
        current = getattr(test, "_hypothesis_internal_use_settings", None)
        if current is None or current is profile or getattr(test, "_fedactors_scaled", False):
            continue
        test._hypothesis_internal_use_settings = settings(
            current, max_examples=current.max_examples * THOROUGH_SCALE)
        test._fedactors_scaled = True


# -- no TensorFlow while collecting -------------------------------------------------------
#
# mutmut forks its workers from a process that has only collected the tests
# (docs/testing.md). If collecting ran TensorFlow (an aggregator built in a module-level
# parametrize list: tensorflow-privacy's queries make tensors), that process holds
# TensorFlow's thread pools, and a forked worker that runs TensorFlow waits on them for ever:
# no CPU used, a false "timeout". So a test module that starts TensorFlow at import fails
# the collection, naming its line; build such objects inside the test (a factory in the
# parametrize list).

_tf_started_by: list[str] = []
#: Puts TensorFlow's own context initialisation back; None while nothing is being watched.
_stop_watching: Optional[Callable[[], None]] = None


def _watch_tensorflow_start() -> Callable[[], None]:
    import traceback

    from tensorflow.python.eager import context

    original = context.Context.ensure_initialized
    here = Path(__file__).parent.resolve()

    def ensure_initialized(self):
        if self._context_handle is None and not _tf_started_by:
            lines = [f"{Path(f.filename).resolve().relative_to(here.parent)}:{f.lineno}"
                     for f in traceback.extract_stack()[:-1]
                     if Path(f.filename).resolve().is_relative_to(here)]
            _tf_started_by.append(lines[-1] if lines else "a test module")
        return original(self)

    context.Context.ensure_initialized = ensure_initialized
    return lambda: setattr(context.Context, "ensure_initialized", original)


def pytest_collectstart(collector) -> None:
    global _stop_watching
    if _stop_watching is None:
        _stop_watching = _watch_tensorflow_start()


def pytest_collection_finish(session) -> None:
    global _stop_watching
    if _stop_watching is not None:
        _stop_watching()
        _stop_watching = None
    if _tf_started_by:
        raise pytest.UsageError(
            f"{_tf_started_by[0]} runs TensorFlow while the tests are collected; build it "
            "inside the test (mutmut's forked workers deadlock otherwise: docs/testing.md)")


def pytest_asyncio_loop_factories(config, item):
    """Every pytest-asyncio test runs on a fresh virtual-time loop."""
    return {"virtual_time": VirtualTimeLoop}



# -- runs shared by several tests --------------------------------------------------------
#
# A run is shared only where the tests read it and never change what it wrote; a test that
# needs its own run (a second run to compare with, other options) still makes it.


@pytest.fixture(scope="session")
def smart_home_two_rounds():
    """scenarios/smart_home.py, 2 rounds, default executor, events kept in memory."""
    from fedactors.scenarios.loader import load_scenario
    from fedactors.simulation import RunOptions, run_scenario

    scenario = load_scenario(Path(__file__).resolve().parents[1] / "scenarios" / "smart_home.py")
    return run_scenario(scenario, RunOptions(rounds=2, keep_events=True))
