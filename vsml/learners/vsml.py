"""VSML: every weight of a network is a tiny LSTM with shared parameters.

docs/DESIGN.md §4 defines the computation. This module is the fast path used for
runs; :mod:`vsml.learners.vsml_reference` follows the paper literally and the
tests hold the two equal. The fast path uses the algebra of §4:

* the gate pre-activation of synapse (a, b) is ``fwd_in[a] @ W_f + bwd_in[b] @ W_b
  + h[a, b] @ W_h + bias``; the first two terms are computed once per layer
  and time step (messages do not change over micro ticks), per input a and per
  output b, instead of once per synapse and tick;
* without layer norm a linear message head commutes with the mean over
  synapses, so heads run on the averaged hidden state ([B, S] instead of
  [A, B, S]), and only after the last micro tick, the only one whose messages
  are read.

Shapes: ``Bt`` batch, ``A`` inputs of a layer, ``B`` outputs, ``S`` LSTM size,
``M`` message size, ``T`` episode length, ``C`` classes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from vsml.learners.api import LearnerType
from vsml.learners.common import fields_from
from vsml.learners.numerics import bound_logits, layer_norm, lstm_cell, truncated_normal
from vsml.settings import SettingError, SubRNNSettings, VSMLRNNSettings, key_of

Params = Any  # pytree of jnp arrays

FORGET_BIAS = 5.0
INPUT_BIAS = -5.0
STATE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """A conv VSML layer (SAME padding); see :func:`conv_layer` for the semantics."""

    kernel_size: int
    stride: int = 1
    out_channels: int = 8


@dataclasses.dataclass(frozen=True)
class VSMLSpec:
    """Static description of a VSML learner (hashable, so it can be a jit static); option defaults
    are the settings' (``model.sub_rnn``, ``model.vsml_rnn``)."""

    msg_size: int = SubRNNSettings.msg_size
    slow_size: int = SubRNNSettings.slow_size
    init_rand_proportion: float = SubRNNSettings.init_rand_proportion
    # Multiplies every truncated-normal draw (sub-RNN weights, random initial cells): 1.0 is the
    # original release's std ≈ 0.88/sqrt(fan in); 1/0.8796 ≈ 1.137 gives std = 1/sqrt(fan in).
    init_scale: float = SubRNNSettings.init_scale
    layer_norm: bool = SubRNNSettings.layer_norm
    hidden_sizes: tuple[int, ...] = ()  # sizes of the dense layers before the output layer
    num_micro_ticks: int = VSMLRNNSettings.num_micro_ticks
    tanh_bound: float = VSMLRNNSettings.tanh_bound
    output_idx: int = VSMLRNNSettings.output_idx
    backward_pass: bool = VSMLRNNSettings.backward_pass
    separate_backward_rnn: bool = VSMLRNNSettings.separate_backward_rnn
    feed_label: bool = VSMLRNNSettings.feed_label
    layerwise_rnns: bool = VSMLRNNSettings.layerwise_rnns
    # Leading conv layers (before the dense layers given by ``hidden_sizes`` and the
    # output layer). Conv layers always come first: inputs keep their [H, W, C] shape
    # through them and are flattened into the first dense layer.
    conv_layers: tuple[ConvLayer, ...] = ()
    # "bfloat16": LSTM states (h, c) stored and the recurrent matmul run in bfloat16, gate
    # maths in float32 — halves the state traffic (a GPU speed lever, bench/gpu_check.py);
    # "float32": everything in float32.
    state_dtype: str = VSMLRNNSettings.state_dtype

    @property
    def num_layers(self) -> int:
        return len(self.conv_layers) + len(self.hidden_sizes) + 1

    @property
    def num_param_sets(self) -> int:
        return self.num_layers if self.layerwise_rnns else 1


