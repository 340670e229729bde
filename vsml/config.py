"""Configuration: YAML layering, dotted keys, CLI overrides, array/grid tasks, mpi_split.

A configuration is a plain nested dict. It is built from layers applied in order
(docs/DESIGN.md §8):

    base (configs/default.yaml)  <  each --config_files file  <  the --array task's
    config_files  <  the array file's ``base:``  <  the --array task's overrides
                                 <  each ``--config key=value`` override

Tags (``logging.tags``) accumulate instead: a task's ``tags`` and ``--tags``
are appended to those the layers set.

Every layer is a mapping whose keys may be dotted (``training.population_size``)
or nested (``training: {population_size: ...}``); both mean the same thing and
may be mixed. Every key a layer sets must exist in the base config, except
below the open sub-trees in ``OPEN_SUBTREES``.

A base value that is a dict is a *section*: a dict given for it merges
recursively. Any other base value is a *leaf*: it is replaced wholesale (lists
included).

Any value may be ``{mpi_split: [opt0, opt1, ...], mpi_repeat: k}``; rank ``r``
then uses ``mpi_split[(r // k) % len(mpi_split)]``. ``build_config`` keeps these
nodes (always written with both keys) so a built config can be saved and
resolved later for any number of ranks with ``resolve_for_rank``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import math
import os
import pathlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from vsml import resources, suggest

DEFAULT_CONFIG_PATH = resources.configs_dir() / "default.yaml"
CONFIGS_DIR = DEFAULT_CONFIG_PATH.parent  # where a missing config file's similar names are also looked for

# Sections whose children are free-form: new keys may appear anywhere below them
# (extra optimizer arguments, statistics of user datasets).
OPEN_SUBTREES = ("optimizer.kwargs", "data.preprocess.dataset_stats")

SPLIT_KEY = "mpi_split"
REPEAT_KEY = "mpi_repeat"


class ConfigError(ValueError):
    """A user error in the configuration; the message is one line naming the key or file."""

    def __init__(self, message: str):
        # Callers print this as a single line next to the command they ran.
        super().__init__(re.sub(r"\s*\n\s*", " ", str(message)).strip())


# ---------------------------------------------------------------- YAML reading


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float.

    YAML 1.1 (PyYAML) needs a dot and a signed exponent, so ``lr=1e-3`` would
    otherwise silently become the string '1e-3'.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _yaml_problem(err: yaml.YAMLError) -> str:
    """Describe a YAML error with its 1-based line number when PyYAML knows it."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return problem


def load_yaml_file(path, what: str = "config file", folders: Iterable = ()) -> dict:
    """Read one YAML mapping from ``path``; an empty file is ``{}``.

    A missing file's error names the most similar YAML file in its folder or in ``folders``.
    """
    path = pathlib.Path(path)
    try:
        text = resources.find_config_file(path).read_text()  # configs/NAME: also the installed package's
    except FileNotFoundError:
        similar = suggest.similar_file(path, folders)
        hint = f" (did you mean '{similar}'?)" if similar else ""
        raise ConfigError(f"{what} '{path}' not found{hint}") from None
    except OSError as err:
        raise ConfigError(f"{what} '{path}' cannot be read: {err.strerror or err}") from None
    try:
        doc = _yaml_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} '{path}' is not valid YAML ({_yaml_problem(err)}); fix the syntax there") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{what} '{path}' must hold a mapping of keys to values, not a {type(doc).__name__}")
    return doc


def load_default() -> dict:
    """The default configuration (every key) as a fresh nested dict."""
    return load_yaml_file(DEFAULT_CONFIG_PATH)


# ---------------------------------------------------------------- small helpers


_MISSING = object()

# What a key of the base config allows (see _kind).
_LEAF = "leaf"  # replaced wholesale
_SECTION = "section"  # dict of known keys, merged
_OPEN = "open"  # dict that accepts new keys (an OPEN_SUBTREES root)
_ANY = "any"  # below an open root: dicts merge, anything else replaces


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


def is_split(node: Any) -> bool:
    """Whether ``node`` is an ``{mpi_split: ..., mpi_repeat: ...}`` spec."""
    return isinstance(node, dict) and (SPLIT_KEY in node or REPEAT_KEY in node)


