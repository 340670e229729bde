"""Datasets: sources, preprocessing and on-device episode sampling (DESIGN §7).

``load_dataset(name, subset, config)`` returns ``(DataSpec, arrays)``; the
arrays are device arrays (empty for procedural datasets) to pass into jitted
functions together with :func:`sample_episode`.
"""

from __future__ import annotations

import jax.numpy as jnp

from vsml.data.episodes import DataSpec, normalize, sample_episode
from vsml.data.sources import ARRAY_SOURCES, load_array_source

PROCEDURAL = ("random", "sum")
# Downloadable TFDS datasets of the paper; their loader is a separate piece of work.
TFDS_NAMES = ("mnist", "fashion_mnist", "kmnist", "emnist", "cifar10", "svhn_cropped", "omniglot")
NORMALIZATION_MODES = ("dataset_standard", "standard", "identity")
SUBSETS = ("train", "test")

__all__ = ["DataSpec", "available_datasets", "check_dataset_name", "load_dataset", "normalize", "sample_episode"]


def available_datasets() -> tuple[str, ...]:
    return (*ARRAY_SOURCES, *PROCEDURAL)


def check_dataset_name(name: str, key: str) -> None:
    """Raises ValueError naming config key ``key`` when ``name`` cannot be loaded here."""
    valid = ", ".join(available_datasets())
    if name in TFDS_NAMES:
        raise ValueError(
            f"{key}: '{name}' is a TFDS dataset, which this version cannot load yet; "
            f"use one of the offline datasets: {valid}"
        )
    if name not in available_datasets():
        raise ValueError(f"{key}: unknown dataset '{name}'; valid: {valid}")


def load_dataset(name: str, subset: str, config: dict):
    """Loads dataset ``name`` (split ``subset``) once into device memory.

    Args:
      config: the rank's resolved config (reads ``data.preprocess`` and the
        ``random_dataset`` / ``sum_dataset`` sections).
    Returns:
      ``(DataSpec, arrays)``.
    """
    check_dataset_name(name, "dataset")
    if subset not in SUBSETS:
        raise ValueError(f"evaluation.subset: '{subset}' is not one of {', '.join(SUBSETS)}")
    preprocess = config["data"]["preprocess"]
    mode = preprocess["normalization_mode"]
    if mode not in NORMALIZATION_MODES:
        raise ValueError(
            f"data.preprocess.normalization_mode: '{mode}' is not one of {', '.join(NORMALIZATION_MODES)}"
        )
    stats = preprocess["dataset_stats"].get(name, {"mean": 0.0, "std": 1.0})
    common = dict(name=name, normalization_mode=mode, mean=float(stats["mean"]), std=float(stats["std"]))
    if name == "random":
        cfg = config["random_dataset"]
        spec = DataSpec(kind="random", input_shape=tuple(cfg["img_size"]), num_classes=int(cfg["target_count"]),
                        random_set_size=int(cfg["size"]), **common)
        return spec, {}
    if name == "sum":
        spec = DataSpec(kind="sum", input_shape=tuple(config["sum_dataset"]["input_size"]), num_classes=2, **common)
        return spec, {}
    images, labels, num_classes = load_array_source(name, subset)
    spec = DataSpec(kind="array", input_shape=tuple(images.shape[1:]), num_classes=num_classes, **common)
    return spec, {"images": jnp.asarray(images), "labels": jnp.asarray(labels)}
