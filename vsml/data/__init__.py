"""Datasets: sources, preprocessing and on-device episode sampling (docs/DESIGN.md §7).

``load_dataset(name, subset, config)`` returns ``(DataSpec, arrays)``; the
arrays are device arrays (empty for procedural datasets without rand_proj /
shuffle) to pass into jitted functions together with :func:`sample_episode`.

Every kind of dataset is a source in :mod:`vsml.data.registry` (offline
arrays, TFDS, procedural ``random`` / ``sum``, few-shot, ``npz:PATH``); this
module only applies what is common to all of them. Where each preprocessing
step runs: :mod:`vsml.data.preprocess`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from vsml.data import preprocess
from vsml.data.api import LoadOptions
from vsml.data.episodes import DataSpec, normalize, sample_episode
from vsml.data.registry import SOURCES, available_datasets, source_of
from vsml.data.tfds_source import DatasetUnavailable

NORMALIZATION_MODES = ("dataset_standard", "standard", "identity")
SUBSETS = ("train", "test")

__all__ = ["DataSpec", "DatasetUnavailable", "SOURCES", "available_datasets", "check_dataset_available",
           "check_dataset_name", "class_count", "load_dataset", "normalize", "sample_episode"]


def check_dataset_name(name: str, key: str) -> None:
    """Raises ValueError naming config key ``key`` when ``name`` is not a dataset."""
    source_of(name, key)


def class_count(name: str, config: dict) -> int | None:
    """How many classes an episode of ``name`` draws from (chance accuracy is 1 / this); None if unknown.

    ``config`` is one rank's resolved config: ``data.filter_classes``, the
    procedural and few-shot sections decide; ``pad.output`` does not (padded
    classes never occur).
    """
    return source_of(name).class_count(name, config)


def check_dataset_available(name: str, config: dict, key: str = "dataset") -> None:
    """Start-up check (before compiling): ``name`` is known, and a TFDS dataset is prepared or downloadable.

    Also validates the preprocessing keys of ``config`` (the rank's resolved
    config). Raises ValueError with one line naming the dataset or key and the fix.
    """
    source = source_of(name, key)
    _preprocess_options(name, source.stored_classes, config)
    source.check(name, config, key)


def _preprocess_options(name: str, stored_classes: bool, config: dict) -> dict:
    """The validated ``data.preprocess`` / ``data.filter_classes`` settings for dataset ``name``."""
    pre = config["data"]["preprocess"]
    mode = pre["normalization_mode"]
    if mode not in NORMALIZATION_MODES:
        raise ValueError(f"data.preprocess.normalization_mode: '{mode}' is not one of "
                         f"{', '.join(NORMALIZATION_MODES)}")
    pad = pre.get("pad") or {}
    options = dict(
        mode=mode,
        resize=preprocess.parse_shape(pre.get("resize"), "data.preprocess.resize", 2),
        pad_input=preprocess.parse_shape(pad.get("input"), "data.preprocess.pad.input"),
        pad_output=preprocess.parse_shape(pad.get("output"), "data.preprocess.pad.output", 1),
        shuffle_seed=preprocess.transform_seed(pre.get("shuffle", False), "data.preprocess.shuffle",
                                               config["seed"], name),
        proj_seed=preprocess.transform_seed(pre.get("rand_proj", False), "data.preprocess.rand_proj",
                                            config["seed"], name),
        keep=preprocess.filter_class_list(config["data"].get("filter_classes")),
    )
    if options["keep"] is not None and not stored_classes:
        raise ValueError(f"data.filter_classes: applies to stored datasets, not to '{name}'")
    return options


def load_dataset(name: str, subset: str, config: dict):
    """Loads dataset ``name`` (split ``subset``) once into device memory.

    Args:
      config: the rank's resolved config (reads ``seed``, ``data.*`` and the
        section of the dataset's source, e.g. ``random_dataset``).
    Returns:
      ``(DataSpec, arrays)``.
    """
    source = source_of(name)
    if subset not in SUBSETS:
        raise ValueError(f"evaluation.subset: '{subset}' is not one of {', '.join(SUBSETS)}")
    opts = _preprocess_options(name, source.stored_classes, config)
    mean, std = source.stats(name, config)
    loaded = source.load(name, subset, config, LoadOptions(resize=opts["resize"], keep=opts["keep"]))
    arrays = {key: jnp.asarray(value) for key, value in loaded.arrays.items()}
    input_shape = _padded(loaded.base_shape, opts["pad_input"])
    width = _padded((loaded.classes,), opts["pad_output"])[0]
    dim = int(np.prod(input_shape))
    if opts["shuffle_seed"] is not None:
        arrays["permutation"] = jnp.asarray(preprocess.permutation(dim, opts["shuffle_seed"]))
    if opts["proj_seed"] is not None:
        arrays["projection"] = jnp.asarray(preprocess.projection_matrix(dim, opts["proj_seed"]))
    spec = DataSpec(name=name, sampler=loaded.sampler, input_shape=input_shape, num_classes=width,
                    normalization_mode=opts["mode"], mean=mean, std=std, base_shape=loaded.base_shape,
                    data_classes=loaded.classes, scale=loaded.scale, pad_input=opts["pad_input"],
                    shuffle=opts["shuffle_seed"] is not None, rand_proj=opts["proj_seed"] is not None)
    return spec, arrays


def _padded(shape: tuple[int, ...], target: tuple[int, ...] | None) -> tuple[int, ...]:
    """``target`` after checking it can hold ``shape`` (None keeps ``shape``)."""
    if target is None:
        return tuple(shape)
    key = "data.preprocess.pad.output" if len(shape) == 1 else "data.preprocess.pad.input"
    if len(target) != len(shape) or any(t < s for s, t in zip(shape, target)):
        raise ValueError(f"{key}: {list(target)} cannot hold the data's shape {list(shape)}; "
                         f"give a shape at least that large in every axis")
    return tuple(target)
