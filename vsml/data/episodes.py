"""Episodes sampled on the device, inside the jitted step.

A :class:`DataSpec` is the static (hashable) description of a dataset; its
arrays (a pytree, possibly empty) travel as arguments of jitted functions, so
the whole dataset is uploaded once and never baked into a compiled program.

Array keys by kind: 'array' -> ``images [N, *base_shape]`` (uint8 or float32)
and ``labels [N]`` int32; 'fewshot' -> ``images`` and ``by_class [K, S]``
(indices of the S examples of each of the split's K classes); every kind may
also hold ``permutation [D]`` / ``projection [D, D]`` (see
:mod:`vsml.data.preprocess`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vsml.data import preprocess


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a dataset is, independent of its arrays.

    kind: 'array' (sample stored examples), 'random' (a fresh small set of
    Gaussian images with random labels per episode: memorisation), 'sum'
    (Gaussian inputs, label = whether their sum is >= 0) or 'fewshot'
    (N-way K-shot episodes of stored classes, relabelled per episode).

    input_shape / num_classes are what the learner sees (after padding);
    base_shape / data_classes are those of the data before padding.
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    num_classes: int
    normalization_mode: str = "identity"
    mean: float = 0.0
    std: float = 1.0
    random_set_size: int = 20
    base_shape: tuple[int, ...] | None = None
    data_classes: int | None = None
    scale: float = 1.0                      # stored pixel * scale is in [0, 1] (1/255 for uint8)
    resize: tuple[int, ...] | None = None   # on-device resize (procedural kinds only)
    generated_shape: tuple[int, ...] | None = None  # procedural kinds: drawn shape, before resize
    pad_input: tuple[int, ...] | None = None
    shuffle: bool = False
    rand_proj: bool = False
    rotate: bool = False                    # fewshot: each example rotated by a random multiple of 90°
    test_last: bool = False                 # fewshot: the last step is a query of an unseen example

    def __post_init__(self):
        # Specs written before the preprocessing fields existed stay valid.
        if self.base_shape is None:
            object.__setattr__(self, "base_shape", tuple(self.input_shape))
        if self.generated_shape is None:
            object.__setattr__(self, "generated_shape", self.base_shape)
        if self.data_classes is None:
            object.__setattr__(self, "data_classes", self.num_classes)


def normalize(images: jax.Array, spec: DataSpec) -> jax.Array:
    """``images [..., *base_shape]`` normalised as ``spec.normalization_mode`` says."""
    return preprocess.normalize(images, spec)


def _fewshot_steps(spec: DataSpec, length: int) -> int:
    """Examples drawn per class for an episode of ``length`` steps."""
    way = spec.data_classes
    if spec.test_last:
        if (length - 1) % way:
            raise ValueError(f"omniglot_fewshot_dataset.test_last: the episode length ({length}) must be "
                             f"1 + a multiple of num_classes ({way}), e.g. {way + 1} or {2 * way + 1}")
        return (length - 1) // way + 1
    return -(-length // way)


def _fewshot_episode(spec: DataSpec, arrays: dict, key, length: int):
    """One N-way episode: ``images [T, *base_shape]``, ``labels [T]`` in 0..N-1.

    N distinct classes are drawn, labelled by their (random) draw order; each
    gives ``per`` distinct examples. With ``test_last`` the first example of
    each class is held out, the rest (T-1 of them) are shuffled, and the
    held-out example of one random class is the last step; otherwise T of the
    shuffled examples are used.
    """
    way, by_class = spec.data_classes, arrays["by_class"]
    per = _fewshot_steps(spec, length)
    if per > by_class.shape[1]:
        raise ValueError(f"omniglot_fewshot: an episode of {length} steps needs {per} examples per class; "
                         f"the data has {by_class.shape[1]}")
    class_key, example_key, order_key, query_key, rotate_key = jax.random.split(key, 5)
    classes = jax.random.choice(class_key, by_class.shape[0], (way,), replace=False)
    ranks = jax.random.uniform(example_key, (way, by_class.shape[1])).argsort(axis=1)[:, :per]
    chosen = by_class[classes[:, None], ranks]                                   # [N, per]
    labels = jnp.broadcast_to(jnp.arange(way)[:, None], chosen.shape)
    if spec.test_last:
        support, support_labels = chosen[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
        order = jax.random.permutation(order_key, support.shape[0])
        query = jax.random.randint(query_key, (), 0, way)
        index = jnp.concatenate([support[order], chosen[query, :1]])
        labels = jnp.concatenate([support_labels[order], query[None]])
    else:
        order = jax.random.permutation(order_key, way * per)[:length]
        index, labels = chosen.reshape(-1)[order], labels.reshape(-1)[order]
    images = arrays["images"][index]
    if spec.rotate:
        turns = jax.random.randint(rotate_key, (length,), 0, 4)
        rotations = jnp.stack([jnp.rot90(images, k, axes=(1, 2)) for k in range(4)])
        images = rotations[turns, jnp.arange(length)]
    return images, labels


def sample_episode(spec: DataSpec, arrays: dict, key, length: int, batch: int):
    """One episode: ``inputs [T, B, *input_shape]`` float32 and one-hot ``labels [T, B, C]``."""
    if spec.kind == "array":
        index = jax.random.randint(key, (length, batch), 0, arrays["labels"].shape[0])
        images, labels = arrays["images"][index], arrays["labels"][index]
    elif spec.kind == "fewshot":
        images, labels = jax.vmap(lambda k: _fewshot_episode(spec, arrays, k, length), out_axes=1)(
            jax.random.split(key, batch))
    elif spec.kind == "random":
        image_key, label_key, index_key = jax.random.split(key, 3)
        size = spec.random_set_size
        pool = jax.random.normal(image_key, (size, *spec.generated_shape))
        targets = jax.random.randint(label_key, (size,), 0, spec.data_classes)
        index = jax.random.randint(index_key, (length, batch), 0, size)
        images, labels = pool[index], targets[index]
    elif spec.kind == "sum":
        images = jax.random.normal(key, (length, batch, *spec.generated_shape))
        axes = tuple(range(2, images.ndim))
        labels = (jnp.sum(images, axis=axes) >= 0).astype(jnp.int32)
    else:
        raise ValueError(f"unknown dataset kind '{spec.kind}'")
    if spec.resize is not None and spec.kind in ("random", "sum"):
        images = preprocess.resize_on_device(images, spec)
    return preprocess.postprocess(images, labels, spec, arrays)
