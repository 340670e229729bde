"""Numerics every learner shares: initialisation, bounded logits, the LSTM cell, layer norm.

One definition each, so that VSML and the baselines cannot drift apart. Every
learner module imports these from here (not from another learner).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Standard deviation of a standard normal truncated to [-2, 2].
TRUNCATED_STD = 0.87962566103423978


def truncated_normal(key, shape, scale):
    """A standard normal truncated to [-2, 2], times ``scale`` (no variance correction).

    This is haiku's ``TruncatedNormal(stddev=scale)``, which the original release uses
    for every weight: the spread is ``TRUNCATED_STD · scale`` ≈ 0.88·scale, not ``scale``.
    """
    return jax.random.truncated_normal(key, -2.0, 2.0, shape) * scale


def bound_logits(z: jax.Array, bound: float) -> jax.Array:
    """``tanh(z / bound) · bound``: logits kept within ±bound, unchanged near zero."""
    return jnp.tanh(z / bound) * bound


def lstm_cell(gates: jax.Array, cell: jax.Array, forget_bias: float = 0.0, input_bias: float = 0.0):
    """The LSTM update from gate pre-activations ``[..., 4S]`` (order ``i, g, f, o``) and cell ``[..., S]``.

    ``forget_bias`` / ``input_bias`` are constants added to the forget and input
    gates (VSML uses +5 / −5 so its states change slowly). Returns ``(hidden, cell)``.
    """
    i, g, f, o = jnp.split(gates, 4, axis=-1)
    if forget_bias:  # a literal zero adds no operation (the numbers stay those of a plain cell)
        f = f + forget_bias
    if input_bias:
        i = i + input_bias
    cell = jax.nn.sigmoid(f) * cell + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(cell), cell


def layer_norm(x: jax.Array, scale, offset, eps: float = 1e-5) -> jax.Array:
    """Normalises the last axis to zero mean and unit variance, then ``· scale + offset``."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + offset
