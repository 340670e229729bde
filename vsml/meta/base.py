"""The outer-loop interface and its state (docs/DESIGN.md §6).

An outer loop meta-trains the meta-parameters from ``fitness(params, key, data)
-> scalar`` (an episode's meta-loss, lower is better) alone; it knows nothing of
learners or datasets. It implements :class:`OuterLoop`: ``init(params, seed)``
gives its state, ``step(state, data)`` one generation (ES) or step
(meta-gradients) with the loop's own statistics. As an optax transformation or an
evosax strategy, a loop owns its state's type: any pytree (a ``chex.dataclass``)
with the fields the experiment reads, ``params`` and ``generation``, and whatever
else the loop needs (an optimiser state, keys, per-item carries). The experiment
never looks inside it: a checkpoint stores every leaf by its key path and restores
into the structure of ``init``'s state (:mod:`vsml.checkpoint`), so a loop with
fields of its own checkpoints and resumes with no code elsewhere. The state is
the same on every rank (rank 0 writes it). A step covers ``P`` work items
(:mod:`vsml.meta.slicing`); ``pairs_per_chunk`` bounds how many of them a rank
evaluates at once (memory, never results).
"""

from __future__ import annotations

from typing import Any, Protocol

import chex
import numpy as np


class NonFiniteError(FloatingPointError):
    """The update produced NaN or infinite meta-parameters (the same on every rank)."""


@chex.dataclass
class MetaState:
    """The state of ES and meta-gradients: everything that determines the rest of their run.

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
      pairs_per_chunk: items (pair indices: ES pairs, or the episodes of those indices)
        evaluated at once on a rank (``None``: the whole slice); ``training.pairs_per_chunk``.
      item_indices: the global indices this rank evaluates, ``[P / N]``.
      dim: number of meta-parameters ``D``.
      unit: what one work item is, for messages ("pairs", "episodes").
    """

    population_size: int
    pairs_per_chunk: int | None
    item_indices: np.ndarray
    dim: int
    unit: str

    def init(self, params, seed: int) -> Any:
        """The state at step 0 from meta-parameters ``params`` and the run seed: a pytree with
        ``params`` and ``generation`` (completed steps, a Python int) fields, the template a
        checkpoint is restored into."""

    def step(self, state, data) -> tuple[Any, dict[str, float]]:
        """One step on every rank together: the new state (``generation`` one more) and this loop's statistics.

        Every loop reports ``meta_loss``, ``meta_loss_std`` and ``time/evaluate``,
        ``time/communicate``, ``time/update`` (seconds); raises
        :class:`NonFiniteError` before non-finite meta-parameters can be saved.
        """

    def with_chunk(self, pairs_per_chunk: int | None) -> OuterLoop:
        """The same loop evaluating ``pairs_per_chunk`` items at once (a new object)."""

    def working_bytes_per_item(self, params, data) -> int:
        """XLA's working memory per evaluated item (compiled ahead of time, nothing runs)."""
