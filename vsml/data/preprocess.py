"""Preprocessing (``data.preprocess.*``, ``data.filter_classes``) and where each step runs.

At load time, on the host, once per dataset (they shrink or reorder what is
stored, so doing them once is both cheaper and lighter on device memory):

- ``filter_classes``: keep the listed classes, relabelled 0..k-1 in list order.
- ``resize [H', W']``: bilinear (anti-aliased when shrinking); the resized
  images are stored as float32 in [0, 1].

On the device, per episode, inside the jitted step (:func:`postprocess`), in
this order (the order of the original VSML release):

1. scale stored pixels to float32 in [0, 1] (uint8 sources are stored as uint8);
2. normalise (``normalization_mode``);
3. ``pad.input [H', W', C']``: zeros appended after the last row/column/channel;
4. ``shuffle``: one fixed pixel permutation of the flattened (padded) input;
5. ``rand_proj``: flattened input times one fixed Glorot-uniform [D, D] matrix;
5a. ``episode_augment.shuffle``: a pixel permutation drawn for this episode;
5b. ``episode_augment.rand_proj``: a Glorot-uniform [D, D] matrix drawn for this episode
    ([D, W] to a mixture's common width W, else the flattened input zero-padded to W);
6. ``episode_augment.permute_labels``: a permutation of the data's classes
   drawn for this episode; labels one-hot with width ``pad.output`` (>= the
   number of classes).

Steps 5a, 5b and the permutation of 6 (training episodes only, see
:func:`episode_transforms`) are drawn on the device from the episode's own key,
so the same episode key gives the same transforms on any rank.

The permutation and the projection are built on the host from a seed
(:func:`transform_seed`) and travel with the dataset's device arrays, so they
are never baked into a compiled program. ``rand_proj`` / ``shuffle`` accept
``true`` (seed derived from the top-level ``seed`` and the dataset name: every
rank on that dataset gets the same matrix) or an integer seed; different
matrices per rank are asked for explicitly, e.g.
``data.preprocess.rand_proj={mpi_split: [1, 2, 3, 4]}``.
"""

from __future__ import annotations

import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from vsml.settings import DataSection, SettingError

_SALTS = {"rand_proj": 1, "shuffle": 2}
# fold_in(episode data key, _AUGMENT_SALT) is the key of the per-episode transforms; a constant
# no sampler folds in, so the transforms are independent of the examples drawn.
_AUGMENT_SALT = zlib.crc32(b"episode_augment")


# ----------------------------------------------------------------- config parsing


def transform_seed(value, name: str, seed: int, dataset: str) -> int | None:
    """The seed of a ``rand_proj`` / ``shuffle`` setting, or None when it is off.

    ``true`` derives the seed from the top-level ``seed`` and the dataset name
    (not the rank), an integer is the seed itself.
    """
    if value is False or value is None:
        return None
    if value is True:
        return int(np.random.SeedSequence([seed, _SALTS[name], zlib.crc32(dataset.encode())]).generate_state(1)[0])
    if isinstance(value, int):
        return value
    raise ValueError(f"{name}: {value!r} is not true, false or an integer seed")


# ----------------------------------------------------------------- host, at load time


def filter_classes(images: np.ndarray, labels: np.ndarray, keep: tuple[int, ...], num_classes: int):
    """Keeps examples whose label is in ``keep``; label ``keep[i]`` becomes ``i``.

    Returns ``(images [N', ...], labels [N'] int32)``.
    """
    if max(keep) >= num_classes:
        raise SettingError(
            DataSection,
            "filter_classes",
            f"class {max(keep)} does not exist (the dataset has {num_classes} classes, 0..{num_classes - 1})",
        )
    relabel = np.full(num_classes, -1, dtype=np.int32)
    relabel[list(keep)] = np.arange(len(keep), dtype=np.int32)
    new_labels = relabel[labels]
    mask = new_labels >= 0
    return images[mask], new_labels[mask]


def resize_images(images: np.ndarray, size: tuple[int, int], scale: float, chunk: int = 4096) -> np.ndarray:
    """``images [N, H, W, C]`` (stored pixels times ``scale`` are in [0, 1]) -> float32 ``[N, *size, C]``.

    Runs in chunks so that a large dataset never needs a float copy of itself.
    """
    shape = (*size, images.shape[-1])
    resize = jax.jit(lambda x: jax.image.resize(x.astype(jnp.float32) * scale, (x.shape[0], *shape), "bilinear"))
    out = np.empty((len(images), *shape), dtype=np.float32)
    for start in range(0, len(images), chunk):
        out[start : start + chunk] = np.asarray(resize(images[start : start + chunk]))
    return out


def projection_limit(dim: int, width: int | None = None) -> float:
    """Glorot-uniform bound of a ``[dim, width]`` projection (``width`` None: ``dim``): entries are
    U(-limit, +limit), limit = sqrt(6 / (dim + width))."""
    return math.sqrt(6.0 / (dim + (dim if width is None else width)))


def projection_matrix(dim: int, seed: int) -> np.ndarray:
    """A fixed Glorot-uniform ``[dim, dim]`` float32 matrix (:func:`projection_limit`), built on the host."""
    limit = projection_limit(dim)
    return np.random.default_rng(seed).uniform(-limit, limit, size=(dim, dim)).astype(np.float32)


