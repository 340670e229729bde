"""FWP: a fast weight programmer with the delta rule (Schlag et al. 2021; docs/DESIGN.md §5).

A slow linear net reads ``z = [x, o, e, y]`` — the flattened input ``[D]``, the
network's output ``o = softmax(logits)`` ``[C]``, the error ``e = o − y`` ``[C]``
and the label ``y`` ``[C]`` — and programs a fast weight matrix
``F [N, N]`` (``N = fast_size``, zero at the start of each episode, one per
example). Every step has two passes:

1. *read / predict*: ``z = [x_t, 0, 0, 0]`` (nothing about step t's label is
   known yet); query ``q = φ(W_q z)``; ``logits_t = bound(W_o (F q) + b_o)``;
2. *write*, after the label arrives: ``z' = [x_t, o_t, e_t, y_t]``; key
   ``k = φ(W_k z')``, value ``v = W_v z'``, ``β = sigmoid(w_β · z' + b_β)``;
   delta rule ``F ← F + β (v − F k) ⊗ k``: the value stored under ``k``
   moves a fraction β towards ``v``.

``φ(a) = a / sqrt(‖a‖² + 1e-6)`` (unit-norm keys and queries keep the delta
rule a contraction: β ≤ 1 never overshoots). All of ``W_q, W_k, W_v, w_β,
W_o`` are meta-parameters.

Config: ``model.fwp.{fast_size, tanh_bound}``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from vsml.learners import common, numerics
from vsml.learners.base import LearnerType, run_episode
from vsml.learners.scan import FULL_BACKPROP, BackpropPlan, episode_scan
from vsml.settings import FWPSettings

BETA_BIAS_INIT = -1.0  # β ≈ 0.27 at first: writes partly overwrite


@dataclasses.dataclass(frozen=True)
class FWPSpec(FWPSettings):
    """Every key of ``model.fwp`` (the fields of ``FWPSettings``, declared there once) and the data
    sizes the learner is built for."""

    input_shape: tuple = common.PADDED_INPUT_SHAPE
    num_classes: int = common.PADDED_NUM_CLASSES


def spec_from_config(model, input_shape=None, num_classes=None) -> FWPSpec:
    return common.spec_from_section(FWPSpec, model.fwp, input_shape, num_classes)


def init(key, spec: FWPSpec):
    """``{'query', 'key', 'value': dense [D+3C, N], 'beta': dense [D+3C, 1], 'out': dense [N, C]}``."""
    n_in = math.prod(spec.input_shape) + 3 * spec.num_classes
    keys = jax.random.split(key, 5)
    beta = common.dense_init(keys[3], n_in, 1)
    beta["b"] = jnp.full((1,), BETA_BIAS_INIT)
    return {
        "query": common.dense_init(keys[0], n_in, spec.fast_size),
        "key": common.dense_init(keys[1], n_in, spec.fast_size),
        "value": common.dense_init(keys[2], n_in, spec.fast_size),
        "beta": beta,
        "out": common.dense_init(keys[4], spec.fast_size, spec.num_classes),
    }


def unit_norm(a: jax.Array) -> jax.Array:
    return a / jnp.sqrt(jnp.sum(a * a, axis=-1, keepdims=True) + 1e-6)


def delta_write(fast, k, v, beta):
    """``F ← F + β (v − F k) ⊗ k`` per example: ``F [B, N, N]``, ``k, v [B, N]``, ``beta [B, 1]``."""
    stored = jnp.einsum("bvk,bk->bv", fast, k)
    return fast + jnp.einsum("bv,bk->bvk", beta * (v - stored), k)


def start(params, key, inputs, labels, spec: FWPSpec):
    """The fast weights before step 0: zeros ``[B, F, F]``."""
    del params, key, labels  # deterministic, and empty at first
    return jnp.zeros((inputs.shape[1], spec.fast_size, spec.fast_size))


def advance(params, fast, inputs, labels, spec: FWPSpec, backprop_plan: BackpropPlan = FULL_BACKPROP):
    """``(fast weights, logits [K, B, C])`` after the steps of ``inputs``; see the module docstring for a step."""
    common.check_episode("FWP", spec.input_shape, spec.num_classes, inputs, labels)
    feats = common.episode_features(None, inputs)
    batch = inputs.shape[1]

    def step(fast, xy):
        x, y = xy
        empty = jnp.zeros((batch, 3 * spec.num_classes))
        query = unit_norm(common.dense(params["query"], jnp.concatenate([x, empty], -1)))
        read = jnp.einsum("bvk,bk->bv", fast, query)
        logits = numerics.bound_logits(common.dense(params["out"], read), spec.tanh_bound)
        out = jax.nn.softmax(logits, axis=-1)
        z = jnp.concatenate([x, out, out - y, y], -1)
        k = unit_norm(common.dense(params["key"], z))
        v = common.dense(params["value"], z)
        beta = jax.nn.sigmoid(common.dense(params["beta"], z))
        return delta_write(fast, k, v, beta), logits

    return episode_scan(step, fast, (feats, labels.astype(jnp.float32)), backprop_plan)


def run(params, key, inputs, labels, spec: FWPSpec, backprop_plan: BackpropPlan = FULL_BACKPROP):
    """Logits ``[T, B, C]``: :func:`advance` over the whole episode from :func:`start`."""
    return run_episode(start, advance, params, key, inputs, labels, spec, backprop_plan=backprop_plan)


LEARNER_TYPE = LearnerType(
    name="FWP",
    section="fwp",
    spec_from_config=spec_from_config,
    init=init,
    run=run,
    start=start,
    advance=advance,
    run_options=("backprop_plan",),
)
