"""The episode objective shared by every outer loop and by evaluation (docs/DESIGN.md §3).

A learner's logits on an episode give per-step cross-entropy losses; the
meta-loss (ES fitness, lower is better) is their mean over the episode
(``loss_type: mean``) or the last step's (``last``).

An episode can also be stepped a truncation at a time (:func:`make_truncations`),
with the learner's carry passed from one truncation to the next: the same
episode, the same steps, the same per-step losses as the whole-episode run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

LOSS_TYPES = ("mean", "last")


def step_losses(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy per step and example: ``[T, B, C] -> [T, B]``."""
    return optax.softmax_cross_entropy(logits, labels)


def step_accuracies(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1.0 where the online prediction was right: ``[T, B, C] -> [T, B]``."""
    return (jnp.argmax(logits, -1) == jnp.argmax(labels, -1)).astype(jnp.float32)


def meta_loss(losses: jax.Array, loss_type: str) -> jax.Array:
    """Scalar meta-loss of an episode from ``losses [T, B]``."""
    per_step = jnp.mean(losses, axis=1)
    return per_step[-1] if loss_type == "last" else jnp.mean(per_step)


def make_episode(run: Callable, sample: Callable):
    """``episode(params, key, data) -> (logits, labels)``: sample an episode, run the learner on it.

    The key is split into the data key and the learner's inner key, so both
    members of an antithetic pair (same key) see the same episode.
    """

    def episode(params, key, data):
        data_key, inner_key = jax.random.split(key)
        inputs, labels = sample(data, data_key)
        return run(params, inner_key, inputs, labels), labels

    return episode


def make_truncations(start: Callable, advance: Callable, sample: Callable):
    """``(begin, unroll)``: an episode stepped a truncation at a time (a learner's ``start`` / ``advance``).

    ``begin(params, key, data) -> (carry, inputs [T, B, ...], labels [T, B, C])``: the episode of
    ``key`` (the one :func:`make_episode` runs for that key) and the learner's carry before step 0.
    ``unroll(params, carry, inputs, labels, first, length) -> (carry, losses [length, B])``: the
    steps ``first .. first + length - 1`` of the episode from ``carry`` (``first`` may be traced,
    ``length`` is static). Unrolled over consecutive truncations from step 0, the losses are the
    whole episode's :func:`step_losses`.
    """

    def begin(params, key, data):
        data_key, inner_key = jax.random.split(key)
        inputs, labels = sample(data, data_key)
        return start(params, inner_key, inputs, labels), inputs, labels

    def unroll(params, carry, inputs, labels, first, length: int):
        window = [jax.lax.dynamic_slice_in_dim(array, first, length) for array in (inputs, labels)]
        carry, logits = advance(params, carry, *window)
        return carry, step_losses(logits, window[1])

    return begin, unroll


class Truncations(NamedTuple):
    """What a truncated outer loop (:mod:`vsml.meta.pes`) unrolls: :func:`make_truncations`'s ``begin`` and
    ``unroll``, the episode length ``T`` and a ``data`` pytree of the shapes a step will see (fixes the carries' shapes)."""

    begin: Callable
    unroll: Callable
    episode_length: int
    data: Any


def make_fitness(episode: Callable, loss_type: str):
    """``fitness(params, key, data) -> scalar`` meta-loss of one episode."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss type '{loss_type}' is not one of {', '.join(LOSS_TYPES)}")

    def fitness(params, key, data):
        logits, labels = episode(params, key, data)
        return meta_loss(step_losses(logits, labels), loss_type)

    return fitness


def make_curves(episode: Callable):
    """``curves(params, key, data) -> (loss [T], accuracy [T])`` online learning curves, batch-averaged."""

    def curves(params, key, data):
        logits, labels = episode(params, key, data)
        return jnp.mean(step_losses(logits, labels), 1), jnp.mean(step_accuracies(logits, labels), 1)

    return curves
