"""Episodes sampled on the device, inside the jitted step.

A :class:`DataSpec` is the static (hashable) description of a dataset; its
arrays (a pytree, possibly empty) travel as arguments of jitted functions, so
the whole dataset is uploaded once and never baked into a compiled program.

What the arrays hold is up to the dataset's sampler (its source module, see
:mod:`vsml.data.registry`); every kind may also hold ``permutation [D]`` /
``projection [D, D]`` (see :mod:`vsml.data.preprocess`).
"""

from __future__ import annotations

import dataclasses
import math

import jax

from vsml.data import preprocess
from vsml.data.base import Sampler
from vsml.settings import EpisodeAugmentSettings


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a dataset is, independent of its arrays.

    ``sampler`` draws an episode of stored-format examples (its source's own
    frozen spec: stored examples, N-way few-shot, random memorisation, sum);
    the other fields describe the common preprocessing after it.

    input_shape / num_classes are what the learner sees (after padding);
    base_shape / data_classes are those of the sampled data before padding.
    """

    name: str
    sampler: Sampler
    input_shape: tuple[int, ...]
    num_classes: int
    normalization_mode: str = "identity"
    mean: float = 0.0
    std: float = 1.0
    base_shape: tuple[int, ...] | None = None
    data_classes: int | None = None
    scale: float = 1.0  # stored value * scale is in [0, 1] (1/255 for uint8)
    pad_input: tuple[int, ...] | None = None
    shuffle: bool = False
    rand_proj: bool = False
    # data.episode_augment when any of it is on, for training episodes only (meta-test episodes stay untransformed)
    episode_augment: EpisodeAugmentSettings | None = None
    # a mixture's common width W (data.mixture.width): the flattened input is projected to [W] by
    # episode_augment.rand_proj, else zero-padded to it; input_shape is then (W,)
    width: int | None = None

    def __post_init__(self):
        if self.base_shape is None:
            object.__setattr__(self, "base_shape", tuple(self.input_shape))
        if self.data_classes is None:
            object.__setattr__(self, "data_classes", self.num_classes)

    @property
    def data_dim(self) -> int:
        """D: the size of one flattened input after padding, before any projection to ``width``."""
        return math.prod(self.pad_input or self.base_shape)

    @property
    def kind(self) -> str:
        """The sampler's kind ('array', 'fewshot', 'random', 'sum'), for messages and tests."""
        return self.sampler.kind


def normalize(images: jax.Array, spec: DataSpec) -> jax.Array:
    """``images [..., *base_shape]`` normalised as ``spec.normalization_mode`` says."""
    return preprocess.normalize(images, spec)


def sample_episode(spec: DataSpec, arrays: dict, key, length: int, batch: int):
    """One episode: ``inputs [T, B, *input_shape]`` float32 and one-hot ``labels [T, B, C]``."""
    images, labels = spec.sampler.sample(arrays, key, length, batch)
    return preprocess.postprocess(images, labels, spec, arrays, key)
