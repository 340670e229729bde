"""FWMemory: an LSTM with a fast-weight memory (after Schlag et al. 2021, "FWM"; docs/DESIGN.md §5).

Per example, an LSTM (``slow_size`` S) and a memory ``M [m, m²]``
(``m = memory_size``, zero at the start of each episode). At step t:

1. the LSTM reads ``[features(x_t), e_{t-1}, y_{t-1}, r_{t-1}]`` — the previous
   error ``softmax(logits) − y``, label and memory read-out (zeros at t = 0);
2. *write* from the new hidden state h: key ``k = vec(φ(W_k1 h) ⊗ φ(W_k2 h))``
   (an outer product of two unit vectors, so ``‖k‖ ≈ 1``), value
   ``v = tanh(W_v h)``, ``β = sigmoid(w_β h + b_β)``; delta rule
   ``M ← M + β (v − M k) ⊗ k``, then the norm clip
   ``M ← M · min(1, MAX_NORM / ‖M‖_F)``;
3. *read*: ``r_t = M q`` with ``q = vec(φ(W_q1 h) ⊗ φ(W_q2 h))``;
4. ``logits_t = bound(W_o [h, r_t] + b_o)``.

The label of step t enters at step t + 1 (online). ``φ`` is unit-norm scaling;
``use_conv`` adds the conv stem (slow) in front of the LSTM.

Config: ``model.fw_memory.{slow_size, memory_size, tanh_bound, use_conv}``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vsml.learners import common, numerics
from vsml.learners.base import LearnerType, run_episode
from vsml.learners.fwp import delta_write, unit_norm
from vsml.learners.scan import FULL_BACKPROP, BackpropPlan, episode_scan
from vsml.settings import FWMemorySettings

MAX_NORM = 16.0  # Frobenius-norm bound of the memory; unit keys and β < 1 rarely reach it
BETA_BIAS_INIT = -1.0
HEADS = ("key1", "key2", "query1", "query2", "value")


@dataclasses.dataclass(frozen=True)
class FWMemorySpec(FWMemorySettings):
    """Every key of ``model.fw_memory`` (the fields of ``FWMemorySettings``, declared there once) and the data
    sizes the learner is built for."""

    input_shape: tuple = common.PADDED_INPUT_SHAPE
    num_classes: int = common.PADDED_NUM_CLASSES


def spec_from_config(model, input_shape=None, num_classes=None) -> FWMemorySpec:
    return common.spec_from_section(FWMemorySpec, model.fw_memory, input_shape, num_classes)


def init(key, spec: FWMemorySpec):
    """``{'lstm', 'key1', 'key2', 'query1', 'query2', 'value': dense [S, m], 'beta': dense [S, 1],
    'out': dense [S+m, C], 'stem'?}``."""
    s, m, c = spec.slow_size, spec.memory_size, spec.num_classes
    keys = jax.random.split(key, len(HEADS) + 4)
    n_in = common.feature_size(spec.input_shape, spec.use_conv) + 2 * c + m
    params = {name: common.dense_init(k, s, m) for name, k in zip(HEADS, keys)}
    params["beta"] = common.dense_init(keys[-4], s, 1)
    params["beta"]["b"] = jnp.full((1,), BETA_BIAS_INIT)
    params["lstm"] = common.lstm_init(keys[-3], n_in, s)
    params["out"] = common.dense_init(keys[-2], s + m, c)
    if spec.use_conv:
        params["stem"] = common.stem_init(keys[-1], spec.input_shape)
    return params


def outer_key(p1, p2, h):
    """``vec(φ(W1 h) ⊗ φ(W2 h))``: ``[B, S] -> [B, m²]``."""
    a, b = unit_norm(common.dense(p1, h)), unit_norm(common.dense(p2, h))
    return (a[:, :, None] * b[:, None, :]).reshape(h.shape[0], -1)


def clip_norm(memory, max_norm=MAX_NORM):
    """Scales each example's ``M [B, m, m²]`` down to Frobenius norm ≤ ``max_norm``."""
    norm = jnp.sqrt(jnp.sum(memory**2, axis=(1, 2), keepdims=True) + 1e-12)
    return memory * jnp.minimum(1.0, max_norm / norm)


def start(params, key, inputs, labels, spec: FWMemorySpec):
    """The carry before step 0 (zeros): LSTM state ``[B, S]`` twice, memory ``[B, M, M²]``, last error and
    label ``[B, C]``, last read ``[B, M]``."""
    del params, key, labels  # deterministic
    batch, s, m, c = inputs.shape[1], spec.slow_size, spec.memory_size, spec.num_classes
    zeros = jnp.zeros((batch, s))
    return (
        (zeros, zeros),
        jnp.zeros((batch, m, m * m)),
        jnp.zeros((batch, c)),
        jnp.zeros((batch, c)),
        jnp.zeros((batch, m)),
    )


def advance(params, carry, inputs, labels, spec: FWMemorySpec, backprop_plan: BackpropPlan = FULL_BACKPROP):
    """``(carry, logits [K, B, C])`` after the steps of ``inputs``; see the module docstring for one step."""
    common.check_episode("FWMemory", spec.input_shape, spec.num_classes, inputs, labels)
    feats = common.episode_features(params.get("stem"), inputs)

    def step(carry, xy):
        state, memory, error, label, read = carry
        x, y = xy
        state = common.lstm_step(params["lstm"], state, jnp.concatenate([x, error, label, read], -1))
        h = state[0]
        k = outer_key(params["key1"], params["key2"], h)
        v = jnp.tanh(common.dense(params["value"], h))
        beta = jax.nn.sigmoid(common.dense(params["beta"], h))
        memory = clip_norm(delta_write(memory, k, v, beta))
        read = jnp.einsum("bvk,bk->bv", memory, outer_key(params["query1"], params["query2"], h))
        logits = numerics.bound_logits(common.dense(params["out"], jnp.concatenate([h, read], -1)), spec.tanh_bound)
        return (state, memory, common.error_signal(logits, y), y, read), logits

    return episode_scan(step, carry, (feats, labels.astype(jnp.float32)), backprop_plan)


def run(params, key, inputs, labels, spec: FWMemorySpec, backprop_plan: BackpropPlan = FULL_BACKPROP):
    """Logits ``[T, B, C]``: :func:`advance` over the whole episode from :func:`start`."""
    return run_episode(start, advance, params, key, inputs, labels, spec, backprop_plan=backprop_plan)


LEARNER_TYPE = LearnerType(
    name="FWMemory",
    section="fw_memory",
    spec_from_config=spec_from_config,
    init=init,
    run=run,
    start=start,
    advance=advance,
    run_options=("backprop_plan",),
)
