"""The inner episode's scan over time steps, and how meta-gradients go back through it (docs/DESIGN.md §6.3).

Every learner runs its episode as one ``lax.scan`` of a step
``(carry, x_t) -> (carry, y_t)`` over the T steps of ``xs``; :func:`episode_scan`
is that scan, with a :class:`BackpropPlan` that only matters to a gradient
through the episode (the values it returns are the same under every plan):

* ``remat_steps`` N > 0 (rematerialisation): the steps run in blocks of N under
  ``jax.checkpoint``, so the backward pass keeps only the carry at each block's
  start (T/N carries) and recomputes one block's activations at a time, instead
  of keeping every step's. Memory falls from ~T steps' activations to ~T/N
  carries plus N steps' activations; the time of one more forward pass is the
  price. The gradient is the same (to float rounding: XLA may fuse the
  recomputation differently).
* ``truncation`` K > 0 (truncated backpropagation through time): the episode is
  cut into consecutive segments of K steps and the gradient does not flow from
  one segment into the state of the one before (``stop_gradient`` on the carry
  at every segment boundary but the episode's start). A step's loss is then
  differentiated through only the steps since its segment began (1 to K of
  them). This is *biased*: it drops every path by which the meta-parameters
  change the learner's state before the boundary and so its later predictions
  — precisely the credit for learning that pays off more than K steps later.
  K >= T is full backpropagation. Truncation alone saves no memory: the one
  backward pass over the episode still keeps every segment's activations
  (``remat_steps`` is the memory lever; the two combine).

The trivial plan (both 0) is a plain ``lax.scan``, the same computation as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class BackpropPlan:
    """How a gradient goes back through an episode: rematerialisation block and truncation length (0: off)."""

    remat_steps: int = 0
    truncation: int = 0

    def __post_init__(self):
        if self.remat_steps < 0 or self.truncation < 0:
            raise ValueError(f"remat_steps and truncation must be >= 0 (0: off), got {self}")


FULL_BACKPROP = BackpropPlan()


def _steps(xs) -> int:
    return jax.tree_util.tree_leaves(xs)[0].shape[0]


def _concat(a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.concatenate([x, y]), a, b)


def _in_chunks(block: Callable, carry, xs, size: int):
    """``block(carry, xs_chunk) -> (carry, ys_chunk)`` over consecutive chunks of ``size`` steps of ``xs``
    (one scan over the full chunks, then the shorter rest); the ``ys`` concatenated back to ``[T, ...]``."""
    steps = _steps(xs)
    full = steps // size * size
    ys = None
    if full:
        head = jax.tree_util.tree_map(lambda x: x[:full].reshape(full // size, size, *x.shape[1:]), xs)
        carry, ys = jax.lax.scan(block, carry, head)
        ys = jax.tree_util.tree_map(lambda y: y.reshape(full, *y.shape[2:]), ys)
    if full < steps:
        carry, ys_rest = block(carry, jax.tree_util.tree_map(lambda x: x[full:], xs))
        ys = ys_rest if ys is None else _concat(ys, ys_rest)
    return carry, ys


def episode_scan(step: Callable, carry, xs, plan: BackpropPlan = FULL_BACKPROP, unroll: int = 1):
    """``lax.scan(step, carry, xs)`` over the leading (time) axis of ``xs``, differentiated as ``plan`` says.

    Returns ``(final carry, ys [T, ...])`` like ``lax.scan``; the values do not depend on ``plan``.
    """

    def plain(c, x):
        return jax.lax.scan(step, c, x, unroll=unroll)

    steps = _steps(xs)
    inner = plain
    if 0 < plan.remat_steps < steps:
        remat_block = jax.checkpoint(plain)

        def inner(c, x):
            return _in_chunks(remat_block, c, x, plan.remat_steps)

    elif plan.remat_steps:  # one block is the whole episode
        inner = jax.checkpoint(plain)
    if not 0 < plan.truncation < steps:
        return inner(carry, xs)
    k = plan.truncation
    carry, ys_first = inner(carry, jax.tree_util.tree_map(lambda x: x[:k], xs))  # the start keeps its gradient
    carry, ys_rest = _in_chunks(
        lambda c, x: inner(jax.lax.stop_gradient(c), x), carry, jax.tree_util.tree_map(lambda x: x[k:], xs), k
    )
    return carry, _concat(ys_first, ys_rest)