def spec_from_config(model, input_shape=None, num_classes=None) -> VSMLSpec:
    """The spec of the typed ``model`` settings' ``sub_rnn`` and ``vsml_rnn`` sections (any data size: sizes unused).

    The one place for the rules that span the VSML keys: the structure of
    ``layer_specs``, ``output_idx < msg_size`` and bfloat16 states only with
    dense layers (single-key types and ranges are the settings' rules);
    ``check_config`` runs both for every rank before any work.
    """
    del input_shape, num_classes
    sub, net = model.sub_rnn, model.vsml_rnn
    hidden_sizes, conv_layers = _layers_from_config(net)
    if not 0 <= net.output_idx < sub.msg_size:
        limit = key_of(type(sub), "msg_size")
        raise SettingError(net, "output_idx", f"must be below {limit} ({sub.msg_size}), got {net.output_idx}")
    if net.state_dtype != "float32" and conv_layers:
        raise SettingError(net, "state_dtype", "bfloat16 states are for dense layers; use float32 with conv layers")
    return fields_from(VSMLSpec, sub, net, hidden_sizes=hidden_sizes, conv_layers=conv_layers)


def _layers_from_config(net) -> tuple[tuple[int, ...], tuple[ConvLayer, ...]]:
    """``net.layer_specs`` as (hidden dense sizes, leading conv layers); SettingError naming the entry."""
    layer_specs = net.layer_specs
    hidden_sizes, conv_layers = [], []
    for index, layer in enumerate(layer_specs):
        where = f"[{index}]"
        if not isinstance(layer, Mapping):
            raise SettingError(
                net, "layer_specs", f"must be a mapping such as {{type: dense, size: 32}}, got {layer!r}", where
            )
        kind, last = layer.get("type", "dense"), index == len(layer_specs) - 1
        if kind == "conv":
            if hidden_sizes or last:
                place = "after a dense layer" if hidden_sizes else "as the last layer"
                raise SettingError(
                    net,
                    "layer_specs",
                    f"a conv layer cannot come {place}; conv layers go first and the output layer is dense",
                    where,
                )
            conv_layers.append(_conv_layer_from_config(net, index, layer))
        elif kind != "dense":
            raise SettingError(
                net, "layer_specs", f"layer type '{kind}' is not available; use 'dense' or 'conv'", where
            )
        elif last and "size" in layer:
            raise SettingError(
                net, "layer_specs", "the last layer's size is the number of classes; remove 'size'", where
            )
        elif not last:
            size = layer.get("size")
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise SettingError(
                    net, "layer_specs", f"a hidden layer needs 'size', a positive integer, got {size!r}", where
                )
            hidden_sizes.append(size)
    return tuple(hidden_sizes), tuple(conv_layers)


def _conv_layer_from_config(net, index: int, layer: Mapping) -> ConvLayer:
    values = {}
    for key, default in (("kernel_size", None), ("stride", 1), ("out_channels", None)):
        value = layer.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SettingError(net, "layer_specs", f"must be a positive int, got {value!r}", f"[{index}].{key}")
        values[key] = value
    unknown = set(layer) - {"type", "kernel_size", "stride", "out_channels"}
    if unknown:
        raise SettingError(net, "layer_specs", f"unknown conv key(s) {sorted(unknown)}", f"[{index}]")
    return ConvLayer(**values)


# --------------------------------------------------------------------------- init


def init_sub_rnn(key, spec: VSMLSpec) -> Params:
    """One set of sub-RNN parameters: LSTM gates from [fwd msg, bwd msg, hidden] and two heads."""
    m, s = spec.msg_size, spec.slow_size
    keys = jax.random.split(key, 5)
    # 1/sqrt(fan in); the drawn weights' std is ≈ 0.88× this (no variance correction)
    gate_std = spec.init_scale / jnp.sqrt(2 * m + s)
    head_std = spec.init_scale / jnp.sqrt(s)
    params = {
        "w_fwd_in": truncated_normal(keys[0], (m, 4 * s), gate_std),
        "w_bwd_in": truncated_normal(keys[1], (m, 4 * s), gate_std),
        "w_hidden": truncated_normal(keys[2], (s, 4 * s), gate_std),
        "b_gates": jnp.zeros((4 * s,)),
        "w_fwd_out": truncated_normal(keys[3], (s, m), head_std),
        "b_fwd_out": jnp.zeros((m,)),
        "w_bwd_out": truncated_normal(keys[4], (s, m), head_std),
        "b_bwd_out": jnp.zeros((m,)),
    }
    if spec.layer_norm:
        params.update(
            ln_fwd_scale=jnp.ones((m,)),
            ln_fwd_offset=jnp.zeros((m,)),
            ln_bwd_scale=jnp.ones((m,)),
            ln_bwd_offset=jnp.zeros((m,)),
        )
    return params


