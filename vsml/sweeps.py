"""Array files (``--array``): sweeps of tasks, as in the original release (docs/DESIGN.md §8).

``array: [entry, ...]`` lists tasks; ``grid: [axis, ...]`` makes one per combination.
:func:`select_task` picks the one a job runs (``--task``, ``SLURM_ARRAY_TASK_ID``,
``--subset``); :func:`vsml.config.build_config` layers it.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

from vsml.config_tree import ConfigError, deep_update, nest

# The keys of a sweep entry in the original release's format:
# ``{config: {overrides}, tags: [...], config_files: [...]}``.
ENTRY_KEYS = ("config", "tags", "config_files")


@dataclasses.dataclass(frozen=True)
class SweepTask:
    """One task of an --array file.

    ``config``: nested overrides; ``tags``: wandb tags it adds; ``config_files``:
    files layered after the command's --config_files, before the overrides.
    """

    config: dict
    tags: tuple = ()
    config_files: tuple = ()


def _names(value: Any, what: str, where: str) -> tuple:
    """A list of non-empty strings (a lone string is a list of one)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"'{what}' of {where} must be a list of names, got {value!r}")
    return tuple(value)


def _entry(raw: Any, where: str) -> SweepTask:
    """One ``array:`` entry or grid option: a plain override mapping or an original-format entry."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of overrides or of {', '.join(ENTRY_KEYS)}; got {raw!r}")
    if not any(str(key) in ENTRY_KEYS for key in raw):
        return SweepTask(config=nest(raw, where))
    unknown = sorted(str(key) for key in raw if str(key) not in ENTRY_KEYS)
    if unknown:
        raise ConfigError(
            f"{where} has unknown entry key '{unknown[0]}'; an entry holds only "
            f"{', '.join(ENTRY_KEYS)} (or is a plain mapping of overrides)"
        )
    overrides = {} if raw.get("config") is None else raw["config"]
    if not isinstance(overrides, dict):
        raise ConfigError(f"'config' of {where} must be a mapping of overrides, got {overrides!r}")
    return SweepTask(
        config=nest(overrides, where),
        tags=_names(raw.get("tags"), "tags", where),
        config_files=_names(raw.get("config_files"), "config_files", where),
    )


def _grid_axis(axis: Any, number: int, source: str) -> list[SweepTask]:
    """The options of one grid axis (a list of entries, or the {key: [values]} shorthand)."""
    where = f"axis {number} of the grid in {source}"
    if isinstance(axis, list):
        options = [_entry(opt, f"option {index} of {where}") for index, opt in enumerate(axis, start=1)]
    elif isinstance(axis, dict):
        if not all(isinstance(values, list) for values in axis.values()):
            raise ConfigError(f"{where}: every key of the shorthand {{key: [values]}} needs a list of values")
        lengths = {len(values) for values in axis.values()}
        if len(lengths) > 1:
            sizes = ", ".join(f"{k}: {len(v)}" for k, v in axis.items())
            raise ConfigError(f"{where} zips keys whose value lists differ in length ({sizes}); make them equal")
        options = [SweepTask(config=nest(dict(zip(axis.keys(), values)), where)) for values in zip(*axis.values())]
    else:
        raise ConfigError(f"{where} must be a list of mappings or a {{key: [values]}} mapping")
    if not options:
        raise ConfigError(f"{where} has no options")
    return options


def sweep_tasks(array_doc: dict, source: str = "array file") -> list[SweepTask]:
    """The tasks of an --array file (task N is index N-1), as in the original release.

    ``array: [entry, ...]`` lists tasks; ``grid: [axis, ...]`` makes one task per
    combination of axis options with the **first axis varying fastest**: task N
    (n = N-1) takes option ``n % len(axis 1)`` of axis 1, then ``n //= len(axis 1)``
    picks from axis 2, and so on. A combination merges its options' overrides in
    axis order (a later axis wins on the same key) and concatenates their tags
    and config_files.
    """
    if not isinstance(array_doc, dict):
        raise ConfigError(f"{source} must be a mapping with an 'array:' or a 'grid:' list")
    extra = sorted(str(k) for k in array_doc if k not in ("array", "grid", "base"))
    if extra:
        raise ConfigError(f"{source} has unknown top-level keys {extra}; allowed are array, grid, base")
    if ("array" in array_doc) == ("grid" in array_doc):
        raise ConfigError(f"{source} must have exactly one of 'array:' (a list of tasks) or 'grid:' (a list of axes)")

    if "array" in array_doc:
        tasks = array_doc["array"]
        if not isinstance(tasks, list) or not tasks:
            raise ConfigError(f"'array:' in {source} must be a non-empty list of tasks")
        return [_entry(task, f"task {number} of 'array:' in {source}") for number, task in enumerate(tasks, start=1)]

    axes = array_doc["grid"]
    if not isinstance(axes, list) or not axes:
        raise ConfigError(f"'grid:' in {source} must be a non-empty list of axes")
    options = [_grid_axis(axis, number, source) for number, axis in enumerate(axes, start=1)]
    out = []
    # itertools.product varies its last argument fastest: reversing the axes makes the first one fastest.
    for reversed_combination in itertools.product(*reversed(options)):
        config: dict = {}
        tags: list = []
        files: list = []
        for option in reversed(reversed_combination):
            deep_update(config, option.config, atomic_splits=True)
            tags.extend(option.tags)
            files.extend(option.config_files)
        out.append(SweepTask(config=copy.deepcopy(config), tags=tuple(tags), config_files=tuple(files)))
    return out


def _task_number(task: Any, environ: Mapping[str, str], count: int, path, subset=None) -> int:
    """The 1-based task to run: --task, else SLURM_ARRAY_TASK_ID (1..len(subset) with --subset)."""
    of = f"array file '{path}'" if subset is None else f"--subset (of array file '{path}')"
    what = "tasks" if subset is None else "entries"
    if task is None:
        task = environ.get("SLURM_ARRAY_TASK_ID")
        if task is None or str(task).strip() == "":
            raise ConfigError(f"{of} has {count} {what}: pick one with --task N or SLURM_ARRAY_TASK_ID (1..{count})")
    try:
        number = int(str(task).strip())
    except ValueError:
        raise ConfigError(f"task '{task}' for {of} is not an integer (1..{count})") from None
    if not 1 <= number <= count:
        raise ConfigError(f"task {number} is out of range: {of} has {count} {what} (1..{count}, 1-based)")
    return number


def _check_subset(subset, count: int, path) -> list[int]:
    """--subset: 0-based indices of the array file's tasks (array task N runs index subset[N-1])."""
    subset = list(subset)
    if not subset:
        raise ConfigError("--subset needs at least one 0-based task index")
    for index in subset:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise ConfigError(
                f"--subset index {index!r} is out of range: array file '{path}' has {count} tasks "
                f"(0-based indices 0..{count - 1})"
            )
    return subset


def select_task(tasks: list[SweepTask], task: Any, subset, environ: Mapping[str, str], path) -> tuple[SweepTask, int]:
    """The task a job runs and its 0-based index in the file.

    ``task`` (--task), else ``SLURM_ARRAY_TASK_ID``, counts from 1; with ``subset`` task N
    is the file's entry at 0-based index ``subset[N-1]``.
    """
    if subset is None:
        index = _task_number(task, environ, len(tasks), path) - 1
    else:
        subset = _check_subset(subset, len(tasks), path)
        index = subset[_task_number(task, environ, len(subset), path, subset) - 1]
    return tasks[index], index
