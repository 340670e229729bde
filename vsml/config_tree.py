"""The plain-dict tree a configuration is: dotted keys, nesting, merging, ``mpi_split`` nodes
(docs/DESIGN.md §8). Below both :mod:`vsml.config` (layering) and :mod:`vsml.sweeps`
(array files), which share it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SPLIT_KEY = "mpi_split"
REPEAT_KEY = "mpi_repeat"


class ConfigError(ValueError):
    """A user error in the configuration; the message is one line naming the key or file."""

    def __init__(self, message: str):
        # Callers print this as a single line next to the command they ran.
        super().__init__(re.sub(r"\s*\n\s*", " ", str(message)).strip())


MISSING = object()


def join_key(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


def is_split(node: Any) -> bool:
    """Whether ``node`` is an ``{mpi_split: ..., mpi_repeat: ...}`` spec."""
    return isinstance(node, dict) and (SPLIT_KEY in node or REPEAT_KEY in node)


def check_split(node: dict, key: str, source: str) -> tuple[list, int]:
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


def make_split(options: list, repeat: int) -> dict:
    return {SPLIT_KEY: options, REPEAT_KEY: repeat}


def first_option(node: Any) -> Any:
    """The shape of a possibly-split node: its first option, recursively."""
    while is_split(node) and isinstance(node.get(SPLIT_KEY), list) and node[SPLIT_KEY]:
        node = node[SPLIT_KEY][0]
    return node


def deep_update(dst: dict, src: dict, atomic_splits: bool) -> None:
    """Merge ``src`` into ``dst`` in place (dst is always a dict built by this module)."""
    for key, value in src.items():
        old = dst.get(key)
        mergeable = isinstance(old, dict) and isinstance(value, dict)
        if mergeable and atomic_splits and (is_split(old) or is_split(value)):
            # Two array options that split the same key: the later one wins.
            mergeable = False
        if mergeable:
            merged = dict(old)
            deep_update(merged, value, atomic_splits)
            dst[key] = merged
        else:
            dst[key] = value


def nest(mapping: Mapping, source: str, prefix: str = "") -> dict:
    """Turn dotted keys into nested dicts (recursively, not into lists).

    Keys naming the same section are merged, so ``{a.b: 1, a: {c: 2}}`` becomes
    ``{a: {b: 1, c: 2}}`` and ``{x.mpi_split: [...], x.mpi_repeat: 2}`` one spec.
    """
    out: dict = {}
    for raw_key, value in mapping.items():
        key = str(raw_key)
        parts = key.split(".")
        if any(not part.strip() for part in parts):
            raise ConfigError(f"bad config key '{join_key(prefix, key)}' in {source}: empty part between dots")
        if isinstance(value, dict):
            value = nest(value, source, join_key(prefix, key))
        for part in reversed(parts[1:]):
            value = {part: value}
        deep_update(out, {parts[0]: value}, atomic_splits=False)
    return out