def init(key, spec: VSMLSpec) -> Params:
    """Meta-parameters: ``{'forward': [sets], 'backward': [sets]?}``.

    One set shared by all layers, or one per layer with ``layerwise_rnns``;
    ``backward`` only with ``backward_pass`` and ``separate_backward_rnn``.
    None of it depends on the input or output size.
    """
    fwd_key, bwd_key = jax.random.split(key)
    count = spec.num_param_sets
    params = {"forward": [init_sub_rnn(k, spec) for k in jax.random.split(fwd_key, count)]}
    if spec.backward_pass and spec.separate_backward_rnn:
        params["backward"] = [init_sub_rnn(k, spec) for k in jax.random.split(bwd_key, count)]
    return params


def layer_sizes(spec: VSMLSpec, num_inputs: int, num_classes: int) -> list[tuple[int, int]]:
    """(A, B) of each dense layer for a flattened input size and a class count.

    With conv layers, ``num_inputs`` is the flattened output size of the last conv
    layer and only the dense layers are listed (see :func:`layer_geometries`).
    """
    sizes = [num_inputs, *spec.hidden_sizes, num_classes]
    return list(zip(sizes[:-1], sizes[1:]))


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """Shapes of one conv layer for a given input: ``in_shape (H, W, Cin)``, ``out_shape (H', W', Cout)``."""

    layer: ConvLayer
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """SAME padding as in TensorFlow: ``(output size ceil(size / stride), padding before)``.

    The total padding ``max((out - 1) * stride + kernel - size, 0)`` is split with the
    smaller half before (top / left) and the rest after.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2


def layer_geometries(spec: VSMLSpec, input_shape, num_classes: int) -> list:
    """Per-layer geometry: a :class:`ConvGeometry` for each conv layer, ``(A, B)`` for each dense one.

    Without conv layers this is :func:`layer_sizes` of the flattened input. With conv
    layers ``input_shape`` must be an image ``(H, W)`` or ``(H, W, C)``.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if not spec.conv_layers:
        return layer_sizes(spec, int(math.prod(input_shape)), num_classes)
    if len(input_shape) == 2:
        input_shape = (*input_shape, 1)
    if len(input_shape) != 3:
        raise ValueError(f"a conv VSML layer needs image inputs [H, W] or [H, W, C], got input shape {input_shape}")
    geometries, shape = [], input_shape
    for layer in spec.conv_layers:
        out_h, _ = same_padding(shape[0], layer.kernel_size, layer.stride)
        out_w, _ = same_padding(shape[1], layer.kernel_size, layer.stride)
        out_shape = (out_h, out_w, layer.out_channels)
        geometries.append(ConvGeometry(layer, shape, out_shape))
        shape = out_shape
    geometries.extend(layer_sizes(spec, int(math.prod(shape)), num_classes))
    return geometries


def initial_states(key, spec: VSMLSpec, sizes, batch: int):
    """Per-layer LSTM states ``(h, c)``, each ``[Bt, A, B, S]`` (dense) or ``[Bt, K, K, Cin, Cout, S]`` (conv).

    Hidden zeros; the first ``init_rand_proportion`` of the cell units drawn per
    synapse from a [-2, 2]-truncated normal times 1/sqrt(fan in) (std ≈ 0.88/sqrt(fan in),
    as the original release) — A for a dense layer,
    K·K·Cin for a conv layer: a random weight init, the same for every example of
    the batch — the rest zero. ``sizes``: ``(A, B)`` pairs or :class:`ConvGeometry`
    entries (:func:`layer_geometries`).
    """
    s = spec.slow_size
    num_rand = int(round(s * spec.init_rand_proportion))
    states = []
    for layer_key, size in zip(jax.random.split(key, len(sizes)), sizes):
        if isinstance(size, ConvGeometry):
            k = size.layer.kernel_size
            synapses = (k, k, size.in_shape[2], size.out_shape[2])
            fan_in = k * k * size.in_shape[2]
        else:
            synapses, fan_in = tuple(size), size[0]
        rand = truncated_normal(layer_key, (*synapses, num_rand), spec.init_scale / jnp.sqrt(fan_in))
        cell = jnp.concatenate([rand, jnp.zeros((*synapses, s - num_rand))], axis=-1)
        cell = jnp.broadcast_to(cell, (batch, *synapses, s)).astype(spec.state_dtype)
        states.append((jnp.zeros((batch, *synapses, s), spec.state_dtype), cell))
    return states


