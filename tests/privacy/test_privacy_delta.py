"""Every δ outside (0, 1) is refused with the same message, whichever side it falls on.

A new-user trial found ``Privacy(delta=2.0)`` answered "must be in [0, 1]" (which 0.0 and 1.0
satisfy) while ``delta=0.0`` got "strictly between 0 and 1".
"""

from __future__ import annotations

import numpy as np
import pytest

from fedactors.errors import ConfigError
from fedactors.privacy.spec import Privacy

OUTSIDE = [0.0, 0, 1.0, 1, 2.0, -1e-9, 1.0000001, float("inf"), float("-inf"), float("nan"),
           np.float32(2.0), np.float64(0.0)]


@pytest.mark.parametrize("delta", OUTSIDE, ids=repr)
def test_a_delta_outside_the_open_interval_gets_one_message(delta) -> None:
    with pytest.raises(ConfigError) as err:
        Privacy(delta=delta)
    assert err.value.field == "delta"
    assert err.value.message == f"must be strictly between 0 and 1, got {delta!r}"


@pytest.mark.parametrize("delta", ["1e-5", True, [1e-5]], ids=repr)
def test_a_delta_that_is_not_a_number_says_so(delta) -> None:
    with pytest.raises(ConfigError) as err:
        Privacy(delta=delta)
    assert err.value.field == "delta" and err.value.message.startswith("must be a number")


@pytest.mark.parametrize("delta", [1e-12, 1e-5, 0.5, 0.999, np.float32(1e-5), np.float64(0.1)])
def test_a_delta_inside_is_kept(delta) -> None:
    assert Privacy(delta=delta).delta_for(100) == float(delta)
