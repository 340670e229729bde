"""MetaRNN (Hochreiter et al. 2001): an LSTM that learns to learn from its input stream (docs/DESIGN.md §5).

At step t the LSTM reads ``[features(x_t), e_{t-1}, y_{t-1}]`` (the previous
step's error ``softmax(logits) − y`` and label; zeros at t = 0) for
``num_micro_ticks`` LSTM steps on that unchanged input, and a linear read-out
of the last hidden state gives the logits, bounded as ``tanh(z/b)·b``. The
label of step t therefore reaches the network only at step t + 1 (online).

Each example of a batch is its own stream with its own LSTM state (the batch is
B parallel episodes that share the meta-parameters). ``use_conv`` puts the
small conv stem of :mod:`vsml.learners.common` (meta-parameters too) in front.

Config: ``model.meta_rnn.{slow_size, num_micro_ticks, tanh_bound, use_conv}``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vsml.learners import common, numerics
from vsml.learners.base import LearnerType, run_episode
from vsml.learners.scan import FULL_BACKPROP, BackpropPlan, episode_scan
from vsml.settings import MetaRNNSettings


@dataclasses.dataclass(frozen=True)
class MetaRNNSpec(MetaRNNSettings):
    """Every key of ``model.meta_rnn`` (the fields of ``MetaRNNSettings``, declared there once) and the data
    sizes the learner is built for."""

    input_shape: tuple = common.PADDED_INPUT_SHAPE
    num_classes: int = common.PADDED_NUM_CLASSES


def spec_from_config(model, input_shape=None, num_classes=None) -> MetaRNNSpec:
    return common.spec_from_section(MetaRNNSpec, model.meta_rnn, input_shape, num_classes)


def init(key, spec: MetaRNNSpec):
    """``{'stem'?: conv stem, 'lstm': cell, 'out': dense [H, C]}``."""
    k_stem, k_lstm, k_out = jax.random.split(key, 3)
    n_in = common.feature_size(spec.input_shape, spec.use_conv) + 2 * spec.num_classes
    params = {
        "lstm": common.lstm_init(k_lstm, n_in, spec.slow_size),
        "out": common.dense_init(k_out, spec.slow_size, spec.num_classes),
    }
    if spec.use_conv:
        params["stem"] = common.stem_init(k_stem, spec.input_shape)
    return params


def start(params, key, inputs, labels, spec: MetaRNNSpec):
    """The carry before step 0: LSTM state ``([B, S], [B, S])``, last error and label ``[B, C]`` (zeros)."""
    del params, key, labels  # deterministic
    zeros_h = jnp.zeros((inputs.shape[1], spec.slow_size))
    zeros_c = jnp.zeros((inputs.shape[1], spec.num_classes))
    return (zeros_h, zeros_h), zeros_c, zeros_c


def advance(params, carry, inputs, labels, spec: MetaRNNSpec, backprop_plan: BackpropPlan = FULL_BACKPROP):
    """``(carry, logits [K, B, C])`` for inputs ``[K, B, *input_shape]`` and one-hot labels ``[K, B, C]``."""
    common.check_episode("MetaRNN", spec.input_shape, spec.num_classes, inputs, labels)
    feats = common.episode_features(params.get("stem"), inputs)  # [K, B, F]

    def step(carry, xy):
        state, error, label = carry
        x, y = xy
        rnn_in = jnp.concatenate([x, error, label], axis=-1)
        for _ in range(spec.num_micro_ticks):
            state = common.lstm_step(params["lstm"], state, rnn_in)
        logits = numerics.bound_logits(common.dense(params["out"], state[0]), spec.tanh_bound)
        return (state, common.error_signal(logits, y), y), logits

    return episode_scan(step, carry, (feats, labels.astype(jnp.float32)), backprop_plan)


def run(params, key, inputs, labels, spec: MetaRNNSpec, backprop_plan: BackpropPlan = FULL_BACKPROP):
    """Logits ``[T, B, C]``: :func:`advance` over the whole episode from :func:`start`."""
    return run_episode(start, advance, params, key, inputs, labels, spec, backprop_plan=backprop_plan)


LEARNER_TYPE = LearnerType(
    name="MetaRNN",
    section="meta_rnn",
    spec_from_config=spec_from_config,
    init=init,
    run=run,
    start=start,
    advance=advance,
    run_options=("backprop_plan",),
)
