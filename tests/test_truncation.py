"""Learners stepped a truncation at a time (carry in, carry out) give the whole episode's results
(docs/DESIGN.md §3, §6): the property a truncated or persistent outer loop relies on."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_learners import BASELINES, CLASSES, INPUT_SHAPE, episode, model_config
from vsml.config import build_config
from vsml.learners import build_learner
from vsml.meta import objective

STEPS = 7
CUTS = (3, 3, 1)  # truncations of unequal length, the last shorter, as a persistent loop's last one may be


def _learner(kind: str):
    if kind == "VSMLRNN":
        overrides = ["model.type=VSMLRNN", "model.sub_rnn.slow_size=4", "model.sub_rnn.msg_size=2"]
        return build_learner(build_config(overrides=overrides)["model"])
    return build_learner(model_config(kind), INPUT_SHAPE, CLASSES)


@pytest.mark.parametrize("kind", ["VSMLRNN", *BASELINES])
def test_truncations_in_order_give_the_whole_episode(kind):
    learner = _learner(kind)
    params = learner.init(jax.random.PRNGKey(1))
    key = jax.random.PRNGKey(2)
    inputs, labels = episode(3, steps=STEPS)
    begin, unroll = objective.make_truncations(learner.start, learner.advance, lambda data, _: data)
    unroll = jax.jit(unroll, static_argnums=5)
    # begin splits the key as make_episode does (the data key samples, the other is the learner's)
    carry, got_inputs, got_labels = begin(params, key, (inputs, labels))
    inner_key = jax.random.split(key)[1]
    whole = objective.step_losses(jax.jit(learner.run)(params, inner_key, inputs, labels), labels)
    losses, first = [], 0
    for length in CUTS:
        carry, part = unroll(params, carry, got_inputs, got_labels, jnp.int32(first), length)
        losses.append(part)
        first += length
    # The same operations on the same values; each truncation is its own compiled scan (a one-step
    # scan is unrolled, say), so XLA may round a last bit differently: float32 resolution, not equality.
    np.testing.assert_allclose(np.concatenate(losses), np.asarray(whole), rtol=2e-6, atol=1e-7)


def test_whole_episode_unroll_is_run():
    """One truncation covering the episode is ``run`` itself, bit for bit (the same compiled scan)."""
    learner = _learner("VSMLRNN")
    params = learner.init(jax.random.PRNGKey(1))
    inputs, labels = episode(4, steps=STEPS)
    key = jax.random.PRNGKey(5)
    begin, unroll = objective.make_truncations(learner.start, learner.advance, lambda data, _: data)
    carry, inputs, labels = begin(params, key, (inputs, labels))
    _, losses = jax.jit(unroll, static_argnums=5)(params, carry, inputs, labels, 0, STEPS)
    episode_fn = objective.make_episode(learner.run, lambda data, _: data)
    logits, _ = jax.jit(episode_fn)(params, key, (inputs, labels))
    np.testing.assert_array_equal(np.asarray(losses), np.asarray(objective.step_losses(logits, labels)))
