"""tensorflow-privacy's DPQuery classes, imported without the package ``__init__``.

Why this module exists: ``import tensorflow_privacy`` fails under TensorFlow
2.21 because ``tensorflow_privacy/__init__.py`` eagerly imports its estimator
and Keras-2 optimizer code, which needs ``tf.estimator`` (removed). The
DPQuery modules themselves (``tensorflow_privacy.privacy.dp_query.*``) only
need ``tensorflow`` and ``dp_accounting`` and work fine.

The workaround: before importing a submodule, register *stub* package modules
for ``tensorflow_privacy`` and ``tensorflow_privacy.privacy`` in
``sys.modules``, each with the real ``__path__`` on disk. Python's import
system then finds submodules through that ``__path__`` without ever running
the real ``__init__``. ``tensorflow_privacy.privacy.dp_query`` has an empty
``__init__`` and is imported normally.

This is the ONLY place in fedactors that touches tensorflow-privacy's import
machinery; everything else imports the query classes from here.
``tests/privacy/test_tfp_compat.py`` fails loudly if it stops working (for
example after a tensorflow-privacy upgrade that moves the modules).

Modules that need tensorflow-probability (distributed discrete Gaussian,
Skellam) still fail under Keras 3 and are deliberately not exported.

If the real package has already been imported successfully (a future
tensorflow-privacy that works with this TensorFlow), it is used as is.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types

_PACKAGES = ("tensorflow_privacy", "tensorflow_privacy.privacy")


class TfPrivacyImportError(ImportError):
    """The DPQuery modules of tensorflow-privacy could not be imported."""


def _install_stub_packages() -> None:
    spec = importlib.util.find_spec("tensorflow_privacy")
    if spec is None or not spec.submodule_search_locations:
        raise TfPrivacyImportError(
            "tensorflow-privacy is not installed (pip install tensorflow-privacy==0.9.0)"
        )
    root = list(spec.submodule_search_locations)[0]
    for name in _PACKAGES:
        existing = sys.modules.get(name)
        if existing is not None and getattr(existing, "__path__", None):
            # Real (or previously stubbed) package: leave it alone.
            continue
        rel = name.split(".")[1:]
        path = os.path.join(root, *rel)
        if not os.path.isdir(path):
            raise TfPrivacyImportError(
                f"tensorflow-privacy layout changed: expected package directory {path!r}"
            )
        stub = types.ModuleType(name, "stub installed by fedactors.privacy.dp_queries")
        stub.__path__ = [path]  # what makes it a package for submodule lookup
        # A spec, so that find_spec() on an installed stub answers (a second call,
        # e.g. importlib.reload of this module, finds the same directory).
        stub.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        stub.__spec__.submodule_search_locations = [path]
        stub.__file__ = os.path.join(path, "__init__.py")
        stub.__package__ = name
        sys.modules[name] = stub
        if "." in name:
            parent, _, child = name.rpartition(".")
            setattr(sys.modules[parent], child, stub)


def _load(module: str) -> types.ModuleType:
    try:
        return importlib.import_module(f"tensorflow_privacy.privacy.dp_query.{module}")
    except Exception as exc:  # any failure here means the workaround is broken
        raise TfPrivacyImportError(
            f"could not import tensorflow_privacy.privacy.dp_query.{module} through the "
            f"stub-package workaround in fedactors/privacy/dp_queries.py: {exc!r}"
        ) from exc


_install_stub_packages()

_dp_query = _load("dp_query")
_gaussian_query = _load("gaussian_query")
_normalized_query = _load("normalized_query")
_quantile_estimator_query = _load("quantile_estimator_query")
_quantile_adaptive_clip_sum_query = _load("quantile_adaptive_clip_sum_query")
_tree_aggregation = _load("tree_aggregation")
_tree_aggregation_query = _load("tree_aggregation_query")
_restart_query = _load("restart_query")
_quantile_adaptive_clip_tree_query = _load("quantile_adaptive_clip_tree_query")
#: DP-FTRL's accountant (``compute_rdp_single_tree``); only needs numpy and dp-accounting.
tree_aggregation_accountant = importlib.import_module(
    "tensorflow_privacy.privacy.analysis.tree_aggregation_accountant")

def _make_states_picklable(*query_classes: type) -> None:
    """Give the queries' state namedtuples importable qualified names.

    tensorflow-privacy defines its states (e.g. ``GaussianSumQuery._GlobalState``)
    inside the query classes but names them as if at module level, so pickle
    cannot find them and a DP run's server state could not be checkpointed.
    They are named here as attributes of *this* module's names
    (``fedactors.privacy.dp_queries.GaussianSumQuery._GlobalState``): unpickling
    one in a fresh process then imports this module, which installs the import
    workaround, instead of tensorflow-privacy's failing package ``__init__``.
    A state defined at module level (``TreeState``) is passed itself and named
    as this module's attribute of the same name.
    """
    for cls in query_classes:
        if issubclass(cls, tuple) and hasattr(cls, "_fields"):  # a module-level state
            cls.__module__ = __name__
            continue
        for name, value in vars(cls).items():
            if isinstance(value, type) and issubclass(value, tuple) and hasattr(value, "_fields"):
                value.__qualname__ = f"{cls.__name__}.{name}"
                value.__module__ = __name__


DPQuery = _dp_query.DPQuery
SumAggregationDPQuery = _dp_query.SumAggregationDPQuery
GaussianSumQuery = _gaussian_query.GaussianSumQuery
NormalizedQuery = _normalized_query.NormalizedQuery
QuantileEstimatorQuery = _quantile_estimator_query.QuantileEstimatorQuery
QuantileAdaptiveClipSumQuery = _quantile_adaptive_clip_sum_query.QuantileAdaptiveClipSumQuery
# DP-FTRL: tree aggregation of the noise (Kairouz et al. 2021) and its restarts.
TreeResidualSumQuery = _tree_aggregation_query.TreeResidualSumQuery
TreeState = _tree_aggregation.TreeState
GaussianNoiseGenerator = _tree_aggregation.GaussianNoiseGenerator
RestartQuery = _restart_query.RestartQuery
PeriodicRoundRestartIndicator = _restart_query.PeriodicRoundRestartIndicator
# DP-FTRL with adaptive clipping: the clip follows a tree-aggregated quantile estimate.
TreeQuantileEstimatorQuery = _quantile_estimator_query.TreeQuantileEstimatorQuery
QAdaClipTreeResSumQuery = _quantile_adaptive_clip_tree_query.QAdaClipTreeResSumQuery

_make_states_picklable(GaussianSumQuery, NormalizedQuery, QuantileEstimatorQuery,
                       QuantileAdaptiveClipSumQuery, TreeResidualSumQuery, TreeState,
                       GaussianNoiseGenerator, RestartQuery, QAdaClipTreeResSumQuery)

__all__ = [
    "DPQuery",
    "GaussianNoiseGenerator",
    "GaussianSumQuery",
    "NormalizedQuery",
    "PeriodicRoundRestartIndicator",
    "QAdaClipTreeResSumQuery",
    "QuantileAdaptiveClipSumQuery",
    "QuantileEstimatorQuery",
    "RestartQuery",
    "SumAggregationDPQuery",
    "TfPrivacyImportError",
    "TreeQuantileEstimatorQuery",
    "TreeResidualSumQuery",
    "TreeState",
    "tree_aggregation_accountant",
]
