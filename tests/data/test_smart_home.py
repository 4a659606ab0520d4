import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fedactors.data import ACTIVITIES, DEVICE_KINDS, make_smart_home_data
from fedactors.data.smart_home import _OBSERVES, FEATURES
from fedactors.errors import ConfigError


def fleet(seed=0, devices=48, test_size=2000):
    rng = np.random.default_rng(seed)
    kinds = [DEVICE_KINDS[i % len(DEVICE_KINDS)] for i in range(devices)]
    households = [i // len(DEVICE_KINDS) for i in range(devices)]  # one of each kind per home
    examples = [40 + 5 * i for i in range(devices)]
    return kinds, households, examples, make_smart_home_data(
        kinds, households, examples, rng, test_size=test_size
    )


def pooled(data):
    return (
        np.concatenate([x for x, _ in data.clients]),
        np.concatenate([y for _, y in data.clients]),
    )


def test_shapes_dtypes_and_counts():
    kinds, _, examples, data = fleet()
    assert len(ACTIVITIES) >= 5 and data.num_devices == len(kinds)
    assert [data.num_examples(i) for i in range(data.num_devices)] == examples
    x, y = data.client(0)
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert x.shape[1] == len(FEATURES)
    assert data.test[0].shape == (2000, len(FEATURES))
    assert set(np.unique(data.test[1])) <= set(range(len(ACTIVITIES)))
    # Roughly unit scale after the model's fixed standardization.
    px, _ = pooled(data)
    assert np.all(np.abs(px.mean(axis=0)) < 0.5) and np.all(px.std(axis=0) < 2.0)


def test_each_kind_sees_only_its_sensors():
    kinds, _, _, data = fleet()
    for i, kind in enumerate(kinds):
        x, _ = data.client(i)
        seen = set(_OBSERVES[kind]) | {"hour_sin", "hour_cos"}
        for f, name in enumerate(FEATURES):
            if name not in seen:
                assert np.all(x[:, f] == 0.0), (kind, name)
            else:
                assert np.any(x[:, f] != 0.0), (kind, name)


def test_deterministic_for_a_generator_state():
    _, _, _, a = fleet(seed=3)
    _, _, _, b = fleet(seed=3)
    _, _, _, c = fleet(seed=4)
    for (xa, ya), (xb, yb) in zip(a.clients + (a.test,), b.clients + (b.test,)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a.test[0], c.test[0])


def test_centralized_model_learns_and_devices_are_label_skewed():
    _, households, _, data = fleet()
    x, y = pooled(data)
    chance = 1.0 / len(ACTIVITIES)
    model = LogisticRegression(max_iter=500).fit(x, y)
    accuracy = model.score(*data.test)
    print(f"\nsmart home: centralized logistic regression test accuracy {accuracy:.3f} "
          f"(chance {chance:.3f})")
    assert 2 * chance <= accuracy < 0.98

    # Label skew: total-variation distance of each device's label mix from the pool's.
    population = np.bincount(y, minlength=len(ACTIVITIES)) / len(y)
    tv = [
        0.5 * np.abs(np.bincount(yd, minlength=len(ACTIVITIES)) / len(yd) - population).sum()
        for _, yd in data.clients
    ]
    print(f"smart home: mean label TV distance device vs population {np.mean(tv):.3f}")
    assert np.mean(tv) > 0.2
    # Devices of one household share a routine: their label mixes are far closer.
    same = 0.5 * np.abs(
        np.bincount(data.client(0)[1], minlength=7) / data.num_examples(0)
        - np.bincount(data.client(1)[1], minlength=7) / data.num_examples(1)
    ).sum()
    assert households[0] == households[1] and same < np.mean(tv)


def test_more_concentration_means_less_skew():
    def skew(concentration):
        rng = np.random.default_rng(0)
        d = make_smart_home_data(["hub"] * 30, list(range(30)), [200] * 30, rng, 10,
                                 routine_concentration=concentration)
        y = np.concatenate([yd for _, yd in d.clients])
        pop = np.bincount(y, minlength=7) / len(y)
        return np.mean([0.5 * np.abs(np.bincount(yd, minlength=7) / len(yd) - pop).sum()
                        for _, yd in d.clients])

    assert skew(100.0) < skew(1.0)


@pytest.mark.parametrize(
    "kinds, households, examples, field",
    [
        (["toaster"], [0], [5], "kinds[0]"),
        (["hub", "plug"], [0], [5, 5], "households"),
        (["hub"], [0], [0], "examples[0]"),
        (["hub"], ["a"], [3], "households[0]"),
        ([], [], [], "kinds"),
    ],
)
def test_bad_fleet_is_a_config_error(kinds, households, examples, field):
    with pytest.raises(ConfigError) as info:
        make_smart_home_data(kinds, households, examples, np.random.default_rng(0))
    assert info.value.field == field
