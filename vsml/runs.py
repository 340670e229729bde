"""Run directories: the default name of a new one, and never starting a run over another.

Shared by ``launch.py`` and :func:`vsml.api.train`, so a run started either
way lands in the same place and is refused in the same words.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

LATEST_CHECKPOINT = "checkpoint.npz"  # vsml.checkpoint.LATEST, without importing jax for a name


def default_run_dir(rank_config: dict, now: datetime.datetime | None = None) -> Path:
    """``<logging.dir>/<date>-<time>-<call>-<dataset>`` for rank 0's resolved config.

    An ``npz:data/mine.npz`` dataset is named ``npz-mine``; the name keeps
    letters, digits, ``.``, ``_`` and ``-`` only, so it is always one
    directory level.
    """
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    dataset = rank_config["training"]["dataset"]
    if isinstance(dataset, str) and dataset.startswith("npz:"):
        dataset = f"npz-{Path(dataset[len('npz:') :]).stem}"
    dataset = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset).strip("-") if isinstance(dataset, str) else "mixed"
    return Path(rank_config["logging"]["dir"]) / f"{stamp}-{rank_config['call']}-{dataset or 'data'}"


def check_new_run(run_dir: Path, call: str, resume_hint: str) -> None:
    """Raises ValueError when ``call: train`` would start a new run in a directory that holds one.

    ``resume_hint`` says how to continue it instead (``--resume DIR`` on the
    command line, ``resume=True`` in Python).
    """
    if call == "train" and (Path(run_dir) / LATEST_CHECKPOINT).exists():
        raise ValueError(
            f"run directory {run_dir} already holds a run; continue it with {resume_hint} "
            f"or choose another run directory"
        )
