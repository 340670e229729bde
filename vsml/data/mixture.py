"""A mixture of meta-training datasets (``training.dataset: mixture``, ``data.mixture``; docs/DESIGN.md §7.2).

Every training episode comes from one dataset of ``data.mixture.datasets``, chosen on
the device from the episode's own key (with ``data.mixture.weights``), so the same
episode key gives the same dataset, examples and transforms on any rank count. The
datasets differ in input size and class count, and one compiled step needs one shape:
each dataset's flattened input [D_i] is projected to the common width W by its
episode's ``episode_augment.rand_proj`` matrix ([D_i, W]) or, without it, zero-padded
to W; labels are one-hot over the largest class count (or ``pad.output``), a dataset
with fewer classes never using the rest. A mixture is meta-training data only:
meta-tests stay per dataset.

The per-dataset work (loading, statistics, every step of §7.2 but the one-hot) is
that of :func:`vsml.data.load_dataset`, which hands itself in as ``load_component``;
this module only chooses, sizes and checks.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable

import jax
import jax.numpy as jnp

from vsml.data import preprocess
from vsml.data.episodes import DataSpec
from vsml.settings import DataSection, DataSettings, MixtureSettings, PadSettings, SettingError, key_of

MIXTURE = "mixture"  # the training.dataset name that turns data.mixture on
# fold_in(episode data key, _CHOICE_SALT) chooses the dataset; the dataset's own sampling and transforms
# use the episode key as a single-dataset run does, so a mixture episode is that dataset's episode.
_CHOICE_SALT = zlib.crc32(b"data.mixture")


def is_mixture(name) -> bool:
    return name == MIXTURE


@dataclasses.dataclass(frozen=True)
class MixtureSampler:
    """Draws an episode of one component, chosen per episode key; arrays: ``{'components': (arrays_i, ...)}``.

    ``sample`` returns ``inputs [T, B, W]`` float32, already through every step of §7.2 of their
    dataset, and ``labels [T, B]`` int in ``0..max classes - 1``.
    """

    components: tuple[DataSpec, ...]
    weights: tuple[float, ...]  # the chance of each component, summing to 1

    kind = "mixture"

    def choose(self, key: jax.Array) -> jax.Array:
        """The index of the component that episode key ``key`` draws from (int32 scalar)."""
        choice_key = jax.random.fold_in(key, _CHOICE_SALT)
        return jax.random.choice(choice_key, len(self.weights), p=jnp.asarray(self.weights, jnp.float32))

    def sample(self, arrays: dict, key: jax.Array, length: int, batch: int):
        branches = [
            functools.partial(_draw, index, spec, key, length, batch) for index, spec in enumerate(self.components)
        ]
        # Under vmap (ES pairs) lax.switch evaluates every branch and selects: the cost is that of all components.
        return jax.lax.switch(self.choose(key), branches, arrays["components"])


def _draw(index: int, spec: DataSpec, key, length: int, batch: int, components: tuple):
    images, labels = spec.sampler.sample(components[index], key, length, batch)
    return preprocess.transform(images, labels, spec, components[index], key)


def weights(mixture: MixtureSettings) -> tuple[float, ...]:
    """The chance of each dataset (``data.mixture.weights`` normalised; equal when null)."""
    raw = mixture.weights or (1.0,) * len(mixture.datasets)
    return tuple(w / sum(raw) for w in raw)


def check(
    settings: DataSettings,
    key: str,
    check_component: Callable[[str, DataSettings, str], None],
    input_size: Callable[[str, DataSettings], int],
) -> None:
    """Start-up check of a mixture (before any data loads): one line naming the key and the fix.

    ``check_component(name, settings, key)`` checks one dataset; ``input_size(name, settings)`` is the size
    D of its flattened input, known without loading.
    """
    mixture = settings.data.mixture
    datasets_key = key_of(mixture, "datasets")
    if not mixture.datasets:
        raise ValueError(
            f"{key}: {MIXTURE} draws its episodes from {datasets_key}, which is empty; "
            f"list the datasets, e.g. [digits, wine, breast_cancer]"
        )
    if MIXTURE in mixture.datasets:
        raise SettingError(mixture, "datasets", f"cannot hold '{MIXTURE}' itself; list datasets")
    repeated = sorted({name for name in mixture.datasets if mixture.datasets.count(name) > 1})
    if repeated:
        raise SettingError(mixture, "datasets", f"lists {', '.join(repeated)} twice; list each once and give weights")
    if mixture.weights is not None and len(mixture.weights) != len(mixture.datasets):
        raise SettingError(
            mixture,
            "weights",
            f"has {len(mixture.weights)} entries for {len(mixture.datasets)} datasets; give one per dataset or null",
        )
    if settings.data.filter_classes is not None:
        raise SettingError(
            DataSection, "filter_classes", f"applies to one dataset, not to a {MIXTURE}'s; set it to null"
        )
    if settings.data.preprocess.pad.input is not None:
        raise SettingError(
            PadSettings,
            "input",
            f"cannot give a {MIXTURE}'s datasets one shape; set it to null ({key_of(mixture, 'width')} is their width)",
        )
    for name in mixture.datasets:
        check_component(name, settings, datasets_key)
    sizes = {name: input_size(name, settings) for name in mixture.datasets}
    widest = max(sizes, key=sizes.get)
    if mixture.width is not None and not settings.data.episode_augment.rand_proj and mixture.width < sizes[widest]:
        raise SettingError(
            mixture,
            "width",
            f"{mixture.width} cannot hold {widest}'s {sizes[widest]} inputs (zero-padded to it without "
            f"{key_of(settings.data.episode_augment, 'rand_proj')}); give at least {sizes[widest]}, null, "
            f"or turn that projection on",
        )


def width(settings: DataSettings, input_size: Callable[[str, DataSettings], int]) -> int:
    """W: ``data.mixture.width``, or the widest dataset's flattened input size."""
    mixture = settings.data.mixture
    return mixture.width or max(input_size(name, settings) for name in mixture.datasets)


