"""Tests for the bundled UCI digits data set and its loader."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

# Import the submodule directly: it needs nothing from the top-level symdl
# package, so these tests run even while symdl/__init__.py is in flux.
from symdl.datasets import digits

# --- Reference values read from scikit-learn's original digits.csv.gz -------
# (scikit-learn 1.9.1 wheel; csv sha256 09f66e6d...e23aa22). Each CSV row is
# 64 pixel values (an 8x8 image, row-major) followed by the label. They are
# hard-coded so the test checks the .npz conversion without needing the CSV.

# CSV line 1 (sample 0), label 0.
CSV_ROW_0 = [
    0, 0, 5, 13, 9, 1, 0, 0,
    0, 0, 13, 15, 10, 15, 5, 0,
    0, 3, 15, 2, 0, 11, 8, 0,
    0, 4, 12, 0, 0, 8, 8, 0,
    0, 5, 8, 0, 0, 9, 8, 0,
    0, 4, 11, 0, 1, 12, 7, 0,
    0, 2, 14, 5, 10, 12, 0, 0,
    0, 0, 6, 13, 10, 0, 0, 0,
]
# CSV line 1001 (sample 1000), label 1.
CSV_ROW_1000 = [
    0, 0, 1, 14, 2, 0, 0, 0,
    0, 0, 0, 16, 5, 0, 0, 0,
    0, 0, 0, 14, 10, 0, 0, 0,
    0, 0, 0, 11, 16, 1, 0, 0,
    0, 0, 0, 3, 14, 6, 0, 0,
    0, 0, 0, 0, 8, 12, 0, 0,
    0, 0, 10, 14, 13, 16, 8, 3,
    0, 0, 2, 11, 12, 15, 16, 15,
]
# CSV line 1797 (last sample, 1796), label 8.
CSV_ROW_1796 = [
    0, 0, 10, 14, 8, 1, 0, 0,
    0, 2, 16, 14, 6, 1, 0, 0,
    0, 0, 15, 15, 8, 15, 0, 0,
    0, 0, 5, 16, 16, 10, 0, 0,
    0, 0, 12, 15, 15, 12, 0, 0,
    0, 4, 16, 6, 4, 16, 6, 0,
    0, 8, 16, 10, 8, 16, 8, 0,
    0, 1, 8, 12, 14, 12, 1, 0,
]
# Labels (last CSV column) of the first ten and last five lines.
CSV_FIRST_LABELS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
CSV_LAST_LABELS = [9, 0, 8, 9, 8]
# Samples per class 0..9 counted in the CSV; these are also the class counts
# UCI publishes for its test set, optdigits.tes.
CSV_LABEL_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
# Sum of all 1797*64 pixel values in the CSV.
CSV_PIXEL_SUM = 561718
# sha256 of the uint8 arrays built straight from the CSV (images C-ordered
# (1797, 8, 8), labels (1797,)), i.e. a check on every single value and on
# the sample order.
CSV_IMAGES_SHA256 = "8f26b2bd9d135c256808f68f14fdabddde6d9c7f869ae419704b051f0f14b3b3"
CSV_LABELS_SHA256 = "8ba4f891220f5e4c9c819638d1602d74b83618f167043c6da52a2a247841ddf0"

N = 1797


@pytest.fixture(scope="module")
def arrays() -> tuple[np.ndarray, np.ndarray]:
    return digits.load_arrays()


# --- load_arrays: the bundled file itself -----------------------------------


def test_arrays_shapes_and_dtypes(arrays):
    images, labels = arrays
    assert images.shape == (N, 8, 8)
    assert labels.shape == (N,)
    assert images.dtype == np.uint8
    assert labels.dtype == np.uint8
    assert digits.NUM_SAMPLES == N and digits.NUM_CLASSES == 10


def test_arrays_value_ranges(arrays):
    images, labels = arrays
    assert images.min() == 0
    assert images.max() == digits.MAX_PIXEL == 16
    assert set(np.unique(labels).tolist()) == set(range(10))


def test_label_counts_match_csv(arrays):
    _, labels = arrays
    assert np.bincount(labels, minlength=10).tolist() == CSV_LABEL_COUNTS
    assert sum(CSV_LABEL_COUNTS) == N


def test_rows_match_csv(arrays):
    images, labels = arrays
    # Row-major reshape: CSV column 8*r + c is image pixel [r, c].
    np.testing.assert_array_equal(images[0].ravel(), CSV_ROW_0)
    np.testing.assert_array_equal(images[1000].ravel(), CSV_ROW_1000)
    np.testing.assert_array_equal(images[-1].ravel(), CSV_ROW_1796)
    assert images[0, 0, 2] == 5 and images[0, 1, 2] == 13  # CSV cols 2 and 10
    assert labels[1000] == 1
    assert labels[:10].tolist() == CSV_FIRST_LABELS
    assert labels[-5:].tolist() == CSV_LAST_LABELS


def test_content_checksums_match_csv(arrays):
    images, labels = arrays
    assert int(images.sum(dtype=np.int64)) == CSV_PIXEL_SUM
    assert hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest() == CSV_IMAGES_SHA256
    assert hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest() == CSV_LABELS_SHA256


def test_load_arrays_returns_fresh_copies():
    images, labels = digits.load_arrays()
    images[0, 0, 0] = 99
    labels[0] = 99
    images2, labels2 = digits.load_arrays()
    assert images2[0, 0, 0] == 0 and labels2[0] == 0


# --- load_data: the train/test split ----------------------------------------


def test_load_data_default_split(arrays):
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    n_test = round(N * 0.2)  # 359
    assert x_test.shape == (n_test, 8, 8) and y_test.shape == (n_test,)
    assert x_train.shape == (N - n_test, 8, 8) and y_train.shape == (N - n_test,)
    for a in (x_train, y_train, x_test, y_test):
        assert a.dtype == np.uint8
    assert x_train.max() <= 16 and x_test.max() <= 16
    assert y_train.max() <= 9 and y_test.max() <= 9


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.25, 0.5, 0.9])
def test_split_sizes_and_stratification(fraction):
    (x_train, y_train), (x_test, y_test) = digits.load_data(test_fraction=fraction)
    n_test = round(N * fraction)
    assert len(x_test) == len(y_test) == n_test
    assert len(x_train) == len(y_train) == N - n_test
    # Stratified: each class's test count is its proportional share, +-1.
    test_counts = np.bincount(y_test, minlength=10)
    ideal = np.array(CSV_LABEL_COUNTS) * n_test / N
    assert np.all(np.abs(test_counts - ideal) < 1)
    # Together the two sets hold every class's full count.
    total = test_counts + np.bincount(y_train, minlength=10)
    assert total.tolist() == CSV_LABEL_COUNTS


def test_train_and_test_are_disjoint_and_cover_everything(arrays):
    # load_data returns samples, not indices, so identify each sample by its
    # bytes (image + label); every (image, label) pair in this data is unique,
    # which the first assert checks, so the bytes work as a sample id.
    images, labels = arrays

    def keys(x, y):
        return Counter(xi.tobytes() + bytes([yi]) for xi, yi in zip(x, y))

    whole = keys(images, labels)
    assert len(whole) == N
    (x_train, y_train), (x_test, y_test) = digits.load_data(test_fraction=0.3, seed=7)
    train, test = keys(x_train, y_train), keys(x_test, y_test)
    assert not (train.keys() & test.keys())  # disjoint
    assert train + test == whole  # nothing lost, nothing repeated


def test_split_is_deterministic_by_seed():
    a = digits.load_data(test_fraction=0.2, seed=123)
    b = digits.load_data(test_fraction=0.2, seed=123)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_different_seeds_give_different_splits():
    (_, _), (x0, y0) = digits.load_data(seed=0)
    (_, _), (x1, y1) = digits.load_data(seed=1)
    assert x0.shape == x1.shape
    assert not np.array_equal(x0, x1)


def test_split_follows_documented_permutation(arrays):
    # The docstring promises the split walks default_rng(seed).permutation;
    # with stratification the test set is that permutation filtered to the
    # first quota of each class, in permutation order.
    images, labels = arrays
    (_, _), (x_test, y_test) = digits.load_data(test_fraction=0.2, seed=5)
    perm = np.random.default_rng(5).permutation(N)
    quota = np.bincount(y_test, minlength=10)
    seen = np.zeros(10, dtype=int)
    expected = []
    for i in perm:
        c = labels[i]
        if seen[c] < quota[c]:
            expected.append(i)
            seen[c] += 1
    np.testing.assert_array_equal(x_test, images[expected])
    np.testing.assert_array_equal(y_test, labels[expected])


def test_tiny_and_huge_fractions_keep_both_sets_nonempty():
    (x_train, _), (x_test, _) = digits.load_data(test_fraction=1e-9)
    assert len(x_test) == 1 and len(x_train) == N - 1
    (x_train, _), (x_test, _) = digits.load_data(test_fraction=1 - 1e-9)
    assert len(x_test) == N - 1 and len(x_train) == 1


@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.0, -0.1, 1.5, float("nan"), float("inf")])
def test_invalid_test_fraction_raises_value_error(bad):
    with pytest.raises(ValueError, match="test_fraction"):
        digits.load_data(test_fraction=bad)


@pytest.mark.parametrize("bad", ["0.2", None, True])
def test_non_numeric_test_fraction_raises_type_error(bad):
    with pytest.raises(TypeError, match="test_fraction"):
        digits.load_data(test_fraction=bad)
