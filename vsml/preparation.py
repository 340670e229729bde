"""The one run preparation of the command line (:mod:`vsml.cli`) and :func:`vsml.api.train`.

The configuration a run asks for (layered, for a new or a resumed run), then
its directory and the checks, all before any data is read or anything
compiled, so a run started either way is configured, placed and refused in
the same words.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path

from vsml import runs


@dataclasses.dataclass(frozen=True)
class PreparedRun:
    """A run ready to start: its checked configuration, its directory, whether it continues one."""

    config: dict  # layered and checked; a wandb checkpoint.restore.run_path already a local file
    run_dir: Path
    resume: bool


def layered_config(
    config_files: Iterable = (),
    overrides: Mapping | Iterable[str] | str | None = None,
    *,
    resume_dir=None,
    resume_option: str = "--resume",
    **sweep,
) -> dict:
    """The configuration a run asks for, layered; no data is read and nothing imports jax.

    A new run: configs/default.yaml < ``config_files`` < the ``--array`` task
    (``sweep``: ``array_file``, ``task``, ``subset``, ``tags``, ``job_type``) <
    ``overrides``. A resumed run (``resume_dir``): the same layers on the run's
    saved ``config.yaml`` instead of the defaults, restoring from the run.
    ``overrides`` are ``key=value`` strings (values parsed as YAML) or a mapping
    of (dotted) keys to Python values. Raises ValueError (one line) for a bad
    file, key or value; ``resume_option`` names the option in that line.
    """
    from vsml import config as cfg  # noqa: PLC0415 — after argument parsing, so --help is instant

    base = None
    if resume_dir is not None:
        saved = Path(resume_dir) / "config.yaml"
        if not saved.is_file():
            raise ValueError(
                f"{resume_option} {resume_dir}: no config.yaml there; give a run directory written by "
                f"launch.py or vsml.api.train"
            )
        base = cfg.load_yaml_file(saved)
    mapping = overrides if isinstance(overrides, Mapping) else None
    strings = () if mapping is not None or overrides is None else overrides
    config = cfg.build_config(config_files, strings, base=base, **sweep)
    if mapping:
        config = cfg.apply_layer(config, dict(mapping), cfg.load_default(), "overrides")
    if resume_dir is not None:
        config["checkpoint"]["restore"]["path"] = str(resume_dir)
    return config


def prepare_run(config: dict, comm, *, run_dir=None, resume_dir=None, resume_hint: str) -> PreparedRun:
    """Places and checks a run; raises ValueError (one line) before any data is read or anything compiled.

    A new run goes to ``run_dir`` (default :func:`default_run_dir`, chosen by
    rank 0 and shared with every rank) and is refused there when that holds a
    run already (``resume_hint`` says how to continue it instead). A resumed
    run stays in ``resume_dir``, which must hold a checkpoint. Then the
    configuration is checked for every rank, and a new run's wandb
    ``checkpoint.restore.run_path`` becomes a local file.
    """
    from vsml import checkpoint  # noqa: PLC0415 — jax, only once the input parsed
    from vsml import config as cfg  # noqa: PLC0415
    from vsml.run_checks import check_config, check_restore, resolve_restore  # noqa: PLC0415

    if resume_dir is not None:
        run_dir = Path(resume_dir)
        checkpoint.resolve_path(run_dir)  # its newest readable checkpoint is found when it starts
    else:
        config = check_restore(config)  # the checkpoint read (and, to evaluate, its model taken) first
        if run_dir is None and comm.is_root:
            run_dir = runs.default_run_dir(cfg.resolve_for_rank(config, 0))
        run_dir = Path(comm.bcast_object(str(run_dir) if run_dir else None))
        runs.check_new_run(run_dir, config["call"], resume_hint.format(run_dir=run_dir))
    check_config(config, comm)
    if resume_dir is None and cfg.resolve_for_rank(config, 0)["checkpoint"]["restore"].get("run_path"):
        config = resolve_restore(config, comm, run_dir)  # a wandb run_path becomes a local checkpoint file
        config = check_restore(config, run_path_resolved=True)
    return PreparedRun(config=config, run_dir=run_dir, resume=resume_dir is not None)
