"""Meta-gradients: train meta-parameters by the gradient of the episode meta-loss (docs/DESIGN.md §6, ``optimizer.type: metagrad``).

The second :class:`vsml.meta.base.OuterLoop` beside
:class:`vsml.meta.es.EvolutionStrategy`, with the same state and ``step``
contract. Per step g and global pair index
i (0..P-1) it runs the episode of ``key(data, g, i)`` — the very episode (data
and inner key) that both members of ES pair i would see — and differentiates
its meta-loss through the whole episode with ``jax.grad``. Rank r handles the
indices ``[r P/N, (r+1) P/N)``; each rank sums its per-episode gradients on the
host in float64, the sums (and the count of finite episodes) are all-reduced,
and every rank applies the same optax update (:func:`vsml.meta.sliced.make_optimizer`:
Adam after global-norm clipping at ``optimizer.clip_gradnorm``) to the mean gradient.
As for ES, the result does not depend on the rank count (up to float64
summation order).

An episode whose loss or gradient is not finite is left out of the mean and
counted in ``metagrad/nonfinite``; the optimiser then steps on the mean of the others.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import numpy as np

from vsml.comm import Comm
from vsml.meta.base import MetaState
from vsml.meta.sliced import Estimate, SlicedLoop, make_optimizer
from vsml.meta.slicing import item_key
from vsml.settings import OptimizerSettings


@dataclasses.dataclass(frozen=True)
class BackpropConfig:
    population_size: int  # episodes per step P (one per pair index, as ES's antithetic pairs)
    pairs_per_chunk: int | None = None  # episodes (one per pair index) per jitted call on a rank (None: all)


class MetaGradient(SlicedLoop):
    """Meta-gradient descent over the ranks of ``comm`` (an :class:`vsml.meta.base.OuterLoop`).

    Args:
      fitness: ``fitness(params, key, data) -> scalar``, differentiable, lower is better.
      params_template: a meta-parameter pytree (fixes the flat layout).
      config: :class:`BackpropConfig`.
      optimizer: an optax transformation applied to the mean gradient.
      comm: the communicator; rank r evaluates its slice of the episodes.
    """

    unit = "episodes"

    def _make_slice_evaluator(self):
        fitness, unravel = self._fitness, self.unravel

        def evaluate_slice(flat_params, rng, generation, item_indices, data):
            """Meta-loss ``[n]`` and its gradient ``[n, D]`` for the episodes of ``item_indices``."""

            def one(index):
                key = item_key(rng["data"], generation, index)
                return jax.value_and_grad(lambda flat: fitness(unravel(flat), key, data))(flat_params)

            return jax.vmap(one)(item_indices)

        return evaluate_slice

    def _chunks(self):
        size = self.config.pairs_per_chunk or len(self.item_indices)
        return [self.item_indices[start : start + size] for start in range(0, len(self.item_indices), size)]

    def partial_sums(self, state: MetaState, data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This rank's ``(sum of finite gradients [D] float64, finite flags [n], losses [n])``."""
        flat = self.flatten(state.params)
        total = np.zeros(self.dim, dtype=np.float64)
        losses, finite = [], []
        for indices in self._chunks():
            loss, grads = self._evaluate(flat, state.rng, state.generation, indices, data)
            loss, grads = np.asarray(loss, dtype=np.float64), np.asarray(grads, dtype=np.float64)
            ok = np.isfinite(loss) & np.all(np.isfinite(grads), axis=1)
            total += grads[ok].sum(axis=0)
            losses.append(loss)
            finite.append(ok)
        return total, np.concatenate(finite), np.concatenate(losses)

    def estimate(self, state: MetaState, data) -> Estimate:
        """The mean of the finite episodes' gradients over all ranks.

        Its own statistics: ``metagrad/nonfinite`` counts the episodes left out of the mean,
        ``grad/norm`` is the mean gradient's norm.
        """
        start = time.perf_counter()
        grad_sum, finite, losses = self.partial_sums(state, data)
        evaluated = time.perf_counter()
        reduced = self.comm.allreduce_sum(np.concatenate([grad_sum, [float(finite.sum())]]))
        all_losses = self.comm.allgather(losses)
        communicated = time.perf_counter() - evaluated
        count = reduced[-1]
        mean = (reduced[:-1] / max(count, 1.0)).astype(np.float32)
        return Estimate(
            gradient=mean,
            losses=all_losses,
            stats={
                "metagrad/nonfinite": int(self.config.population_size - count),
                "grad/norm": float(np.linalg.norm(mean)),
            },
            evaluate_seconds=evaluated - start,
            communicate_seconds=communicated,
            nonfinite_message=(
                f"meta-parameters became non-finite in step {state.generation}; "
                "a smaller learning rate or gradient clipping avoids this"
            ),
        )


def from_settings(
    settings: OptimizerSettings,
    population_size: int,
    pairs_per_chunk: int | None,
    fitness: Callable,
    params_template,
    comm: Comm,
) -> MetaGradient:
    """Meta-gradients configured by the ``optimizer`` section (``type: metagrad``, or its old name ``sgd``)."""
    optimizer = make_optimizer(settings.lr, settings.kwargs, settings.clip_gradnorm)
    return MetaGradient(fitness, params_template, BackpropConfig(population_size, pairs_per_chunk), optimizer, comm)
