"""VSML: every weight of a network is a tiny LSTM with shared parameters.

DESIGN.md §4 defines the computation. This module is the fast path used for
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
from typing import Any

import jax
import jax.numpy as jnp

from vsml.learners.api import Learner

Params = Any  # pytree of jnp arrays

FORGET_BIAS = 5.0
INPUT_BIAS = -5.0


@dataclasses.dataclass(frozen=True)
class VSMLSpec:
    """Static description of a VSML learner (hashable, so it can be a jit static)."""

    msg_size: int = 8
    slow_size: int = 16
    init_rand_proportion: float = 0.5
    layer_norm: bool = False
    hidden_sizes: tuple[int, ...] = ()  # sizes of the dense layers before the output layer
    num_micro_ticks: int = 2
    tanh_bound: float = 100.0
    output_idx: int = 1
    backward_pass: bool = False
    separate_backward_rnn: bool = False
    feed_label: bool = False
    layerwise_rnns: bool = False

    @property
    def num_layers(self) -> int:
        return len(self.hidden_sizes) + 1

    @property
    def num_param_sets(self) -> int:
        return self.num_layers if self.layerwise_rnns else 1


def spec_from_config(model_cfg: dict) -> VSMLSpec:
    """Builds the spec from the ``model`` section of a resolved config."""
    sub, net = model_cfg["sub_rnn"], model_cfg["vsml_rnn"]
    layer_specs = list(net["layer_specs"])
    if not layer_specs:
        raise ValueError("model.vsml_rnn.layer_specs is empty; give at least [{type: dense}]")
    hidden_sizes = []
    for index, layer in enumerate(layer_specs):
        kind = layer.get("type", "dense")
        if kind != "dense":
            raise ValueError(
                f"model.vsml_rnn.layer_specs[{index}]: layer type '{kind}' is not available; use 'dense'"
            )
        if index < len(layer_specs) - 1:
            if "size" not in layer:
                raise ValueError(
                    f"model.vsml_rnn.layer_specs[{index}]: a hidden dense layer needs 'size'"
                )
            hidden_sizes.append(int(layer["size"]))
    spec = VSMLSpec(
        msg_size=int(sub["msg_size"]),
        slow_size=int(sub["slow_size"]),
        init_rand_proportion=float(sub["init_rand_proportion"]),
        layer_norm=bool(sub["layer_norm"]),
        hidden_sizes=tuple(hidden_sizes),
        num_micro_ticks=int(net["num_micro_ticks"]),
        tanh_bound=float(net["tanh_bound"]),
        output_idx=int(net["output_idx"]),
        backward_pass=bool(net["backward_pass"]),
        separate_backward_rnn=bool(net["separate_backward_rnn"]),
        feed_label=bool(net["feed_label"]),
        layerwise_rnns=bool(net["layerwise_rnns"]),
    )
    if spec.msg_size < 2:
        raise ValueError("model.sub_rnn.msg_size must be >= 2 (error and label slots)")
    if not 0 <= spec.output_idx < spec.msg_size:
        raise ValueError(f"model.vsml_rnn.output_idx must be in [0, {spec.msg_size})")
    return spec


# --------------------------------------------------------------------------- init


def _truncated_normal(key, shape, std):
    # Truncation at 2 std shrinks the spread; rescale so the std is as asked.
    return jax.random.truncated_normal(key, -2.0, 2.0, shape) * (std / 0.87962566103423978)


def init_sub_rnn(key, spec: VSMLSpec) -> Params:
    """One set of sub-RNN parameters: LSTM gates from [fwd msg, bwd msg, hidden] and two heads."""
    m, s = spec.msg_size, spec.slow_size
    keys = jax.random.split(key, 5)
    gate_std = 1.0 / jnp.sqrt(2 * m + s)
    head_std = 1.0 / jnp.sqrt(s)
    params = {
        "w_fwd_in": _truncated_normal(keys[0], (m, 4 * s), gate_std),
        "w_bwd_in": _truncated_normal(keys[1], (m, 4 * s), gate_std),
        "w_hidden": _truncated_normal(keys[2], (s, 4 * s), gate_std),
        "b_gates": jnp.zeros((4 * s,)),
        "w_fwd_out": _truncated_normal(keys[3], (s, m), head_std),
        "b_fwd_out": jnp.zeros((m,)),
        "w_bwd_out": _truncated_normal(keys[4], (s, m), head_std),
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
    """(A, B) of each dense layer for a flattened input size and a class count."""
    sizes = [num_inputs, *spec.hidden_sizes, num_classes]
    return list(zip(sizes[:-1], sizes[1:]))


def initial_states(key, spec: VSMLSpec, sizes, batch: int):
    """Per-layer LSTM states ``(h, c)``, each ``[Bt, A, B, S]``.

    Hidden zeros; the first ``init_rand_proportion`` of the cell units drawn per
    synapse from a truncated normal with std 1/sqrt(A) — a random weight init,
    the same for every example of the batch — the rest zero.
    """
    s = spec.slow_size
    num_rand = int(round(s * spec.init_rand_proportion))
    states = []
    for layer_key, (a, b) in zip(jax.random.split(key, len(sizes)), sizes):
        rand = _truncated_normal(layer_key, (a, b, num_rand), 1.0 / jnp.sqrt(a))
        cell = jnp.concatenate([rand, jnp.zeros((a, b, s - num_rand))], axis=-1)
        cell = jnp.broadcast_to(cell, (batch, a, b, s))
        states.append((jnp.zeros((batch, a, b, s)), cell))
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
    i, g, f, o = jnp.split(gates, 4, axis=-1)
    cell = jax.nn.sigmoid(f + FORGET_BIAS) * cell + jax.nn.sigmoid(i + INPUT_BIAS) * jnp.tanh(g)
    hidden = jax.nn.sigmoid(o) * jnp.tanh(cell)
    return hidden, cell


def layer_norm(x, scale, offset, eps=1e-5):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + offset


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
    per_input = (fwd_in @ p["w_fwd_in"])[:, :, None, :]  # [Bt, A, 1, 4S]
    per_output = (bwd_in @ p["w_bwd_in"] + p["b_gates"])[:, None, :, :]  # [Bt, 1, B, 4S]
    for _ in range(spec.num_micro_ticks):
        hidden, cell = merge_batch(hidden), merge_batch(cell)
        gates = hidden @ p["w_hidden"] + per_input + per_output
        hidden, cell = lstm_update(gates, cell)
    fwd_out, bwd_out = _messages(p, hidden, spec)
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
    """Forward message into the first layer: ``[x[a], 0, …, 0]``; ``[Bt, A] -> [Bt, A, M]``."""
    return jnp.pad(x[..., None], ((0, 0), (0, 0), (0, spec.msg_size - 1)))


def bound_logits(z: jax.Array, bound: float) -> jax.Array:
    return jnp.tanh(z / bound) * bound


def make_time_step(params: Params, spec: VSMLSpec, layer_fn=dense_layer):
    """The scan body of one inner time step (all layers), closed over the meta-parameters.

    Carry: ``(states, bwd_ins)`` with per-layer states and incoming backward
    messages; ``bwd_ins[-1]`` encodes the previous step's error (and label).
    """
    num_layers = spec.num_layers
    backward_group = "backward" if (spec.backward_pass and spec.separate_backward_rnn) else "forward"

    def time_step(carry, xy):
        states, bwd_ins = carry
        x, y = xy  # [Bt, A0], [Bt, C]
        states, new_bwd_ins, fwd_ins = list(states), list(bwd_ins), []
        fwd = input_message(x, spec)
        for i in range(num_layers):
            fwd_ins.append(fwd)
            states[i], fwd, bwd_out = layer_fn(
                _param_set(params, "forward", i, spec), states[i], fwd, bwd_ins[i], spec
            )
            if i > 0:
                new_bwd_ins[i - 1] = bwd_out  # read by layer i-1 at the next step
        logits = bound_logits(fwd[..., spec.output_idx], spec.tanh_bound)
        error = jax.nn.softmax(logits) - y
        if spec.backward_pass:
            bwd = error_message(error, y, spec)
            for i in reversed(range(num_layers)):
                states[i], _, bwd_out = layer_fn(
                    _param_set(params, backward_group, i, spec), states[i], fwd_ins[i], bwd, spec
                )
                if i > 0:
                    new_bwd_ins[i - 1] = bwd_out
                bwd = bwd_out
            # The error has been delivered by the backward sweep; the next forward step gets none.
            new_bwd_ins[-1] = jnp.zeros_like(bwd_ins[-1])
        else:
            new_bwd_ins[-1] = error_message(error, y, spec)
        return (tuple(states), tuple(new_bwd_ins)), logits

    return time_step


def initial_carry(key, spec: VSMLSpec, num_inputs: int, num_classes: int, batch: int):
    sizes = layer_sizes(spec, num_inputs, num_classes)
    states = initial_states(key, spec, sizes, batch)
    bwd_ins = tuple(jnp.zeros((batch, b, spec.msg_size)) for _, b in sizes)
    return tuple(states), bwd_ins


def run(meta_params: Params, key, inputs: jax.Array, labels: jax.Array, spec: VSMLSpec, layer_fn=dense_layer):
    """Runs the VSML learner online over an episode.

    Args:
      inputs: ``[T, Bt, *input_shape]`` (flattened to ``A0`` inputs).
      labels: ``[T, Bt, C]`` one-hot; ``C`` sets the output layer size.
    Returns:
      logits ``[T, Bt, C]``: the prediction for ``inputs[t]`` made before ``labels[t]`` is seen.
    """
    steps, batch = inputs.shape[:2]
    flat = inputs.reshape(steps, batch, -1).astype(jnp.float32)
    carry = initial_carry(key, spec, flat.shape[-1], labels.shape[-1], batch)
    _, logits = jax.lax.scan(make_time_step(meta_params, spec, layer_fn), carry, (flat, labels))
    return logits


def learner(spec: VSMLSpec) -> Learner:
    """The VSML learner with its spec bound (DESIGN §3 interface)."""
    return Learner(
        init=lambda key: init(key, spec),
        run=lambda meta_params, key, inputs, labels: run(meta_params, key, inputs, labels, spec),
    )
