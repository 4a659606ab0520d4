"""The public names a user reads about: shared by the API-reference and docs-site tests."""

from __future__ import annotations

import importlib
import inspect

#: Modules whose ``__all__`` is the public API.
MODULES = ("fedactors", "fedactors.aggregation", "fedactors.privacy", "fedactors.data")
#: And the names a Python caller runs a scenario with (the rest of that package is internal).
RUNNING = ("fedactors.simulation", ("run_scenario", "RunOptions", "RunResult"))


def public_objects() -> dict[str, object]:
    """Every public class and function, by the path of the module that defines it."""
    found: dict[str, object] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                found.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    module, names = RUNNING
    for attr in names:
        obj = getattr(importlib.import_module(module), attr)
        found.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return found
