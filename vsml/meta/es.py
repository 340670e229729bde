"""Evolution strategies with antithetic pairs, spread over MPI ranks (DESIGN §6).

ES knows nothing of learners: it sees ``fitness(params, key, data) -> scalar``
(lower is better) and an opaque ``data`` pytree passed through to it.

Per generation g, pair i (global index 0..P-1):

* noise ``eps_i ~ N(0, I)`` from ``key(noise, g, i)``, episode key from
  ``key(data, g, i)``; both members ``theta ± sigma * eps_i`` share the episode;
* rank r evaluates pairs ``[r P/N, (r+1) P/N)`` in one jitted call (with
  ``pairs_per_chunk``, a ``lax.map`` over chunks of that many pairs inside the
  call, so memory grows with the chunk's learner states, not the slice's);
* fitness (2P floats) is all-gathered and shaped into one weight per pair;
* each rank regenerates its own ``eps_i``, forms ``sum_i w_i eps_i`` and the
  partial sums (D floats) are all-reduced; every rank applies the same optax
  update. No rank holds more noise than its own slice.

The partial sums are accumulated in float64 on the host, so the float32
gradient, and hence the meta-parameters, do not depend on the rank count.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from vsml.comm import Comm

FITNESS_SHAPINGS = ("raw", "centered_rank")


class NonFiniteError(FloatingPointError):
    """The update produced NaN or infinite meta-parameters (the same on every rank)."""

# Streams derived from the run seed: one for perturbations, one for episodes.
NOISE_STREAM, DATA_STREAM = 0, 1


@dataclasses.dataclass(frozen=True)
class ESConfig:
    population_size: int  # antithetic pairs P
    noise_std: float  # sigma
    fitness_shaping: str = "raw"
    pairs_per_chunk: int | None = None  # pairs evaluated at once inside the jitted call (None: the whole slice)


@chex.dataclass
class ESState:
    """Everything that determines the rest of a run.

    params: meta-parameter pytree. opt_state: optax state. generation: number
    of completed generations. rng: ``{'noise': key, 'data': key}`` base keys
    (raw uint32 ``[2]``) from which every generation's randomness is derived.
    """

    params: Any
    opt_state: Any
    generation: int
    rng: dict


def base_keys(seed: int) -> dict:
    root = jax.random.PRNGKey(seed)
    return {"noise": jax.random.fold_in(root, NOISE_STREAM), "data": jax.random.fold_in(root, DATA_STREAM)}


def pair_key(base_key, generation, pair_index):
    """``key(base, g, i)``: the same for a pair whatever rank evaluates it."""
    return jax.random.fold_in(jax.random.fold_in(base_key, generation), pair_index)


def pair_epsilon(noise_key, generation, pair_index, dim: int) -> jax.Array:
    """``eps_i`` of one global pair index: ``[D]``."""
    return jax.random.normal(pair_key(noise_key, generation, pair_index), (dim,))


def pair_noise(noise_key, generation, pair_indices, dim: int) -> jax.Array:
    """``eps_i`` for each global pair index: ``[n] -> [n, D]``."""
    return jax.vmap(lambda i: pair_epsilon(noise_key, generation, i, dim))(pair_indices)


def pair_slice(population_size: int, rank: int, num_ranks: int) -> np.ndarray:
    """Global indices of the pairs that rank ``rank`` of ``num_ranks`` evaluates."""
    if population_size % num_ranks:
        raise ValueError(
            f"training.population_size={population_size} is not divisible by the {num_ranks} "
            f"MPI ranks; use a multiple of {num_ranks}"
        )
    per_rank = population_size // num_ranks
    return np.arange(rank * per_rank, (rank + 1) * per_rank, dtype=np.int32)


def shape_fitness(fitness: np.ndarray, mode: str) -> tuple[np.ndarray, int]:
    """Utilities (lower is better) from fitness ``[P, 2]`` (columns: +eps, -eps).

    Non-finite fitness is ranked worst: under ``raw`` it becomes the worst
    finite value (the pair then pushes away from it), under ``centered_rank``
    it takes the last ranks. Returns ``(utilities [P, 2] float64, non-finite count)``.
    """
    fitness = np.asarray(fitness, dtype=np.float64)
    finite = np.isfinite(fitness)
    nonfinite = int(fitness.size - finite.sum())
    if mode == "raw":
        if not finite.any():
            return np.zeros_like(fitness), nonfinite
        return np.where(finite, fitness, fitness[finite].max()), nonfinite
    if mode == "centered_rank":
        ranks = _average_ranks(np.where(finite, fitness, np.inf).ravel())
        return (ranks / max(fitness.size - 1, 1) - 0.5).reshape(fitness.shape), nonfinite
    raise ValueError(f"optimizer.fitness_shaping: '{mode}' is not one of {', '.join(FITNESS_SHAPINGS)}")


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks; tied values share their mean rank (so order never matters)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    while start < len(values):
        stop = start + 1
        while stop < len(values) and sorted_values[stop] == sorted_values[start]:
            stop += 1
        ranks[order[start:stop]] = 0.5 * (start + stop - 1)
        start = stop
    return ranks


def pair_weights(utilities: np.ndarray, noise_std: float) -> np.ndarray:
    """``w_i = (u+_i - u-_i) / (2 sigma)``: the gradient estimate is ``mean_i w_i eps_i``."""
    return (utilities[:, 0] - utilities[:, 1]) / (2.0 * noise_std)


def make_optimizer(lr: float, kwargs: dict, clip_gradnorm: float) -> optax.GradientTransformation:
    """Adam (``optimizer.kwargs`` passed through), after global-norm clipping when > 0."""
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
    """XLA's working memory (temp buffers) of ``evaluate`` on a one-pair slice, in bytes.

    ``evaluate(flat_params, rng, generation, pair_indices, data)`` is a jitted slice
    evaluation; compiling it for one pair (ahead of time, nothing runs) gives what each
    pair of a chunk adds.
    """
    lowered = evaluate.lower(flat_params, rng, 0, np.zeros(1, np.int32), data)
    return int(lowered.compile().memory_analysis().temp_size_in_bytes)


def chunk_for_budget(bytes_per_pair: int, budget_bytes: int, slice_pairs: int) -> int | None:
    """Pairs per chunk so a chunk's working memory fits ``budget_bytes`` (None: the whole slice fits)."""
    if bytes_per_pair <= 0:
        return None
    chunk = max(1, budget_bytes // bytes_per_pair)
    return None if chunk >= slice_pairs else int(chunk)


class EvolutionStrategy:
    """Antithetic ES over the ranks of ``comm``.

    Args:
      fitness: ``fitness(params, key, data) -> scalar``, lower is better.
      params_template: a meta-parameter pytree (fixes the flat layout).
      config: population size, noise std, shaping.
      optimizer: an optax transformation applied to the ES gradient.
      comm: the communicator; rank r evaluates its slice of the pairs.
    """

    def __init__(self, fitness: Callable, params_template, config: ESConfig,
                 optimizer: optax.GradientTransformation, comm: Comm):
        self.config, self.optimizer, self.comm = config, optimizer, comm
        flat, self.unravel = ravel_pytree(params_template)
        self.dim = flat.shape[0]
        self.pair_indices = pair_slice(config.population_size, comm.rank, comm.size)
        self._fitness = fitness
        self._evaluate = jax.jit(self._make_evaluate(fitness))
        self._noise = jax.jit(lambda key, g, idx: pair_noise(key, g, idx, self.dim))
        self._apply = make_apply(optimizer)

    def _make_evaluate(self, fitness):
        sigma, unravel, chunk = self.config.noise_std, self.unravel, self.config.pairs_per_chunk

        def evaluate_slice(flat_params, rng, generation, pair_indices, data):
            """Fitness ``[n, 2]`` of this rank's pairs, in one call.

            Pairs are vmapped (and both members of a pair); with ``pairs_per_chunk``
            a ``lax.map`` runs ``chunk`` pairs at a time, so only one chunk's
            perturbations and learner states are alive at once.
            """

            def pair_fitness(index):
                eps = pair_epsilon(rng["noise"], generation, index, flat_params.shape[0])
                members = jnp.stack([flat_params + sigma * eps, flat_params - sigma * eps])  # [2, D]
                key = pair_key(rng["data"], generation, index)
                return jax.vmap(lambda flat: fitness(unravel(flat), key, data))(members)  # [2]

            if chunk is None or chunk >= pair_indices.shape[0]:
                return jax.vmap(pair_fitness)(pair_indices)
            return jax.lax.map(pair_fitness, pair_indices, batch_size=chunk)

        return evaluate_slice

    def init_state(self, params, seed: int) -> ESState:
        return ESState(params=params, opt_state=self.optimizer.init(params), generation=0, rng=base_keys(seed))

    def fit_chunk(self, params, data, budget_bytes: int) -> tuple[int | None, int]:
        """Sets ``pairs_per_chunk`` to the most pairs whose working memory fits ``budget_bytes``.

        Returns ``(pairs_per_chunk or None for the whole slice, bytes per pair)``. The
        result depends only on the model and data shapes, so every rank picks the same.
        """
        flat, _ = ravel_pytree(params)
        per_pair = working_bytes_per_pair(self._evaluate, flat, base_keys(0), data)
        chunk = chunk_for_budget(per_pair, budget_bytes, len(self.pair_indices))
        self.config = dataclasses.replace(self.config, pairs_per_chunk=chunk)
        self._evaluate = jax.jit(self._make_evaluate(self._fitness))
        self.bytes_per_pair = per_pair  # reported by bench/gpu_check.py
        return chunk, per_pair

    def evaluate(self, state: ESState, data) -> np.ndarray:
        """This rank's fitness ``[n, 2]`` at the state's generation."""
        flat, _ = ravel_pytree(state.params)
        return np.asarray(self._evaluate(flat, state.rng, state.generation, self.pair_indices, data))

    def memory_analysis(self, state: ESState, data):
        """XLA's buffer plan of the slice evaluation (compiles it once more, ahead of time).

        ``temp_size_in_bytes`` is the working memory of one evaluation: it grows with
        ``pairs_per_chunk`` (the learner states alive at once), not with the slice.
        """
        flat, _ = ravel_pytree(state.params)
        lowered = self._evaluate.lower(flat, state.rng, state.generation, self.pair_indices, data)
        return lowered.compile().memory_analysis()

    def partial_sum(self, state: ESState, weights: np.ndarray) -> np.ndarray:
        """This rank's ``sum_i w_i eps_i`` over its own pairs, float64 ``[D]`` (weights: all ``P``)."""
        mine = weights[self.pair_indices].astype(np.float64)
        eps = np.asarray(self._noise(state.rng["noise"], state.generation, self.pair_indices), dtype=np.float64)
        return mine @ eps

    def gradient(self, state: ESState, weights: np.ndarray) -> jax.Array:
        """ES gradient ``mean_i w_i eps_i`` from all ``P`` pair weights, as a flat float32 ``[D]``."""
        total = self.comm.allreduce_sum(self.partial_sum(state, weights))
        return jnp.asarray((total / self.config.population_size).astype(np.float32))

    def step(self, state: ESState, data) -> tuple[ESState, dict]:
        """One generation: evaluate, share fitness, update. Returns the new state and statistics.

        Besides the meta-loss, the statistics hold the generation's wall time split into
        ``time/evaluate`` (this rank's slice), ``time/communicate`` (the fitness all-gather
        and the gradient all-reduce, waiting for slower ranks included) and ``time/update``
        (noise regeneration, shaping, optimiser), in seconds.
        """
        start = time.perf_counter()
        local = self.evaluate(state, data)
        evaluated = time.perf_counter()
        fitness = self.comm.allgather(local)  # [P, 2], pair order
        gathered = time.perf_counter()
        utilities, nonfinite = shape_fitness(fitness, self.config.fitness_shaping)
        mine = self.partial_sum(state, pair_weights(utilities, self.config.noise_std))
        reduce_start = time.perf_counter()
        total = self.comm.allreduce_sum(mine)
        reduced = time.perf_counter()
        grad = self.unravel(jnp.asarray((total / self.config.population_size).astype(np.float32)))
        params, opt_state, params_finite = self._apply(state.params, state.opt_state, grad)
        params_finite = bool(params_finite)  # waits for the update
        end = time.perf_counter()
        finite = fitness[np.isfinite(fitness)]
        stats = {
            "meta_loss": float(finite.mean()) if finite.size else float("nan"),
            "meta_loss_std": float(finite.std()) if finite.size else float("nan"),
            "es/nonfinite": nonfinite,
            "time/evaluate": evaluated - start,
            "time/communicate": (gathered - evaluated) + (reduced - reduce_start),
            "time/update": (reduce_start - gathered) + (end - reduced),
        }
        if not params_finite:
            raise NonFiniteError(
                f"meta-parameters became non-finite in generation {state.generation} "
                f"({nonfinite} of {fitness.size} fitness values were non-finite); "
                "lower optimizer.lr or optimizer.noise_std, or set optimizer.clip_gradnorm"
            )
        new_state = ESState(params=params, opt_state=opt_state, generation=state.generation + 1, rng=state.rng)
        return new_state, stats
