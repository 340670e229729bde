"""A user's own dataset: ``npz:PATH``, a NumPy ``.npz`` file of examples and labels.

The file holds

* ``x``: ``[N, H, W, C]``, ``[N, H, W]`` (one channel) or ``[N, D]`` numbers
  (integers or floats; ``uint8`` is read as pixels, ``x / 255``);
* ``y``: ``[N]`` integer class labels ``0..K-1`` (K = the largest label + 1);
* optionally ``x_test`` / ``y_test`` (the same shapes, any length) as the test
  split; without them the test split is every 5th example of each class of
  ``x`` / ``y`` (as for the offline sets of :mod:`vsml.data.offline_source`) and the
  training split the rest.

``dataset_standard`` normalisation uses statistics of the *training* split,
computed here; the test split is normalised with the same numbers, so nothing
about it leaks into training. ``data.preprocess.npz_stats`` says which:
``global``, one mean and standard deviation of every value (done per episode
on the device, as for the shipped image sets), or ``per_feature``, each
input's own (applied once at load, on the host: the stored split becomes
float32 with mean 0 and standard deviation 1 per input; an input constant in
the training split is only centred). ``auto``, the default, is ``per_feature``
for vectors ``[N, D]`` and ``global`` for images: a table's columns have
their own units, an image's pixels share one.

:func:`check` reads and validates the file at start-up (before anything is
compiled) and raises a ValueError of one line naming the config key, the file
and the problem. The arrays are read once per file version (path, size,
modification time) and shared by the check and the load.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import zipfile
from pathlib import Path

import numpy as np

from vsml.data import stored
from vsml.data.base import DataSettings, Loaded, LoadOptions
from vsml.data.offline_source import _stratified_split
from vsml.settings import PreprocessSettings, SettingError

PREFIX = "npz:"


@dataclasses.dataclass(frozen=True)
class NpzData:
    """A validated npz dataset, split and ready to load.

    ``images`` are ``[N, *shape]`` as in the file (any integer or float dtype:
    standardising per feature from float32 copies would lose the digits of a
    feature with a large offset and a small spread) with ``images * scale`` the
    values the learner sees before normalisation; ``mean`` / ``std`` are those
    values' statistics over the training split, ``feature_mean`` /
    ``feature_std`` (``[*shape]`` float64) each input's, with 1 for an input
    that is constant there.
    """

    path: Path
    train_images: np.ndarray
    train_labels: np.ndarray  # [N_train] int32
    test_images: np.ndarray
    test_labels: np.ndarray  # [N_test] int32
    num_classes: int
    scale: float
    mean: float
    std: float
    feature_mean: np.ndarray
    feature_std: np.ndarray

    def split(self, subset: str) -> tuple[np.ndarray, np.ndarray]:
        """``(images [N, *shape] as in the file, labels [N] int32)`` of ``subset`` ('train' | 'test')."""
        if subset == "train":
            return self.train_images, self.train_labels
        return self.test_images, self.test_labels


class NpzError(ValueError):
    """An npz dataset that cannot be used; one line naming the file and the problem."""


def is_npz(name) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def path_of(name: str) -> Path:
    return Path(os.path.expanduser(name[len(PREFIX) :]))


def check(name: str, key: str = "dataset") -> NpzData:
    """Reads and validates ``npz:PATH``; raises :class:`NpzError` (``key: npz file 'PATH': problem``)."""
    path = path_of(name)
    if not name[len(PREFIX) :]:
        raise NpzError(f"{key}: '{name}' names no file; write npz:PATH, e.g. npz:data/mine.npz")
    if "," in str(path):
        raise NpzError(f"{key}: npz file '{path}': rename it without commas (the name is a column of evaluation.csv)")
    try:
        stat = path.stat()
    except OSError:
        raise NpzError(f"{key}: npz file '{path}' not found (relative paths start at {Path.cwd()})") from None
    try:
        return _read(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    except NpzError as err:
        raise NpzError(f"{key}: npz file '{path}': {err}") from None


@functools.lru_cache(maxsize=4)
def _read(path: str, size: int, mtime_ns: int) -> NpzData:
    """The validated dataset of one file version (``size`` and ``mtime_ns`` make a changed file a new entry)."""
    del size, mtime_ns
    try:
        with np.load(path, allow_pickle=False) as npz_file:
            arrays = {name: npz_file[name] for name in npz_file.files if name in ("x", "y", "x_test", "y_test")}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise NpzError(f"cannot be read as a NumPy .npz file ({type(err).__name__}: {err})") from None
    return validated(arrays, Path(path))


def validated(arrays: dict[str, np.ndarray], origin: Path) -> NpzData:
    """The checked, split dataset of arrays ``x``, ``y`` (and optionally ``x_test``, ``y_test``) as an npz
    file holds them; ``origin`` names where they came from. Raises :class:`NpzError` naming the problem."""
    missing = [name for name in ("x", "y") if name not in arrays]
    if missing:
        raise NpzError(
            f"has no array {' or '.join(repr(m) for m in missing)}; save it with numpy.savez(PATH, x=inputs, y=labels)"
        )
    if ("x_test" in arrays) != ("y_test" in arrays):
        given, absent = ("x_test", "y_test") if "x_test" in arrays else ("y_test", "x_test")
        raise NpzError(f"has '{given}' but no '{absent}'; give both or neither")
    x, y = _examples(arrays["x"], "x"), _labels(arrays["y"], "y")
    _same_length(x, y, "x", "y")
    if "x_test" in arrays:
        x_test, y_test = _examples(arrays["x_test"], "x_test"), _labels(arrays["y_test"], "y_test")
        _same_length(x_test, y_test, "x_test", "y_test")
        if (x_test.dtype == np.uint8) != (x.dtype == np.uint8):
            raise NpzError(
                f"x_test has dtype {x_test.dtype} but x has {x.dtype}; store both as uint8 pixels or both as numbers"
            )
        if x_test.shape[1:] != x.shape[1:]:
            raise NpzError(
                f"x_test has examples of shape {list(x_test.shape[1:])} but x has {list(x.shape[1:])}; they must match"
            )
        train_x, train_y = x, y
    else:
        train_index, test_index = _stratified_split(y, "train"), _stratified_split(y, "test")
        train_x, train_y, x_test, y_test = x[train_index], y[train_index], x[test_index], y[test_index]
    classes = np.unique(train_y)
    if len(classes) < 2:
        raise NpzError(
            f"the training split has {len(classes)} class{'es' if len(classes) != 1 else ''} "
            f"(labels {classes.tolist()}); a classification task needs at least two"
        )
    if len(y_test) == 0:
        raise NpzError("the test split is empty; give x_test / y_test or more examples per class")
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    values = train_x.astype(np.float64) * scale
    mean, std = float(values.mean()), float(values.std())
    if not std > 0:
        raise NpzError(f"every value of the training inputs is {mean:g}; nothing to learn from")
    return NpzData(
        path=origin,
        train_images=train_x,
        train_labels=train_y.astype(np.int32),
        test_images=x_test,
        test_labels=y_test.astype(np.int32),
        num_classes=int(max(y.max(), y_test.max())) + 1,
        scale=scale,
        mean=mean,
        std=std,
        feature_mean=values.mean(axis=0),
        feature_std=_nonzero(values.std(axis=0)),
    )


def _nonzero(std: np.ndarray) -> np.ndarray:
    """``std`` with 1 where it is 0: a constant input is centred to 0 and not divided."""
    return np.where(std > 0, std, 1.0)


def per_feature(data: NpzData, settings: DataSettings) -> bool:
    """Whether ``dataset_standard`` uses each input's statistics (``data.preprocess.npz_stats``)."""
    preprocess = settings.data.preprocess
    if preprocess.normalization_mode != "dataset_standard":
        return False
    if preprocess.npz_stats == "auto":
        return data.train_images.ndim == 2
    return preprocess.npz_stats == "per_feature"


