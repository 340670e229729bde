"""Datasets of stored examples (offline arrays, TFDS, ``npz:PATH``): their common sampler and load steps.

An episode draws ``T x B`` examples uniformly with replacement from the
split. At load time, on the host, ``data.filter_classes`` keeps the listed
classes (relabelled 0..k-1) and ``data.preprocess.resize`` resizes the images
(:mod:`vsml.data.preprocess`).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from vsml.data import preprocess
from vsml.data.base import DataSettings, Loaded, LoadOptions
from vsml.settings import PreprocessSettings, SettingError


@dataclasses.dataclass(frozen=True)
class StoredSampler:
    """Arrays: ``images [N, *base_shape]`` (uint8 or float32) and ``labels [N]`` int32."""

    kind = "array"

    def sample(self, arrays: dict, key: jax.Array, length: int, batch: int):
        index = jax.random.randint(key, (length, batch), 0, arrays["labels"].shape[0])
        return arrays["images"][index], arrays["labels"][index]


def loaded_split(
    name: str, images: np.ndarray, labels: np.ndarray, classes: int, scale: float, options: LoadOptions
) -> Loaded:
    """A stored split after class filtering and resizing: ``images [N, *shape]``, ``labels [N]``."""
    if options.keep is not None:
        images, labels = preprocess.filter_classes(images, labels, options.keep, classes)
        classes = len(options.keep)
    if options.resize is not None:
        if images.ndim != 4:
            raise SettingError(
                PreprocessSettings,
                "resize",
                f"needs image inputs [N, H, W(, C)]; '{name}' holds vectors of shape {list(images.shape[1:])}",
            )
        images, scale = preprocess.resize_images(images, options.resize, scale), 1.0
    return Loaded(
        sampler=StoredSampler(),
        arrays={"images": images, "labels": labels},
        base_shape=tuple(images.shape[1:]),
        classes=classes,
        scale=scale,
    )


def class_count(settings: DataSettings, stored_classes: int | None) -> int | None:
    """Classes an episode draws from: those of ``data.filter_classes`` if set, else the stored ones."""
    keep = settings.data.filter_classes
    return len(keep) if keep else stored_classes
