"""The aggregation interface: what the server may see of contributions, the default
contribution spec, what a Wrapper forwards, and the DP-forwarding check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from fedactors.aggregation.base import (
    Aggregate,
    Aggregator,
    Contributions,
    IndividualUpdatesHidden,
    PlainContributions,
    PrivateRelease,
    RoundContext,
    SummedContributions,
    Wrapper,
    check_privacy_forwarded,
)
from fedactors.aggregation.clipping import Clipped, clip_l2
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.errors import ConfigError


def ctx(round_: int = 4) -> RoundContext:
    return RoundContext(round=round_, expected_count=2, selected=2, rng=np.random.default_rng(0))


class Stateful(Aggregator[int]):
    """A stage whose every answer depends on what it was given, to see what is forwarded."""

    def initial_state(self, dim: int) -> int:
        return 10 * dim

    def client_params(self, state: int) -> Mapping[str, Any]:
        return {"offset": float(state)}

    def encode(self, params, delta, num_examples, rng) -> dict[str, np.ndarray]:
        return {"shifted": (np.asarray(delta, np.float64) + params["offset"]).astype(np.float32),
                "draw": np.array([rng.random()], np.float32),
                "examples": np.array([num_examples], np.float32)}

    def aggregate(self, state: int, contributions: Contributions, ctx: RoundContext) -> Aggregate[int]:
        summed = contributions.sum()["shifted"]
        return Aggregate(summed.astype(np.float32), state + 1,
                         {"round": float(ctx.round), "count": float(contributions.count)})

    def contribution_bounds(self, params: Mapping[str, Any], dim: int) -> dict[str, float]:
        return {"shifted": params["bound"] * dim}


class Forwarding(Wrapper[int]):
    """A wrapper that adds nothing: everything is the default forwarding."""

    def encode(self, params, delta, num_examples, rng) -> dict[str, np.ndarray]:
        return self.inner.encode(params, delta, num_examples, rng)


# -- contributions -------------------------------------------------------------------


def test_integer_keys_are_summed_exactly_and_float_keys_in_float64() -> None:
    big = 2**53  # the first integer float64 cannot add 1 to
    rows = [{"count": np.array([big], np.int64), "x": np.array([1.0], np.float32)},
            {"count": np.array([1], np.int64), "x": np.array([2.0**-30], np.float32)}]
    summed = PlainContributions(rows).sum()
    assert summed["count"].dtype.kind == "i" and summed["count"][0] == big + 1
    assert summed["x"].dtype == np.float64 and summed["x"][0] == 1.0 + 2.0**-30


def test_only_the_sum_is_visible_under_secure_aggregation() -> None:
    hidden = SummedContributions({"x": np.array([3.0, 4.0])}, count=2)
    assert hidden.count == 2
    np.testing.assert_array_equal(hidden.sum()["x"], [3.0, 4.0])
    with pytest.raises(IndividualUpdatesHidden) as info:
        hidden.stacked()
    message = str(info.value)
    assert "individual updates" in message and "secure aggregation" in message


def test_an_empty_cohort_stacks_and_sums_to_nothing() -> None:
    assert PlainContributions([]).stacked() == {} and PlainContributions([]).sum() == {}


# -- the default contribution spec ---------------------------------------------------


class Passthrough(Aggregator[None]):
    """Sends the delta as given (a stage may rely on encode getting a float32 delta)."""

    def encode(self, params, delta, num_examples, rng) -> dict[str, np.ndarray]:
        return {"delta": delta, "examples": np.array([num_examples], np.int64)}

    def aggregate(self, state, contributions, ctx):  # pragma: no cover - not used
        raise NotImplementedError


def test_the_default_spec_is_that_of_a_device_s_float32_delta() -> None:
    # A device encodes a flat float32 delta: the spec must say so even for a stage that
    # passes the delta's dtype through, or every real update would be screened out.
    assert Passthrough().contribution_spec({}, 5) == {"delta": ((5,), np.dtype(np.float32)),
                                                      "examples": ((1,), np.dtype(np.int64))}


# -- Wrapper ------------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", [Forwarding, lambda inner: Clipped(1e9, inner)],
                         ids=["Wrapper", "Clipped"])
def test_a_wrapper_is_its_inner_stage_for_everything_it_does_not_change(wrap) -> None:
    inner, wrapper = Stateful(), wrap(Stateful())
    assert wrapper.initial_state(3) == inner.initial_state(3) == 30
    assert wrapper.client_params(30) == inner.client_params(30) == {"offset": 30.0}
    params = {"offset": 30.0, "bound": 2.0}
    assert wrapper.contribution_bounds(params, 3) == {"shifted": 6.0}
    delta = np.array([0.5, -1.0, 2.0], np.float32)
    a = wrapper.encode(params, delta, 9, np.random.default_rng(5))
    b = inner.encode(params, delta, 9, np.random.default_rng(5))  # the same stream, drawn the same
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    contributions = PlainContributions([a, b])
    out, expected = wrapper.aggregate(30, contributions, ctx(4)), inner.aggregate(30, contributions, ctx(4))
    np.testing.assert_array_equal(out.delta, expected.delta)
    assert out.state == 31 and out.measurements == {"round": 4.0, "count": 2.0}


def test_clipped_hands_the_clipped_delta_and_everything_else_unchanged_to_inner() -> None:
    stage = Clipped(1.0, Stateful())
    params = {"offset": 0.0}
    delta = np.array([3.0, 4.0], np.float32)
    out = stage.encode(params, delta, 7, np.random.default_rng(2))
    expected = Stateful().encode(params, clip_l2(delta, 1.0)[0], 7, np.random.default_rng(2))
    assert all(np.array_equal(out[k], expected[k]) for k in expected)


def test_clipped_refuses_an_inner_that_is_not_a_stage() -> None:
    with pytest.raises(ConfigError) as info:
        Clipped(1.0, "WeightedMean()")  # type: ignore[arg-type]
    assert info.value.field == "inner"
    assert repr("WeightedMean()") in info.value.message


# -- check_privacy_forwarded -------------------------------------------------------


class OwnRelease(Forwarding):
    """A DP wrapper around a stage that is not private itself: its declaration is its own."""

    def private_release(self) -> PrivateRelease:
        return PrivateRelease(noise_multiplier=1.0, expected_count=10)


class Hides(Forwarding):
    def private_release(self):
        return None


def test_a_wrapper_may_declare_a_release_of_its_own_around_a_plain_stage() -> None:
    stage = OwnRelease(WeightedMean())
    assert check_privacy_forwarded(stage) == PrivateRelease(1.0, 10)
    assert check_privacy_forwarded(Clipped(1.0, stage)) == PrivateRelease(1.0, 10)
    assert check_privacy_forwarded(Clipped(1.0, WeightedMean())) is None


def test_a_wrapper_hiding_a_release_is_named_in_the_refusal() -> None:
    with pytest.raises(ValueError, match="does not forward its private_release") as info:
        check_privacy_forwarded(Clipped(1.0, Hides(OwnRelease(WeightedMean()))))
    assert str(info.value).startswith("Hides wraps")
