"""The wandb run of a run directory: start (or continue) it, log rows, keep files current, finish.

Only :mod:`vsml.runlog` calls these (on rank 0); the run id it passes is the
one kept in the run directory, so a resumed run continues the same wandb run.
``wandb`` is imported only when a run logs to it (``logging.wandb`` not
``disabled``): it is slow to import.
"""

from __future__ import annotations

from pathlib import Path


def start_run(run_dir: Path, config: dict, mode: str, run_id: str):
    """A wandb run in ``run_dir/wandb`` holding ``config``, or None when ``mode`` is ``disabled``.

    ``mode``: 'offline' | 'online' | 'disabled' (``logging.wandb``); tags and
    job type come from the config's ``logging`` section.
    """
    if mode == "disabled":
        return None
    import wandb  # noqa: PLC0415 — slow import, only when used

    logging_section = config.get("logging", {})
    return wandb.init(
        project="vsml",
        dir=str(run_dir),
        mode=mode,
        config=config,
        id=run_id,
        resume="allow",
        settings=wandb.Settings(silent=True),
        tags=logging_section.get("tags") or None,
        job_type=logging_section.get("job_type"),
    )


def log_row(run, row: dict) -> None:
    """One metrics row (with ``step``; None marks a non-finite value, which wandb does not get)."""
    run.log({key: value for key, value in row.items() if key != "step" and value is not None}, step=row["step"])


def attach_file(run, run_dir: Path, path) -> None:
    """Adds ``path`` (a file in ``run_dir``) to the wandb run's files, kept current as it changes.

    The wandb run's ``files/`` gets a symlink to the file, made here: a symlink follows
    the file across the atomic renames that rewrite it, and ``wandb.save`` of a file
    already in ``files/`` only registers it ("live": uploaded whenever it changes),
    where linking it itself would print "Symlinked 1 file into the W&B run directory".
    """
    source = Path(path).resolve()
    files_dir = Path(run.dir)
    link = files_dir / source.relative_to(Path(run_dir).resolve())
    try:
        if not link.is_symlink() or link.resolve() != source:
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(source)
    except OSError:  # no symlinks here (some file systems): wandb links or copies it itself
        link = source
        files_dir = Path(run_dir).resolve()
    run.save(str(link), base_path=str(files_dir), policy="live", glob=False)
