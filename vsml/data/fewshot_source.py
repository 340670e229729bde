"""N-way few-shot episodes of stored classes: ``omniglot_fewshot`` (TFDS Omniglot).

Section ``<name>_dataset`` (``omniglot_fewshot_dataset``): ``num_classes`` N
classes per episode, ``resize`` applied once at load time (before
``data.preprocess.resize``), ``rotate`` (each example turned by a random
multiple of 90°) and ``test_last`` (the last step is a query of an example not
shown before). Each episode draws N distinct classes of the split and labels
them by their random draw order, so labels carry no meaning across episodes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vsml.data import preprocess, tfds_source
from vsml.data.base import DataSettings, Loaded, LoadOptions, NamedSource, table_stats
from vsml.settings import FewShotSettings, SettingError

FEWSHOT_SOURCES = {"omniglot_fewshot": "omniglot"}  # few-shot dataset -> the TFDS dataset it draws from


@dataclasses.dataclass(frozen=True)
class FewShotSampler:
    """Arrays: ``images [M, H, W, C]`` and ``by_class [K, S]`` (indices of the S examples of each of K classes)."""

    way: int  # N: classes per episode
    rotate: bool = False  # each example rotated by a random multiple of 90°
    test_last: bool = False  # the last step is a query of an unseen example
    kind = "fewshot"

    def steps_per_class(self, length: int) -> int:
        """Examples drawn per class for an episode of ``length`` steps."""
        way = self.way
        if self.test_last:
            if (length - 1) % way:
                raise SettingError(
                    FewShotSettings,
                    "test_last",
                    f"the episode length ({length}) must be "
                    f"1 + a multiple of num_classes ({way}), e.g. {way + 1} or {2 * way + 1}",
                )
            return (length - 1) // way + 1
        return -(-length // way)

    def episode(self, arrays: dict, key: jax.Array, length: int):
        """One N-way episode: ``images [T, H, W, C]``, ``labels [T]`` in 0..N-1.

        N distinct classes are drawn, labelled by their (random) draw order; each
        gives ``per`` distinct examples. With ``test_last`` the first example of
        each class is held out, the rest (T-1 of them) are shuffled, and the
        held-out example of one random class is the last step; otherwise T of the
        shuffled examples are used.
        """
        way, by_class = self.way, arrays["by_class"]
        per = self.steps_per_class(length)
        if per > by_class.shape[1]:
            raise ValueError(
                f"omniglot_fewshot: an episode of {length} steps needs {per} examples per class; "
                f"the data has {by_class.shape[1]}"
            )
        class_key, example_key, order_key, query_key, rotate_key = jax.random.split(key, 5)
        classes = jax.random.choice(class_key, by_class.shape[0], (way,), replace=False)
        ranks = jax.random.uniform(example_key, (way, by_class.shape[1])).argsort(axis=1)[:, :per]
        chosen = by_class[classes[:, None], ranks]  # [N, per]
        labels = jnp.broadcast_to(jnp.arange(way)[:, None], chosen.shape)
        if self.test_last:
            support, support_labels = chosen[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
            order = jax.random.permutation(order_key, support.shape[0])
            query = jax.random.randint(query_key, (), 0, way)
            index = jnp.concatenate([support[order], chosen[query, :1]])
            labels = jnp.concatenate([support_labels[order], query[None]])
        else:
            order = jax.random.permutation(order_key, way * per)[:length]
            index, labels = chosen.reshape(-1)[order], labels.reshape(-1)[order]
        images = arrays["images"][index]
        if self.rotate:
            turns = jax.random.randint(rotate_key, (length,), 0, 4)
            rotations = jnp.stack([jnp.rot90(images, k, axes=(1, 2)) for k in range(4)])
            images = rotations[turns, jnp.arange(length)]
        return images, labels

    def sample(self, arrays: dict, key: jax.Array, length: int, batch: int):
        return jax.vmap(lambda k: self.episode(arrays, k, length), out_axes=1)(jax.random.split(key, batch))


@dataclasses.dataclass(frozen=True)
class FewShotSource(NamedSource):
    stored_classes = False  # classes are drawn per episode; data.filter_classes does not apply

    def names(self) -> tuple[str, ...]:
        return tuple(FEWSHOT_SOURCES)

    def check(self, name: str, settings: DataSettings, key: str) -> None:
        tfds_source.check_available(FEWSHOT_SOURCES[name], tfds_source.data_dir(settings.data.dir), key)

    def class_count(self, name: str, settings: DataSettings) -> int:
        return settings.fewshot(name).num_classes

    def example_shape(self, name: str, settings: DataSettings) -> tuple[int, ...]:
        shape, resize = tfds_source.TFDS_SOURCES[FEWSHOT_SOURCES[name]].shape, settings.fewshot(name).resize
        return shape if resize is None else (*resize, shape[-1])

    def stats(self, name: str, settings: DataSettings) -> tuple[float, float]:
        return table_stats(settings, name, FEWSHOT_SOURCES[name])

    def load(self, name: str, subset: str, settings: DataSettings, options: LoadOptions) -> Loaded:
        """Host arrays ``images [M, H, W, C]`` and ``by_class [K, S]`` int32 of split ``subset``."""
        section = settings.fewshot(name)
        images, labels, _ = tfds_source.load(FEWSHOT_SOURCES[name], subset, tfds_source.data_dir(settings.data.dir))
        scale = 1.0 / 255.0
        if section.resize is not None:
            images, scale = preprocess.resize_images(images, section.resize, scale), 1.0
        classes, counts = np.unique(labels, return_counts=True)
        way = section.num_classes
        if way > len(classes):
            raise ValueError(
                f"{name}_dataset.num_classes: {way} exceeds the {len(classes)} classes of the '{subset}' split"
            )
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        by_class = order[starts[:, None] + np.arange(counts.min())[None, :]].astype(np.int32)
        if options.resize is not None:
            images, scale = preprocess.resize_images(images, options.resize, scale), 1.0
        rotate = section.rotate
        if rotate and images.shape[1] != images.shape[2]:
            raise ValueError(f"{name}_dataset.rotate: needs square images, got {images.shape[1:3]}")
        sampler = FewShotSampler(way=way, rotate=rotate, test_last=section.test_last)
        return Loaded(
            sampler=sampler,
            arrays={"images": images, "by_class": by_class},
            base_shape=tuple(images.shape[1:]),
            classes=way,
            scale=scale,
        )

    def status(self, directory) -> tuple[str, list[tuple[str, str, str]]]:
        rows = [
            (
                name,
                "prepared" if tfds_source.is_prepared(source, directory) else "missing",
                f"N-way episodes of {source}",
            )
            for name, source in FEWSHOT_SOURCES.items()
        ]
        return f"TFDS (in {directory})", rows


SOURCE = FewShotSource()
