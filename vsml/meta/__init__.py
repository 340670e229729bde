"""Outer loops (docs/DESIGN.md §6): the interface (:mod:`vsml.meta.base`), what loops share
(:mod:`vsml.meta.sliced`, :mod:`vsml.meta.slicing`, :mod:`vsml.meta.memory`), evolution
strategies (:mod:`vsml.meta.es`), meta-gradients (:mod:`vsml.meta.backprop`), and the
episode objective they share (:mod:`vsml.meta.objective`).

:data:`OUTER_LOOPS` maps ``optimizer.type`` to the function building that loop
from the typed ``optimizer`` section: ``from_settings(settings: OptimizerSettings,
population_size, items_per_chunk, fitness, params_template, comm) -> OuterLoop``.
To add an outer loop: a module implementing :class:`~vsml.meta.base.OuterLoop` with
such a ``from_settings`` and one entry here (the settings accept the keys of
:data:`OUTER_LOOPS` for ``optimizer.type``).
"""

from __future__ import annotations

from collections.abc import Callable

from vsml.meta import backprop, es
from vsml.meta.base import MetaState, NonFiniteError, OuterLoop
from vsml.meta.memory import fit_chunk
from vsml.settings import OptimizerSettings

OUTER_LOOPS: dict[str, Callable[..., OuterLoop]] = {
    "es": es.from_settings,
    "sgd": backprop.from_settings,
}


def build_outer_loop(
    settings: OptimizerSettings,
    population_size: int,
    items_per_chunk: int | None,
    fitness: Callable,
    params_template,
    comm,
) -> OuterLoop:
    """The outer loop named by ``settings.type`` (a key of :data:`OUTER_LOOPS`, checked by the settings)."""
    return OUTER_LOOPS[settings.type](settings, population_size, items_per_chunk, fitness, params_template, comm)


__all__ = [
    "MetaState",
    "NonFiniteError",
    "OUTER_LOOPS",
    "OptimizerSettings",
    "OuterLoop",
    "build_outer_loop",
    "fit_chunk",
]
