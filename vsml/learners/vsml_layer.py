"""One VSML layer on fixed messages (docs/DESIGN.md §4): what every layer kind shares —
the synapse LSTM update, batch merging, the message heads, a layer's geometry — and the
dense layer. The conv layer is :mod:`vsml.learners.vsml_conv`, the whole episode
:mod:`vsml.learners.vsml`.

A layer function has the contract ``layer(p, state, fwd_in, bwd_in, spec) -> (state,
fwd_out, bwd_out)``; ``spec`` is the learner's :class:`vsml.learners.vsml.VSMLSpec` (read:
``num_micro_ticks``, ``layer_norm``). Shapes: ``Bt`` batch, ``A`` inputs of a layer, ``B``
outputs, ``S`` LSTM size, ``M`` message size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from vsml.learners.numerics import layer_norm, lstm_cell

Params = Any  # pytree of jnp arrays

FORGET_BIAS = 5.0
INPUT_BIAS = -5.0


@dataclasses.dataclass(frozen=True)
class LayerGeometry:
    """The shapes of one layer for a given input, whatever its kind.

    synapses: the synapse grid, a state's shape without batch and ``S``: ``(A, B)`` for a
      dense layer, ``(K, K, Cin, Cout)`` for a conv layer.
    fan_in: inputs that reach one output (``A``, or ``K·K·Cin``): sets the initial cells' scale.
    out_shape: the layer's outputs, a backward message's shape without batch and ``M``:
      ``(B,)``, or ``(H', W', Cout)``.
    """

    synapses: tuple[int, ...]
    fan_in: int
    out_shape: tuple[int, ...]


def dense_geometry(num_inputs: int, num_outputs: int) -> LayerGeometry:
    """The geometry of a dense ``A -> B`` layer."""
    return LayerGeometry(synapses=(num_inputs, num_outputs), fan_in=num_inputs, out_shape=(num_outputs,))


def merge_batch(x: jax.Array) -> jax.Array:
    """Averages the first half of the last axis over the batch (axis 0).

    The shared half of each state acts like weights common to the batch; the
    second half stays per example.
    """
    if x.shape[0] == 1:
        return x
    half = x.shape[-1] // 2
    shared = jnp.broadcast_to(jnp.mean(x[..., :half], axis=0, keepdims=True), x[..., :half].shape)
    return jnp.concatenate([shared, x[..., half:]], axis=-1)


def lstm_update(gates: jax.Array, cell: jax.Array):
    """LSTM cell update with forget bias +5 and input bias -5 (slowly changing states)."""
    return lstm_cell(gates, cell, FORGET_BIAS, INPUT_BIAS)


def message_head(p: Params, direction: str, hidden: jax.Array, normalise: bool) -> jax.Array:
    """A synapse's outgoing message ``[..., S] -> [..., M]``; ``direction``: ``fwd`` or ``bwd``.

    A linear head, then layer norm when ``normalise`` (``sub_rnn.layer_norm``). Without layer
    norm the head commutes with means over synapses, so callers may average first.
    """
    message = hidden @ p[f"w_{direction}_out"] + p[f"b_{direction}_out"]
    if normalise:
        message = layer_norm(message, p[f"ln_{direction}_scale"], p[f"ln_{direction}_offset"])
    return message


def _messages(p: Params, hidden: jax.Array, spec):
    """Outgoing messages of a layer from its hidden states ``[Bt, A, B, S]``.

    Returns ``fwd_out [Bt, B, M]`` (mean over inputs a) and ``bwd_out [Bt, A, M]``
    (mean over outputs b).
    """
    if spec.layer_norm:
        # Layer norm does not commute with the mean: heads per synapse, then average.
        fwd, bwd = (message_head(p, direction, hidden, True) for direction in ("fwd", "bwd"))
        return jnp.mean(fwd, axis=1), jnp.mean(bwd, axis=2)
    hidden = hidden.astype(jnp.float32)  # means and heads in float32 (a no-op for float32 states)
    return message_head(p, "fwd", jnp.mean(hidden, axis=1), False), message_head(
        p, "bwd", jnp.mean(hidden, axis=2), False
    )


def dense_layer(p: Params, state, fwd_in: jax.Array, bwd_in: jax.Array, spec):
    """Runs one dense VSML layer for ``num_micro_ticks`` ticks on fixed messages.

    The gate pre-activation of synapse (a, b) is ``fwd_in[a] @ W_f + bwd_in[b] @ W_b +
    h[a, b] @ W_h + bias``; the first two terms are computed once per call (messages do
    not change over micro ticks), per input a and per output b, instead of once per
    synapse and tick.

    Args:
      p: one sub-RNN parameter set.
      state: ``(h, c)``, each ``[Bt, A, B, S]``.
      fwd_in: ``[Bt, A, M]`` incoming forward message of each input a.
      bwd_in: ``[Bt, B, M]`` incoming backward message of each output b.
    Returns:
      ``(state, fwd_out [Bt, B, M], bwd_out [Bt, A, M])``.
    """
    hidden, cell = state
    dtype = hidden.dtype  # spec.state_dtype; with float32 every cast below is a no-op
    per_input = (fwd_in @ p["w_fwd_in"])[:, :, None, :]  # [Bt, A, 1, 4S]
    per_output = (bwd_in @ p["w_bwd_in"] + p["b_gates"])[:, None, :, :]  # [Bt, 1, B, 4S]
    for _ in range(spec.num_micro_ticks):
        hidden, cell = merge_batch(hidden), merge_batch(cell)
        recurrent = jnp.matmul(hidden, p["w_hidden"].astype(dtype), preferred_element_type=jnp.float32)
        gates = recurrent + per_input + per_output  # float32
        hidden, cell = lstm_update(gates, cell.astype(jnp.float32))
        hidden, cell = hidden.astype(dtype), cell.astype(dtype)
    fwd_out, bwd_out = _messages(p, hidden, spec)
    return (hidden, cell), fwd_out, bwd_out
