"""Atomic save / restore of the full training state as a plain ``.npz``.

A checkpoint opens with ``numpy.load`` alone (no pickle, no project code). It holds
the outer loop's state pytree (:class:`vsml.meta.base.OuterLoop`: whatever its
``init`` returns), one array per leaf, generically:

* every leaf under its key path, joining dataclass fields, dict keys and list
  indices with ``/`` (for ES and meta-gradients: ``params/forward/0/w_hidden``,
  ``opt_state/0/mu/forward/0/w_hidden``, ``rng/noise``, ``rng/data``; a loop with
  fields of its own adds them the same way);
* the state's counter of completed generations (its ``generation`` field) as
  ``step``, the name every file carries;
* ``wall_time``: seconds trained so far; ``config``: the run's configuration as YAML text.

A state is restored into the structure of a template (the loop's ``init``): every
leaf of the template is read by its name, with its shape and dtype checked, so a
file of another model, optimiser or outer loop is refused in one line; keys the
template does not ask for are ignored.

Files are written to a temporary name in the same directory, fsynced and
renamed over the target, so a crash mid-write leaves the previous checkpoint.
Before ``checkpoint.npz`` is replaced, the old one is kept as
``checkpoint.prev.npz``: if the latest file is ever unreadable (a truncated
copy, a foreign file), :func:`restore_latest` falls back to it, then to the
newest readable ``checkpoint-<step>.npz``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickletools
import re
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from vsml import resources
from vsml.checkpoint_base import CheckpointError, flatten_tree, unflatten_tree
from vsml.settings import ModelSettings, RestoreSettings, key_of

LATEST = "checkpoint.npz"
ORIGINAL_FILE_NAME = "model.chkp"  # what the original release's Experiment.checkpoint writes
PREVIOUS = "checkpoint.prev.npz"
_STEP_FILE = re.compile(r"checkpoint-(\d+)\.npz$")


def step_file_name(step: int) -> str:
    return f"checkpoint-{step}.npz"


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


def _replace_keeping_previous(run_dir: Path) -> None:
    """Keeps the current latest checkpoint as ``checkpoint.prev.npz`` (a hard link, atomic rename)."""
    latest, previous = run_dir / LATEST, run_dir / PREVIOUS
    if not latest.exists():
        return
    tmp = previous.with_name(f".{previous.name}.tmp-{os.getpid()}")
    try:
        os.link(latest, tmp)
    except OSError:  # filesystems without hard links: copy instead
        shutil.copyfile(latest, tmp)
    os.replace(tmp, previous)


def step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoint-<step>.npz`` in ``run_dir``, newest first."""
    found = []
    for path in Path(run_dir).glob("checkpoint-*.npz"):
        match = _STEP_FILE.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def prune(run_dir: Path, keep: int | None) -> None:
    """Deletes all but the newest ``keep`` step checkpoints (None keeps all)."""
    if keep is None:
        return
    for _, path in step_checkpoints(run_dir)[keep:]:
        path.unlink(missing_ok=True)


def state_arrays(state, *, wall_time: float, config_yaml: str) -> dict:
    """The arrays of a checkpoint file of an outer loop's ``state`` (the layout in this module's docstring)."""
    return {
        **flatten_tree(None, state),
        "wall_time": np.asarray(wall_time, dtype=np.float64),
        "config": np.asarray(config_yaml),
    }


def save(run_dir: Path, state, *, wall_time: float, config_yaml: str, with_step=False, keep: int | None = None) -> Path:
    """Writes the outer loop's ``state`` to ``run_dir/checkpoint.npz`` (and ``checkpoint-<step>.npz`` when ``with_step``).

    The replaced latest checkpoint survives as ``checkpoint.prev.npz``; of the
    step checkpoints only the newest ``keep`` remain (all when ``keep`` is None).
    """
    run_dir = Path(run_dir)
    arrays = state_arrays(state, wall_time=wall_time, config_yaml=config_yaml)
    step = int(arrays["step"])
    latest = run_dir / LATEST
    _replace_keeping_previous(run_dir)
    atomic_write_npz(latest, arrays)
    if with_step:
        stepped = run_dir / step_file_name(step)
        tmp = stepped.with_name(f".{stepped.name}.tmp-{os.getpid()}")
        shutil.copyfile(latest, tmp)
        os.replace(tmp, stepped)
        prune(run_dir, keep)
    return latest


