"""The dataset-source interface (docs/DESIGN.md §7.1): what every kind of dataset provides.

A *source* serves one family of dataset names. It knows its own config
section, checks its datasets at start-up, loads a split into host arrays and
returns a *sampler*: a frozen, hashable description of how one episode is
drawn on the device. Everything after sampling (normalisation, padding,
shuffle, projection, one-hot labels) is common and lives in
:mod:`vsml.data.preprocess`. The registered sources: :mod:`vsml.data.registry`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Protocol

import jax
import numpy as np

from vsml.settings import DataSettings


class Sampler(Protocol):
    """How one batch of episodes is drawn on the device (a frozen dataclass: a static jit argument).

    ``sample(arrays, key, length, batch)`` returns ``images [T, B, *base_shape]``
    as stored (uint8 or float32; ``stored * scale`` in [0, 1] for stored data)
    and ``labels [T, B]`` int class indices in ``0..data_classes-1``.
    """

    kind: str  # a short description for messages and tests ('array', 'fewshot', 'random', 'sum')

    def sample(self, arrays: dict, key: jax.Array, length: int, batch: int) -> tuple[jax.Array, jax.Array]: ...


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """The preprocessing settings a source applies itself while loading (validated, parsed)."""

    resize: tuple[int, int] | None = None  # data.preprocess.resize [H', W']
    keep: tuple[int, ...] | None = None  # data.filter_classes (stored sources only)


@dataclasses.dataclass(frozen=True)
class Loaded:
    """One split of a dataset, as a source hands it over.

    ``arrays`` are host arrays (numpy) the sampler reads; ``base_shape`` is one
    example's shape as sampled (after any resize), ``classes`` the number of
    classes an episode draws from, ``scale`` the factor taking stored values
    to [0, 1].
    """

    sampler: Sampler
    arrays: dict[str, np.ndarray]
    base_shape: tuple[int, ...]
    classes: int
    scale: float = 1.0


class DataSource(Protocol):
    """One kind of dataset. ``settings`` are one rank's :class:`DataSettings`; a source reads only its own."""

    # Whether data.filter_classes applies (the source stores examples of fixed classes).
    stored_classes: bool
    # A name pattern the source accepts besides ``names()`` (e.g. 'npz:PATH for your own data'), or None.
    pattern: str | None

    def names(self) -> tuple[str, ...]:
        """The fixed dataset names it serves (listed in error messages)."""

    def provides(self, name: str) -> bool:
        """Whether ``name`` is one of its datasets."""

    def check(self, name: str, settings: DataSettings, key: str) -> None:
        """Start-up check (before compiling); raises ValueError of one line naming ``key`` and the fix."""

    def class_count(self, name: str, settings: DataSettings) -> int | None:
        """Classes an episode draws from (before padding); None when it cannot be known cheaply."""

    def stats(self, name: str, settings: DataSettings) -> tuple[float, float]:
        """``(mean, std)`` of the values in [0, 1], for ``dataset_standard`` normalisation."""

    def example_shape(self, name: str, settings: DataSettings) -> tuple[int, ...]:
        """One example's shape as loaded, before ``data.preprocess.resize`` and ``pad``; known without loading."""

    def load(self, name: str, subset: str, settings: DataSettings, options: LoadOptions) -> Loaded:
        """Split ``subset`` ('train' | 'test') of dataset ``name``."""

    def status(self, directory) -> tuple[str, list[tuple[str, str, str]]]:
        """``(heading, rows)`` for ``python3 -m vsml.data status``: rows ``(name, state, description)``.

        ``directory`` is where TFDS data lives. Consecutive sources with the same heading share it.
        """


def table_stats(settings: DataSettings, *names: str) -> tuple[float, float]:
    """``(mean, std)`` from ``data.preprocess.dataset_stats`` for the first of ``names`` listed; else (0, 1)."""
    table = settings.data.preprocess.dataset_stats
    return next((table[name] for name in names if name in table), (0.0, 1.0))


class NamedSource(abc.ABC):
    """Base of the sources that serve a fixed list of names (all but ``npz:PATH``):
    ``provides`` is membership in ``names()`` and there is no name pattern. By default
    there is nothing to fetch at start-up (``check``) and the ``dataset_standard``
    statistics come from ``data.preprocess.dataset_stats`` under the dataset's name."""

    pattern: str | None = None

    @abc.abstractmethod
    def names(self) -> tuple[str, ...]:
        """The dataset names this source serves."""

    def provides(self, name: str) -> bool:
        return name in self.names()

    def check(self, name: str, settings: DataSettings, key: str) -> None:
        del name, settings, key

    def stats(self, name: str, settings: DataSettings) -> tuple[float, float]:
        return table_stats(settings, name)