def standardized(images: np.ndarray, data: NpzData) -> np.ndarray:
    """``images [N, *shape]`` (as in the file) -> float32 ``(images * scale - feature_mean) / feature_std``."""
    return ((images.astype(np.float64) * data.scale - data.feature_mean) / data.feature_std).astype(np.float32)


def split_stats(data: NpzData, settings: DataSettings) -> tuple[float, float]:
    """``(mean, std)`` that step 2 of §7.2 uses: the training split's, or 0/1 when standardised per feature."""
    if per_feature(data, settings):
        return 0.0, 1.0  # standardised at load (:func:`loaded`)
    return data.mean, data.std


def loaded(name: str, data: NpzData, subset: str, settings: DataSettings, options: LoadOptions) -> Loaded:
    """Split ``subset`` of ``data``, standardised per feature when :func:`per_feature` says so."""
    images, labels = data.split(subset)
    if per_feature(data, settings):
        return stored.loaded_split(name, standardized(images, data), labels, data.num_classes, 1.0, options)
    return stored.loaded_split(name, _stored(images), labels, data.num_classes, data.scale, options)


def _examples(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as ``[N, H, W, C]`` or ``[N, D]``, checked to be finite numbers."""
    if x.dtype.kind not in "iuf" or x.dtype.kind == "b":
        raise NpzError(f"{name} has dtype {x.dtype}; inputs must be integers or floats")
    if x.ndim not in (2, 3, 4):
        raise NpzError(f"{name} has shape {list(x.shape)}; give [N, H, W, C], [N, H, W] or [N, D]")
    if x.shape[0] == 0 or 0 in x.shape[1:]:
        raise NpzError(f"{name} has shape {list(x.shape)}: no examples")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise NpzError(f"{name} holds {int(np.size(x) - np.isfinite(x).sum())} NaN or infinite values")
    return x[..., None] if x.ndim == 3 else x


def _labels(y: np.ndarray, name: str) -> np.ndarray:
    if y.ndim != 1:
        hint = " (one-hot? store the class indices, e.g. y.argmax(1))" if y.ndim == 2 else ""
        raise NpzError(f"{name} has shape {list(y.shape)}; labels must be one integer per example{hint}")
    if y.dtype.kind not in "iu":
        raise NpzError(f"{name} has dtype {y.dtype}; labels must be integers 0..K-1 (e.g. {name}.astype(int))")
    if len(y) and y.min() < 0:
        raise NpzError(f"{name} holds negative labels (smallest {int(y.min())}); labels must be 0..K-1")
    return y


def _same_length(x: np.ndarray, y: np.ndarray, x_name: str, y_name: str) -> None:
    if len(x) != len(y):
        raise NpzError(f"{x_name} has {len(x)} examples but {y_name} has {len(y)} labels; they must match")


def _stored(images: np.ndarray) -> np.ndarray:
    """uint8 stays uint8 (4x less device memory, scaled per episode); anything else becomes float32."""
    return images if images.dtype == np.uint8 else images.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class NpzSource:
    """``npz:PATH``: stored examples, sampled uniformly (:mod:`vsml.data.stored`)."""

    stored_classes = True
    pattern = "npz:PATH for your own data"

    def names(self) -> tuple[str, ...]:
        return ()

    def provides(self, name: str) -> bool:
        return is_npz(name)

    def check(self, name: str, settings: DataSettings, key: str) -> None:
        data = check(name, key)
        if settings.data.preprocess.resize is not None and len(data.train_images.shape) != 4:
            raise SettingError(
                PreprocessSettings,
                "resize",
                f"needs image inputs [N, H, W(, C)]; '{name}' holds "
                f"vectors of shape {list(data.train_images.shape[1:])}",
            )

    def class_count(self, name: str, settings: DataSettings) -> int | None:
        if settings.data.filter_classes:
            return stored.class_count(settings, None)
        try:
            return check(name).num_classes
        except ValueError:
            return None

    def example_shape(self, name: str, settings: DataSettings) -> tuple[int, ...]:
        return tuple(check(name).train_images.shape[1:])  # [N, H, W] files gained their channel in _examples

    def stats(self, name: str, settings: DataSettings) -> tuple[float, float]:
        return split_stats(check(name), settings)

    def load(self, name: str, subset: str, settings: DataSettings, options: LoadOptions) -> Loaded:
        return loaded(name, check(name), subset, settings, options)

    def status(self, directory) -> tuple[str, list[tuple[str, str, str]]]:
        return "your own data", [
            (
                "npz:PATH",
                "-",
                "a .npz with x [N, H, W(, C)] or [N, D] and integer labels y [N] (docs/datasets.md, 'Your own data')",
            )
        ]


SOURCE = NpzSource()