def resolve_path(path, file_name: str | None = None) -> Path:
    """A checkpoint file from a run directory (its ``file_name``, default ``checkpoint.npz``), a file path,
    or ``pretrained:NAME`` (a shipped algorithm)."""
    if str(path).startswith(resources.PRETRAINED_SCHEME):
        try:
            return resources.pretrained_file(str(path)[len(resources.PRETRAINED_SCHEME) :])
        except ValueError as err:
            raise CheckpointError(f"{path}: {err}") from None
    path = Path(path)
    if path.is_dir():
        if file_name is None and not (path / LATEST).is_file() and (path / ORIGINAL_FILE_NAME).is_file():
            raise CheckpointError(
                f"'{path}' holds the original release's {ORIGINAL_FILE_NAME}, not {LATEST}; "
                f"set {_FILE_NAME}: {ORIGINAL_FILE_NAME} to read it"
            )
        path = path / (file_name or LATEST)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at '{path}'; give a run directory that holds {LATEST} or a checkpoint file "
            f"(.npz, or the original release's {ORIGINAL_FILE_NAME})"
        )
    return path


def file_format(path: Path) -> str:
    """``'npz'`` (this project's), ``'pickle'`` (of any protocol, 0-5: the original's model.chkp) or ``'foreign'``.

    Decided from the bytes alone, nothing is unpickled: a zip or ``.npy`` header; a
    pickle opcode stream (protocol 2 and later open with 0x80; protocols 0 and 1 have
    no header, so the stream is parsed, never run). CheckpointError when unreadable.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if head.startswith((b"PK\x03\x04", b"\x93NUMPY")):
                return "npz"
            if head.startswith(b"\x80"):
                return "pickle"
            handle.seek(0)
            pickletools.dis(handle, out=io.StringIO())  # parses opcodes up to STOP; raises on anything else
            return "pickle"
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint '{path}' ({err.strerror or err})") from None
    except Exception:  # noqa: BLE001 — pickletools raises ValueError, UnicodeDecodeError, ... on a non-pickle
        return "foreign"


def load_arrays(path) -> dict[str, np.ndarray]:
    """Every array of a checkpoint file (no pickles)."""
    path = resolve_path(path)
    kind = file_format(path)
    if kind == "pickle":
        raise CheckpointError(
            f"'{path}' is a pickle, not this project's .npz; a checkpoint of the original release is read with "
            f"{_FILE_NAME}: {ORIGINAL_FILE_NAME}, or converted: python -m vsml.convert_original {path} "
            f"--config_files ... --out converted.npz"
        )
    if kind == "foreign":
        raise CheckpointError(
            f"cannot read checkpoint '{path}': it is neither this project's .npz nor the original release's "
            f"{ORIGINAL_FILE_NAME} (a pickle)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except Exception as err:  # zipfile, numpy and OS errors alike mean "not a readable checkpoint"
        raise CheckpointError(f"cannot read checkpoint '{path}' ({type(err).__name__}: {err})") from None


def check_restorable(path, file_name=None, params_template=None, model_type=None) -> dict | None:
    """Reads the checkpoint a run will restore, before the run starts; returns the config it was saved with.

    CheckpointError (one line) for a missing, unreadable or foreign file, a pickle
    that asks for anything but arrays (refused, never run), a file of another model
    (``params_template``'s shapes where given, else ``model_type``). None for the
    original release's ``model.chkp``, which carries no configuration.
    """
    file = resolve_path(path, file_name)
    if file_format(file) == "pickle":
        from vsml import checkpoint_original  # noqa: PLC0415 — it imports this module

        checkpoint_original.check(file, params_template, model_type)
        return None
    arrays = load_arrays(file)
    _require_state(arrays, str(file))
    saved = yaml.safe_load(str(arrays["config"]))
    trained = saved.get("model", {}).get("type") if isinstance(saved, dict) else None
    if model_type is not None and trained not in (None, model_type):
        raise CheckpointError(f"'{file}' holds a {trained}; set {key_of(ModelSettings, 'type')}: {trained}")
    if params_template is not None:
        unflatten_tree("params", params_template, arrays, str(file))
    return saved


def _require_state(arrays: dict, source: str) -> None:
    for name in ("step", "config"):
        if name not in arrays:
            raise CheckpointError(f"{source} is not a checkpoint of this project (no '{name}')")


def restore(path, params_template, opt_state_template=None, file_name: str | None = None) -> dict:
    """Reads the meta-parameters (and optimiser state) of a checkpoint, to start a new run or meta-test.

    Returns ``{'params', 'opt_state' (None without template), 'step', 'wall_time',
    'config', 'adam_continues'}``. The original release's ``model.chkp`` (a pickle)
    is read by :mod:`vsml.checkpoint_original`: then ``config`` is None and
    ``adam_continues`` says whether ``opt_state`` holds its Adam moments. A run
    continues from a whole state with :func:`restore_state`.
    """
    path = resolve_path(path, file_name)
    source = str(path)
    if file_format(path) == "pickle":
        from vsml import checkpoint_original  # noqa: PLC0415 — it imports this module

        return checkpoint_original.restore(path, params_template, opt_state_template)
    arrays = load_arrays(path)
    _require_state(arrays, source)
    return {
        "params": unflatten_tree("params", params_template, arrays, source),
        "opt_state": (
            None if opt_state_template is None else unflatten_tree("opt_state", opt_state_template, arrays, source)
        ),
        "step": int(arrays["step"]),
        "wall_time": float(arrays.get("wall_time", 0.0)),
        "config": str(arrays["config"]),
        "adam_continues": False,
    }


def restore_state(path, template, file_name: str | None = None) -> dict:
    """Reads a whole outer-loop state into the structure of ``template`` (the loop's ``init``), to continue a run.

    Returns ``{'state', 'wall_time', 'config'}``; array leaves come back as jax arrays of
    the template's dtypes. The original release's ``model.chkp`` holds no such state (no
    random keys): it is refused, in one line.
    """
    path = resolve_path(path, file_name)
    source = str(path)
    if file_format(path) == "pickle":
        raise CheckpointError(
            f"'{path}' is the original release's {ORIGINAL_FILE_NAME}, which holds no random keys to continue "
            "its run from; start a new run from it (no resume)"
        )
    arrays = load_arrays(path)
    _require_state(arrays, source)
    state = unflatten_tree(None, template, arrays, source)
    return {
        "state": jax.tree_util.tree_map(
            lambda leaf: leaf if isinstance(leaf, int | float) else jnp.asarray(leaf), state
        ),
        "wall_time": float(arrays.get("wall_time", 0.0)),
        "config": str(arrays["config"]),
    }


def restore_latest(run_dir, template) -> tuple[dict, Path, list[str]]:
    """Restores the newest readable checkpoint of a run directory into ``template`` (:func:`restore_state`).

    Tries ``checkpoint.npz``, then ``checkpoint.prev.npz``, then the step
    checkpoints newest first. Returns ``(restored, path, problems)`` where
    ``problems`` describes each unreadable file skipped; raises
    CheckpointError naming them all when none is readable.
    """
    run_dir = Path(run_dir)
    candidates = [run_dir / LATEST, run_dir / PREVIOUS] + [path for _, path in step_checkpoints(run_dir)]
    problems = []
    for path in candidates:
        if not path.is_file():
            continue
        try:
            return restore_state(path, template), path, problems
        except CheckpointError as err:
            problems.append(str(err))
    detail = "; ".join(problems) if problems else f"no {LATEST} there"
    raise CheckpointError(f"no readable checkpoint in '{run_dir}': {detail}")


def digest(tree) -> int:
    """A 63-bit fingerprint of every leaf's bytes (to compare meta-parameters across ranks)."""
    hasher = hashlib.blake2b(digest_size=8)
    for leaf in jax.tree_util.tree_leaves(tree):
        array = np.ascontiguousarray(np.asarray(leaf))
        hasher.update(str((array.dtype.str, array.shape)).encode())
        hasher.update(array.tobytes())
    return int.from_bytes(hasher.digest(), "little") >> 1


# --------------------------------------------------------------------------- wandb runs

# wandb names a run's directory ``run-<YYYYMMDD_HHMMSS>-<id>`` (``offline-run-...`` offline).
_WANDB_RUN_DIR = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-(.+)$")


# The keys that name what to restore from wandb, for messages.
_RUN_PATH, _FILE_NAME = key_of(RestoreSettings, "run_path"), key_of(RestoreSettings, "file_name")


def parse_run_path(run_path: str) -> tuple[str, str, str]:
    """``(entity, project, run_id)`` of ``entity/project/id`` (or wandb's ``entity/project/runs/id``)."""
    parts = str(run_path).strip("/").split("/")
    if len(parts) == 4 and parts[2] == "runs":
        parts = [parts[0], parts[1], parts[3]]
    if len(parts) != 3 or not all(part.strip() for part in parts):
        raise CheckpointError(
            f"{_RUN_PATH} '{run_path}' must look like ENTITY/PROJECT/RUN_ID "
            "(the path shown on the wandb run's overview page)"
        )
    return parts[0], parts[1], parts[2]


def local_wandb_runs(run_id: str, logging_dir) -> list[Path]:
    """Local wandb run directories of ``run_id``, newest first.

    Looked for in ``./wandb``, ``$WANDB_DIR/wandb`` and the ``wandb/`` folder of
    every run directory under ``logging_dir`` (``runs/*/wandb``, ``runs/*/task-*/wandb``).
    """
    roots = [Path("wandb")]
    if os.environ.get("WANDB_DIR"):
        roots.append(Path(os.environ["WANDB_DIR"]) / "wandb")
    if logging_dir:
        roots += sorted(Path(logging_dir).glob("*/wandb")) + sorted(Path(logging_dir).glob("*/task-*/wandb"))
    found = {}
    for root in roots:
        if not root.is_dir():
            continue
        for candidate in root.iterdir():
            match = _WANDB_RUN_DIR.match(candidate.name)
            if match and match.group(2) == run_id and candidate.is_dir():
                found[candidate.resolve()] = match.group(1)
    return sorted(found, key=lambda path: (found[path], str(path)), reverse=True)


def fetch_wandb_file(run_path: str, file_name: str | None, logging_dir, download_dir) -> Path:
    """A local path to ``file_name`` (default ``checkpoint.npz``) of the wandb run ``run_path``.

    A local wandb run directory with the run's id wins (offline runs, or online
    runs made on this machine); otherwise the file is downloaded through the
    wandb API into ``download_dir``. Raises CheckpointError (one line) when the
    run or the file cannot be found.
    """
    _, _, run_id = parse_run_path(run_path)
    file_name = file_name or LATEST
    local_runs = local_wandb_runs(run_id, logging_dir)
    for run_dir in local_runs:
        candidate = run_dir / "files" / file_name
        if candidate.is_file():
            return candidate
    if local_runs:
        files = sorted(path.name for path in (local_runs[0] / "files").glob("*"))
        raise CheckpointError(
            f"{_RUN_PATH} '{run_path}': the local wandb run {local_runs[0]} has no "
            f"files/{file_name} (it has: {', '.join(files) or 'nothing'}); set "
            f"{_FILE_NAME} to one of them"
        )
    where = f"no local wandb run directory with id '{run_id}' (./wandb, runs/*/wandb)"
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        raise CheckpointError(
            f"{_RUN_PATH} '{run_path}': {where}, and WANDB_MODE={os.environ['WANDB_MODE']} rules out the wandb API"
        )
    return _download_wandb_file(run_path, file_name, Path(download_dir), where)


def _download_wandb_file(run_path: str, file_name: str, download_dir: Path, where: str) -> Path:
    try:
        import wandb  # noqa: PLC0415 — slow import, only when a run is restored online
    except ImportError:
        raise CheckpointError(f"{_RUN_PATH} '{run_path}': {where}, and wandb is not installed to download it") from None
    try:
        run = wandb.Api(timeout=60).run(run_path)
        remote = run.file(file_name)
        download_dir.mkdir(parents=True, exist_ok=True)
        remote.download(root=str(download_dir), replace=True).close()
    except Exception as err:  # wandb raises CommError, UsageError, ValueError, HTTP errors alike
        detail = " ".join(str(err).split())[:300]
        raise CheckpointError(
            f"{_RUN_PATH} '{run_path}': {where}, and the wandb API could not "
            f"give its file '{file_name}' ({type(err).__name__}: {detail})"
        ) from None
    path = download_dir / file_name
    if not path.is_file():
        raise CheckpointError(f"{_RUN_PATH} '{run_path}': wandb gave no file '{file_name}'")
    return path


def load_card(path) -> dict | None:
    """The YAML description beside a shipped checkpoint (``vsml/pretrained/NAME.yaml``), or None if absent."""
    path = Path(path)
    if not path.is_file():
        return None
    card = yaml.safe_load(path.read_text())
    if not isinstance(card, dict):
        raise CheckpointError(f"{path}: a pre-trained algorithm's card must be a YAML mapping")
    return card


def write_card(path, card: dict) -> None:
    """Writes a shipped checkpoint's description as YAML (keys in the given order)."""
    Path(path).write_text(yaml.safe_dump(card, sort_keys=False, width=100))
