"""Datasets: sources, preprocessing and on-device episode sampling (docs/DESIGN.md §7).

``load_dataset(name, subset, settings)`` returns ``(DataSpec, arrays)``; the
arrays are device arrays (empty for procedural datasets without rand_proj /
shuffle) to pass into jitted functions together with :func:`sample_episode`.

Every kind of dataset is a source in :mod:`vsml.data.registry` (offline
arrays, TFDS, procedural ``random`` / ``sum``, few-shot, ``npz:PATH``); this
module only applies what is common to all of them. Where each preprocessing
step runs: :mod:`vsml.data.preprocess`. The meta-training name ``mixture`` draws
each episode from one of ``data.mixture.datasets`` (:mod:`vsml.data.mixture`).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from vsml.data import mixture, preprocess
from vsml.data.base import LoadOptions
from vsml.data.episodes import DataSpec, normalize, sample_episode
from vsml.data.registry import SOURCES, available_datasets, source_of
from vsml.data.tfds_source import DatasetUnavailable
from vsml.settings import DataSettings, SettingError, key_of

NORMALIZATION_MODES = ("dataset_standard", "standard", "identity")
SUBSETS = ("train", "test")

__all__ = [
    "DataSettings",
    "DataSpec",
    "DatasetUnavailable",
    "SOURCES",
    "available_datasets",
    "check_dataset_available",
    "check_dataset_name",
    "class_count",
    "learner_sizes",
    "load_dataset",
    "normalize",
    "sample_episode",
]


def check_dataset_name(name: str, key: str) -> None:
    """Raises ValueError naming config key ``key`` when ``name`` is not a dataset."""
    if not mixture.is_mixture(name):
        source_of(name, key)


def class_count(name: str, settings: DataSettings) -> int | None:
    """How many classes an episode of ``name`` draws from (chance accuracy is 1 / this); None if unknown.

    ``data.filter_classes`` and the procedural and few-shot sections decide;
    ``pad.output`` does not (padded classes never occur). None for a mixture (it varies per episode).
    """
    if mixture.is_mixture(name):
        return None
    return source_of(name).class_count(name, settings)


def check_dataset_available(name: str, settings: DataSettings, key: str = "dataset", training: bool = False) -> None:
    """Start-up check (before compiling): ``name`` is known, and a TFDS dataset is prepared or downloadable;
    ``training``: it is the meta-training dataset (the only place a mixture is accepted).

    Raises ValueError with one line naming the dataset or key and the fix.
    """
    if mixture.is_mixture(name):
        if not training:
            raise ValueError(
                f"{key}: '{name}' is meta-training data only; meta-test its datasets one by one "
                f"(list those of {key_of(settings.data.mixture, 'datasets')})"
            )
        mixture.check(settings, key, check_dataset_available, input_size)
        return
    if training and settings.data.mixture.datasets:  # a mixture that would be silently ignored
        raise SettingError(
            settings.data.mixture,
            "datasets",
            f"is set but {key} is '{name}'; set {key} to {mixture.MIXTURE} to draw from them, or this to []",
        )
    source = source_of(name, key)
    _check_filter(name, source, settings)
    source.check(name, settings, key)


def _check_filter(name: str, source, settings: DataSettings) -> None:
    if settings.data.filter_classes is not None and not source.stored_classes:
        raise SettingError(settings.data, "filter_classes", f"applies to stored datasets, not to '{name}'")


def learner_sizes(name: str, settings: DataSettings) -> tuple[tuple[int, ...], int] | None:
    """``(input_shape, num_classes)`` of the episodes of ``name``, after resize and padding, as
    :func:`load_dataset`'s spec will have them, without loading anything (the sizes a fixed-size learner
    is built for); None when the source cannot say. ValueError (one line) for padding that cannot hold them.
    """
    if mixture.is_mixture(name):
        classes = mixture.num_classes(settings, class_count)
        return None if classes is None else ((mixture.width(settings, input_size),), classes)
    source = source_of(name)
    classes = source.class_count(name, settings)
    if classes is None:
        return None
    pad = settings.data.preprocess.pad
    return _padded(_example_shape(name, settings), pad, "input"), _padded((classes,), pad, "output")[0]


def _example_shape(name: str, settings: DataSettings) -> tuple[int, ...]:
    """One example's shape after ``resize`` (before padding), without loading anything."""
    shape = tuple(source_of(name).example_shape(name, settings))
    resize = settings.data.preprocess.resize
    if resize is not None and len(shape) == 3:  # vectors cannot be resized: the source's check says so
        shape = (*resize, shape[-1])
    return shape


