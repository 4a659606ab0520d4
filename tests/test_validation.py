"""Field checks shared by every option (``fedactors.validation``): one clear message each."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedactors.errors import ConfigError
from fedactors.secagg.option import SecureAggregation
from fedactors.validation import open_unit


@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.0, 2.0, -1, math.inf, -math.inf, math.nan])
def test_every_number_outside_the_open_unit_interval_gets_the_same_message(bad) -> None:
    with pytest.raises(ConfigError) as err:
        open_unit("delta", bad)
    assert err.value.field == "delta" and "strictly between 0 and 1" in str(err.value)


@pytest.mark.parametrize("bad", ["0.5", True, None, [0.5]])
def test_what_is_not_a_number_is_said_to_be_one(bad) -> None:
    with pytest.raises(ConfigError, match="must be a number"):
        open_unit("delta", bad)


def test_inside_it_the_value_comes_back_as_a_float() -> None:
    assert open_unit("delta", np.float32(0.25)) == 0.25
    assert open_unit("delta", 1e-300) == 1e-300


def test_the_options_that_take_such_a_fraction_share_the_message() -> None:
    for bad in (0.0, 1.5, math.nan):
        with pytest.raises(ConfigError, match="strictly between 0 and 1"):
            SecureAggregation(threshold_fraction=bad)


def test_a_refusal_names_a_stage_by_its_repr_or_else_its_class() -> None:
    from fedactors.aggregation import Median
    from fedactors.errors import stage_label

    class Mine:  # no repr of its own: named by its class, not by its address
        pass

    assert stage_label(Mine()) == "Mine"
    assert stage_label(Median()) == repr(Median())
