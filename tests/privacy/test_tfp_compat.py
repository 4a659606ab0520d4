"""Guards the tensorflow-privacy import workaround in fedactors.privacy.dp_queries.

If one of these fails after a dependency upgrade, read the message: it says
whether the stub-package trick broke or the query API changed.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pytest


def test_query_modules_import_through_the_workaround() -> None:
    try:
        from fedactors.privacy import dp_queries
    except ImportError as exc:  # pragma: no cover - only on breakage
        pytest.fail(
            "The tensorflow-privacy import workaround in fedactors/privacy/dp_queries.py no "
            f"longer works: {exc!r}. Check the installed tensorflow-privacy layout."
        )
    for name in ("GaussianSumQuery", "QuantileAdaptiveClipSumQuery", "NormalizedQuery"):
        assert isinstance(getattr(dp_queries, name), type), name

    # The classes are tensorflow-privacy's own, loaded from its installed files ...
    root = Path(importlib.metadata.distribution("tensorflow-privacy").locate_file("tensorflow_privacy"))
    module = sys.modules["tensorflow_privacy.privacy.dp_query.gaussian_query"]
    assert dp_queries.GaussianSumQuery is module.GaussianSumQuery
    assert Path(module.__file__).resolve() == (root / "privacy/dp_query/gaussian_query.py").resolve()
    # ... through the stub packages, whose __path__ is the real directory: the package's
    # own __init__ (which fails under this TensorFlow) never ran. If a future
    # tensorflow-privacy imports cleanly, the real package is used as is (then it has
    # its __version__) and this still holds for its __path__.
    package = sys.modules["tensorflow_privacy"]
    assert [Path(p).resolve() for p in package.__path__] == [root.resolve()]
    assert [Path(p).resolve() for p in sys.modules["tensorflow_privacy.privacy"].__path__] == [
        (root / "privacy").resolve()]
    if not hasattr(package, "__version__"):
        assert package.__doc__ == "stub installed by fedactors.privacy.dp_queries"
        assert "tensorflow_privacy.v1" not in sys.modules  # the real __init__ imports it first


def test_queries_still_have_the_api_dp_mean_relies_on() -> None:
    import tensorflow as tf

    from fedactors.privacy.dp_queries import QuantileAdaptiveClipSumQuery

    q = QuantileAdaptiveClipSumQuery(
        initial_l2_norm_clip=1.0,
        noise_multiplier=0.0,
        target_unclipped_quantile=0.5,
        learning_rate=0.2,
        clipped_count_stddev=0.0,
        expected_num_records=2,
    )
    state = q.initial_global_state()
    # The state fields DPMean reads and rewrites; a rename upstream must fail here.
    fields = {
        "sum_state": state.sum_state._fields,
        "quantile": state.quantile_estimator_state._fields,
        "below": state.quantile_estimator_state.below_estimate_state._fields,
    }
    assert fields["sum_state"] == ("l2_norm_clip", "stddev"), fields
    assert "current_estimate" in fields["quantile"], fields
    assert "numerator_state" in fields["below"], fields
    record = q.preprocess_record(q.derive_sample_params(state), tf.constant([3.0, 4.0]))
    np.testing.assert_allclose(record.sum_state.numpy(), [0.6, 0.8], rtol=1e-6)
    assert float(record.quantile_estimator_state) == -0.5  # 5 > clip: "not below" is -0.5


def test_query_states_survive_pickling_for_checkpoints() -> None:
    import pickle

    from fedactors.privacy.dp_queries import QuantileAdaptiveClipSumQuery

    query = QuantileAdaptiveClipSumQuery(
        initial_l2_norm_clip=1.0, noise_multiplier=1.0, target_unclipped_quantile=0.5,
        learning_rate=0.2, clipped_count_stddev=1.0, expected_num_records=10,
        geometric_update=True,
    )
    state = query.initial_global_state()
    restored = pickle.loads(pickle.dumps(state))
    assert type(restored) is type(state)
    assert float(restored.sum_state.l2_norm_clip) == float(state.sum_state.l2_norm_clip)


def test_a_pickled_query_state_names_only_the_import_workaround() -> None:
    # Unpickling in a fresh process (a checkpoint read by another tool, or by a test) must
    # import fedactors.privacy.dp_queries, which installs the workaround, and never
    # tensorflow_privacy's own package __init__, which fails under TF 2.21.
    import pickle
    import pickletools

    from fedactors.privacy.dp_mean import DPMean

    agg = DPMean.adaptive_clipping(1.0, 1.0, 10)
    state = agg.initial_state(3)
    payload = pickle.dumps((state, agg.client_params(state)), protocol=pickle.HIGHEST_PROTOCOL)
    modules = {str(arg).split(" ")[0] for op, arg, _ in pickletools.genops(payload)
               if op.name in ("GLOBAL", "STACK_GLOBAL", "SHORT_BINUNICODE", "BINUNICODE")
               and isinstance(arg, str) and arg.startswith(("tensorflow_privacy", "fedactors"))}
    assert "fedactors.privacy.dp_queries" in modules
    assert not any(m.startswith("tensorflow_privacy") for m in modules), modules



def test_the_workaround_can_run_again_in_the_same_process():
    # A second run (e.g. importlib.reload of dp_queries) finds the stubs' specs and
    # the same directories instead of failing on a spec-less module.
    import importlib.util
    import sys

    from fedactors.privacy import dp_queries

    before = {name: sys.modules[name] for name in dp_queries._PACKAGES}
    for name, module in before.items():
        assert importlib.util.find_spec(name).submodule_search_locations == module.__path__
    dp_queries._install_stub_packages()
    assert {name: sys.modules[name] for name in dp_queries._PACKAGES} == before
