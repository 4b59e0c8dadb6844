"""UCI optical-recognition handwritten digits (8x8 images, 10 classes).

The data ships inside the package (``symdl/datasets/data/digits.npz``), so
loading needs no network access. It is the 1797-sample copy that
scikit-learn distributes (UCI "Optical Recognition of Handwritten Digits",
E. Alpaydin & C. Kaynak, 1998, CC BY 4.0); see ``data/README.md`` for the
source, licence and checksums.

Example::

    from symdl.datasets import digits
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    x_train = x_train.astype("float32") / 16.0  # pixels are 0..16
"""

from __future__ import annotations

import numbers
from importlib import resources

import numpy as np

__all__ = ["load_arrays", "load_data", "NUM_SAMPLES", "NUM_CLASSES", "MAX_PIXEL"]

NUM_SAMPLES = 1797
NUM_CLASSES = 10
#: Pixels count "on" bits in a 4x4 block of a 32x32 bitmap, hence 0..16.
MAX_PIXEL = 16

_DATA_FILE = "digits.npz"


def load_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Return the whole data set, unsplit, in the original sample order.

    Returns:
        ``(images, labels)``: ``images`` is a ``uint8`` array of shape
        ``(1797, 8, 8)`` with values in ``0..16``; ``labels`` is a ``uint8``
        array of shape ``(1797,)`` with values in ``0..9``.

    Each call reads the file again and returns fresh arrays, so callers may
    modify them freely.
    """
    # importlib.resources (not a path built from __file__) so the file is also
    # found when the package is installed from a wheel or imported from a zip.
    resource = resources.files(__package__).joinpath("data").joinpath(_DATA_FILE)
    with resource.open("rb") as fh:
        # allow_pickle=False: the file holds plain arrays only, and refusing
        # pickles means a tampered file cannot run code on load.
        with np.load(fh, allow_pickle=False) as npz:
            images = npz["images"]
            labels = npz["labels"]

    # Cheap guard against a corrupted or wrong file in an installation.
    if (
        images.dtype != np.uint8
        or labels.dtype != np.uint8
        or images.shape != (NUM_SAMPLES, 8, 8)
        or labels.shape != (NUM_SAMPLES,)
    ):
        raise RuntimeError(
            f"bundled {_DATA_FILE} is malformed: images {images.dtype}{images.shape}, "
            f"labels {labels.dtype}{labels.shape}"
        )
    return images, labels


def load_data(
    test_fraction: float = 0.2, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load the digits and split them into train and test sets, Keras-style.

    The split is **stratified**: every class is divided in (as nearly as
    possible) the same proportion, so both sets keep the class balance.
    Sample selection is random but deterministic given ``seed``:

    1. ``perm = np.random.default_rng(seed).permutation(1797)`` shuffles all
       sample indices.
    2. ``n_test = round(1797 * test_fraction)``, kept within ``1..1796`` so
       neither set is empty. Class ``c`` with ``n_c`` samples gets a quota of
       ``n_c * n_test / 1797`` test samples; quotas are rounded down and the
       leftover samples go to the classes with the largest fractional parts
       (ties to the lower class), so the quotas add up to exactly ``n_test``.
    3. Walking ``perm`` in order, the first ``quota_c`` samples of each class
       ``c`` go to the test set and the rest to the train set.

    Both sets keep the shuffled order of ``perm`` (they are not sorted by
    class or by original index).

    Args:
        test_fraction: fraction of samples to put in the test set; must lie
            strictly between 0 and 1.
        seed: seed for ``numpy.random.default_rng``; the same seed always
            gives the same split.

    Returns:
        ``((x_train, y_train), (x_test, y_test))`` where the ``x`` arrays are
        ``uint8`` of shape ``(n, 8, 8)`` with values ``0..16`` and the ``y``
        arrays are ``uint8`` of shape ``(n,)`` with values ``0..9``.

    Raises:
        TypeError: if ``test_fraction`` is not a real number.
        ValueError: if ``test_fraction`` is not strictly between 0 and 1.
    """
    # bool is a numbers.Real subclass; True/False here is surely a mistake.
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real):
        raise TypeError(
            f"test_fraction must be a real number, got {type(test_fraction).__name__}"
        )
    # Written as "not (0 < x < 1)" so NaN is rejected too.
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(
            f"test_fraction must be strictly between 0 and 1, got {test_fraction!r}"
        )

    images, labels = load_arrays()
    n = labels.shape[0]
    n_test = min(max(int(round(n * float(test_fraction))), 1), n - 1)

    # Largest-remainder apportionment of n_test over the classes, so the
    # total test size is exact while each class keeps its share.
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    ideal = counts * n_test / n
    quota = np.floor(ideal).astype(np.int64)
    leftover = n_test - int(quota.sum())
    # Stable sort on the negated remainders: ties go to the lower class.
    order = np.argsort(-(ideal - quota), kind="stable")
    quota[order[:leftover]] += 1

    perm = np.random.default_rng(seed).permutation(n)
    perm_labels = labels[perm]
    # Rank of each shuffled sample within its own class (0, 1, 2, ...):
    # its position in a stable class sort, minus where its class starts there.
    by_class = np.argsort(perm_labels, kind="stable")
    class_start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(n, dtype=np.int64)
    rank[by_class] = np.arange(n) - class_start[perm_labels[by_class]]
    is_test = rank < quota[perm_labels]

    test_idx = perm[is_test]
    train_idx = perm[~is_test]
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])