# --------------------------------------------------------------------------- one layer


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


def _messages(p: Params, hidden: jax.Array, spec: VSMLSpec):
    """Outgoing messages of a layer from its hidden states ``[Bt, A, B, S]``.

    Returns ``fwd_out [Bt, B, M]`` (mean over inputs a) and ``bwd_out [Bt, A, M]``
    (mean over outputs b).
    """
    if spec.layer_norm:
        # Layer norm does not commute with the mean: heads per synapse, then average.
        fwd = layer_norm(hidden @ p["w_fwd_out"] + p["b_fwd_out"], p["ln_fwd_scale"], p["ln_fwd_offset"])
        bwd = layer_norm(hidden @ p["w_bwd_out"] + p["b_bwd_out"], p["ln_bwd_scale"], p["ln_bwd_offset"])
        return jnp.mean(fwd, axis=1), jnp.mean(bwd, axis=2)
    hidden = hidden.astype(jnp.float32)  # means and heads in float32 (a no-op for float32 states)
    fwd = jnp.mean(hidden, axis=1) @ p["w_fwd_out"] + p["b_fwd_out"]
    bwd = jnp.mean(hidden, axis=2) @ p["w_bwd_out"] + p["b_bwd_out"]
    return fwd, bwd


def dense_layer(p: Params, state, fwd_in: jax.Array, bwd_in: jax.Array, spec: VSMLSpec):
    """Runs one dense VSML layer for ``num_micro_ticks`` ticks on fixed messages.

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


# --------------------------------------------------------------------------- one conv layer


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


def conv_fan_out(height: int, width: int, layer: ConvLayer) -> jax.Array:
    """``[H, W, 1]``: how many (output position, kernel offset, out channel) synapses read each input position."""
    k, s = layer.kernel_size, layer.stride
    out_h, _ = same_padding(height, k, s)
    out_w, _ = same_padding(width, k, s)
    ones = jnp.ones((1, out_h, out_w, k, k, 1))
    return conv_unpatch(ones, k, s, height, width)[0] * layer.out_channels


def conv_layer(p: Params, state, fwd_in: jax.Array, bwd_in: jax.Array, spec: VSMLSpec, layer: ConvLayer):
    """Runs one conv VSML layer (SAME padding) for ``num_micro_ticks`` ticks on fixed messages.

    The contract of :func:`dense_layer` with spatial shapes and the layer's
    :class:`ConvLayer` as a sixth argument.

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
        fwd = layer_norm(pos_hidden @ p["w_fwd_out"] + p["b_fwd_out"], p["ln_fwd_scale"], p["ln_fwd_offset"])
        bwd = layer_norm(pos_hidden @ p["w_bwd_out"] + p["b_bwd_out"], p["ln_bwd_scale"], p["ln_bwd_offset"])
        fwd_out = jnp.mean(fwd, axis=(3, 4, 5))
        bwd_sum = conv_unpatch(jnp.sum(bwd, axis=6), k, stride, height, width)  # [Bt,H,W,Cin,M]
        bwd_out = bwd_sum / jnp.maximum(fan_out, 1)[..., None]
    else:
        # Linear heads commute with the means: reduce the hidden states first.
        fwd_out = jnp.mean(pos_hidden, axis=(3, 4, 5)) @ p["w_fwd_out"] + p["b_fwd_out"]
        hidden_sum = conv_unpatch(jnp.sum(pos_hidden, axis=6), k, stride, height, width)  # [Bt,H,W,Cin,S]
        bwd_out = (hidden_sum / jnp.maximum(fan_out, 1)[..., None]) @ p["w_bwd_out"] + p["b_bwd_out"]
        bwd_out = jnp.where(fan_out[..., None] > 0, bwd_out, 0.0)
    return (hidden, cell), fwd_out, bwd_out