def _check_split(node: dict, key: str, source: str) -> tuple[list, int]:
    """Validate an mpi_split spec and return (options, repeat)."""
    where = f"'{key or '<root>'}' in {source}"
    extra = sorted(str(k) for k in node if k not in (SPLIT_KEY, REPEAT_KEY))
    if extra:
        raise ConfigError(f"{where} mixes {SPLIT_KEY} with other keys {extra}; put those keys inside each option")
    options = node.get(SPLIT_KEY)
    if not isinstance(options, list) or not options:
        raise ConfigError(f"{SPLIT_KEY} of {where} must be a non-empty list of options, got {options!r}")
    repeat = node.get(REPEAT_KEY, 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ConfigError(f"{REPEAT_KEY} of {where} must be an integer >= 1, got {repeat!r}")
    return options, repeat


def _make_split(options: list, repeat: int) -> dict:
    return {SPLIT_KEY: options, REPEAT_KEY: repeat}


def _first_option(node: Any) -> Any:
    """The shape of a possibly-split node: its first option, recursively."""
    while is_split(node) and isinstance(node.get(SPLIT_KEY), list) and node[SPLIT_KEY]:
        node = node[SPLIT_KEY][0]
    return node


def _deep_update(dst: dict, src: dict, atomic_splits: bool) -> None:
    """Merge ``src`` into ``dst`` in place (dst is always a dict built by this module)."""
    for key, value in src.items():
        old = dst.get(key)
        mergeable = isinstance(old, dict) and isinstance(value, dict)
        if mergeable and atomic_splits and (is_split(old) or is_split(value)):
            # Two array options that split the same key: the later one wins.
            mergeable = False
        if mergeable:
            merged = dict(old)
            _deep_update(merged, value, atomic_splits)
            dst[key] = merged
        else:
            dst[key] = value


def _nest(mapping: Mapping, source: str, prefix: str = "") -> dict:
    """Turn dotted keys into nested dicts (recursively, not into lists).

    Keys naming the same section are merged, so ``{a.b: 1, a: {c: 2}}`` becomes
    ``{a: {b: 1, c: 2}}`` and ``{x.mpi_split: [...], x.mpi_repeat: 2}`` one spec.
    """
    out: dict = {}
    for raw_key, value in mapping.items():
        key = str(raw_key)
        parts = key.split(".")
        if any(not part.strip() for part in parts):
            raise ConfigError(f"bad config key '{_join(prefix, key)}' in {source}: empty part between dots")
        if isinstance(value, dict):
            value = _nest(value, source, _join(prefix, key))
        for part in reversed(parts[1:]):
            value = {part: value}
        _deep_update(out, {parts[0]: value}, atomic_splits=False)
    return out


def _known_keys(root: Any, prefix: str = "") -> list[str]:
    """Every dotted key of ``root`` (sections and leaves), splits seen through."""
    node = _first_option(root)
    keys = []
    if isinstance(node, dict):
        for key, value in node.items():
            dotted = _join(prefix, str(key))
            keys.append(dotted)
            keys.extend(_known_keys(value, dotted))
    return keys


def _closest_key(key: str, root: dict) -> str | None:
    """The known key a user most likely meant by the unknown dotted ``key``."""
    known = _known_keys(root)
    known_set = set(known)
    parts = key.split(".")

    # 1. A typo in one component: fix it among its siblings, keep the rest.
    node, depth = _first_option(root), 0
    while depth < len(parts) and isinstance(node, dict) and parts[depth] in node:
        node = _first_option(node[parts[depth]])
        depth += 1
    if depth < len(parts) and isinstance(node, dict):
        match = suggest.closest(parts[depth], [str(k) for k in node], cutoff=0.6)
        if match:
            fixed = ".".join([*parts[:depth], match])
            whole = ".".join([*parts[:depth], match, *parts[depth + 1 :]])
            return whole if whole in known_set else fixed

    def similarity(candidate: str) -> float:
        return difflib.SequenceMatcher(None, key, candidate).ratio()

    # 2. The right name in the wrong section (e.g. 'model.msg_size').
    same_name = [k for k in known if k.split(".")[-1] == parts[-1]]
    if same_name:
        return max(same_name, key=similarity)

    # 3. Anything that looks like the whole key.
    return suggest.closest(key, known, cutoff=0.5)


def _single_path(value: Any) -> str:
    """The dotted path below a chain of one-key dicts, so errors name the key as written."""
    parts = []
    while isinstance(value, dict) and len(value) == 1 and not is_split(value):
        key, value = next(iter(value.items()))
        parts.append(str(key))
    return ".".join(parts)


def _unknown_key_error(key: str, root: dict, source: str) -> ConfigError:
    best = _closest_key(key, root)
    hint = f"did you mean '{best}'?" if best else f"see {DEFAULT_CONFIG_PATH.name} for the known keys"
    return ConfigError(f"unknown config key '{key}' in {source} ({hint})")


# ---------------------------------------------------------------- layering


def _kind(default: Any, key: str, in_open: bool) -> str:
    if in_open:
        return _ANY
    if key in OPEN_SUBTREES:
        return _OPEN
    return _SECTION if isinstance(_first_option(default), dict) else _LEAF


def _merge(current: Any, value: Any, default: Any, key: str, root: dict, source: str, in_open: bool) -> Any:
    """Apply layer ``value`` at ``key`` onto ``current``; return the new value (no mutation).

    ``default`` is the base config's value at ``key`` (``_MISSING`` below open
    roots); it decides whether ``key`` is a leaf or a section.
    """
    kind = _kind(default, key, in_open)

    if is_split(value) and SPLIT_KEY not in value:
        # `--config x.mpi_repeat=k` after `--config x.mpi_split=[...]` adjusts that split.
        if not is_split(current):
            raise ConfigError(
                f"{REPEAT_KEY} for '{key}' in {source} has no {SPLIT_KEY} to repeat; "
                f"give both, e.g. '{key}={{{SPLIT_KEY}: [a, b], {REPEAT_KEY}: 2}}'"
            )
        options, _ = _check_split(current, key, source)
        _, repeat = _check_split({SPLIT_KEY: options, **value}, key, source)
        return _make_split(copy.deepcopy(options), repeat)

    if is_split(value):
        options, repeat = _check_split(value, key, source)
        start = current
        if is_split(current) and kind != _LEAF:
            # The earlier split leaves no single current value to merge the
            # new options onto, so they start from the base value.
            shape = _first_option(default)
            start = copy.deepcopy(shape) if shape is not _MISSING else {}
        return _make_split([_merge(start, opt, default, key, root, source, in_open) for opt in options], repeat)

    if is_split(current) and kind != _LEAF and (kind != _ANY or isinstance(value, dict)):
        # A later layer setting keys inside a split section applies to every option.
        options, repeat = _check_split(current, key, source)
        return _make_split([_merge(opt, value, default, key, root, source, in_open) for opt in options], repeat)

    if kind == _LEAF:
        if isinstance(value, dict):
            if not value:
                raise ConfigError(f"config key '{key}' in {source} takes a single value, not a mapping")
            first, below = next(iter(value.items()))
            raise _unknown_key_error(_join(_join(key, str(first)), _single_path(below)), root, source)
        return copy.deepcopy(value)

    if kind == _ANY and not isinstance(value, dict):
        return copy.deepcopy(value)

    if not isinstance(value, dict):
        if not key:
            raise ConfigError(f"{source} must be a mapping of config keys to values, got {value!r}")
        raise ConfigError(
            f"config key '{key}' in {source} is a section, not a value; "
            f"set keys inside it instead (e.g. '{key}.<name>=...')"
        )

    shape = _first_option(default)
    shape = shape if isinstance(shape, dict) else {}
    out = dict(current) if isinstance(current, dict) and not is_split(current) else {}
    for child, child_value in _nest(value, source, key).items():
        child_key = _join(key, child)
        if kind == _SECTION and child not in shape:
            raise _unknown_key_error(_join(child_key, _single_path(child_value)), root, source)
        out[child] = _merge(
            out.get(child, _MISSING),
            child_value,
            shape.get(child, _MISSING),
            child_key,
            root,
            source,
            in_open or kind == _OPEN,
        )
    return out


def apply_layer(config: dict, layer: Any, base: dict, source: str) -> dict:
    """Return ``config`` with one layer applied; keys are checked against ``base``.

    ``source`` names the layer in error messages (e.g. "--config").
    """
    return _merge(config, layer, base, "", base, source, in_open=False)


def parse_override(text: str) -> tuple[str, Any]:
    """Split a ``key=value`` override; the value is YAML (``key=`` gives None)."""
    if "=" not in text:
        raise ConfigError(f"--config '{text}' must look like key=value (e.g. training.population_size=128)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--config '{text}' has no key before '='")
    try:
        value = _yaml_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--config '{text}': value is not valid YAML ({_yaml_problem(err)}); quote it") from None
    return key, value


# ---------------------------------------------------------------- array files

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
        return SweepTask(config=_nest(raw, where))
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
        config=_nest(overrides, where),
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
        options = [SweepTask(config=_nest(dict(zip(axis.keys(), values)), where)) for values in zip(*axis.values())]
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
            _deep_update(config, option.config, atomic_splits=True)
            tags.extend(option.tags)
            files.extend(option.config_files)
        out.append(SweepTask(config=copy.deepcopy(config), tags=tuple(tags), config_files=tuple(files)))
    return out


def array_tasks(array_doc: dict, source: str = "array file") -> list[dict]:
    """The overrides of every task of an --array file (see :func:`sweep_tasks`)."""
    return [task.config for task in sweep_tasks(array_doc, source)]


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


def _add_tags(config: dict, tags: Iterable[str]) -> dict:
    """``config`` with ``tags`` appended to ``logging.tags`` (each tag once, first occurrence kept)."""
    tags = list(tags)
    if not tags:
        return config
    logging_section = config["logging"] = dict(config.get("logging") or {})  # never a layer's dict
    current = logging_section.get("tags") or []
    if not isinstance(current, list):
        raise ConfigError(f"logging.tags must be a list of names, got {current!r}")
    logging_section["tags"] = list(dict.fromkeys([*current, *tags]))
    return config


# ---------------------------------------------------------------- public API


def build_config(
    config_files: Iterable = (),
    overrides: Iterable[str] = (),
    array_file=None,
    task: int | None = None,
    base: dict | None = None,
    environ: Mapping[str, str] | None = None,
    subset: Iterable[int] | None = None,
    tags: Iterable[str] = (),
    job_type: str | None = None,
) -> dict:
    """Layer base < config files < array task < ``key=value`` overrides.

    The array task (``--task``, else ``SLURM_ARRAY_TASK_ID``; with ``subset``
    task N is the file's entry at 0-based index ``subset[N-1]``) adds its
    config_files after ``config_files``, then the file's ``base:``, then its
    overrides. Its tags, then ``tags``, are appended to ``logging.tags``;
    ``job_type`` sets ``logging.job_type``.

    Keys are checked against ``base`` (default: configs/default.yaml). mpi_split
    nodes are kept; use ``resolve_for_rank`` for one rank's values. Neither
    ``base`` nor any input is mutated.
    """
    # A lone path or override string means one item, not a sequence of characters.
    if isinstance(config_files, (str, os.PathLike)):
        config_files = (config_files,)
    if isinstance(overrides, str):
        overrides = (overrides,)
    if isinstance(tags, str):
        tags = (tags,)
    base = load_default() if base is None else copy.deepcopy(base)
    environ = os.environ if environ is None else environ
    config = copy.deepcopy(base)

    for path in config_files:
        config = apply_layer(config, load_yaml_file(path, folders=[CONFIGS_DIR]), base, f"config file '{path}'")

    if array_file is not None:
        doc = load_yaml_file(array_file, "array file", [CONFIGS_DIR / "array"])
        tasks = sweep_tasks(doc, f"array file '{array_file}'")
        if subset is None:
            number = _task_number(task, environ, len(tasks), array_file)
            index = number - 1
        else:
            subset = _check_subset(subset, len(tasks), array_file)
            number = _task_number(task, environ, len(subset), array_file, subset)
            index = subset[number - 1]
        selected = tasks[index]
        source = f"array file '{array_file}' task {index + 1}"
        for path in selected.config_files:
            layer = load_yaml_file(path, folders=[CONFIGS_DIR])
            config = apply_layer(config, layer, base, f"config file '{path}' (from {source})")
        if doc.get("base") is not None:
            config = apply_layer(config, doc["base"], base, f"array file '{array_file}' (base:)")
        config = _add_tags(apply_layer(config, selected.config, base, source), selected.tags)
    elif task is not None:
        raise ConfigError(f"--task {task} needs an --array file to pick the task from")
    elif subset is not None:
        raise ConfigError("--subset needs an --array file whose entries it selects")

    for text in overrides:
        key, value = parse_override(text)
        config = apply_layer(config, {key: value}, base, "--config")
    config = _add_tags(config, tags)
    if job_type is not None:
        config["logging"] = {**(config.get("logging") or {}), "job_type": job_type}
    return config


def resolve_for_rank(config: dict, rank: int) -> dict:
    """A new config with every mpi_split replaced by rank ``rank``'s option."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ConfigError(f"rank must be an integer >= 0, got {rank!r}")

    def resolve(node: Any, key: str) -> Any:
        while is_split(node):
            options, repeat = _check_split(node, key, "the config")
            node = options[(rank // repeat) % len(options)]
        if isinstance(node, dict):
            return {k: resolve(v, _join(key, str(k))) for k, v in node.items()}
        return copy.deepcopy(node)

    return resolve(config, "")


def get(config: dict, dotted_key: str) -> Any:
    """The value at ``dotted_key`` (e.g. 'training.population_size')."""
    node = config
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            best = _closest_key(dotted_key, config)
            hint = f" (did you mean '{best}'?)" if best else ""
            raise ConfigError(f"config has no key '{dotted_key}'{hint}")
        node = node[part]
    return node


def flatten(config: dict) -> dict:
    """``{'a.b': leaf, ...}`` for every non-dict value; empty dicts are kept as leaves."""
    flat: dict = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            dotted = _join(prefix, str(key))
            if isinstance(value, dict) and value:
                walk(value, dotted)
            else:
                flat[dotted] = value

    walk(config, "")
    return flat


def to_yaml(config: dict) -> str:
    """YAML text of ``config`` in key order; ``yaml.safe_load`` reads it back equal."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


# ---------------------------------------------------------------- showing a config

MAX_RANKS_SHOWN = 256


def split_keys(config: dict) -> list[tuple[str, list, int]]:
    """``(dotted key, options, mpi_repeat)`` of every mpi_split, nested ones included, in key order."""
    found: list[tuple[str, list, int]] = []

    def walk(node: Any, key: str) -> None:
        if is_split(node):
            options, repeat = _check_split(node, key, "the config")
            found.append((key, options, repeat))
            for option in options:
                walk(option, key)
        elif isinstance(node, dict):
            for child, value in node.items():
                walk(value, _join(key, str(child)))

    walk(config, "")
    return found


def _inline(value: Any) -> str:
    """One-line YAML of a value (``null``, ``true``, ``[8, 8, 1]``, ``{mean: 0.1, std: 0.3}``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), sort_keys=False).strip()
    return text[:-3].strip() if text.endswith("...") else text


class _ReadableDumper(yaml.SafeDumper):
    """Block-style sections (one key a line), flow-style lists of scalars (``[digits, mnist]``)."""


def _represent_list(dumper: yaml.SafeDumper, value: list):
    flat = all(not isinstance(item, (dict, list)) for item in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flat)


def _represent_dict(dumper: yaml.SafeDumper, value: dict):
    return dumper.represent_mapping("tag:yaml.org,2002:map", value, flow_style=False)


_ReadableDumper.add_representer(list, _represent_list)
_ReadableDumper.add_representer(dict, _represent_dict)


def to_readable_yaml(config: dict) -> str:
    """YAML of ``config`` for people: one key a line; ``yaml.safe_load`` reads it back equal."""
    return yaml.dump(config, Dumper=_ReadableDumper, sort_keys=False, width=100)


def split_period(config: dict) -> int:
    """After how many ranks the per-rank values repeat (1 without mpi_split)."""
    return math.lcm(1, *(len(options) * repeat for _, options, repeat in split_keys(config)))


def describe_config(config: dict, ranks: int = 1) -> str:
    """Rank 0's resolved configuration as YAML, then the value of every ``mpi_split`` key per rank.

    Ranks shown: ``ranks`` (the processes of this launch), or one whole
    period of the split pattern when that is longer (capped at
    :data:`MAX_RANKS_SHOWN`).
    """
    text = f"# resolved configuration (rank 0)\n{to_readable_yaml(resolve_for_rank(config, 0))}"
    splits = split_keys(config)
    if not splits:
        return text + "# no mpi_split: every rank runs this configuration"
    period = split_period(config)
    wanted = max(ranks, period)
    shown = min(wanted, MAX_RANKS_SHOWN)
    keys = list(dict.fromkeys(key for key, _, _ in splits))
    lines = [
        f"# per-rank values (mpi_split; rank r takes option (r // mpi_repeat) % len(mpi_split)); "
        f"the pattern repeats every {period} rank{'s' if period > 1 else ''}"
        + (f"; this launch has {ranks}" if ranks > 1 else "")
    ]
    for rank in range(shown):
        resolved = resolve_for_rank(config, rank)
        lines.append(f"# rank {rank}: " + ", ".join(f"{key}={_inline(get(resolved, key))}" for key in keys))
    if shown < wanted:
        lines.append(f"# ... ({wanted - shown} more ranks)")
    return text + "\n".join(lines)
