"""Memory planning for ``training.pairs_per_chunk: auto`` (docs/DESIGN.md §6.2).

A sliced loop evaluates its items in chunks; a chunk's working memory grows with
the items in it, not with the slice. XLA's buffer plan of the jitted slice
evaluation (compiled ahead of time, nothing runs) tells what one item adds, and
the largest chunk that fits a budget follows. The choice depends only on the
model and data shapes, so every rank picks the same.
"""

from __future__ import annotations

import numpy as np

from vsml.meta.base import OuterLoop


def compiled_memory(evaluate, flat_params, rng, generation, item_indices, data):
    """XLA's buffer plan (``memory_analysis()``) of the jitted ``evaluate`` on these items.

    ``evaluate(flat_params, rng, generation, item_indices, data)`` is a sliced loop's
    jitted slice evaluation; it is compiled ahead of time, nothing runs.
    """
    return evaluate.lower(flat_params, rng, generation, item_indices, data).compile().memory_analysis()


def working_bytes_per_item(evaluate, flat_params, rng, data) -> int:
    """XLA's working memory (temp buffers) of ``evaluate`` on a one-item slice, in bytes:
    what each item of a chunk adds."""
    plan = compiled_memory(evaluate, flat_params, rng, 0, np.zeros(1, np.int32), data)
    return int(plan.temp_size_in_bytes)


def chunk_for_budget(bytes_per_item: int, budget_bytes: int, slice_items: int) -> int | None:
    """Items per chunk so a chunk's working memory fits ``budget_bytes`` (None: the whole slice fits)."""
    if bytes_per_item <= 0:
        return None
    chunk = max(1, budget_bytes // bytes_per_item)
    return None if chunk >= slice_items else int(chunk)


def fit_chunk(loop: OuterLoop, params, data, budget_bytes: int) -> tuple[OuterLoop, int]:
    """``loop`` with the largest ``pairs_per_chunk`` whose working memory fits ``budget_bytes``.

    Returns ``(the fitted loop, bytes per item)``.
    """
    per_item = loop.working_bytes_per_item(params, data)
    return loop.with_chunk(chunk_for_budget(per_item, budget_bytes, len(loop.item_indices))), per_item