# --------------------------------------------------------------------------- a whole episode


def _param_set(params: Params, group: str, layer: int, spec: VSMLSpec) -> Params:
    sets = params[group]
    return sets[layer] if spec.layerwise_rnns else sets[0]


def error_message(error: jax.Array, label: jax.Array, spec: VSMLSpec) -> jax.Array:
    """Backward message into the last layer: ``[e[b], y[b] if feed_label else 0, 0, …]``.

    ``error``, ``label``: ``[Bt, C]``; returns ``[Bt, C, M]``.
    """
    slots = [error, label if spec.feed_label else jnp.zeros_like(label)]
    msg = jnp.stack(slots, axis=-1)
    return jnp.pad(msg, ((0, 0), (0, 0), (0, spec.msg_size - 2)))


def input_message(x: jax.Array, spec: VSMLSpec) -> jax.Array:
    """Forward message into the first layer: ``[x[a], 0, …, 0]``; ``[Bt, A] -> [Bt, A, M]``.

    Any shape works: ``[Bt, H, W, C] -> [Bt, H, W, C, M]`` for a leading conv layer.
    """
    return jnp.pad(x[..., None], [(0, 0)] * x.ndim + [(0, spec.msg_size - 1)])


def make_time_step(params: Params, spec: VSMLSpec, layer_fn=dense_layer, conv_layer_fn=conv_layer):
    """The scan body of one inner time step (all layers), closed over the meta-parameters.

    Carry: ``(states, bwd_ins)`` with per-layer states and incoming backward
    messages; ``bwd_ins[-1]`` encodes the previous step's error (and label).
    The first ``len(spec.conv_layers)`` layers run ``conv_layer_fn`` (with their
    :class:`ConvLayer` as sixth argument) on spatial messages; the forward message
    is flattened into the first dense layer, and that layer's backward message is
    reshaped back to the last conv layer's output shape.
    """
    num_layers = spec.num_layers
    num_conv = len(spec.conv_layers)
    backward_group = "backward" if (spec.backward_pass and spec.separate_backward_rnn) else "forward"

    def apply(group, i, state, fwd, bwd):
        p = _param_set(params, group, i, spec)
        if i < num_conv:
            return conv_layer_fn(p, state, fwd, bwd, spec, spec.conv_layers[i])
        return layer_fn(p, state, fwd, bwd, spec)

    def time_step(carry, xy):
        states, bwd_ins = carry
        x, y = xy  # [Bt, A0] (or [Bt, H, W, C] with conv layers), [Bt, C]
        states, new_bwd_ins, fwd_ins = list(states), list(bwd_ins), []
        fwd = input_message(x, spec)
        for i in range(num_layers):
            if i == num_conv and num_conv:
                fwd = fwd.reshape(fwd.shape[0], -1, spec.msg_size)  # [Bt, H'*W'*Cout, M]
            fwd_ins.append(fwd)
            states[i], fwd, bwd_out = apply("forward", i, states[i], fwd, bwd_ins[i])
            if i > 0:
                new_bwd_ins[i - 1] = bwd_out.reshape(bwd_ins[i - 1].shape)  # read by layer i-1 next step
        logits = bound_logits(fwd[..., spec.output_idx], spec.tanh_bound)
        error = jax.nn.softmax(logits) - y
        if spec.backward_pass:
            bwd = error_message(error, y, spec)
            for i in reversed(range(num_layers)):
                states[i], _, bwd_out = apply(backward_group, i, states[i], fwd_ins[i], bwd)
                if i > 0:
                    bwd_out = bwd_out.reshape(bwd_ins[i - 1].shape)
                    new_bwd_ins[i - 1] = bwd_out
                bwd = bwd_out
            # The error has been delivered by the backward sweep; the next forward step gets none.
            new_bwd_ins[-1] = jnp.zeros_like(bwd_ins[-1])
        else:
            new_bwd_ins[-1] = error_message(error, y, spec)
        return (tuple(states), tuple(new_bwd_ins)), logits

    return time_step


