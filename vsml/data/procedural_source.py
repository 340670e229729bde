"""Procedural tasks drawn fresh on the device: ``random`` (memorise random labels) and ``sum``.

``random`` (section ``random_dataset``): each episode draws a fresh pool of
``size`` Gaussian images ``[*img_size]`` with uniformly random labels in
``0..target_count-1`` and samples its ``T x B`` steps from that pool, so the
task is pure memorisation. ``sum`` (section ``sum_dataset``): Gaussian inputs
``[*input_size]``, label 1 when their sum is >= 0. Neither stores any array;
``data.preprocess.resize`` resizes the drawn images on the device.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vsml.data import preprocess
from vsml.data.base import DataSettings, Loaded, LoadOptions, NamedSource
from vsml.settings import PreprocessSettings, SettingError


def _resized(images: jax.Array, resize: tuple[int, int] | None) -> jax.Array:
    return images if resize is None else preprocess.resize_on_device(images, resize)


@dataclasses.dataclass(frozen=True)
class RandomSampler:
    """A fresh pool of ``set_size`` Gaussian images ``[*shape]`` with random labels in ``0..classes-1``."""

    set_size: int
    shape: tuple[int, ...]
    classes: int
    resize: tuple[int, int] | None = None
    kind = "random"

    def sample(self, arrays: dict, key: jax.Array, length: int, batch: int):
        del arrays
        image_key, label_key, index_key = jax.random.split(key, 3)
        pool = jax.random.normal(image_key, (self.set_size, *self.shape))
        targets = jax.random.randint(label_key, (self.set_size,), 0, self.classes)
        index = jax.random.randint(index_key, (length, batch), 0, self.set_size)
        return _resized(pool[index], self.resize), targets[index]


@dataclasses.dataclass(frozen=True)
class SumSampler:
    """Gaussian inputs ``[*shape]``; the label is whether their sum is >= 0."""

    shape: tuple[int, ...]
    resize: tuple[int, int] | None = None
    kind = "sum"

    def sample(self, arrays: dict, key: jax.Array, length: int, batch: int):
        del arrays
        images = jax.random.normal(key, (length, batch, *self.shape))
        axes = tuple(range(2, images.ndim))
        labels = (jnp.sum(images, axis=axes) >= 0).astype(jnp.int32)
        return _resized(images, self.resize), labels


def _base_shape(name: str, shape: tuple[int, ...], resize: tuple[int, int] | None) -> tuple[int, ...]:
    if resize is None:
        return shape
    if len(shape) != 3:
        raise SettingError(PreprocessSettings, "resize", f"needs [H, W, C] inputs; '{name}' has shape {list(shape)}")
    return (*resize, shape[-1])


@dataclasses.dataclass(frozen=True)
class RandomSource(NamedSource):
    stored_classes = False

    def names(self) -> tuple[str, ...]:
        return ("random",)

    def class_count(self, name: str, settings: DataSettings) -> int:
        return settings.random_dataset.target_count

    def example_shape(self, name: str, settings: DataSettings) -> tuple[int, ...]:
        return settings.random_dataset.img_size

    def load(self, name: str, subset: str, settings: DataSettings, options: LoadOptions) -> Loaded:
        del subset  # every episode is fresh
        section = settings.random_dataset
        shape, classes = section.img_size, section.target_count
        sampler = RandomSampler(set_size=section.size, shape=shape, classes=classes, resize=options.resize)
        return Loaded(sampler=sampler, arrays={}, base_shape=_base_shape(name, shape, options.resize), classes=classes)

    def status(self, directory) -> tuple[str, list[tuple[str, str, str]]]:
        return "procedural", [("random", "ready", "random_dataset.*: memorise random labels")]


@dataclasses.dataclass(frozen=True)
class SumSource(NamedSource):
    stored_classes = False

    def names(self) -> tuple[str, ...]:
        return ("sum",)

    def class_count(self, name: str, settings: DataSettings) -> int:
        return 2

    def example_shape(self, name: str, settings: DataSettings) -> tuple[int, ...]:
        return settings.sum_dataset.input_size

    def load(self, name: str, subset: str, settings: DataSettings, options: LoadOptions) -> Loaded:
        del subset  # every episode is fresh
        shape = settings.sum_dataset.input_size
        return Loaded(
            sampler=SumSampler(shape=shape, resize=options.resize),
            arrays={},
            base_shape=_base_shape(name, shape, options.resize),
            classes=2,
        )

    def status(self, directory) -> tuple[str, list[tuple[str, str, str]]]:
        return "procedural", [("sum", "ready", "sum_dataset.*: is the sum of the inputs >= 0")]


RANDOM = RandomSource()
SUM = SumSource()
