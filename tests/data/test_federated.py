import numpy as np
import pytest

from fedactors.data import FederatedData
from fedactors.errors import ConfigError


def pair(n, features=3, label=np.int32, x_dtype=np.float32):
    return np.zeros((n, features), x_dtype), np.zeros(n, label)


def test_accessors_and_read_only_copies():
    x0, y0 = pair(4)
    data = FederatedData.from_arrays([(x0, y0), pair(2)], pair(5))
    assert data.num_devices == 2
    assert [data.num_examples(i) for i in range(2)] == [4, 2]
    assert data.feature_shape == (3,)
    x, _ = data.client(0)
    # A copy: the caller's array and the stored one are independent ...
    x0[0, 0] = 7.0
    assert x[0, 0] == 0.0
    # ... and nobody can train in place on a device's data.
    with pytest.raises(ValueError):
        x[0, 0] = 1.0


def test_regression_labels_and_image_shaped_features():
    clients = [(np.ones((2, 4, 4, 1), np.float32), np.ones(2, np.float32))]
    test = (np.ones((3, 4, 4, 1), np.float32), np.ones(3, np.float32))
    data = FederatedData.from_arrays(clients, test)
    assert data.feature_shape == (4, 4, 1)


@pytest.mark.parametrize("device", [-1, 2, True])
def test_client_out_of_range(device):
    data = FederatedData.from_arrays([pair(1), pair(1)], pair(1))
    with pytest.raises(IndexError):
        data.client(device)


@pytest.mark.parametrize(
    "clients, field, words",
    [
        ([pair(2), pair(2, x_dtype=np.float64)], "clients[1].x", "float64"),
        ([pair(2), pair(2, features=4)], "clients[1].x", "device 1 has feature shape (4,)"),
        (
            [pair(2), (np.zeros((3, 3), np.float32), np.zeros(2, np.int32))],
            "clients[1].y",
            "x has 3",
        ),
        ([pair(2), pair(0)], "clients[1]", "at least 1 example"),
        ([pair(2, label=np.int64)], "clients[0].y", "int64"),
        ([pair(2, label=np.float32)], "clients[0].y", "float32"),  # test labels are int32
        ([(np.zeros(3, np.float32), np.zeros(3, np.int32))], "clients[0].x", "shape (3,)"),
        ([([1.0], [0])], "clients[0].x", "numpy array"),
        ([], "clients", "at least 1 device"),
    ],
)
def test_validation_names_device_and_problem(clients, field, words):
    with pytest.raises(ConfigError) as info:
        FederatedData.from_arrays(clients, pair(2))
    assert info.value.field == field
    assert words in str(info.value)


def test_nan_features_rejected():
    x, y = pair(2)
    x[1, 0] = np.nan
    with pytest.raises(ConfigError, match="finite") as info:
        FederatedData.from_arrays([pair(1), (x, y)], pair(1))
    assert info.value.field == "clients[1].x"


def test_empty_test_set_rejected():
    with pytest.raises(ConfigError) as info:
        FederatedData.from_arrays([pair(1)], pair(0))
    assert info.value.field == "test"


@pytest.mark.parametrize("test, field, words", [
    (pair(2, features=5), "test.x", "the test set has feature shape (5,), but the devices have"),
    (pair(2, label=np.float32), "test.y", "the test set has labels float32[], but the devices"),
])
def test_a_test_set_unlike_every_device_is_the_one_named(test, field, words):
    with pytest.raises(ConfigError) as info:
        FederatedData.from_arrays([pair(2), pair(3), pair(1)], test)
    assert info.value.field == field and words in str(info.value)