def initial_carry(key, spec: VSMLSpec, num_inputs, num_classes: int, batch: int):
    """``num_inputs``: the flattened input size, or the image shape ``(H, W[, C])`` with conv layers."""
    if isinstance(num_inputs, int) and not spec.conv_layers:
        sizes = layer_sizes(spec, num_inputs, num_classes)
    else:
        shape = (num_inputs,) if isinstance(num_inputs, int) else tuple(num_inputs)
        sizes = layer_geometries(spec, shape, num_classes)
    states = initial_states(key, spec, sizes, batch)
    bwd_ins = tuple(
        jnp.zeros((batch, *size.out_shape, spec.msg_size))
        if isinstance(size, ConvGeometry)
        else jnp.zeros((batch, size[1], spec.msg_size))
        for size in sizes
    )
    return tuple(states), bwd_ins


def run(
    meta_params: Params,
    key,
    inputs: jax.Array,
    labels: jax.Array,
    spec: VSMLSpec,
    layer_fn=dense_layer,
    conv_layer_fn=conv_layer,
    unroll: int = 1,
):
    """Runs the VSML learner online over an episode.

    Args:
      unroll: time steps per iteration of the scan's loop (``lax.scan(unroll=)``);
        changes speed only (``bench/throughput.py`` measures it).
      inputs: ``[T, Bt, *input_shape]`` (flattened to ``A0`` inputs; with conv layers
        an image ``[T, Bt, H, W, C]`` or ``[T, Bt, H, W]``, kept spatial).
      labels: ``[T, Bt, C]`` one-hot; ``C`` sets the output layer size.
    Returns:
      logits ``[T, Bt, C]``: the prediction for ``inputs[t]`` made before ``labels[t]`` is seen.
    """
    steps, batch = inputs.shape[:2]
    if spec.conv_layers:
        if inputs.ndim not in (4, 5):
            raise ValueError(f"a conv VSML layer needs image inputs [T, B, H, W(, C)], got shape {tuple(inputs.shape)}")
        images = inputs if inputs.ndim == 5 else inputs[..., None]
        images = images.astype(jnp.float32)
        carry = initial_carry(key, spec, images.shape[2:], labels.shape[-1], batch)
        step = make_time_step(meta_params, spec, layer_fn, conv_layer_fn)
        _, logits = jax.lax.scan(step, carry, (images, labels), unroll=unroll)
        return logits
    flat = inputs.reshape(steps, batch, -1).astype(jnp.float32)
    carry = initial_carry(key, spec, flat.shape[-1], labels.shape[-1], batch)
    _, logits = jax.lax.scan(
        make_time_step(meta_params, spec, layer_fn, conv_layer_fn), carry, (flat, labels), unroll=unroll
    )
    return logits


def run_with_options(
    meta_params: Params,
    key,
    inputs: jax.Array,
    labels: jax.Array,
    spec: VSMLSpec,
    unroll: int = 1,
    implementation: str = "fast",
):
    """:func:`run` with the registry's run options: ``unroll`` and ``implementation``.

    ``implementation: literal`` runs the paper-literal layers of
    :mod:`vsml.learners.vsml_reference` (equal results, slower; the benchmark's baseline).
    """
    if implementation == "literal":
        from vsml.learners import vsml_reference  # noqa: PLC0415 — it imports this module

        return vsml_reference.run(meta_params, key, inputs, labels, spec, unroll=unroll)
    if implementation != "fast":
        raise ValueError(f"VSML implementation '{implementation}' is not one of fast, literal")
    return run(meta_params, key, inputs, labels, spec, unroll=unroll)


LEARNER_TYPE = LearnerType(
    name="VSMLRNN",
    section="vsml_rnn",
    extra_sections=("sub_rnn",),
    spec_from_config=spec_from_config,
    init=init,
    run=run_with_options,
    any_size=True,
    run_options=("unroll", "implementation"),
)
