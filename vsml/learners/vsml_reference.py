"""VSML as the paper states it, for tests and as the benchmark baseline.

Every synapse concatenates its incoming forward and backward messages, runs
the full LSTM on ``[messages, hidden]``, applies both heads (and layer norm)
on every tick, and the messages are then averaged. No algebraic shortcut:
this is what :func:`vsml.learners.vsml_layer.dense_layer` and
:func:`vsml.learners.vsml_conv.conv_layer` must equal. ``run_with_options(...,
implementation="literal")`` of :mod:`vsml.learners.vsml` runs an episode with these layers.
"""

from __future__ import annotations

import jax.numpy as jnp

from vsml.learners.vsml_conv import conv_fan_out, conv_patches, conv_unpatch
from vsml.learners.vsml_layer import lstm_update, merge_batch, message_head


def literal_dense_layer(p, state, fwd_in, bwd_in, spec):
    """Same contract as :func:`vsml.learners.vsml_layer.dense_layer`, computed per synapse."""
    hidden, cell = state
    batch, num_in, num_out, _ = hidden.shape
    w_full = jnp.concatenate([p["w_fwd_in"], p["w_bwd_in"], p["w_hidden"]], axis=0)  # [2M+S, 4S]
    fwd_b = jnp.broadcast_to(fwd_in[:, :, None, :], (batch, num_in, num_out, spec.msg_size))
    bwd_b = jnp.broadcast_to(bwd_in[:, None, :, :], (batch, num_in, num_out, spec.msg_size))
    fwd_out = bwd_out = None
    for _ in range(spec.num_micro_ticks):
        hidden, cell = merge_batch(hidden), merge_batch(cell)
        synapse_input = jnp.concatenate([fwd_b, bwd_b, hidden], axis=-1)  # [Bt, A, B, 2M+S]
        gates = synapse_input @ w_full + p["b_gates"]
        hidden, cell = lstm_update(gates, cell)
        fwd_msg = message_head(p, "fwd", hidden, spec.layer_norm)  # [Bt, A, B, M]
        bwd_msg = message_head(p, "bwd", hidden, spec.layer_norm)
        fwd_out = jnp.mean(fwd_msg, axis=1)  # over inputs a -> [Bt, B, M]
        bwd_out = jnp.mean(bwd_msg, axis=2)  # over outputs b -> [Bt, A, M]
    return (hidden, cell), fwd_out, bwd_out


def literal_conv_layer(p, state, fwd_in, bwd_in, spec, layer):
    """Same contract as :func:`vsml.learners.vsml_conv.conv_layer`, computed per (output position, synapse).

    Every synapse ``(kh, kw, cin, cout)`` runs the full LSTM at every output position
    ``(i, j)`` on ``[fwd_in at the input position it reads there (zero in the padding),
    bwd_in[i, j, cout], h]``, applies both heads (and layer norm) on every tick; its
    new state is the mean over output positions; forward messages are averaged over
    the receptive field, backward messages over everything that read an input position.
    """
    hidden, cell = state  # [Bt, K, K, Cin, Cout, S]
    batch, k, _, cin, cout, _ = hidden.shape
    stride = layer.stride
    height, width = fwd_in.shape[1:3]
    m = spec.msg_size
    fwd_field = conv_patches(fwd_in, k, stride)  # [Bt, H', W', K, K, Cin, M]
    out_h, out_w = fwd_field.shape[1:3]
    grid = (batch, out_h, out_w, k, k, cin, cout)
    fwd_b = jnp.broadcast_to(fwd_field[..., None, :], (*grid, m))
    bwd_b = jnp.broadcast_to(bwd_in[:, :, :, None, None, None], (*grid, m))
    w_full = jnp.concatenate([p["w_fwd_in"], p["w_bwd_in"], p["w_hidden"]], axis=0)  # [2M+S, 4S]
    fan_out = conv_fan_out(height, width, layer)  # [H, W, 1]
    fwd_out = bwd_out = None
    for _ in range(spec.num_micro_ticks):
        hidden, cell = merge_batch(hidden), merge_batch(cell)
        h_grid = jnp.broadcast_to(hidden[:, None, None], (*grid, hidden.shape[-1]))
        c_grid = jnp.broadcast_to(cell[:, None, None], (*grid, cell.shape[-1]))
        gates = jnp.concatenate([fwd_b, bwd_b, h_grid], axis=-1) @ w_full + p["b_gates"]
        pos_hidden, pos_cell = lstm_update(gates, c_grid)
        hidden, cell = jnp.mean(pos_hidden, axis=(1, 2)), jnp.mean(pos_cell, axis=(1, 2))
        fwd_msg = message_head(p, "fwd", pos_hidden, spec.layer_norm)  # [Bt, H', W', K, K, Cin, Cout, M]
        bwd_msg = message_head(p, "bwd", pos_hidden, spec.layer_norm)
        fwd_out = jnp.mean(fwd_msg, axis=(3, 4, 5))  # over the receptive field -> [Bt, H', W', Cout, M]
        bwd_sum = conv_unpatch(jnp.sum(bwd_msg, axis=6), k, stride, height, width)  # [Bt, H, W, Cin, M]
        bwd_out = bwd_sum / jnp.maximum(fan_out, 1)[..., None]
    return (hidden, cell), fwd_out, bwd_out
