"""Persistent evolution strategies over truncated episodes (Vicol et al. 2021; docs/DESIGN.md §6.6), and
noise-reuse ES (Li et al. 2023) on the same machinery.

ES (:mod:`vsml.meta.es`) scores a whole episode per perturbation. PES steps each
episode ``K`` steps (a truncation) per generation and keeps, per antithetic pair
(a *particle*), the learner carries of both members between generations, so a step
costs ``K`` learner steps instead of ``T``. Scoring a truncation by the ES weight
times this generation's noise alone (truncated ES) ignores how the earlier
truncations' perturbations shaped the carry, and is biased. PES multiplies the weight by
the sum of every perturbation the particle has seen since its episode began,
``xi_i``, which makes the estimate unbiased for the gradient of the (Gaussian-smoothed)
whole-episode meta-loss.

Per generation g, particle i (global index 0..P-1), at step ``t_i`` of its episode
(Algorithm 1 of the paper, noise in units of sigma):

* ``eps_i`` from ``key(noise, g, i)`` (as ES); ``xi_i <- xi_i + eps_i`` (accumulated
  before use);
* both members unroll the steps ``[t_i, t_i + K)`` at ``theta ± sigma eps_i`` from their own
  carries (a fresh carry, the learner's ``start`` at that member's parameters, where the
  particle begins an episode); the episode of particle i's ``e_i``-th episode has the key
  ``key(data, e_i, i)`` and is sampled anew each truncation (the same every time);
* the truncation's loss is the sum of its steps' batch-mean losses over ``T`` (so an
  episode's truncations add up to the ``loss_type: mean`` meta-loss);
  ``w_i = (L+ - L-) / (2 sigma)`` after ``fitness_shaping`` (only ``raw`` is unbiased);
* gradient ``mean_i w_i xi_i`` (:func:`pes_gradient`); a particle whose truncation reached ``T``
  starts a new episode (fresh carries, ``xi_i = 0``, ``e_i + 1``) next generation. ``meta_loss``
  reports the truncations' mean per-step loss (comparable with ES's ``loss_type: mean`` meta-loss).

Noise-reuse ES (``noise: reuse``, ``optimizer.type: nres``) draws one perturbation per episode,
``eps_i`` from ``key(noise, e_i, i)``, uses it for every truncation of that episode and weights it
alone: the whole episode is unrolled at one perturbed ``theta``, so each truncation's term is plain ES
on that truncation's loss, unbiased, without PES's growing ``xi_i`` (the paper finds lower variance than
PES; on the recurrence of ``tests/test_pes.py`` it is not lower at every truncation).

Staggering: particle i starts at step ``K (i mod T/K)`` of its first episode, with a fresh
carry (its first episode is that much shorter), so the particles spread evenly over
the episode's truncations and the estimate does not swing with a shared episode phase.

Rank-count independence: rank r unrolls its slice of the particles; the losses, the new
carries and the accumulators are all-gathered every generation (cost: ``P·(2·carry + D)``
floats per generation), so the whole state is the same on every rank and checkpoints
like any other (:mod:`vsml.meta.base`); the gradient is then the same float64 sum over
all ``P`` particles on every rank, bit-identical for any rank count.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vsml.comm import Comm
from vsml.meta.es import FITNESS_SHAPINGS, pair_epsilon, pair_weights, shape_fitness
from vsml.meta.objective import Truncations
from vsml.meta.sliced import Estimate, SlicedLoop, finish_step, make_optimizer
from vsml.meta.slicing import base_keys, item_key
from vsml.settings import OptimizerSettings

# What the weight of a truncation multiplies: persistent (PES: every generation's noise since the
# episode began), reuse (noise-reuse ES: one noise per episode, drawn at its start) or truncated
# (this generation's noise alone: biased, a baseline).
NOISE_MODES = ("persistent", "reuse", "truncated")


@dataclasses.dataclass(frozen=True)
class PESConfig:
    population_size: int  # particles (antithetic pairs) P
    noise_std: float  # sigma
    truncation_steps: int  # K: learner steps per generation
    fitness_shaping: str = "raw"
    pairs_per_chunk: int | None = None  # particles unrolled at once inside the jitted call (None: the whole slice)
    noise: str = "persistent"  # one of NOISE_MODES


@chex.dataclass
class PESState:
    """PES's state: ES's fields and, per particle i, ``carries`` (pytree, leaves ``[P, 2, ...]``:
    the + and - members' learner carries), ``positions`` (int32 ``[P]``: the next step of its
    episode), ``episodes`` (int32 ``[P]``: its episode counter), ``fresh`` (int32 ``[P]``, 1: the
    next truncation starts from the learner's ``start``) and ``accumulated`` (float32 ``[P, D]``: the
    noise since its episode began, ``xi_i``)."""

    params: Any
    opt_state: Any
    generation: int
    rng: dict
    carries: Any
    positions: Any
    episodes: Any
    fresh: Any
    accumulated: Any


def initial_positions(population_size: int, episode_length: int, truncation_steps: int) -> np.ndarray:
    """Staggered starts: particle i at step ``K (i mod T/K)``: int32 ``[P]``."""
    return (truncation_steps * (np.arange(population_size) % (episode_length // truncation_steps))).astype(np.int32)


def next_positions(positions, episodes, truncation_steps: int, episode_length: int):
    """After a truncation: ``(positions, episodes, ended)``; an ended particle is at step 0 of its next episode."""
    advanced = positions + truncation_steps
    ended = advanced >= episode_length
    return np.where(ended, 0, advanced).astype(np.int32), (episodes + ended).astype(np.int32), ended


def pes_gradient(weights: np.ndarray, accumulated: np.ndarray) -> np.ndarray:
    """The PES estimate ``mean_i w_i xi_i`` from weights ``[P]`` and accumulated noise ``[P, D]``: float32 ``[D]``.

    With ``xi_i`` this generation's noise alone, it is the (biased) truncated-ES estimate.
    """
    terms = np.asarray(weights, np.float64)[:, None] * np.asarray(accumulated, np.float64)
    return terms.mean(axis=0).astype(np.float32)


def make_truncation_evaluator(truncations: Truncations, unravel, config: PESConfig):
    """``evaluate(flat [D], rng, generation, indices [n], carries, positions, episodes, fresh, accumulated, data)
    -> (losses [n, 2], carries, used [n, D])``: one truncation of each particle of the slice.

    ``used`` is the noise the weight multiplies: ``xi_i + eps_i`` (``persistent``), ``eps_i`` (``truncated``),
    or the episode's noise, the same for all its truncations (``reuse``). Column 0 of the losses is ``theta + sigma eps_i``.
    """
    begin, unroll, length, steps = (
        truncations.begin,
        truncations.unroll,
        truncations.episode_length,
        config.truncation_steps,
    )

    def particle(index, carry_pair, position, episode, fresh, accumulated, flat_params, rng, generation, data):
        if config.noise == "reuse":  # one perturbation per episode: key(noise, e_i, i)
            eps = pair_epsilon(rng["noise"], episode, index, flat_params.shape[0])
        else:
            eps = pair_epsilon(rng["noise"], generation, index, flat_params.shape[0])
        used = accumulated + eps if config.noise == "persistent" else eps
        members = jnp.stack([flat_params + config.noise_std * eps, flat_params - config.noise_std * eps])
        key = item_key(rng["data"], episode, index)

        def member(flat, carry):
            params = unravel(flat)
            started, inputs, labels = begin(params, key, data)
            carry = jax.tree_util.tree_map(lambda new, old: jnp.where(fresh > 0, new, old), started, carry)
            carry, losses = unroll(params, carry, inputs, labels, position, steps)
            return carry, jnp.sum(jnp.mean(losses, axis=1)) / length

        carry_pair, losses = jax.vmap(member)(members, carry_pair)
        return losses, carry_pair, used

    def evaluate(flat_params, rng, generation, indices, carries, positions, episodes, fresh, accumulated, data):
        def one(args):
            return particle(*args, flat_params, rng, generation, data)

        items = (indices, carries, positions, episodes, fresh, accumulated)
        if config.pairs_per_chunk is None or config.pairs_per_chunk >= indices.shape[0]:
            return jax.vmap(lambda *a: one(a))(*items)
        return jax.lax.map(one, items, batch_size=config.pairs_per_chunk)

    return evaluate


class PersistentES(SlicedLoop):
    """PES over the ranks of ``comm`` (an :class:`vsml.meta.base.OuterLoop` with its own state, :class:`PESState`).

    Args:
      truncations: the episode stepped a truncation at a time (:class:`vsml.meta.objective.Truncations`).
      params_template: a meta-parameter pytree (fixes the flat layout).
      config: particles, noise std, truncation length, shaping, chunk.
      optimizer: an optax transformation applied to the estimate.
      comm: the communicator; rank r unrolls its slice of the particles.
    """

    unit = "pairs"

    def __init__(self, truncations: Truncations, params_template, config: PESConfig, optimizer, comm: Comm):
        if config.fitness_shaping not in FITNESS_SHAPINGS:
            raise ValueError(f"fitness shaping '{config.fitness_shaping}' is not one of {', '.join(FITNESS_SHAPINGS)}")
        if config.noise not in NOISE_MODES:
            raise ValueError(f"noise '{config.noise}' is not one of {', '.join(NOISE_MODES)}")
        length = truncations.episode_length
        if config.truncation_steps < 1 or length % config.truncation_steps:
            raise ValueError(
                f"a truncation of {config.truncation_steps} steps must divide the episode of {length} steps; "
                f"use one of {', '.join(str(k) for k in range(1, length + 1) if length % k == 0)}"
            )
        self.truncations = truncations
        super().__init__(None, params_template, config, optimizer, comm)

    def _make_slice_evaluator(self):
        return make_truncation_evaluator(self.truncations, self.unravel, self.config)

    def with_chunk(self, pairs_per_chunk: int | None):
        config = dataclasses.replace(self.config, pairs_per_chunk=pairs_per_chunk)
        return type(self)(self.truncations, self._params_template, config, self.optimizer, self.comm)

    def init(self, params, seed: int) -> PESState:
        """Generation 0: every particle fresh at its staggered step of episode 0, ``xi = 0``."""
        config, size = self.config, self.config.population_size
        shapes = jax.eval_shape(self.truncations.begin, params, base_keys(0)["data"], self.truncations.data)[0]
        carries = jax.tree_util.tree_map(lambda s: np.zeros((size, 2, *s.shape), s.dtype), shapes)
        return PESState(
            params=params,
            opt_state=self.optimizer.init(params),
            generation=0,
            rng=base_keys(seed),
            carries=carries,
            positions=initial_positions(size, self.truncations.episode_length, config.truncation_steps),
            episodes=np.zeros(size, np.int32),
            fresh=np.ones(size, np.int32),
            accumulated=np.zeros((size, self.dim), np.float32),
        )

    def truncate(self, state: PESState, data):
        """One truncation of every particle: ``(weights [P], losses [P, 2], carries, used [P, D], seconds)``.

        :func:`pes_gradient` of ``weights`` and ``used`` is the estimate; ``carries`` and ``used``
        are all particles' (all-gathered); ``seconds`` is ``(evaluate, communicate)``.
        """
        args = self._particle_slice(state, self.item_indices)
        start = time.perf_counter()
        flat = self.flatten(state.params)
        losses, carries, used = self._evaluate(flat, state.rng, state.generation, self.item_indices, *args, data)
        losses, carries, used = jax.tree_util.tree_map(np.asarray, (losses, carries, used))
        evaluated = time.perf_counter()
        losses, carries, used = jax.tree_util.tree_map(self.comm.allgather, (losses, carries, used))
        gathered = time.perf_counter()
        utilities, _ = shape_fitness(losses, self.config.fitness_shaping)
        weights = pair_weights(utilities, self.config.noise_std)
        return weights, losses, carries, used, (evaluated - start, gathered - evaluated)

    def estimate(self, state: PESState, data) -> Estimate:
        """This generation's estimate alone (the particles' next state is :meth:`step`'s)."""
        return self._estimate_and_particles(state, data)[0]

    def _estimate_and_particles(self, state: PESState, data) -> tuple[Estimate, dict]:
        config, length = self.config, self.truncations.episode_length
        weights, losses, carries, used, (evaluate_s, communicate_s) = self.truncate(state, data)
        positions, episodes, ended = next_positions(state.positions, state.episodes, config.truncation_steps, length)
        nonfinite = int(np.size(losses) - np.isfinite(losses).sum())
        estimate = Estimate(
            gradient=pes_gradient(weights, used),
            losses=losses * (length / config.truncation_steps),  # reported per step, as ES's mean meta-loss
            stats={"es/nonfinite": nonfinite, "pes/episodes_ended": int(ended.sum())},
            evaluate_seconds=evaluate_s,
            communicate_seconds=communicate_s,
            nonfinite_message=(
                f"meta-parameters became non-finite in generation {state.generation} "
                f"({nonfinite} of {np.size(losses)} truncation losses were non-finite); "
                "a smaller learning rate or noise std, or gradient clipping, avoids this"
            ),
        )
        particles = dict(
            carries=carries,
            positions=positions,
            episodes=episodes,
            fresh=ended.astype(np.int32),
            # only PES sums the noise; the other modes keep zeros (a fixed state layout)
            accumulated=np.where(ended[:, None] | (config.noise != "persistent"), 0.0, used).astype(np.float32),
        )
        return estimate, particles

    def step(self, state: PESState, data) -> tuple[PESState, dict]:
        """One generation on every rank together: a truncation of every particle, the estimate, the update."""
        start = time.perf_counter()
        estimate, particles = self._estimate_and_particles(state, data)
        new_state, stats = finish_step(self._apply, self._compiled_unravel, state, estimate, start)
        return new_state.replace(**particles), stats

    def _particle_slice(self, state: PESState, indices: np.ndarray) -> tuple:
        """The per-particle state of the particles ``indices``: the evaluator's arguments after the indices."""
        fields = (state.carries, state.positions, state.episodes, state.fresh, state.accumulated)
        return jax.tree_util.tree_map(lambda x: np.asarray(x)[indices], fields)

    def memory_analysis(self, state: PESState, data):
        """XLA's buffer plan of this rank's truncation (compiled once more, ahead of time)."""
        args = self._particle_slice(state, self.item_indices)
        lowered = self._evaluate.lower(
            self.flatten(state.params), state.rng, state.generation, self.item_indices, *args, data
        )
        return lowered.compile().memory_analysis()

    def working_bytes_per_item(self, params, data) -> int:
        state = self.init(params, 0)
        one = np.zeros(1, np.int32)
        args = self._particle_slice(state, one)
        plan = self._evaluate.lower(self.flatten(params), state.rng, 0, one, *args, data).compile().memory_analysis()
        return int(plan.temp_size_in_bytes)


def from_settings(
    settings: OptimizerSettings,
    population_size: int,
    pairs_per_chunk: int | None,
    fitness,
    params_template,
    comm: Comm,
    truncations: Truncations | None = None,
) -> PersistentES:
    """PES (``type: pes``) or noise-reuse ES (``type: nres``) configured by the ``optimizer`` section;
    ``fitness`` is unused (these loops unroll truncations)."""
    del fitness
    config = PESConfig(
        population_size=population_size,
        noise_std=settings.noise_std,
        truncation_steps=settings.pes_truncation_steps,
        fitness_shaping=settings.fitness_shaping,
        pairs_per_chunk=pairs_per_chunk,
        noise={"pes": "persistent", "nres": "reuse"}[settings.type],
    )
    optimizer: optax.GradientTransformation = make_optimizer(settings.lr, settings.kwargs, settings.clip_gradnorm)
    return PersistentES(truncations, params_template, config, optimizer, comm)


__all__ = [
    "NOISE_MODES",
    "PESConfig",
    "PESState",
    "PersistentES",
    "from_settings",
    "initial_positions",
    "make_truncation_evaluator",
    "next_positions",
    "pes_gradient",
]