def permutation(dim: int, seed: int) -> np.ndarray:
    """A fixed permutation of ``range(dim)`` (int32)."""
    return np.random.default_rng(seed).permutation(dim).astype(np.int32)


# ----------------------------------------------------------------- device, per episode


def normalize(images: jax.Array, spec) -> jax.Array:
    """``images [..., *base_shape]`` in [0, 1] normalised as ``spec.normalization_mode`` says."""
    if spec.normalization_mode == "dataset_standard":
        return (images - spec.mean) / spec.std
    if spec.normalization_mode == "standard":
        axes = tuple(range(-len(spec.base_shape), 0))
        mean = jnp.mean(images, axis=axes, keepdims=True)
        std = jnp.std(images, axis=axes, keepdims=True)
        return (images - mean) / jnp.maximum(std, 1e-6)
    return images


def pad_to(images: jax.Array, target: tuple[int, ...]) -> jax.Array:
    """Zero-pads the trailing ``len(target)`` axes of ``images`` up to ``target``."""
    lead = images.ndim - len(target)
    widths = [(0, 0)] * lead + [(0, t - s) for s, t in zip(images.shape[lead:], target)]
    return jnp.pad(images, widths)


def resize_on_device(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """``images [T, B, H, W, C]`` -> ``[T, B, *size, C]`` (procedural datasets, drawn on the device)."""
    shape = (*images.shape[:2], *size, images.shape[-1])
    return jax.image.resize(images, shape, "bilinear")


def episode_transforms(key, augment, dim: int, classes: int, width: int | None = None) -> dict:
    """The per-episode transforms that ``augment`` (``data.episode_augment``) turns on, drawn from ``key``.

    Args:
      key: the episode's data key (both members of an ES pair share it).
      dim: flattened (padded) input size D.
      classes: the data's class count (padded classes never occur, so they are not permuted).
      width: the projection's output width W (a mixture's common width; None: D).
    Returns:
      a dict with ``'permutation' [D]`` int32 (shuffle), ``'projection' [D, W]`` float32
      (rand_proj, Glorot-uniform as :func:`projection_matrix`) and ``'labels' [classes]`` int32
      (permute_labels: class c becomes ``labels[c]``), each present only when on. Each transform has
      its own sub-key, so turning one on never changes another.
    """
    key = jax.random.fold_in(key, _AUGMENT_SALT)
    out = {}
    if augment.shuffle:
        out["permutation"] = jax.random.permutation(jax.random.fold_in(key, 0), dim).astype(jnp.int32)
    if augment.rand_proj:
        shape = (dim, dim if width is None else width)
        limit = projection_limit(*shape)
        out["projection"] = jax.random.uniform(jax.random.fold_in(key, 1), shape, jnp.float32, -limit, limit)
    if augment.permute_labels:
        out["labels"] = jax.random.permutation(jax.random.fold_in(key, 2), classes).astype(jnp.int32)
    return out


def postprocess(images: jax.Array, labels: jax.Array, spec, arrays: dict, key=None):
    """Stored examples -> the learner's episode (steps 1-6 of the module docstring): :func:`transform`,
    then ``labels`` one-hot ``[T, B, spec.num_classes]``."""
    images, labels = transform(images, labels, spec, arrays, key)
    return images, jax.nn.one_hot(labels, spec.num_classes)


def transform(images: jax.Array, labels: jax.Array, spec, arrays: dict, key=None):
    """Stored examples -> the learner's inputs and class indices (steps 1-6 but the one-hot).

    Args:
      images: ``[T, B, *spec.base_shape]`` as stored (uint8 or float32).
      labels: ``[T, B]`` int class indices in ``0..spec.data_classes-1``.
      arrays: the dataset's arrays; ``'permutation' [D]`` and ``'projection'
        [D, D]`` when shuffle / rand_proj are on.
      key: the episode's data key; read only when ``spec.episode_augment`` is set.
    Returns:
      ``inputs [T, B, *spec.input_shape]`` float32 and ``labels [T, B]`` int class indices.
    """
    images = images.astype(jnp.float32) * spec.scale
    images = normalize(images, spec)
    if spec.pad_input is not None:
        images = pad_to(images, spec.pad_input)
    lead = images.shape[:2]
    if spec.shuffle:
        images = images.reshape(*lead, -1)[..., arrays["permutation"]]
    if spec.rand_proj:
        images = images.reshape(*lead, -1) @ arrays["projection"]
    if spec.episode_augment is not None:
        drawn = episode_transforms(key, spec.episode_augment, spec.data_dim, spec.data_classes, spec.width)
        if "permutation" in drawn:
            images = images.reshape(*lead, -1)[..., drawn["permutation"]]
        if "projection" in drawn:
            images = images.reshape(*lead, -1) @ drawn["projection"]
        if "labels" in drawn:
            labels = drawn["labels"][labels]
    if spec.width is not None:  # a mixture's dataset: zero-padded to W (a no-op after 5b's projection to W)
        images = pad_to(images.reshape(*lead, -1), (spec.width,))
    images = images.reshape(*lead, *spec.input_shape)
    return images, labels
