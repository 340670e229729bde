"""Offline tables shipped inside scikit-learn: ``wine``, ``breast_cancer``, ``iris`` (no download).

Each is a small classification table, vectors ``[N, D]`` of measurements in their own units.
They are served exactly as an ``npz:PATH`` file of the same arrays would be
(:mod:`vsml.data.npz_source`: validation, the every-5th-of-each-class test split of the
offline sets, and ``data.preprocess.npz_stats``, whose ``auto`` standardises each feature
with its training split's mean and std). :data:`SOURCE` is their entry in
:mod:`vsml.data.registry`; where the examples come from is in
:data:`vsml.data.offline_source.PROVENANCE`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path

import numpy as np

from vsml.data import npz_source
from vsml.data.base import DataSettings, Loaded, LoadOptions, NamedSource
from vsml.settings import SettingError

# name -> (scikit-learn loader, [D], classes): the sizes are known without loading anything.
TABLES = {
    "wine": ("load_wine", (13,), 3),
    "breast_cancer": ("load_breast_cancer", (30,), 2),
    "iris": ("load_iris", (4,), 3),
}


def is_available() -> bool:
    """Whether scikit-learn (which ships the tables) is installed."""
    return importlib.util.find_spec("sklearn") is not None


@functools.cache
def table(name: str) -> npz_source.NpzData:
    """The validated, split table ``name`` (read once; scikit-learn's loaders read files it ships)."""
    import sklearn.datasets  # noqa: PLC0415 - only a run that uses a table pays for importing scikit-learn

    loader, shape, classes = TABLES[name]
    x, y = getattr(sklearn.datasets, loader)(return_X_y=True)
    data = npz_source.validated({"x": np.asarray(x), "y": np.asarray(y)}, Path(f"sklearn.datasets.{loader}"))
    if data.train_images.shape[1:] != shape or data.num_classes != classes:  # a changed scikit-learn table
        raise ValueError(
            f"{name}: scikit-learn's {loader} gives {list(data.train_images.shape[1:])} inputs and "
            f"{data.num_classes} classes, not {list(shape)} and {classes}; update vsml.data.tabular_source.TABLES"
        )
    return data


@dataclasses.dataclass(frozen=True)
class TabularSource(NamedSource):
    """``wine``, ``breast_cancer``, ``iris``: stored vectors, sampled uniformly (:mod:`vsml.data.stored`)."""

    stored_classes = True

    def names(self) -> tuple[str, ...]:
        return tuple(TABLES)

    def class_count(self, name: str, settings: DataSettings) -> int:
        keep = settings.data.filter_classes
        return len(keep) if keep else TABLES[name][2]

    def example_shape(self, name: str, settings: DataSettings) -> tuple[int, ...]:
        return TABLES[name][1]

    def check(self, name: str, settings: DataSettings, key: str) -> None:
        if settings.data.preprocess.resize is not None:
            raise SettingError(
                settings.data.preprocess,
                "resize",
                f"needs image inputs [N, H, W(, C)]; {key} '{name}' holds vectors of shape {list(TABLES[name][1])}; "
                f"set it to null",
            )

    def stats(self, name: str, settings: DataSettings) -> tuple[float, float]:
        return npz_source.split_stats(table(name), settings)

    def load(self, name: str, subset: str, settings: DataSettings, options: LoadOptions) -> Loaded:
        return npz_source.loaded(name, table(name), subset, settings, options)

    def status(self, directory) -> tuple[str, list[tuple[str, str, str]]]:
        state = "ready" if is_available() else "missing (pip install scikit-learn)"
        rows = [
            (name, state, f"{shape[0]} features, {classes} classes, a table shipped inside sklearn")
            for name, (_, shape, classes) in TABLES.items()
        ]
        return "offline (no download)", rows


SOURCE = TabularSource()
