"""The conv VSML layer (docs/DESIGN.md §4 "Conv VSML layer"): SAME padding, receptive
fields and their transpose, a conv layer's geometry, and the layer itself.

Shapes: ``Bt`` batch, ``H, W, Cin`` a layer's input, ``H', W', Cout`` its output, ``K``
the kernel size, ``S`` LSTM size, ``M`` message size. ``layer`` is a
:class:`vsml.learners.vsml.ConvLayer` (read: ``kernel_size``, ``stride``, ``out_channels``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vsml.learners.vsml_layer import LayerGeometry, Params, lstm_update, merge_batch, message_head


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """SAME padding as in TensorFlow: ``(output size ceil(size / stride), padding before)``.

    The total padding ``max((out - 1) * stride + kernel - size, 0)`` is split with the
    smaller half before (top / left) and the rest after.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2


def conv_geometries(conv_layers, input_shape: tuple[int, ...]) -> tuple[list[LayerGeometry], tuple[int, int, int]]:
    """The geometry of each conv layer from an image ``(H, W)`` or ``(H, W, C)``, and the last output shape."""
    if len(input_shape) == 2:
        input_shape = (*input_shape, 1)
    if len(input_shape) != 3:
        raise ValueError(f"a conv VSML layer needs image inputs [H, W] or [H, W, C], got input shape {input_shape}")
    geometries, shape = [], input_shape
    for layer in conv_layers:
        out_h, _ = same_padding(shape[0], layer.kernel_size, layer.stride)
        out_w, _ = same_padding(shape[1], layer.kernel_size, layer.stride)
        out_shape = (out_h, out_w, layer.out_channels)
        k = layer.kernel_size
        geometries.append(
            LayerGeometry(synapses=(k, k, shape[2], out_shape[2]), fan_in=k * k * shape[2], out_shape=out_shape)
        )
        shape = out_shape
    return geometries, shape


def conv_patches(x: jax.Array, kernel: int, stride: int) -> jax.Array:
    """``[Bt, H, W, ...] -> [Bt, H', W', K, K, ...]``: the (zero-padded, SAME) receptive fields.

    Entry ``[n, i, j, kh, kw]`` is ``x[n, i*stride + kh - pad_top, j*stride + kw - pad_left]``,
    or zero where that position lies in the padding.
    """
    height, width = x.shape[1:3]
    out_h, pad_top = same_padding(height, kernel, stride)
    out_w, pad_left = same_padding(width, kernel, stride)
    span_h, span_w = (out_h - 1) * stride + kernel, (out_w - 1) * stride + kernel
    pads = [(0, 0), (pad_top, max(span_h - height - pad_top, 0)), (pad_left, max(span_w - width - pad_left, 0))] + [
        (0, 0)
    ] * (x.ndim - 3)
    padded = jnp.pad(x, pads)
    rows = []
    for kh in range(kernel):
        cols = [
            padded[:, kh : kh + (out_h - 1) * stride + 1 : stride, kw : kw + (out_w - 1) * stride + 1 : stride]
            for kw in range(kernel)
        ]
        rows.append(jnp.stack(cols, axis=3))
    return jnp.stack(rows, axis=3)


def conv_unpatch(y: jax.Array, kernel: int, stride: int, height: int, width: int) -> jax.Array:
    """The transpose of :func:`conv_patches`: ``[Bt, H', W', K, K, ...] -> [Bt, H, W, ...]``.

    Each entry is added to the input position it was read from; padding entries are dropped.
    """
    out_h, pad_top = same_padding(height, kernel, stride)
    out_w, pad_left = same_padding(width, kernel, stride)
    span_h, span_w = (out_h - 1) * stride + kernel, (out_w - 1) * stride + kernel
    full_h, full_w = max(span_h, pad_top + height), max(span_w, pad_left + width)
    rest = [(0, 0, 0)] * (y.ndim - 5)
    acc = 0.0
    for kh in range(kernel):
        for kw in range(kernel):
            # Tap (kh, kw) of output i was read from padded row kh + i*stride: the transpose of
            # that strided slice is a pad with stride-1 zeros between entries.
            acc = acc + jax.lax.pad(
                y[:, :, :, kh, kw],
                jnp.zeros((), y.dtype),
                [
                    (0, 0, 0),
                    (kh, full_h - kh - (out_h - 1) * stride - 1, stride - 1),
                    (kw, full_w - kw - (out_w - 1) * stride - 1, stride - 1),
                    *rest,
                ],
            )
    return acc[:, pad_top : pad_top + height, pad_left : pad_left + width]


