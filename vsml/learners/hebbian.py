"""HebbianFW: one linear layer with Hebbian (or Oja) fast weights (docs/DESIGN.md §5).

The layer reads an extended input ``u = [x, e, y]`` (features ``[D]``, an error
slot ``[C]`` and a label slot ``[C]``); its effective weight is
``W + C ⊙ F`` with slow (meta-learned) ``W``, ``C`` (per-synapse plasticity),
bias ``b``, learning rate ``η = sigmoid(eta_logit)``, and fast weights ``F``
(``[D + 2C, C]``, zero at the start of each episode). Every step has two passes:

1. *prediction*: ``u = [x_t, 0, 0]`` (the label slots are empty: the label of
   step t is not known yet); ``logits_t = tanh(z/bound)·bound`` with
   ``z = u (W + C ⊙ F) + b``;
2. *update*, after the label arrives: ``u' = [x_t, e_t, y_t]`` with
   ``e_t = softmax(logits_t) − y_t``; the post-synaptic activity is
   ``p = softmax(u' (W + C ⊙ F) + b)`` — so the slow weights on the error and
   label slots decide how strongly the teaching signal drives ``p`` — and

       Hebb: F ← (1 − η) F + η · mean_n u'_n ⊗ p_n
       Oja:  F ← F + η · mean_n (u'_n ⊗ p_n − F ⊙ p_n²)     (``use_oja``; p² per output column)

The fast weights are shared by the batch (like ordinary weights) and updated
with the batch mean. ``use_conv`` adds the conv stem (slow) in front.

Config: ``model.hebbian_fw.{use_oja, use_conv, tanh_bound}``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from vsml.learners import common, numerics
from vsml.learners.base import LearnerType, run_episode
from vsml.learners.scan import FULL_BACKPROP, BackpropPlan, episode_scan
from vsml.settings import HebbianSettings

ETA_LOGIT_INIT = -4.0  # η ≈ 0.018: the fast weights average over the last ~50 steps at first


@dataclasses.dataclass(frozen=True)
class HebbianSpec(HebbianSettings):
    """Every key of ``model.hebbian_fw`` (the fields of ``HebbianSettings``, declared there once) and the data
    sizes the learner is built for."""

    input_shape: tuple = common.PADDED_INPUT_SHAPE
    num_classes: int = common.PADDED_NUM_CLASSES


def spec_from_config(model, input_shape=None, num_classes=None) -> HebbianSpec:
    return common.spec_from_section(HebbianSpec, model.hebbian_fw, input_shape, num_classes)


def init(key, spec: HebbianSpec):
    """``{'w', 'plasticity': [D+2C, C], 'b': [C], 'eta_logit': [], 'stem'?}``."""
    k_stem, k_w = jax.random.split(key)
    rows = common.feature_size(spec.input_shape, spec.use_conv) + 2 * spec.num_classes
    params = {
        "w": numerics.truncated_normal(k_w, (rows, spec.num_classes), 1.0 / math.sqrt(rows)),
        "plasticity": jnp.ones((rows, spec.num_classes)),
        "b": jnp.zeros((spec.num_classes,)),
        "eta_logit": jnp.asarray(ETA_LOGIT_INIT),
    }
    if spec.use_conv:
        params["stem"] = common.stem_init(k_stem, spec.input_shape)
    return params


def hebb_update(fast, pre, post, eta):
    """``F ← (1 − η) F + η · mean_n pre_n ⊗ post_n``; ``pre [B, R]``, ``post [B, C]``, ``F [R, C]``."""
    return (1.0 - eta) * fast + eta * jnp.einsum("nr,nc->rc", pre, post) / pre.shape[0]


def oja_update(fast, pre, post, eta):
    """``F ← F + η · mean_n (pre_n ⊗ post_n − F ⊙ post_n²)`` (Oja's rule per output column)."""
    outer = jnp.einsum("nr,nc->rc", pre, post) / pre.shape[0]
    return fast + eta * (outer - fast * jnp.mean(post**2, axis=0))


def start(params, key, inputs, labels, spec: HebbianSpec):
    """The fast weights before step 0: zeros ``[D + 2C, C]``."""
    del key, labels  # deterministic, and empty at first
    features = jax.eval_shape(lambda x: common.episode_features(params.get("stem"), x), inputs[:1])  # no compute
    rows = features.shape[-1] + 2 * spec.num_classes
    return jnp.zeros((rows, spec.num_classes))


def advance(params, fast, inputs, labels, spec: HebbianSpec, backprop_plan: BackpropPlan = FULL_BACKPROP):
    """``(fast weights, logits [K, B, C])`` after the steps of ``inputs``; see the module docstring for a step."""
    common.check_episode("HebbianFW", spec.input_shape, spec.num_classes, inputs, labels)
    feats = common.episode_features(params.get("stem"), inputs)  # [T, B, D]
    eta = jax.nn.sigmoid(params["eta_logit"])
    update = oja_update if spec.use_oja else hebb_update

    def step(fast, xy):
        x, y = xy
        weight = params["w"] + params["plasticity"] * fast
        empty = jnp.zeros_like(y)
        logits = numerics.bound_logits(jnp.concatenate([x, empty, empty], -1) @ weight + params["b"], spec.tanh_bound)
        pre = jnp.concatenate([x, common.error_signal(logits, y), y], -1)
        post = jax.nn.softmax(pre @ weight + params["b"], axis=-1)
        return update(fast, pre, post, eta), logits

    return episode_scan(step, fast, (feats, labels.astype(jnp.float32)), backprop_plan)


def run(params, key, inputs, labels, spec: HebbianSpec, backprop_plan: BackpropPlan = FULL_BACKPROP):
    """Logits ``[T, B, C]``: :func:`advance` over the whole episode from :func:`start`."""
    return run_episode(start, advance, params, key, inputs, labels, spec, backprop_plan=backprop_plan)


LEARNER_TYPE = LearnerType(
    name="HebbianFW",
    section="hebbian_fw",
    spec_from_config=spec_from_config,
    init=init,
    run=run,
    start=start,
    advance=advance,
    run_options=("backprop_plan",),
)
