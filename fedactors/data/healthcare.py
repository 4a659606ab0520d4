"""The Wisconsin diagnostic breast-cancer data split across hospitals of very different sizes.

The data ships inside scikit-learn (569 biopsies, 30 features), so nothing is
downloaded at run time. Labels are sklearn's: 0 = malignant, 1 = benign.

Scaling, and why not by global statistics: a server that computed the mean
and spread of every hospital's rows would learn from data it must never see.
Instead each feature goes through ``log1p`` (sizes and areas are heavily
right-skewed) and is then mapped to [-1, 1] by the *documented* minimum and
maximum of that feature, :data:`DOCUMENTED_RANGE`, copied from the dataset's
published description (``load_breast_cancer().DESCR``). Every hospital and the
server apply the same public constants, so no statistic of anyone's rows
crosses a boundary at run time. Caveat, stated honestly: the dataset's authors
computed those published ranges over all 569 rows, test rows included, so the
range (only) is not independent of the test set.
"""

from __future__ import annotations

import numpy as np

from fedactors.data.federated import FederatedData
from fedactors.errors import ConfigError
from fedactors.validation import non_negative, open_unit, positive_int

#: Published (min, max) of each of the 30 features, in sklearn's column order:
#: 10 means, 10 standard errors, 10 "worst" values.
DOCUMENTED_RANGE = np.array(
    [
        (6.981, 28.11), (9.71, 39.28), (43.79, 188.5), (143.5, 2501.0), (0.053, 0.163),
        (0.019, 0.345), (0.0, 0.427), (0.0, 0.201), (0.106, 0.304), (0.05, 0.097),
        (0.112, 2.873), (0.36, 4.885), (0.757, 21.98), (6.802, 542.2), (0.002, 0.031),
        (0.002, 0.135), (0.0, 0.396), (0.0, 0.053), (0.008, 0.079), (0.001, 0.03),
        (7.93, 36.04), (12.02, 49.54), (50.41, 251.2), (185.2, 4254.0), (0.071, 0.223),
        (0.027, 1.058), (0.0, 1.252), (0.0, 0.291), (0.156, 0.664), (0.055, 0.208),
    ]
)  # fmt: skip

#: The fewest examples any hospital holds, so every site can take a local step.
MIN_HOSPITAL_SIZE = 5


def scale_features(raw: np.ndarray) -> np.ndarray:
    """Map raw features to about [-1, 1] using only the public documented ranges."""
    lo, hi = np.log1p(DOCUMENTED_RANGE[:, 0]), np.log1p(DOCUMENTED_RANGE[:, 1])
    return (2.0 * (np.log1p(raw) - lo) / (hi - lo) - 1.0).astype(np.float32)


def hospital_sizes(
    num_hospitals: int, total: int, size_skew: float, rng: np.random.Generator
) -> np.ndarray:
    """How many examples each hospital gets: Zipf shares ``1 / rank**size_skew``
    on top of a floor of :data:`MIN_HOSPITAL_SIZE`, ranks shuffled so hospital 0
    is not always the biggest. ``size_skew=0`` gives equal sizes."""
    floor = MIN_HOSPITAL_SIZE * num_hospitals
    if floor > total:
        raise ConfigError(
            "num_hospitals",
            f"{num_hospitals} hospitals need {floor} training examples "
            f"({MIN_HOSPITAL_SIZE} each), only {total} available",
        )
    shares = 1.0 / np.arange(1, num_hospitals + 1) ** size_skew
    ideal = (total - floor) * shares / shares.sum()
    extra = np.floor(ideal).astype(int)
    # Largest remainders get the leftover examples so sizes sum exactly to total.
    leftover = (total - floor) - extra.sum()
    extra[np.argsort(-(ideal - extra), kind="stable")[:leftover]] += 1
    return rng.permutation(MIN_HOSPITAL_SIZE + extra)


def make_hospital_data(
    num_hospitals: int,
    rng: np.random.Generator,
    test_fraction: float = 0.2,
    size_skew: float = 1.2,
) -> FederatedData:
    """Breast-cancer biopsies split across ``num_hospitals`` hospitals.

    A random ``test_fraction`` of rows (stratified by label, so the server's
    test set has the population's class balance) is the server's test set;
    the rest is shuffled and dealt out by ``hospital_sizes``. Labels are
    int32, 0 = malignant and 1 = benign. Hospitals differ in size (and hence,
    by chance, in class mix); features are scaled by ``scale_features``.

    The data ships inside scikit-learn, so nothing is downloaded; the first
    call imports scikit-learn, which takes a moment.

    Args:
        num_hospitals: Number of hospitals (devices), >= 1; in a scenario,
            ``fleet.size``. Each gets at least ``MIN_HOSPITAL_SIZE`` (5)
            training examples, so with the default ``test_fraction`` at most
            91 hospitals fit in the 456 training rows.
        rng: The ``numpy.random.Generator`` every draw comes from (test split,
            shuffle, sizes): the same generator state gives the same split.
        test_fraction: Share of each class's rows held out as the server's
            test set, strictly between 0 and 1. Default 0.2 (113 of 569 rows).
        size_skew: Zipf exponent (>= 0) of hospital sizes: the hospital of rank
            ``r`` gets a share proportional to ``1 / r**size_skew`` of the rows
            above the 5-example floor, ranks shuffled. 0 gives equal sizes;
            the default 1.2 makes the largest hospital several times the
            smallest.

    Returns:
        One device per hospital, in hospital order; ``x`` is float32 of shape
            ``(examples, 30)``, scaled to about [-1, 1], and ``y`` is int32
            (0 = malignant, 1 = benign).

    Raises:
        ConfigError: For a bad option, or more hospitals than the rows allow.

    Examples:
        >>> import numpy as np
        >>> from fedactors.data import make_hospital_data
        >>> data = make_hospital_data(4, np.random.default_rng(0))
        >>> tuple(data.num_examples(h) for h in range(data.num_devices))  # examples per hospital
        (105, 67, 49, 235)
        >>> len(data.test[1]), data.feature_shape
        (113, (30,))
    """
    if not isinstance(rng, np.random.Generator):
        raise ConfigError("rng", f"must be a numpy Generator, got {type(rng).__name__}")
    num_hospitals = positive_int("num_hospitals", num_hospitals)
    frac = open_unit("test_fraction", test_fraction)
    size_skew = non_negative("size_skew", size_skew)

    # Imported here: sklearn's import is slow, and only this scenario needs it.
    from sklearn.datasets import load_breast_cancer

    raw, labels = load_breast_cancer(return_X_y=True)
    x, y = scale_features(raw), labels.astype(np.int32)

    test_rows = []
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        test_rows.append(rows[: max(1, int(round(frac * len(rows))))])
    test_idx = np.sort(np.concatenate(test_rows))
    train_idx = rng.permutation(np.setdiff1d(np.arange(len(y)), test_idx))

    sizes = hospital_sizes(num_hospitals, len(train_idx), size_skew, rng)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    clients = [
        (x[train_idx[a:b]], y[train_idx[a:b]]) for a, b in zip(bounds[:-1], bounds[1:])
    ]
    return FederatedData.from_arrays(clients, (x[test_idx], y[test_idx]))