def input_size(name: str, settings: DataSettings) -> int:
    """D: the size of one flattened example of ``name`` after resize (a mixture's datasets are never padded)."""
    return math.prod(_example_shape(name, settings))


def load_dataset(name: str, subset: str, settings: DataSettings, training: bool = False):
    """Loads dataset ``name`` (split ``subset``) once into device memory.

    Args:
      settings: the rank's :class:`DataSettings` (``vsml.settings.data_settings``).
      training: whether its episodes are meta-training episodes, the only ones
        ``data.episode_augment`` transforms (meta-test episodes stay as the data is);
        a mixture's are always meta-training episodes.
    Returns:
      ``(DataSpec, arrays)``.
    """
    if mixture.is_mixture(name):
        return mixture.load(subset, settings, load_dataset, input_size)
    source = source_of(name)
    if subset not in SUBSETS:
        raise ValueError(f"subset '{subset}' is not one of {', '.join(SUBSETS)}")  # the config's: validation
    _check_filter(name, source, settings)
    mean, std = source.stats(name, settings)
    loaded = source.load(
        name, subset, settings, LoadOptions(resize=settings.data.preprocess.resize, keep=settings.data.filter_classes)
    )
    arrays = {key: jnp.asarray(value) for key, value in loaded.arrays.items()}
    input_shape = _padded(loaded.base_shape, settings.data.preprocess.pad, "input")
    width = _padded((loaded.classes,), settings.data.preprocess.pad, "output")[0]
    dim = int(np.prod(input_shape))
    augment = settings.data.episode_augment
    shuffle_seed = preprocess.transform_seed(settings.data.preprocess.shuffle, "shuffle", settings.seed, name)
    proj_seed = preprocess.transform_seed(settings.data.preprocess.rand_proj, "rand_proj", settings.seed, name)
    if shuffle_seed is not None:
        arrays["permutation"] = jnp.asarray(preprocess.permutation(dim, shuffle_seed))
    if proj_seed is not None:
        arrays["projection"] = jnp.asarray(preprocess.projection_matrix(dim, proj_seed))
    spec = DataSpec(
        name=name,
        sampler=loaded.sampler,
        input_shape=input_shape,
        num_classes=width,
        normalization_mode=settings.data.preprocess.normalization_mode,
        mean=mean,
        std=std,
        base_shape=loaded.base_shape,
        data_classes=loaded.classes,
        scale=loaded.scale,
        pad_input=settings.data.preprocess.pad.input,
        shuffle=shuffle_seed is not None,
        rand_proj=proj_seed is not None,
        episode_augment=augment if training and augment.any else None,
    )
    return spec, arrays


def _padded(shape: tuple[int, ...], pad, side: str) -> tuple[int, ...]:
    """The ``side`` (input or output) target of ``pad`` after checking it can hold ``shape`` (None keeps ``shape``)."""
    target = getattr(pad, side)
    if target is None:
        return tuple(shape)
    if len(target) != len(shape) or any(t < s for s, t in zip(shape, target)):
        raise SettingError(
            pad,
            side,
            f"{list(target)} cannot hold the data's shape {list(shape)}; "
            f"give a shape at least that large in every axis",
        )
    return tuple(target)
