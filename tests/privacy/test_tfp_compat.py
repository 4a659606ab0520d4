"""Guards the tensorflow-privacy import workaround in fedactors.privacy.dp_queries.

If one of these fails after a dependency upgrade, read the message: it says
whether the stub-package trick broke or the query API changed.
"""

from __future__ import annotations

import sys

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
    assert sys.modules["tensorflow_privacy.privacy.dp_query.gaussian_query"].__name__


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