def conv_fan_out(height: int, width: int, layer) -> jax.Array:
    """``[H, W, 1]``: how many (output position, kernel offset, out channel) synapses read each input position."""
    k, s = layer.kernel_size, layer.stride
    out_h, _ = same_padding(height, k, s)
    out_w, _ = same_padding(width, k, s)
    ones = jnp.ones((1, out_h, out_w, k, k, 1))
    return conv_unpatch(ones, k, s, height, width)[0] * layer.out_channels


def conv_layer(p: Params, state, fwd_in: jax.Array, bwd_in: jax.Array, spec, layer):
    """Runs one conv VSML layer (SAME padding) for ``num_micro_ticks`` ticks on fixed messages.

    The contract of :func:`vsml.learners.vsml_layer.dense_layer` with spatial shapes and
    the layer's ``ConvLayer`` as a sixth argument.

    Semantics (docs/DESIGN.md §4 "Conv VSML layer", made precise). Synapse ``(kh, kw, cin, cout)``
    holds one LSTM state, shared over spatial positions. Output position ``(i, j)``
    reads input position ``(i*s + kh - pad_top, j*s + kw - pad_left)`` through it;
    where that lies in the padding, the incoming forward message is zero (the padding
    position still counts, like zero padding in a conv). On every tick:

    1. (batch > 1) the first half of each state is averaged over the batch;
    2. for every output position (i, j), every synapse runs its LSTM from its shared
       state on ``[fwd_in at its input position (cin), bwd_in[i, j, cout], h]``,
       giving a per-position ``(h_ij, c_ij)``;
    3. the synapse's new state is the mean of ``(h_ij, c_ij)`` over all H'×W' output
       positions (padding positions included).

    Messages come from the per-position hidden states ``h_ij`` of the last tick:
    ``fwd_out[i, j, cout]`` is the mean over the K·K·Cin synapses of the receptive
    field (padding taps included) of their forward heads; ``bwd_out[y, x, cin]`` is the
    mean of the backward heads of every (output position, kh, kw, cout) that read
    input position (y, x) — zero for a position no output reads (stride > kernel).

    Args:
      state: ``(h, c)``, each ``[Bt, K, K, Cin, Cout, S]``.
      fwd_in: ``[Bt, H, W, Cin, M]``; bwd_in: ``[Bt, H', W', Cout, M]``.
    Returns:
      ``(state, fwd_out [Bt, H', W', Cout, M], bwd_out [Bt, H, W, Cin, M])``.
    """
    hidden, cell = state
    k, stride = layer.kernel_size, layer.stride
    height, width = fwd_in.shape[1:3]
    # The input projection splits into a per-(position, tap, cin) and a per-(position, cout) term.
    per_input = conv_patches(fwd_in @ p["w_fwd_in"], k, stride)[..., None, :]  # [Bt,H',W',K,K,Cin,1,4S]
    per_output = (bwd_in @ p["w_bwd_in"] + p["b_gates"])[:, :, :, None, None, None]  # [Bt,H',W',1,1,1,Cout,4S]
    static = per_input + per_output
    pos_hidden = None
    for _ in range(spec.num_micro_ticks):
        hidden, cell = merge_batch(hidden), merge_batch(cell)
        gates = (hidden @ p["w_hidden"])[:, None, None] + static
        pos_hidden, pos_cell = lstm_update(gates, cell[:, None, None])  # [Bt,H',W',K,K,Cin,Cout,S]
        hidden, cell = jnp.mean(pos_hidden, axis=(1, 2)), jnp.mean(pos_cell, axis=(1, 2))
    fan_out = conv_fan_out(height, width, layer)  # [H, W, 1]
    if spec.layer_norm:
        fwd, bwd = (message_head(p, direction, pos_hidden, True) for direction in ("fwd", "bwd"))
        fwd_out = jnp.mean(fwd, axis=(3, 4, 5))
        bwd_sum = conv_unpatch(jnp.sum(bwd, axis=6), k, stride, height, width)  # [Bt,H,W,Cin,M]
        bwd_out = bwd_sum / jnp.maximum(fan_out, 1)[..., None]
    else:
        # Linear heads commute with the means: reduce the hidden states first.
        fwd_out = message_head(p, "fwd", jnp.mean(pos_hidden, axis=(3, 4, 5)), False)
        hidden_sum = conv_unpatch(jnp.sum(pos_hidden, axis=6), k, stride, height, width)  # [Bt,H,W,Cin,S]
        bwd_out = message_head(p, "bwd", hidden_sum / jnp.maximum(fan_out, 1)[..., None], False)
        bwd_out = jnp.where(fan_out[..., None] > 0, bwd_out, 0.0)
    return (hidden, cell), fwd_out, bwd_out
