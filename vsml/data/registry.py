"""The dataset-source registry (docs/DESIGN.md §7.1): the only place a dataset name is mapped to code.

Registered: offline arrays shipped in installed packages
(:mod:`vsml.data.offline_source`), scikit-learn's tables
(:mod:`vsml.data.tabular_source`), the procedural ``random`` and ``sum`` tasks
(:mod:`vsml.data.procedural_source`), the paper's TFDS datasets
(:mod:`vsml.data.tfds_source`), N-way few-shot episodes
(:mod:`vsml.data.fewshot_source`) and a user's ``npz:PATH``
(:mod:`vsml.data.npz_source`). Adding a kind: one module implementing
:class:`vsml.data.base.DataSource` plus one entry in :data:`SOURCES`.
"""

from __future__ import annotations

from vsml import suggest
from vsml.data import fewshot_source, npz_source, offline_source, procedural_source, tabular_source, tfds_source
from vsml.data.base import DataSource

# The order is the order of names in messages and of rows in ``python3 -m vsml.data status``.
SOURCES: tuple[DataSource, ...] = (
    offline_source.SOURCE,
    tabular_source.SOURCE,
    procedural_source.RANDOM,
    procedural_source.SUM,
    tfds_source.SOURCE,
    fewshot_source.SOURCE,
    npz_source.SOURCE,
)


def available_datasets() -> tuple[str, ...]:
    """Every fixed dataset name, in the order messages list them."""
    return tuple(name for source in SOURCES for name in source.names())


def find_source(name) -> DataSource | None:
    """The source serving dataset ``name``, or None."""
    if not isinstance(name, str):
        return None
    return next((source for source in SOURCES if source.provides(name)), None)


def source_of(name, key: str = "dataset") -> DataSource:
    """The source serving dataset ``name``; ValueError naming config key ``key`` and the valid names."""
    source = find_source(name)
    if source is None:
        patterns = [source.pattern for source in SOURCES if source.pattern]
        raise ValueError(
            f"{key}: unknown dataset {name!r}{suggest.did_you_mean(str(name), available_datasets())}; "
            f"valid: {', '.join(available_datasets())}" + "".join(f", or {pattern}" for pattern in patterns)
        )
    return source
