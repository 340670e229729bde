"""The outer-loop interface and its state (docs/DESIGN.md §6).

An outer loop meta-trains the meta-parameters from ``fitness(params, key, data)
-> scalar`` (an episode's meta-loss, lower is better) alone; it knows nothing of
learners or datasets. It implements :class:`OuterLoop`: ``init(params, seed)``
gives a :class:`MetaState`, ``step(state, data)`` one generation (ES) or step
(meta-gradients) with the loop's own statistics. A step covers ``P`` work items
(:mod:`vsml.meta.slicing`); ``items_per_chunk`` bounds how many of them a rank
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
      items_per_chunk: items evaluated at once on a rank (``None``: the whole slice).
      item_indices: the global indices this rank evaluates, ``[P / N]``.
      dim: number of meta-parameters ``D``.
      unit: what one work item is, for messages ("pairs", "episodes").
    """

    population_size: int
    items_per_chunk: int | None
    item_indices: np.ndarray
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

    def with_chunk(self, items_per_chunk: int | None) -> OuterLoop:
        """The same loop evaluating ``items_per_chunk`` items at once (a new object)."""

    def working_bytes_per_item(self, params, data) -> int:
        """XLA's working memory per evaluated item (compiled ahead of time, nothing runs)."""
