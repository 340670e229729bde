"""What ES and meta-gradients share (docs/DESIGN.md §6): the outer optimiser, this rank's
slice of the items, the jitted slice evaluation, and the tail of every step.

A loop built on :class:`SlicedLoop` supplies the function to jit
(``_make_slice_evaluator``) and its :class:`Estimate` of the gradient; applying the
update, the finiteness check, the common statistics and the new state are
:func:`finish_step`, the same for every loop.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from vsml.meta import memory
from vsml.meta.base import MetaState, NonFiniteError
from vsml.meta.slicing import base_keys, item_slice


def make_optimizer(lr: float, kwargs: Mapping[str, Any], clip_gradnorm: float) -> optax.GradientTransformation:
    """Adam (``kwargs`` passed through), after global-norm clipping when ``clip_gradnorm`` > 0."""
    adam = optax.adam(learning_rate=lr, **kwargs)
    if clip_gradnorm and clip_gradnorm > 0:
        return optax.chain(optax.clip_by_global_norm(clip_gradnorm), adam)
    return adam


def make_apply(optimizer: optax.GradientTransformation):
    """Jitted ``apply(params, opt_state, grad) -> (params, opt_state, all_finite)``.

    The finiteness flag lets the caller stop before a NaN reaches a checkpoint.
    """

    def apply(params, opt_state, grad):
        updates, opt_state = optimizer.update(grad, opt_state, params)
        params = optax.apply_updates(params, updates)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(params)]))
        return params, opt_state, finite

    return jax.jit(apply)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What one outer loop's step supplies; :func:`finish_step` does the rest.

    gradient: the mean gradient estimate, float32 ``[D]``, the same on every rank.
    losses: every item's meta-loss over all ranks (non-finite ones included; any shape).
    stats: the loop's own statistics, reported after ``meta_loss`` and ``meta_loss_std``.
    evaluate_seconds, communicate_seconds: this rank's evaluation and collectives.
    nonfinite_message: what :class:`NonFiniteError` says if the update is not finite.
    """

    gradient: np.ndarray
    losses: np.ndarray
    stats: dict
    evaluate_seconds: float
    communicate_seconds: float
    nonfinite_message: str


def finish_step(apply, unravel, state: MetaState, estimate: Estimate, start: float) -> tuple[MetaState, dict]:
    """The tail of every step: apply the update, stop on non-finite meta-parameters, report, advance.

    ``apply`` is :func:`make_apply`'s function, ``unravel`` the flat-to-pytree map (compiled:
    see :class:`SlicedLoop`), ``start`` the step's ``time.perf_counter()``. Statistics: ``meta_loss`` and ``meta_loss_std`` over
    the finite losses, the estimate's own, and ``time/evaluate``, ``time/communicate`` and
    ``time/update`` (the rest of the step: shaping, noise regeneration, optimiser).
    """
    grad = unravel(jnp.asarray(estimate.gradient))
    params, opt_state, params_finite = apply(state.params, state.opt_state, grad)
    params_finite = bool(params_finite)  # waits for the update
    elapsed = time.perf_counter() - start
    if not params_finite:
        raise NonFiniteError(estimate.nonfinite_message)
    kept = estimate.losses[np.isfinite(estimate.losses)]
    stats = {
        "meta_loss": float(kept.mean()) if kept.size else float("nan"),
        "meta_loss_std": float(kept.std()) if kept.size else float("nan"),
        **estimate.stats,
        "time/evaluate": estimate.evaluate_seconds,
        "time/communicate": estimate.communicate_seconds,
        "time/update": elapsed - estimate.evaluate_seconds - estimate.communicate_seconds,
    }
    new_state = state.replace(params=params, opt_state=opt_state, generation=state.generation + 1)  # other fields kept
    return new_state, stats


class SlicedLoop(abc.ABC):
    """The shared part of an :class:`vsml.meta.base.OuterLoop`: a config with ``population_size``
    and ``pairs_per_chunk``, this rank's slice of the global items, the flat parameter layout,
    the jitted slice evaluation and the optimiser update.

    A subclass provides ``_make_slice_evaluator()`` (the function to jit) and ``estimate``.
    """

    unit = "items"

    def __init__(self, fitness, params_template, config, optimizer: optax.GradientTransformation, comm):
        self.config, self.optimizer, self.comm = config, optimizer, comm
        self._fitness, self._params_template = fitness, params_template
        flat, self.unravel = jax.flatten_util.ravel_pytree(params_template)
        self.dim = flat.shape[0]
        self.item_indices = item_slice(config.population_size, comm.rank, comm.size)
        self._evaluate = jax.jit(self._make_slice_evaluator())
        self._apply = make_apply(optimizer)
        # Flat <-> pytree as one compiled call each: done eagerly, every leaf is a dispatch of its
        # own, which on a GPU costs more than the update at small populations. Only data moves,
        # so the numbers are the same either way. (The Adam update stays a call of its own:
        # compiled together with the unravel, XLA rounds its maths differently.)
        self.flatten = jax.jit(lambda params: jax.flatten_util.ravel_pytree(params)[0])
        self._compiled_unravel = jax.jit(self.unravel)

    @abc.abstractmethod
    def _make_slice_evaluator(self):
        """``evaluate_slice(flat_params, rng, generation, item_indices, data)``, to be jitted."""

    @abc.abstractmethod
    def estimate(self, state: MetaState, data) -> Estimate:
        """This step's gradient estimate, the same on every rank (every rank calls it together)."""

    @property
    def population_size(self) -> int:
        return self.config.population_size

    @property
    def pairs_per_chunk(self) -> int | None:
        return self.config.pairs_per_chunk

    def init(self, params, seed: int) -> MetaState:
        """Step 0; every loop has the same state layout, so checkpoints and resume work alike."""
        return MetaState(params=params, opt_state=self.optimizer.init(params), generation=0, rng=base_keys(seed))

    def step(self, state: MetaState, data) -> tuple[MetaState, dict]:
        """One step on every rank together: the loop's estimate, then :func:`finish_step`."""
        start = time.perf_counter()
        return finish_step(self._apply, self._compiled_unravel, state, self.estimate(state, data), start)

    def with_chunk(self, pairs_per_chunk: int | None):
        """The same loop evaluating ``pairs_per_chunk`` items at once (a new object; this one is unchanged)."""
        config = dataclasses.replace(self.config, pairs_per_chunk=pairs_per_chunk)
        return type(self)(self._fitness, self._params_template, config, self.optimizer, self.comm)

    def memory_analysis(self, state: MetaState, data):
        """XLA's buffer plan of this rank's slice evaluation (compiled once more, ahead of time).

        ``temp_size_in_bytes`` is the working memory of one evaluation: it grows with
        ``pairs_per_chunk`` (the learner states alive at once), not with the slice.
        """
        flat = self.flatten(state.params)
        return memory.compiled_memory(self._evaluate, flat, state.rng, state.generation, self.item_indices, data)

    def working_bytes_per_item(self, params, data) -> int:
        flat = self.flatten(params)
        return memory.working_bytes_per_item(self._evaluate, flat, base_keys(0), data)