def num_classes(settings: DataSettings, class_count: Callable[[str, DataSettings], int | None]) -> int | None:
    """The one-hot width: ``pad.output``, else the largest class count of the datasets (None: unknown)."""
    pad = settings.data.preprocess.pad.output
    counts = [class_count(name, settings) for name in settings.data.mixture.datasets]
    if pad is not None:
        return pad[0]
    return None if None in counts else max(counts)


def load(
    subset: str,
    settings: DataSettings,
    load_component: Callable[..., tuple[DataSpec, dict]],
    input_size: Callable[[str, DataSettings], int],
) -> tuple[DataSpec, dict]:
    """``(DataSpec, arrays)`` of the mixture: every dataset loaded (as training data) by
    ``load_component(name, subset, settings, training=True)`` and brought to the common width."""
    common = width(settings, input_size)
    loaded = [load_component(name, subset, settings, True) for name in settings.data.mixture.datasets]
    classes = max(spec.num_classes for spec, _ in loaded)  # each is pad.output when given
    components = tuple(
        dataclasses.replace(spec, input_shape=(common,), num_classes=classes, width=common) for spec, _ in loaded
    )
    for spec in components:
        if spec.data_dim > common and not (spec.episode_augment and spec.episode_augment.rand_proj):
            raise SettingError(  # check() says so at start-up; this guards direct calls
                settings.data.mixture, "width", f"{common} cannot hold {spec.name}'s {spec.data_dim} inputs"
            )
    sampler = MixtureSampler(components, weights(settings.data.mixture))
    spec = DataSpec(
        name=MIXTURE,
        sampler=sampler,
        input_shape=(common,),
        num_classes=classes,
        normalization_mode="identity",  # each dataset is normalised by its own statistics in its branch
        base_shape=(common,),
        data_classes=max(spec.data_classes for spec in components),
    )
    return spec, {"components": tuple(arrays for _, arrays in loaded)}
