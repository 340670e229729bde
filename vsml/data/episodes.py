"""Episodes sampled on the device, inside the jitted step.

A :class:`DataSpec` is the static (hashable) description of a dataset; its
arrays (a pytree, possibly empty) travel as arguments of jitted functions, so
the whole dataset is uploaded once and never baked into a compiled program.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a dataset is, independent of its arrays.

    kind: 'array' (sample stored examples), 'random' (a fresh small set of
    Gaussian images with random labels per episode: memorisation) or 'sum'
    (Gaussian inputs, label = whether their sum is >= 0).
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    num_classes: int
    normalization_mode: str = "identity"
    mean: float = 0.0
    std: float = 1.0
    random_set_size: int = 20


def normalize(images: jax.Array, spec: DataSpec) -> jax.Array:
    """``images [..., *input_shape]`` normalised as ``spec.normalization_mode`` says."""
    if spec.normalization_mode == "dataset_standard":
        return (images - spec.mean) / spec.std
    if spec.normalization_mode == "standard":
        axes = tuple(range(-len(spec.input_shape), 0))
        mean = jnp.mean(images, axis=axes, keepdims=True)
        std = jnp.std(images, axis=axes, keepdims=True)
        return (images - mean) / jnp.maximum(std, 1e-6)
    return images


def sample_episode(spec: DataSpec, arrays: dict, key, length: int, batch: int):
    """One episode: ``inputs [T, B, *input_shape]`` float32 and one-hot ``labels [T, B, C]``."""
    if spec.kind == "array":
        index = jax.random.randint(key, (length, batch), 0, arrays["labels"].shape[0])
        inputs, labels = arrays["images"][index], arrays["labels"][index]
    elif spec.kind == "random":
        image_key, label_key, index_key = jax.random.split(key, 3)
        size = spec.random_set_size
        images = jax.random.normal(image_key, (size, *spec.input_shape))
        targets = jax.random.randint(label_key, (size,), 0, spec.num_classes)
        index = jax.random.randint(index_key, (length, batch), 0, size)
        inputs, labels = images[index], targets[index]
    elif spec.kind == "sum":
        inputs = jax.random.normal(key, (length, batch, *spec.input_shape))
        axes = tuple(range(2, inputs.ndim))
        labels = (jnp.sum(inputs, axis=axes) >= 0).astype(jnp.int32)
    else:
        raise ValueError(f"unknown dataset kind '{spec.kind}'")
    inputs = normalize(inputs.astype(jnp.float32), spec)
    return inputs, jax.nn.one_hot(labels, spec.num_classes)
