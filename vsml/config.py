"""Configuration: YAML layering, dotted keys, CLI overrides, mpi_split (array files: :mod:`vsml.sweeps`).

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
import difflib
import math
import os
import pathlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from vsml import resources, settings, suggest, sweeps
from vsml.config_tree import (
    MISSING,
    REPEAT_KEY,
    SPLIT_KEY,
    ConfigError,
    check_split,
    first_option,
    is_split,
    join_key,
    make_split,
    nest,
)

DEFAULT_CONFIG_PATH = resources.configs_dir() / "default.yaml"
CONFIGS_DIR = DEFAULT_CONFIG_PATH.parent  # where a missing config file's similar names are also looked for

# Keys whose children are free-form (declared as mappings in vsml.settings): new keys may
# appear anywhere below them.
OPEN_SUBTREES = settings.open_keys()


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

# What a key of the base config allows (see _kind).
_LEAF = "leaf"  # replaced wholesale
_SECTION = "section"  # dict of known keys, merged
_OPEN = "open"  # dict that accepts new keys (an OPEN_SUBTREES root)
_ANY = "any"  # below an open root: dicts merge, anything else replaces


def _known_keys(root: Any, prefix: str = "") -> list[str]:
    """Every dotted key of ``root`` (sections and leaves), splits seen through."""
    node = first_option(root)
    keys = []
    if isinstance(node, dict):
        for key, value in node.items():
            dotted = join_key(prefix, str(key))
            keys.append(dotted)
            keys.extend(_known_keys(value, dotted))
    return keys


def _closest_key(key: str, root: dict) -> str | None:
    """The known key a user most likely meant by the unknown dotted ``key``."""
    known = _known_keys(root)
    known_set = set(known)
    parts = key.split(".")

    # 1. A typo in one component: fix it among its siblings, keep the rest.
    node, depth = first_option(root), 0
    while depth < len(parts) and isinstance(node, dict) and parts[depth] in node:
        node = first_option(node[parts[depth]])
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
    return _SECTION if isinstance(first_option(default), dict) else _LEAF


def _merge(current: Any, value: Any, default: Any, key: str, root: dict, source: str, in_open: bool) -> Any:
    """Apply layer ``value`` at ``key`` onto ``current``; return the new value (no mutation).

    ``default`` is the base config's value at ``key`` (``MISSING`` below open
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
        options, _ = check_split(current, key, source)
        _, repeat = check_split({SPLIT_KEY: options, **value}, key, source)
        return make_split(copy.deepcopy(options), repeat)

    if is_split(value):
        options, repeat = check_split(value, key, source)
        start = current
        if is_split(current) and kind != _LEAF:
            # The earlier split leaves no single current value to merge the
            # new options onto, so they start from the base value.
            shape = first_option(default)
            start = copy.deepcopy(shape) if shape is not MISSING else {}
        return make_split([_merge(start, opt, default, key, root, source, in_open) for opt in options], repeat)

    if is_split(current) and kind != _LEAF and (kind != _ANY or isinstance(value, dict)):
        # A later layer setting keys inside a split section applies to every option.
        options, repeat = check_split(current, key, source)
        return make_split([_merge(opt, value, default, key, root, source, in_open) for opt in options], repeat)

    if kind == _LEAF:
        if isinstance(value, dict):
            if not value:
                raise ConfigError(f"config key '{key}' in {source} takes a single value, not a mapping")
            first, below = next(iter(value.items()))
            raise _unknown_key_error(join_key(join_key(key, str(first)), _single_path(below)), root, source)
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

    shape = first_option(default)
    shape = shape if isinstance(shape, dict) else {}
    out = dict(current) if isinstance(current, dict) and not is_split(current) else {}
    for child, child_value in nest(value, source, key).items():
        child_key = join_key(key, child)
        if kind == _SECTION and child not in shape:
            raise _unknown_key_error(join_key(child_key, _single_path(child_value)), root, source)
        out[child] = _merge(
            out.get(child, MISSING),
            child_value,
            shape.get(child, MISSING),
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
        example = settings.key_of(settings.TrainingSettings, "population_size")
        raise ConfigError(f"--config '{text}' must look like key=value (e.g. {example}=128)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--config '{text}' has no key before '='")
    try:
        value = _yaml_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--config '{text}': value is not valid YAML ({_yaml_problem(err)}); quote it") from None
    return key, value


def _add_tags(config: dict, tags: Iterable[str]) -> dict:
    """``config`` with ``tags`` appended to ``logging.tags`` (each tag once, first occurrence kept)."""
    tags = list(tags)
    if not tags:
        return config
    logging_section = config["logging"] = dict(config.get("logging") or {})  # never a layer's dict
    current = logging_section.get("tags") or []
    if not isinstance(current, list):
        raise ConfigError(
            f"{settings.key_of(settings.LoggingSettings, 'tags')} must be a list of names, got {current!r}"
        )
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
        tasks = sweeps.sweep_tasks(doc, f"array file '{array_file}'")
        selected, index = sweeps.select_task(tasks, task, subset, environ, array_file)
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
            options, repeat = check_split(node, key, "the config")
            node = options[(rank // repeat) % len(options)]
        if isinstance(node, dict):
            return {k: resolve(v, join_key(key, str(k))) for k, v in node.items()}
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
            dotted = join_key(prefix, str(key))
            if isinstance(value, dict) and value:
                walk(value, dotted)
            else:
                flat[dotted] = value

    walk(config, "")
    return flat


def to_yaml(config: dict) -> str:
    """YAML text of ``config`` in key order; ``yaml.safe_load`` reads it back equal."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


# ---------------------------------------------------------------- mpi_split patterns


def split_keys(config: dict) -> list[tuple[str, list, int]]:
    """``(dotted key, options, mpi_repeat)`` of every mpi_split, nested ones included, in key order."""
    found: list[tuple[str, list, int]] = []

    def walk(node: Any, key: str) -> None:
        if is_split(node):
            options, repeat = check_split(node, key, "the config")
            found.append((key, options, repeat))
            for option in options:
                walk(option, key)
        elif isinstance(node, dict):
            for child, value in node.items():
                walk(value, join_key(key, str(child)))

    walk(config, "")
    return found


def split_period(config: dict) -> int:
    """After how many ranks the per-rank values repeat (1 without mpi_split)."""
    return math.lcm(1, *(len(options) * repeat for _, options, repeat in split_keys(config)))
