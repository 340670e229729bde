"""Outer loops (docs/DESIGN.md §6): the interface (:mod:`vsml.meta.api`), evolution strategies
(:mod:`vsml.meta.es`), meta-gradients (:mod:`vsml.meta.backprop`), and the episode
objective they share (:mod:`vsml.meta.objective`).

:data:`OUTER_LOOPS` maps ``optimizer.type`` to the function building that loop
from the ``optimizer`` section: ``from_config(optimizer_cfg, population_size,
pairs_per_chunk, fitness, params_template, comm) -> OuterLoop``. To add an outer
loop: a module implementing :class:`~vsml.meta.api.OuterLoop` with such a
``from_config`` and one entry here (validation accepts the keys of
:data:`OUTER_LOOPS` for ``optimizer.type``).
"""

from __future__ import annotations

from typing import Callable

from vsml.meta import backprop, es
from vsml.meta.api import MetaState, NonFiniteError, OuterLoop, fit_chunk

OUTER_LOOPS: dict[str, Callable[..., OuterLoop]] = {
    "es": es.from_config,
    "sgd": backprop.from_config,
}


def build_outer_loop(optimizer_cfg: dict, population_size: int, pairs_per_chunk: int | None, fitness: Callable,
                     params_template, comm) -> OuterLoop:
    """The outer loop named by ``optimizer_cfg['type']`` (see :data:`OUTER_LOOPS`)."""
    kind = optimizer_cfg["type"]
    if kind not in OUTER_LOOPS:
        raise ValueError(f"optimizer.type: '{kind}' is not available; valid: {', '.join(OUTER_LOOPS)}")
    return OUTER_LOOPS[kind](optimizer_cfg, population_size, pairs_per_chunk, fitness, params_template, comm)


__all__ = ["MetaState", "NonFiniteError", "OUTER_LOOPS", "OuterLoop", "build_outer_loop", "fit_chunk"]
