"""VSML: every weight of a network is a tiny LSTM with shared parameters.

docs/DESIGN.md §4 defines the computation. This module is the fast path used for
runs; :mod:`vsml.learners.vsml_reference` follows the paper literally and the
tests hold the two equal. Here: the spec and its config section, the
meta-parameters, the initial states, and an episode (one scan over time steps,
each running every layer). One layer on fixed messages is
:mod:`vsml.learners.vsml_layer` (dense) and :mod:`vsml.learners.vsml_conv` (conv).

Shapes: ``Bt`` batch, ``A`` inputs of a layer, ``B`` outputs, ``S`` LSTM size,
``M`` message size, ``T`` episode length, ``C`` classes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from vsml.learners import vsml_fused, vsml_reference
from vsml.learners.base import LearnerType
from vsml.learners.common import fields_from
from vsml.learners.numerics import bound_logits, truncated_normal
from vsml.learners.scan import FULL_BACKPROP, BackpropPlan, episode_scan
from vsml.learners.vsml_conv import conv_geometries, conv_layer
from vsml.learners.vsml_layer import LayerGeometry, Params, dense_geometry
from vsml.settings import SettingError, SubRNNSettings, VSMLRNNSettings, key_of

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
    # "auto": the fused Pallas step (vsml.learners.vsml_fused) on a CUDA GPU where it covers the
    # layer, XLA's elsewhere; "xla"; "fused" (interpret mode off a GPU: slow, for tests).
    dense_step: str = VSMLRNNSettings.dense_step

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


def layer_geometries(spec: VSMLSpec, input_shape, num_classes: int) -> list[LayerGeometry]:
    """The geometry of every layer: the conv layers (an image ``(H, W)`` or ``(H, W, C)``
    input), then the dense layers on the flattened input (or last conv output)."""
    shape = tuple(int(d) for d in input_shape)
    geometries = []
    if spec.conv_layers:
        geometries, shape = conv_geometries(spec.conv_layers, shape)
    sizes = [int(math.prod(shape)), *spec.hidden_sizes, num_classes]
    return geometries + [dense_geometry(a, b) for a, b in zip(sizes[:-1], sizes[1:])]


def initial_states(key, spec: VSMLSpec, geometries: list[LayerGeometry], batch: int):
    """Per-layer LSTM states ``(h, c)``, each ``[Bt, *synapses, S]``: ``[Bt, A, B, S]`` (dense) or
    ``[Bt, K, K, Cin, Cout, S]`` (conv).

    Hidden zeros; the first ``init_rand_proportion`` of the cell units drawn per
    synapse from a [-2, 2]-truncated normal times 1/sqrt(fan in) (std ≈ 0.88/sqrt(fan in),
    as the original release): a random weight init, the same for every example of
    the batch — the rest zero.
    """
    s = spec.slow_size
    num_rand = int(round(s * spec.init_rand_proportion))
    states = []
    for layer_key, geometry in zip(jax.random.split(key, len(geometries)), geometries):
        synapses = geometry.synapses
        rand = truncated_normal(layer_key, (*synapses, num_rand), spec.init_scale / jnp.sqrt(geometry.fan_in))
        cell = jnp.concatenate([rand, jnp.zeros((*synapses, s - num_rand))], axis=-1)
        cell = jnp.broadcast_to(cell, (batch, *synapses, s)).astype(spec.state_dtype)
        states.append((jnp.zeros((batch, *synapses, s), spec.state_dtype), cell))
    return states


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


def make_time_step(params: Params, spec: VSMLSpec, layer_fn=None, conv_layer_fn=conv_layer):
    """The scan body of one inner time step (all layers), closed over the meta-parameters.

    Carry: ``(states, bwd_ins)`` with per-layer states and incoming backward
    messages; ``bwd_ins[-1]`` encodes the previous step's error (and label).
    Dense layers run ``layer_fn`` (None: the one ``spec.dense_step`` selects, XLA's
    :func:`~vsml.learners.vsml_layer.dense_layer` or the fused kernel). The first
    ``len(spec.conv_layers)`` layers run ``conv_layer_fn`` (with their
    :class:`ConvLayer` as sixth argument) on spatial messages; the forward message
    is flattened into the first dense layer, and that layer's backward message is
    reshaped back to the last conv layer's output shape.
    """
    layer_fn = layer_fn or vsml_fused.select_dense_layer(spec)  # None: the spec's dense_step
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


def initial_carry(key, spec: VSMLSpec, input_shape, num_classes: int, batch: int):
    """The scan's first carry: initial states and zero backward messages ``[Bt, *out_shape, M]``.

    ``input_shape``: one example's shape, ``(A0,)`` flattened or ``(H, W, C)`` with conv layers.
    """
    geometries = layer_geometries(spec, input_shape, num_classes)
    states = initial_states(key, spec, geometries, batch)
    bwd_ins = tuple(jnp.zeros((batch, *geometry.out_shape, spec.msg_size)) for geometry in geometries)
    return tuple(states), bwd_ins


def episode_inputs(inputs: jax.Array, spec: VSMLSpec) -> jax.Array:
    """``[T, Bt, *input_shape]`` as the layers read it: flattened ``[T, Bt, A0]``, or with conv
    layers an image ``[T, Bt, H, W, C]`` (a ``[T, Bt, H, W]`` one gains ``C = 1``); float32."""
    steps, batch = inputs.shape[:2]
    if not spec.conv_layers:
        inputs = inputs.reshape(steps, batch, -1)
    elif inputs.ndim == 4:
        inputs = inputs[..., None]
    elif inputs.ndim != 5:
        raise ValueError(f"a conv VSML layer needs image inputs [T, B, H, W(, C)], got shape {tuple(inputs.shape)}")
    return inputs.astype(jnp.float32)


def start(meta_params: Params, key, inputs: jax.Array, labels: jax.Array, spec: VSMLSpec):
    """The carry before step 0 (:func:`initial_carry`) of the episode ``inputs [T, Bt, ...]``, ``labels [T, Bt, C]``."""
    del meta_params
    shape = jax.eval_shape(lambda x: episode_inputs(x, spec), inputs).shape
    return initial_carry(key, spec, shape[2:], labels.shape[-1], shape[1])


def advance(
    meta_params: Params,
    carry,
    inputs: jax.Array,
    labels: jax.Array,
    spec: VSMLSpec,
    layer_fn=None,
    conv_layer_fn=conv_layer,
    unroll: int = 1,
    backprop_plan: BackpropPlan = FULL_BACKPROP,
):
    """``(carry, logits [K, Bt, C])``: the steps of ``inputs [K, Bt, ...]`` from ``carry`` (see :func:`run`)."""
    step = make_time_step(meta_params, spec, layer_fn, conv_layer_fn)
    return episode_scan(step, carry, (episode_inputs(inputs, spec), labels), backprop_plan, unroll=unroll)


def run(
    meta_params: Params,
    key,
    inputs: jax.Array,
    labels: jax.Array,
    spec: VSMLSpec,
    layer_fn=None,
    conv_layer_fn=conv_layer,
    unroll: int = 1,
    backprop_plan: BackpropPlan = FULL_BACKPROP,
):
    """Runs the VSML learner online over an episode: :func:`advance` over it from :func:`start`.

    Args:
      unroll: time steps per iteration of the scan's loop (``lax.scan(unroll=)``);
        changes speed only (``bench/throughput.py`` measures it).
      backprop_plan: rematerialisation and truncation of a gradient through the
        episode (:mod:`vsml.learners.scan`); the logits do not depend on it.
      inputs: ``[T, Bt, *input_shape]`` (flattened to ``A0`` inputs; with conv layers
        an image ``[T, Bt, H, W, C]`` or ``[T, Bt, H, W]``, kept spatial).
      labels: ``[T, Bt, C]`` one-hot; ``C`` sets the output layer size.
    Returns:
      logits ``[T, Bt, C]``: the prediction for ``inputs[t]`` made before ``labels[t]`` is seen.
    """
    carry = start(meta_params, key, inputs, labels, spec)
    options = {"layer_fn": layer_fn, "conv_layer_fn": conv_layer_fn, "unroll": unroll, "backprop_plan": backprop_plan}
    return advance(meta_params, carry, inputs, labels, spec, **options)[1]


def _implementation_layers(implementation: str) -> dict:
    if implementation == "literal":
        return {"layer_fn": vsml_reference.literal_dense_layer, "conv_layer_fn": vsml_reference.literal_conv_layer}
    if implementation == "fast":
        return {}
    raise ValueError(f"VSML implementation '{implementation}' is not one of fast, literal")


def run_with_options(
    meta_params: Params,
    key,
    inputs: jax.Array,
    labels: jax.Array,
    spec: VSMLSpec,
    unroll: int = 1,
    implementation: str = "fast",
    backprop_plan: BackpropPlan = FULL_BACKPROP,
):
    """:func:`run` with the registry's run options: ``unroll``, ``implementation`` and ``backprop_plan``.

    ``implementation: literal`` runs the paper-literal layers of
    :mod:`vsml.learners.vsml_reference` (equal results, slower; the benchmark's baseline).
    """
    layers = _implementation_layers(implementation)
    return run(meta_params, key, inputs, labels, spec, unroll=unroll, backprop_plan=backprop_plan, **layers)


def advance_with_options(
    meta_params: Params,
    carry,
    inputs: jax.Array,
    labels: jax.Array,
    spec: VSMLSpec,
    unroll: int = 1,
    implementation: str = "fast",
    backprop_plan: BackpropPlan = FULL_BACKPROP,
):
    """:func:`advance` with the registry's run options (as :func:`run_with_options`)."""
    layers = _implementation_layers(implementation)
    return advance(meta_params, carry, inputs, labels, spec, unroll=unroll, backprop_plan=backprop_plan, **layers)


LEARNER_TYPE = LearnerType(
    name="VSMLRNN",
    section="vsml_rnn",
    extra_sections=("sub_rnn",),
    spec_from_config=spec_from_config,
    init=init,
    run=run_with_options,
    start=start,
    advance=advance_with_options,
    any_size=True,
    run_options=("unroll", "implementation", "backprop_plan"),
)
