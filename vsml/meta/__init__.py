"""Outer loops (docs/DESIGN.md §6): the interface (:mod:`vsml.meta.base`), what loops share
(:mod:`vsml.meta.sliced`, :mod:`vsml.meta.slicing`, :mod:`vsml.meta.memory`), evolution
strategies (:mod:`vsml.meta.es`), meta-gradients (:mod:`vsml.meta.backprop`), and the
episode objective they share (:mod:`vsml.meta.objective`).

:data:`OUTER_LOOPS` maps ``optimizer.type`` to the function building that loop
from the typed ``optimizer`` section: ``from_settings(settings: OptimizerSettings,
population_size, pairs_per_chunk, fitness, params_template, comm) -> OuterLoop``.
To add an outer loop: a module implementing :class:`~vsml.meta.base.OuterLoop` with
such a ``from_settings`` and one entry here (``optimizer.type`` accepts
:data:`OUTER_LOOP_NAMES`: the keys of :data:`OUTER_LOOPS` and the old names of
:data:`OUTER_LOOP_ALIASES`, checked by :func:`vsml.run_checks.check_names`).
"""

from __future__ import annotations

from collections.abc import Callable

from vsml.meta import backprop, es, pes
from vsml.meta.base import MetaState, NonFiniteError, OuterLoop
from vsml.meta.memory import fit_chunk
from vsml.settings import OptimizerSettings, SettingError

OUTER_LOOPS: dict[str, Callable[..., OuterLoop]] = {
    "es": es.from_settings,
    "metagrad": backprop.from_settings,
    "pes": pes.from_settings,
    "nres": pes.from_settings,
}
# Loops that unroll truncations (``truncations=`` of their ``from_settings``) rather than score whole episodes.
TRUNCATED_LOOPS = frozenset({"pes", "nres"})
# Old names still accepted: meta-gradients (with Adam) were ``sgd`` until they were named for what they are.
OUTER_LOOP_ALIASES = {"sgd": "metagrad"}
OUTER_LOOP_NAMES = (*OUTER_LOOPS, *OUTER_LOOP_ALIASES)


def outer_loop_name(name: str) -> str:
    """The registered name of ``optimizer.type`` ``name`` (an old name becomes its new one)."""
    return OUTER_LOOP_ALIASES.get(name, name)


def build_outer_loop(
    settings: OptimizerSettings,
    population_size: int,
    pairs_per_chunk: int | None,
    fitness: Callable,
    params_template,
    comm,
    truncations=None,
) -> OuterLoop:
    """The outer loop named by ``settings.type`` (one of :data:`OUTER_LOOP_NAMES`, checked by the run checks).

    ``truncations`` (:class:`vsml.meta.objective.Truncations`) goes to the loops of :data:`TRUNCATED_LOOPS`."""
    name = outer_loop_name(settings.type)
    if name not in OUTER_LOOPS:
        raise SettingError(settings, "type", f"must be one of {', '.join(OUTER_LOOP_NAMES)}, got {settings.type!r}")
    extra = {"truncations": truncations} if name in TRUNCATED_LOOPS else {}
    return OUTER_LOOPS[name](settings, population_size, pairs_per_chunk, fitness, params_template, comm, **extra)


__all__ = [
    "MetaState",
    "NonFiniteError",
    "OUTER_LOOPS",
    "OUTER_LOOP_ALIASES",
    "OUTER_LOOP_NAMES",
    "TRUNCATED_LOOPS",
    "OptimizerSettings",
    "OuterLoop",
    "build_outer_loop",
    "fit_chunk",
    "outer_loop_name",
]
