"""The outer-loop interface (docs/DESIGN.md §6) and what every outer loop shares.

An outer loop meta-trains the meta-parameters from ``fitness(params, key, data)
-> scalar`` (an episode's meta-loss, lower is better) alone; it knows nothing of
learners or datasets. It implements :class:`OuterLoop`: ``init(params, seed)``
gives a :class:`MetaState`, ``step(state, data)`` one generation (ES) or step
(meta-gradients) with the loop's own statistics. ``P`` work items per step —
antithetic pairs for ES, episodes for meta-gradients — carry global indices
``0..P-1``; rank r of N handles ``[r P/N, (r+1) P/N)`` and ``pairs_per_chunk``
bounds how many of them are evaluated at once (memory, never results).

Every loop derives its randomness from the run seed in the same way
(:func:`base_keys`, :func:`pair_key`), so the episode of index i at step g is
the same whatever loop, rank count or chunking.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Protocol

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

# Streams derived from the run seed: one for perturbations, one for episodes.
NOISE_STREAM, DATA_STREAM = 0, 1


class NonFiniteError(FloatingPointError):
    """The update produced NaN or infinite meta-parameters (the same on every rank)."""


@chex.dataclass
class MetaState:
    """Everything that determines the rest of a run (the same layout for every outer loop).

    params: meta-parameter pytree. opt_state: optax state. generation: number
    of completed steps. rng: ``{'noise': key, 'data': key}`` base keys (raw
    uint32 ``[2]``) from which every step's randomness is derived.
    """

    params: Any
    opt_state: Any
    generation: int
    rng: dict


class OuterLoop(Protocol):
    """What the experiment needs of an outer loop; ES and meta-gradients implement it.

    Attributes:
      population_size: work items ``P`` per step, over all ranks.
      pairs_per_chunk: items evaluated at once on a rank (``None``: the whole slice).
      pair_indices: the global indices this rank evaluates, ``[P / N]``.
      dim: number of meta-parameters ``D``.
      unit: what one work item is, for messages ("pairs", "episodes").
    """

    population_size: int
    pairs_per_chunk: int | None
    pair_indices: np.ndarray
    dim: int
    unit: str

    def init(self, params, seed: int) -> MetaState:
        """The state at step 0 from meta-parameters ``params`` and the run seed."""

    def step(self, state: MetaState, data) -> tuple[MetaState, dict[str, float]]:
        """One step on every rank together: the new state and this loop's statistics.

        Every loop reports ``meta_loss``, ``meta_loss_std`` and ``time/evaluate``,
        ``time/communicate``, ``time/update`` (seconds); raises
        :class:`NonFiniteError` before non-finite meta-parameters can be saved.
        """

    def with_chunk(self, pairs_per_chunk: int | None) -> OuterLoop:
        """The same loop evaluating ``pairs_per_chunk`` items at once (a new object)."""

    def working_bytes_per_pair(self, params, data) -> int:
        """XLA's working memory per evaluated item (compiled ahead of time, nothing runs)."""


def base_keys(seed: int) -> dict:
    root = jax.random.PRNGKey(seed)
    return {"noise": jax.random.fold_in(root, NOISE_STREAM), "data": jax.random.fold_in(root, DATA_STREAM)}


def pair_key(base_key, generation, pair_index):
    """``key(base, g, i)``: the same for an item whatever rank evaluates it."""
    return jax.random.fold_in(jax.random.fold_in(base_key, generation), pair_index)


def pair_slice(population_size: int, rank: int, num_ranks: int) -> np.ndarray:
    """Global indices of the items that rank ``rank`` of ``num_ranks`` evaluates."""
    if population_size % num_ranks:
        raise ValueError(
            f"a population of {population_size} cannot be split evenly among {num_ranks} ranks; "
            f"use a multiple of {num_ranks}"
        )
    per_rank = population_size // num_ranks
    return np.arange(rank * per_rank, (rank + 1) * per_rank, dtype=np.int32)


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


def working_bytes_per_pair(evaluate, flat_params, rng, data) -> int:
    """XLA's working memory (temp buffers) of ``evaluate`` on a one-item slice, in bytes.

    ``evaluate(flat_params, rng, generation, pair_indices, data)`` is a jitted slice
    evaluation; compiling it for one item (ahead of time, nothing runs) gives what each
    item of a chunk adds.
    """
    lowered = evaluate.lower(flat_params, rng, 0, np.zeros(1, np.int32), data)
    return int(lowered.compile().memory_analysis().temp_size_in_bytes)


