"""Run directories and results: the default name of a new run, never starting one over another, the result.

Shared by the command line (:mod:`vsml.cli`, behind ``launch.py``), :func:`vsml.api.train`
and :mod:`vsml.experiment`, so a run started either way lands in the same place, is refused
in the same words, and ends in the same :class:`TrainResult`.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from pathlib import Path

LATEST_CHECKPOINT = "checkpoint.npz"  # vsml.checkpoint.LATEST, without importing jax for a name


def _dataset_name(dataset) -> str:
    """A dataset as one directory-name word: ``npz:data/mine.npz`` -> ``npz-mine``."""
    if isinstance(dataset, str) and dataset.startswith("npz:"):
        dataset = f"npz-{Path(dataset[len('npz:') :]).stem}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", dataset).strip("-") if isinstance(dataset, str) else "mixed"


def default_run_dir(rank_config: dict, now: datetime.datetime | None = None) -> Path:
    """``<logging.dir>/<date>-<time>-<call>-<data>`` for rank 0's resolved config.

    ``<data>`` is what the run is about: the training dataset of ``call: train``,
    the evaluation datasets (joined by ``+``) of ``call: evaluate``. An
    ``npz:data/mine.npz`` dataset is named ``npz-mine``; the name keeps letters,
    digits, ``.``, ``_``, ``+`` and ``-`` only, so it is always one directory level.
    """
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    if rank_config["call"] == "evaluate" and isinstance(rank_config["evaluation"]["datasets"], list):
        names = [_dataset_name(name) for name in rank_config["evaluation"]["datasets"]]
        data = "+".join(name for name in names if name)
    else:
        data = _dataset_name(rank_config["training"]["dataset"])
    return Path(rank_config["logging"]["dir"]) / f"{stamp}-{rank_config['call']}-{data or 'data'}"


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


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """How a training run ended: where its outputs are, the generations completed, and why it stopped."""

    run_dir: Path
    generation: int  # completed generations (the step of the last checkpoint)
    stopped_by: str | None  # the signal that ended the run early (resume it to continue), or None
    state: object = dataclasses.field(default=None, repr=False, compare=False)  # the final MetaState

    @property
    def metrics(self) -> list[dict]:
        """The rows of ``metrics.jsonl`` (step, meta_loss, eval/...), read now."""
        from vsml.runlog import read_metrics  # noqa: PLC0415 — only when asked

        return read_metrics(self.run_dir)
