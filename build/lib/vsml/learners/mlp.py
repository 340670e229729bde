"""The small tanh MLP trained inside the episode by the SGD and NodePert learners (docs/DESIGN.md §5).

``num_layers`` dense layers: ``num_layers − 1`` tanh hidden layers of
``hidden_size`` units, then a linear output layer whose logits are bounded as
``tanh(z/bound)·bound``. Parameters: a list of ``{'w': [n_in, n_out], 'b': [n_out]}``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vsml.learners import common, numerics


def layer_sizes(num_inputs: int, num_layers: int, hidden_size: int, num_classes: int) -> list[int]:
    """``[D, H, …, H, C]`` for ``num_layers`` dense layers."""
    if num_layers < 1:
        raise ValueError(f"an MLP needs num_layers >= 1, got {num_layers}")
    return [num_inputs, *([hidden_size] * (num_layers - 1)), num_classes]


def init(key, sizes: list[int]) -> list:
    """Layers with std 1/sqrt(fan_in) truncated-normal weights and zero biases."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [common.dense_init(k, n_in, n_out) for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])]


def forward(layers: list, x: jax.Array, tanh_bound: float, noise=None):
    """Runs the MLP on ``x [N, D]``.

    Args:
      noise: optional list (one per layer) of ``[N, n_out]`` arrays added to the
        pre-activations (node perturbation).
    Returns:
      ``(layer_inputs, logits)``: the input ``h_{l-1} [N, n_in]`` of every layer
      and the bounded logits ``[N, C]``.
    """
    inputs, h = [], x
    for index, p in enumerate(layers):
        inputs.append(h)
        pre = h @ p["w"] + p["b"]
        if noise is not None:
            pre = pre + noise[index]
        h = jnp.tanh(pre) if index < len(layers) - 1 else numerics.bound_logits(pre, tanh_bound)
    return inputs, h


def apply(layers: list, x: jax.Array, tanh_bound: float) -> jax.Array:
    """Bounded logits ``[N, C]`` of ``x [N, D]``."""
    return forward(layers, x, tanh_bound)[1]
