import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fedactors.data import make_hospital_data
from fedactors.data.healthcare import MIN_HOSPITAL_SIZE, hospital_sizes
from fedactors.errors import ConfigError


def test_split_covers_every_row_once_with_skewed_sizes():
    data = make_hospital_data(10, np.random.default_rng(0))
    sizes = [data.num_examples(i) for i in range(data.num_devices)]
    assert data.num_devices == 10 and min(sizes) >= MIN_HOSPITAL_SIZE
    assert max(sizes) >= 5 * min(sizes)  # "very different sizes"
    assert sum(sizes) + len(data.test[1]) == 569
    assert abs(len(data.test[1]) / 569 - 0.2) < 0.01
    rows = np.concatenate([x for x, _ in data.clients] + [data.test[0]])
    assert len(np.unique(rows, axis=0)) == 569  # no row in two places
    for x, y in data.clients + (data.test,):
        assert x.dtype == np.float32 and x.shape[1] == 30
        assert y.dtype == np.int32 and set(np.unique(y)) <= {0, 1}
    assert np.all(np.abs(rows) < 1.1)  # documented ranges put features in about [-1, 1]


def test_deterministic_and_seed_dependent():
    a = make_hospital_data(5, np.random.default_rng(1))
    b = make_hospital_data(5, np.random.default_rng(1))
    c = make_hospital_data(5, np.random.default_rng(2))
    for (xa, ya), (xb, yb) in zip(a.clients, b.clients):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a.test[0], c.test[0])


def test_sizes_sum_exactly_and_zero_skew_is_even():
    rng = np.random.default_rng(0)
    assert hospital_sizes(7, 455, 1.5, rng).sum() == 455
    even = hospital_sizes(7, 455, 0.0, rng)
    assert even.max() - even.min() <= 1


def test_centralized_accuracy():
    data = make_hospital_data(8, np.random.default_rng(0))
    x = np.concatenate([x for x, _ in data.clients])
    y = np.concatenate([y for _, y in data.clients])
    accuracy = LogisticRegression(max_iter=1000).fit(x, y).score(*data.test)
    print(f"\nhealthcare: centralized logistic regression test accuracy {accuracy:.3f}")
    assert accuracy >= 0.9


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_hospitals": 0}, "num_hospitals"),
        ({"num_hospitals": 200}, "num_hospitals"),  # 200 * 5 > 455 training rows
        ({"num_hospitals": 3, "test_fraction": 1.0}, "test_fraction"),
        ({"num_hospitals": 3, "size_skew": -1.0}, "size_skew"),
    ],
)
def test_bad_options(kwargs, field):
    with pytest.raises(ConfigError) as info:
        make_hospital_data(rng=np.random.default_rng(0), **kwargs)
    assert info.value.field == field
