"""Atomic save / restore of the full training state as a plain ``.npz``.

A checkpoint opens with ``numpy.load`` alone (no pickle, no project code):

* ``params/<path>`` and ``opt_state/<path>``: every leaf of the meta-parameter
  and optimiser pytrees, ``<path>`` joining dict keys, list indices and field
  names with ``/`` (e.g. ``params/forward/0/w_hidden``, ``opt_state/0/mu/forward/0/w_hidden``);
* ``step``: completed generations; ``rng/noise``, ``rng/data``: the base keys
  every later random draw derives from; ``wall_time``: seconds trained so far;
* ``config``: the run's configuration as YAML text.

Files are written to a temporary name in the same directory, fsynced and
renamed over the target, so a crash mid-write leaves the previous checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

LATEST = "checkpoint.npz"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit this config."""


def step_file_name(step: int) -> str:
    return f"checkpoint-{step}.npz"


def _key_name(entry) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def flatten_tree(prefix: str, tree) -> dict[str, np.ndarray]:
    """``{'<prefix>/<path>': array}`` for every leaf of ``tree``."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {
        "/".join([prefix, *(_key_name(entry) for entry in path)]): np.asarray(leaf)
        for path, leaf in leaves
    }


def unflatten_tree(prefix: str, template, arrays, source: str):
    """Fills ``template``'s structure with ``arrays['<prefix>/<path>']``, checking shapes."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    values = []
    for path, leaf in leaves:
        name = "/".join([prefix, *(_key_name(entry) for entry in path)])
        if name not in arrays:
            raise CheckpointError(
                f"{source} has no '{name}': it was written for a different model or optimiser config"
            )
        value = arrays[name]
        if value.shape != np.shape(leaf):
            raise CheckpointError(
                f"{source}: '{name}' has shape {value.shape}, this config needs {np.shape(leaf)}"
            )
        values.append(value.astype(np.asarray(leaf).dtype))
    return jax.tree_util.tree_unflatten(treedef, values)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform/filesystem; the rename is still atomic
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_npz(path: Path, arrays: dict[str, Any]) -> None:
    """Writes ``arrays`` to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def save(run_dir: Path, *, params, opt_state, step: int, rng: dict, wall_time: float,
         config_yaml: str, with_step: bool = False) -> Path:
    """Writes ``run_dir/checkpoint.npz`` (and ``checkpoint-<step>.npz`` when ``with_step``)."""
    run_dir = Path(run_dir)
    arrays = {
        **flatten_tree("params", params),
        **flatten_tree("opt_state", opt_state),
        "step": np.asarray(step, dtype=np.int64),
        "rng/noise": np.asarray(rng["noise"]),
        "rng/data": np.asarray(rng["data"]),
        "wall_time": np.asarray(wall_time, dtype=np.float64),
        "config": np.asarray(config_yaml),
    }
    latest = run_dir / LATEST
    atomic_write_npz(latest, arrays)
    if with_step:
        stepped = run_dir / step_file_name(step)
        tmp = stepped.with_name(f".{stepped.name}.tmp-{os.getpid()}")
        shutil.copyfile(latest, tmp)
        os.replace(tmp, stepped)
    return latest


def resolve_path(path) -> Path:
    """A checkpoint file from a run directory or a file path."""
    path = Path(path)
    if path.is_dir():
        path = path / LATEST
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at '{path}'; give a run directory that holds {LATEST} or a .npz file")
    return path


def load_arrays(path) -> dict[str, np.ndarray]:
    """Every array of a checkpoint file (no pickles)."""
    path = resolve_path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError) as err:
        raise CheckpointError(f"cannot read checkpoint '{path}': {err}") from err


def restore(path, params_template, opt_state_template=None) -> dict:
    """Reads a checkpoint into the structures of the templates.

    Returns ``{'params', 'opt_state' (None without template), 'step', 'rng',
    'wall_time', 'config'}``.
    """
    source = str(resolve_path(path))
    arrays = load_arrays(path)
    for name in ("step", "rng/noise", "rng/data", "config"):
        if name not in arrays:
            raise CheckpointError(f"{source} is not a checkpoint of this project (no '{name}')")
    return {
        "params": unflatten_tree("params", params_template, arrays, source),
        "opt_state": (None if opt_state_template is None
                      else unflatten_tree("opt_state", opt_state_template, arrays, source)),
        "step": int(arrays["step"]),
        "rng": {"noise": arrays["rng/noise"], "data": arrays["rng/data"]},
        "wall_time": float(arrays.get("wall_time", 0.0)),
        "config": str(arrays["config"]),
    }