def chunk_for_budget(bytes_per_pair: int, budget_bytes: int, slice_pairs: int) -> int | None:
    """Items per chunk so a chunk's working memory fits ``budget_bytes`` (None: the whole slice fits)."""
    if bytes_per_pair <= 0:
        return None
    chunk = max(1, budget_bytes // bytes_per_pair)
    return None if chunk >= slice_pairs else int(chunk)


def fit_chunk(loop: OuterLoop, params, data, budget_bytes: int) -> tuple[OuterLoop, int]:
    """``loop`` with the largest ``pairs_per_chunk`` whose working memory fits ``budget_bytes``.

    Returns ``(the fitted loop, bytes per item)``. The choice depends only on the
    model and data shapes, so every rank picks the same.
    """
    per_pair = loop.working_bytes_per_pair(params, data)
    return loop.with_chunk(chunk_for_budget(per_pair, budget_bytes, len(loop.pair_indices))), per_pair


# --------------------------------------------------------------------------- shared loop plumbing


class SlicedLoop(abc.ABC):
    """What ES and meta-gradients share: a config with ``population_size`` and
    ``pairs_per_chunk``, this rank's slice of the global items, the flat parameter
    layout, the jitted slice evaluation and the optimiser update.

    A subclass provides ``_make_slice_evaluator()`` (the function to jit) and ``step``.
    """

    unit = "items"

    def __init__(self, fitness, params_template, config, optimizer: optax.GradientTransformation, comm):
        self.config, self.optimizer, self.comm = config, optimizer, comm
        self._fitness, self._params_template = fitness, params_template
        flat, self.unravel = jax.flatten_util.ravel_pytree(params_template)
        self.dim = flat.shape[0]
        self.pair_indices = pair_slice(config.population_size, comm.rank, comm.size)
        self._evaluate = jax.jit(self._make_slice_evaluator())
        self._apply = make_apply(optimizer)

    @abc.abstractmethod
    def _make_slice_evaluator(self):
        """``evaluate_slice(flat_params, rng, generation, pair_indices, data)``, to be jitted."""

    @abc.abstractmethod
    def step(self, state: MetaState, data) -> tuple[MetaState, dict[str, float]]:
        """One step on every rank together (:class:`OuterLoop`)."""

    @property
    def population_size(self) -> int:
        return self.config.population_size

    @property
    def pairs_per_chunk(self) -> int | None:
        return self.config.pairs_per_chunk

    def init(self, params, seed: int) -> MetaState:
        """Step 0; every loop has the same state layout, so checkpoints and resume work alike."""
        return MetaState(params=params, opt_state=self.optimizer.init(params), generation=0, rng=base_keys(seed))

    def with_chunk(self, pairs_per_chunk: int | None):
        """The same loop evaluating ``pairs_per_chunk`` items at once (a new object; this one is unchanged)."""
        config = dataclasses.replace(self.config, pairs_per_chunk=pairs_per_chunk)
        return type(self)(self._fitness, self._params_template, config, self.optimizer, self.comm)

    def working_bytes_per_pair(self, params, data) -> int:
        return working_bytes_per_pair(self._evaluate, jax.flatten_util.ravel_pytree(params)[0], base_keys(0), data)


# --------------------------------------------------------------------------- exact sums over ranks

# Float sums depend on their order, so partial sums added over 1 or N ranks can differ in
# the last bit, and a last bit is sometimes the one that decides a float32 rounding (ES's
# centered-rank weights are multiples of 1/(P-1), which makes exact ties at a float32
# midpoint common enough to flip one of 164 gradient entries per generation). Integers
# add associatively: every term is put on one fixed-point grid that all ranks agree on,
# and the int64 sums are exact in any order and any split over ranks.
FIXED_POINT_BITS = 62  # sums stay below 2**62 in magnitude: int64 never overflows


def fixed_point_scale(bound: float) -> float:
    """The power of two ``s`` with ``bound · s < 2**62``: the grid for terms whose magnitudes add up to ``bound``."""
    if not math.isfinite(bound) or bound <= 0.0:
        return 1.0
    return math.ldexp(1.0, FIXED_POINT_BITS - math.frexp(bound)[1])


def fixed_point_sum(terms: np.ndarray, scale: float) -> np.ndarray:
    """``sum`` over axis 0 of float ``terms [n, D]`` on the grid ``1/scale``, as exact int64 ``[D]``.

    Each term is rounded to the grid once (the same on every rank: it depends on the term
    alone); the integer sum then has no order. The grid step is ``2**-62`` of the bound, far
    below float32 resolution.
    """
    return np.rint(np.asarray(terms, dtype=np.float64) * scale).astype(np.int64).sum(axis=0)


def from_fixed_point(total: np.ndarray, scale: float) -> np.ndarray:
    """The float64 value of an int64 fixed-point sum (:func:`fixed_point_sum`)."""
    return np.asarray(total, dtype=np.float64) / scale
