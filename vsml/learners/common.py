"""Building blocks shared by the fixed-size baseline learners (docs/DESIGN.md §5).

Unlike VSML, the baselines have parameters whose shapes depend on the input
size and the number of classes. Their builders therefore take
``input_shape`` and ``num_classes``; without them they use the paper's padded
sizes (28×28×1 inputs, 62 classes, see ``configs/pad.yaml``), so one set of
meta-parameters fits every dataset padded to that size. ``run`` checks at trace
time that an episode has the sizes the parameters were built for.

Conventions: ``T`` steps, ``B`` batch, ``D`` flattened input size, ``C`` classes.
The feedback a learner receives after predicting step t is the error
``e_t = softmax(logits_t) − y_t`` (the gradient of the cross-entropy w.r.t. the
logits) and the label ``y_t``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from vsml.learners.numerics import TRUNCATED_STD, lstm_cell, truncated_normal

Params = Any

# The paper pads every dataset to this size so fixed-size baselines share meta-parameters.
PADDED_INPUT_SHAPE = (28, 28, 1)
PADDED_NUM_CLASSES = 62

# Conv stem (``use_conv``): two 3×3 convolutions with stride 2, SAME padding, ReLU.
STEM_CHANNELS = (16, 32)
STEM_KERNEL = 3
STEM_STRIDE = 2


def resolve_sizes(input_shape, num_classes) -> tuple[tuple[int, ...], int]:
    """``(input_shape, num_classes)`` with the padded paper sizes as defaults."""
    shape = PADDED_INPUT_SHAPE if input_shape is None else tuple(int(d) for d in input_shape)
    classes = PADDED_NUM_CLASSES if num_classes is None else int(num_classes)
    return shape, classes


def fields_from(spec_class, *sections, **given):
    """``spec_class`` with ``given`` fields, every other field read under its own name from the first of
    the typed config ``sections`` that has it (the generic reader of a learner's settings)."""
    values = dict(given)
    for field in dataclasses.fields(spec_class):
        if field.name not in values:
            values[field.name] = next(getattr(s, field.name) for s in sections if hasattr(s, field.name))
    return spec_class(**values)


def spec_from_section(spec_class, section, input_shape=None, num_classes=None):
    """A fixed-size learner's spec: the data sizes (padded paper sizes by default) and its typed config section.

    Every field of ``spec_class`` but ``input_shape`` and ``num_classes`` is read
    from ``section`` under its own name (:func:`fields_from`).
    Refuses an input shape the learner (with its conv stem, if any) cannot read.
    """
    shape, classes = resolve_sizes(input_shape, num_classes)
    spec = fields_from(spec_class, section, input_shape=shape, num_classes=classes)
    feature_size(spec.input_shape, getattr(spec, "use_conv", False))
    return spec


def check_episode(name: str, input_shape: tuple, num_classes: int, inputs, labels) -> None:
    """Raises a clear error (at trace time) when an episode does not fit the built sizes."""
    got_shape, got_classes = tuple(inputs.shape[2:]), labels.shape[-1]
    if math.prod(got_shape) != math.prod(input_shape) or got_classes != num_classes:
        raise ValueError(
            f"{name} was built for inputs of shape {tuple(input_shape)} and {num_classes} classes, but the "
            f"episode has inputs of shape {got_shape} and {got_classes} classes; pad the data to a common "
            f"size (configs/pad.yaml) or build the learner for this dataset"
        )


def dense_init(key, n_in: int, n_out: int) -> Params:
    """``{'w': [n_in, n_out], 'b': [n_out]}``: truncated-normal weights times 1/sqrt(n_in) (std ≈ 0.88/sqrt(n_in),
    haiku's ``Linear`` default as in the original release) and zero bias."""
    return {"w": truncated_normal(key, (n_in, n_out), 1.0 / math.sqrt(n_in)), "b": jnp.zeros((n_out,))}


def dense(p: Params, x: jax.Array) -> jax.Array:
    return x @ p["w"] + p["b"]


# --------------------------------------------------------------------------- LSTM


def lstm_init(key, n_in: int, n_hidden: int) -> Params:
    """One LSTM cell: gates ``[i, g, f, o]`` from ``[x, h]``; forget-gate bias starts at +1."""
    k_in, k_h = jax.random.split(key)
    bias = jnp.zeros((4 * n_hidden,)).at[2 * n_hidden : 3 * n_hidden].set(1.0)
    return {
        "w_in": truncated_normal(k_in, (n_in, 4 * n_hidden), 1.0 / math.sqrt(n_in + n_hidden)),
        "w_h": truncated_normal(k_h, (n_hidden, 4 * n_hidden), 1.0 / math.sqrt(n_in + n_hidden)),
        "b": bias,
    }


def lstm_step(p: Params, state, x: jax.Array):
    """``(h, c)`` each ``[B, H]``, input ``[B, n_in]`` -> new ``(h, c)``."""
    h, c = state
    return lstm_cell(x @ p["w_in"] + h @ p["w_h"] + p["b"], c)


# --------------------------------------------------------------------------- conv stem


def _stem_out_hw(size: int) -> int:
    for _ in STEM_CHANNELS:
        size = -(-size // STEM_STRIDE)  # SAME padding: ceil(size / stride)
    return size


def stem_features(input_shape: tuple) -> int:
    """Flattened size of the conv stem's output for an ``[H, W, C]`` input."""
    if len(input_shape) != 3:
        raise ValueError(f"use_conv needs image inputs [H, W, C]; got input shape {tuple(input_shape)}")
    h, w, _ = input_shape
    return _stem_out_hw(h) * _stem_out_hw(w) * STEM_CHANNELS[-1]


def stem_init(key, input_shape: tuple) -> Params:
    """Conv stem parameters: a list of ``{'w': [K, K, Cin, Cout], 'b': [Cout]}``."""
    stem_features(input_shape)  # validates the shape
    channels = (input_shape[-1], *STEM_CHANNELS)
    layers = []
    for layer_key, c_in, c_out in zip(jax.random.split(key, len(STEM_CHANNELS)), channels[:-1], channels[1:]):
        fan_in = STEM_KERNEL * STEM_KERNEL * c_in
        # He init (ReLU halves the variance), with the variance correction so the std is
        # sqrt(2 / fan_in), as haiku's VarianceScaling (the original's Conv2D default) corrects it.
        layers.append(
            {
                "w": truncated_normal(
                    layer_key, (STEM_KERNEL, STEM_KERNEL, c_in, c_out), math.sqrt(2.0 / fan_in) / TRUNCATED_STD
                ),
                "b": jnp.zeros((c_out,)),
            }
        )
    return layers


def stem_apply(layers: Params, x: jax.Array) -> jax.Array:
    """``[N, H, W, C] -> [N, F]`` features of the conv stem."""
    for p in layers:
        x = jax.lax.conv_general_dilated(
            x, p["w"], (STEM_STRIDE, STEM_STRIDE), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        x = jax.nn.relu(x + p["b"])
    return x.reshape(x.shape[0], -1)


def feature_size(input_shape: tuple, use_conv: bool) -> int:
    """Size of the vector a learner's core reads per example: stem output or flattened input."""
    return stem_features(input_shape) if use_conv else math.prod(input_shape)


def features(stem: Params | None, x: jax.Array) -> jax.Array:
    """Per-example feature vectors ``[N, F]`` of inputs ``[N, *input_shape]`` (stem or flatten)."""
    x = x.astype(jnp.float32)
    if stem is None:
        return x.reshape(x.shape[0], -1)
    return stem_apply(stem, x)


def episode_features(stem: Params | None, inputs: jax.Array) -> jax.Array:
    """``[T, B, *input_shape] -> [T, B, F]``; the stem runs on all T·B images at once."""
    steps, batch = inputs.shape[:2]
    return features(stem, inputs.reshape(steps * batch, *inputs.shape[2:])).reshape(steps, batch, -1)


def error_signal(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``softmax(logits) − y``: the cross-entropy gradient w.r.t. the logits, ``[B, C]``."""
    return jax.nn.softmax(logits, axis=-1) - labels
