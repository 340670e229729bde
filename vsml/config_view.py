"""Showing a configuration to a person (``launch.py --print_config``): rank 0's values as
readable YAML, then every ``mpi_split`` key's value per rank."""

from __future__ import annotations

from typing import Any

import yaml

from vsml.config import get, resolve_for_rank, split_keys, split_period

MAX_RANKS_SHOWN = 256


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
