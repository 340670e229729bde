"""What a run leaves behind: the run-directory files, with the console (:mod:`vsml.console`) and wandb (:mod:`vsml.wandb_run`).

Only rank 0 writes: :func:`open_run_log` gives every other rank a log that
does nothing, so callers never branch on the rank.

Run directory:
  ``config.yaml``    the layered configuration (before per-rank ``mpi_split``)
  ``metrics.jsonl``  one JSON object per summary step
  ``evaluation.csv`` per-step meta-test learning curves
  ``console.log``    the lines the run printed (progress as lines, never a bar)
  ``wandb-run-id``   the wandb run's id, so that a resumed run continues it
  ``wandb/``         the wandb run (offline unless ``logging.wandb: online``)
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from pathlib import Path

import numpy as np

from vsml import wandb_run
from vsml.console import Console

METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
CONSOLE = "console.log"
WANDB_RUN_ID = "wandb-run-id"
EVALUATION = "evaluation.csv"
EVALUATION_COLUMNS = ("train_step", "dataset", "episode", "step", "loss", "accuracy")


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_metrics(run_dir) -> list[dict]:
    """All rows of a run's ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _train_step(csv_line: str) -> int:
    try:
        return int(csv_line.split(",", 1)[0])
    except ValueError:
        return -1


def _jsonable(value):
    value = float(value) if hasattr(value, "__float__") and not isinstance(value, (int, bool)) else value
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; null marks a non-finite value
    return value


def stored_wandb_run_id(run_dir: Path) -> str:
    """The wandb run id kept in ``run_dir/wandb-run-id``; a new random one the first time.

    Random rather than derived from the directory's name: array tasks all live
    in directories named ``task-<i>``, and two sweeps must not share a wandb run.
    """
    path = Path(run_dir) / WANDB_RUN_ID
    if path.is_file():
        stored = path.read_text().strip()
        if stored:
            return stored
    run_id = uuid.uuid4().hex[:16]
    atomic_write_text(path, run_id + "\n")
    return run_id


class RunLog:
    """Rank 0's log of a run in ``run_dir``.

    Args:
      config_yaml: text written to ``config.yaml``.
      wandb_mode: 'offline' | 'online' | 'disabled'.
    """

    def __init__(self, run_dir, config: dict, config_yaml: str, wandb_mode: str, progress_seconds: float = 30.0):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / CONFIG, config_yaml)
        self._metrics = None
        self._console = Console(self.run_dir / CONSOLE, progress_seconds=progress_seconds)
        self._wandb = wandb_run.start_run(self.run_dir, config, wandb_mode, stored_wandb_run_id(self.run_dir))

    def start(self, start_step: int, total_steps: int) -> None:
        """Begins (or continues) training at ``start_step``: shows progress to ``total_steps``.

        Rows an interrupted run wrote after its last checkpoint (``step >=
        start_step``) are dropped from metrics.jsonl and evaluation.csv, so a
        resumed run writes each step once.
        """
        kept = [row for row in read_metrics(self.run_dir) if row.get("step", -1) < start_step]
        atomic_write_text(self.run_dir / METRICS, "".join(json.dumps(row) + "\n" for row in kept))
        table = self.run_dir / EVALUATION
        if table.exists():
            lines = table.read_text().splitlines(keepends=True)
            kept_lines = lines[:1] + [line for line in lines[1:] if _train_step(line) < start_step]
            atomic_write_text(table, "".join(kept_lines))
        self._console.start(start_step, total_steps)

    def log(self, row: dict) -> None:
        """Appends one row (must hold ``step``) to metrics.jsonl, wandb and stdout."""
        row = {key: _jsonable(value) for key, value in row.items()}
        if self._metrics is None:
            self._metrics = open(self.run_dir / METRICS, "a")
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self._wandb is not None:
            wandb_run.log_row(self._wandb, row)
        self._console.row(row)

    def write_evaluation(self, train_step: int, curves: dict, per_episode: bool) -> None:
        """Appends per-step learning curves to ``evaluation.csv``.

        ``curves``: ``{dataset: {'loss', 'accuracy'}: [episodes, T]}``. Rows:
        ``train_step,dataset,episode,step,loss,accuracy`` with ``episode`` an
        index (only when ``per_episode``) or ``mean`` (always).
        """
        path = self.run_dir / EVALUATION
        lines = [] if path.exists() else [",".join(EVALUATION_COLUMNS) + "\n"]
        for dataset, curve in curves.items():
            loss, accuracy = np.asarray(curve["loss"]), np.asarray(curve["accuracy"])
            series = [("mean", loss.mean(0), accuracy.mean(0))]
            if per_episode:
                series += [(str(index), loss[index], accuracy[index]) for index in range(loss.shape[0])]
            for episode, episode_loss, episode_accuracy in series:
                lines += [
                    f"{train_step},{dataset},{episode},{step},{episode_loss[step]:.6g},{episode_accuracy[step]:.6g}\n"
                    for step in range(loss.shape[1])
                ]
        with open(path, "a") as handle:
            handle.writelines(lines)

    def progress(self, stats: dict | None = None) -> None:
        """Counts one finished generation; ``stats`` is its ``meta_loss`` and ``time/*``."""
        self._console.progress(stats)

    def message(self, text: str, to_stderr: bool = False) -> None:
        """One line to stdout (stderr with ``to_stderr``) and ``console.log``."""
        self._console.message(text, to_stderr=to_stderr)

    def attach(self, path) -> None:
        """Adds ``path`` (a file in the run directory) to the wandb run's files, kept current as it changes."""
        if self._wandb is not None:
            wandb_run.attach_file(self._wandb, self.run_dir, path)

    def close(self) -> None:
        self._console.close()
        if self._metrics is not None:
            self._metrics.close()
        if self._wandb is not None:
            self._wandb.finish()


class NullLog:
    """The log of a rank other than 0: accepts everything, writes nothing."""

    def start(self, start_step: int, total_steps: int) -> None:
        return None

    def write_evaluation(self, train_step: int, curves: dict, per_episode: bool) -> None:
        return None

    def log(self, row: dict) -> None:
        return None

    def progress(self, stats: dict | None = None) -> None:
        return None

    def message(self, text: str, to_stderr: bool = False) -> None:
        return None

    def attach(self, path) -> None:
        return None

    def close(self) -> None:
        return None


def open_run_log(is_root: bool, **kwargs) -> RunLog | NullLog:
    return RunLog(**kwargs) if is_root else NullLog()


class Stopwatch:
    """Wall time of a run, continued across resumes."""

    def __init__(self, offset: float = 0.0):
        self._start = time.perf_counter() - offset

    def elapsed(self) -> float:
        return time.perf_counter() - self._start
