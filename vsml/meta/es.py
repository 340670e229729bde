"""Evolution strategies with antithetic pairs, spread over MPI ranks (docs/DESIGN.md §6).

ES knows nothing of learners: it sees ``fitness(params, key, data) -> scalar``
(lower is better) and an opaque ``data`` pytree passed through to it.

Per generation g, pair i (global index 0..P-1):

* noise ``eps_i ~ N(0, I)`` from ``key(noise, g, i)``, episode key from
  ``key(data, g, i)``; both members ``theta ± sigma * eps_i`` share the episode;
* rank r evaluates pairs ``[r P/N, (r+1) P/N)`` in one jitted call (with
  ``pairs_per_chunk``, a ``lax.map`` over chunks of that many pairs inside the
  call, so memory grows with the chunk's learner states, not the slice's):
  :func:`make_slice_evaluator`;
* fitness (2P floats) is all-gathered and shaped into one weight per pair:
  :func:`shape_fitness`, :func:`pair_weights`;
* each rank regenerates its own ``eps_i`` and forms ``sum_i w_i eps_i``
  (:func:`noise_sum`) as exact int64 fixed-point numbers; the partial sums (D
  integers) are all-reduced, divided by P (:func:`mean_gradient`), and every rank
  applies the same optax update. No rank holds more noise than its own slice.

These pure functions are composed by :meth:`EvolutionStrategy.estimate`, the thin
distributed part (collectives, timing); the update and the non-finite policy are
:func:`vsml.meta.sliced.finish_step`, shared with meta-gradients.

The partial sums are integers on a fixed-point grid every rank derives from the
all-gathered weights (:func:`noise_scale`, :func:`vsml.meta.slicing.fixed_point_sum`), so
their total is exact in any order: the float32 gradient, and hence the
meta-parameters, are bit-identical on any rank count (docs/DESIGN.md §6.4).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats

from vsml.comm import Comm
from vsml.meta.base import MetaState
from vsml.meta.sliced import Estimate, SlicedLoop, make_optimizer
from vsml.meta.slicing import fixed_point_scale, fixed_point_sum, from_fixed_point, item_key
from vsml.settings import OptimizerSettings

FITNESS_SHAPINGS = ("raw", "centered_rank")


@dataclasses.dataclass(frozen=True)
class ESConfig:
    population_size: int  # antithetic pairs P
    noise_std: float  # sigma
    fitness_shaping: str = "raw"
    pairs_per_chunk: int | None = None  # pairs evaluated at once inside the jitted call (None: the whole slice)


def pair_epsilon(noise_key, generation, pair_index, dim: int) -> jax.Array:
    """``eps_i`` of one global pair index: ``[D]``."""
    return jax.random.normal(item_key(noise_key, generation, pair_index), (dim,))


def pair_noise(noise_key, generation, pair_indices, dim: int) -> jax.Array:
    """``eps_i`` for each global pair index: ``[n] -> [n, D]``."""
    return jax.vmap(lambda i: pair_epsilon(noise_key, generation, i, dim))(pair_indices)


_pair_noise = jax.jit(pair_noise, static_argnums=3)


def make_slice_evaluator(fitness: Callable, unravel: Callable, noise_std: float, pairs_per_chunk: int | None):
    """``evaluate_slice(flat_params [D], rng, generation, pair_indices [n], data) -> fitness [n, 2]``.

    Column 0 is ``theta + sigma eps_i``, column 1 ``theta - sigma eps_i``; both see
    the episode of ``key(data, g, i)``. Pairs are vmapped (and both members of a
    pair); with ``pairs_per_chunk`` a ``lax.map`` runs that many pairs at a time,
    so only one chunk's perturbations and learner states are alive at once.
    """

    def evaluate_slice(flat_params, rng, generation, pair_indices, data):
        def pair_fitness(index):
            eps = pair_epsilon(rng["noise"], generation, index, flat_params.shape[0])
            members = jnp.stack([flat_params + noise_std * eps, flat_params - noise_std * eps])  # [2, D]
            key = item_key(rng["data"], generation, index)
            return jax.vmap(lambda flat: fitness(unravel(flat), key, data))(members)  # [2]

        if pairs_per_chunk is None or pairs_per_chunk >= pair_indices.shape[0]:
            return jax.vmap(pair_fitness)(pair_indices)
        return jax.lax.map(pair_fitness, pair_indices, batch_size=pairs_per_chunk)

    return evaluate_slice


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
        # 0-based ranks; tied values share their mean rank (so order never matters)
        ranks = scipy.stats.rankdata(np.where(finite, fitness, np.inf).ravel(), method="average") - 1.0
        return (ranks / max(fitness.size - 1, 1) - 0.5).reshape(fitness.shape), nonfinite
    raise ValueError(f"fitness shaping '{mode}' is not one of {', '.join(FITNESS_SHAPINGS)}")


def pair_weights(utilities: np.ndarray, noise_std: float) -> np.ndarray:
    """``w_i = (u+_i - u-_i) / (2 sigma)``: the gradient estimate is ``mean_i w_i eps_i``."""
    return (utilities[:, 0] - utilities[:, 1]) / (2.0 * noise_std)


# |eps| of a float32 standard normal from jax.random.normal is below 5.5 (the inverse error
# function of the largest float32 uniform below 1, times sqrt(2)); 8 leaves a margin.
NOISE_BOUND = 8.0


def noise_scale(weights: np.ndarray) -> float:
    """The fixed-point grid of ``sum_i w_i eps_i`` (:func:`vsml.meta.slicing.fixed_point_scale`), from all ``P`` weights."""
    return fixed_point_scale(float(np.abs(weights).sum()) * NOISE_BOUND)


def noise_sum(noise_key, generation, pair_indices: np.ndarray, weights: np.ndarray, dim: int) -> np.ndarray:
    """``sum_i w_i eps_i`` over the pairs ``pair_indices`` (a rank's own): exact int64 ``[D]`` on the
    grid :func:`noise_scale` (``weights`` holds all ``P`` pair weights; only those of ``pair_indices`` are read).

    Sums over any split of the pairs add up to the same integers; :func:`mean_gradient` turns the
    all-reduced total into the gradient.
    """
    eps = np.asarray(_pair_noise(noise_key, generation, pair_indices, dim), dtype=np.float64)  # [n, D]
    if eps.size and np.abs(eps).max() > NOISE_BOUND:  # cannot happen with jax's float32 normals
        raise ValueError(f"ES noise of magnitude {np.abs(eps).max():.3g} exceeds the fixed-point bound {NOISE_BOUND}")
    terms = weights[pair_indices].astype(np.float64)[:, None] * eps
    return fixed_point_sum(terms, noise_scale(weights))


def mean_gradient(total: np.ndarray, weights: np.ndarray, population_size: int) -> np.ndarray:
    """The ES gradient ``mean_i w_i eps_i`` from the all-reduced fixed-point ``sum_i w_i eps_i``: float32 ``[D]``."""
    return (from_fixed_point(total, noise_scale(weights)) / population_size).astype(np.float32)


class EvolutionStrategy(SlicedLoop):
    """Antithetic ES over the ranks of ``comm`` (an :class:`vsml.meta.base.OuterLoop`).

    Args:
      fitness: ``fitness(params, key, data) -> scalar``, lower is better.
      params_template: a meta-parameter pytree (fixes the flat layout).
      config: population size, noise std, shaping, chunk.
      optimizer: an optax transformation applied to the ES gradient.
      comm: the communicator; rank r evaluates its slice of the pairs.
    """

    unit = "pairs"

    def __init__(
        self, fitness: Callable, params_template, config: ESConfig, optimizer: optax.GradientTransformation, comm: Comm
    ):
        if config.fitness_shaping not in FITNESS_SHAPINGS:
            raise ValueError(f"fitness shaping '{config.fitness_shaping}' is not one of {', '.join(FITNESS_SHAPINGS)}")
        super().__init__(fitness, params_template, config, optimizer, comm)

    def _make_slice_evaluator(self):
        return make_slice_evaluator(self._fitness, self.unravel, self.config.noise_std, self.config.pairs_per_chunk)

    def evaluate(self, state: MetaState, data) -> np.ndarray:
        """This rank's fitness ``[n, 2]`` at the state's generation."""
        return np.asarray(
            self._evaluate(self.flatten(state.params), state.rng, state.generation, self.item_indices, data)
        )

    def estimate(self, state: MetaState, data) -> Estimate:
        """One generation's gradient: evaluate, share fitness, shape, sum the noise exactly.

        Its own statistic is ``es/nonfinite`` (non-finite fitness values of the generation);
        ``time/communicate`` is the fitness all-gather and the gradient all-reduce (waiting
        for slower ranks included).
        """
        config = self.config
        start = time.perf_counter()
        local = self.evaluate(state, data)
        evaluated = time.perf_counter()
        fitness = self.comm.allgather(local)  # [P, 2], pair order
        gathered = time.perf_counter()
        utilities, nonfinite = shape_fitness(fitness, config.fitness_shaping)
        weights = pair_weights(utilities, config.noise_std)
        mine = noise_sum(state.rng["noise"], state.generation, self.item_indices, weights, self.dim)
        reduce_start = time.perf_counter()
        total = self.comm.allreduce_sum(mine)
        reduced = time.perf_counter()
        return Estimate(
            gradient=mean_gradient(total, weights, config.population_size),
            losses=fitness,
            stats={"es/nonfinite": nonfinite},
            evaluate_seconds=evaluated - start,
            communicate_seconds=(gathered - evaluated) + (reduced - reduce_start),
            nonfinite_message=(
                f"meta-parameters became non-finite in generation {state.generation} "
                f"({nonfinite} of {fitness.size} fitness values were non-finite); "
                "a smaller learning rate or noise std, or gradient clipping, avoids this"
            ),
        )


def from_settings(
    settings: OptimizerSettings,
    population_size: int,
    pairs_per_chunk: int | None,
    fitness: Callable,
    params_template,
    comm: Comm,
) -> EvolutionStrategy:
    """ES configured by the ``optimizer`` section (``type: es``)."""
    config = ESConfig(
        population_size=population_size,
        noise_std=settings.noise_std,
        fitness_shaping=settings.fitness_shaping,
        pairs_per_chunk=pairs_per_chunk,
    )
    optimizer = make_optimizer(settings.lr, settings.kwargs, settings.clip_gradnorm)
    return EvolutionStrategy(fitness, params_template, config, optimizer, comm)


__all__ = [
    "ESConfig",
    "EvolutionStrategy",
    "FITNESS_SHAPINGS",
    "from_settings",
    "make_slice_evaluator",
    "mean_gradient",
    "noise_sum",
    "pair_epsilon",
    "pair_noise",
    "pair_weights",
    "shape_fitness",
]
