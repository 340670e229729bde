"""What a run shows and leaves behind: stdout progress, run-directory files, wandb.

Only rank 0 writes: :func:`open_run_log` gives every other rank a log that
does nothing, so callers never branch on the rank.

Run directory:
  ``config.yaml``    the layered configuration (before per-rank ``mpi_split``)
  ``metrics.jsonl``  one JSON object per summary step
  ``evaluation.csv`` per-step meta-test learning curves
  ``wandb/``         the wandb run (offline unless ``logging.wandb: online``)
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

WANDB_MODES = ("offline", "online", "disabled")
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
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


TIMING_KEYS = ("time/evaluate", "time/communicate", "time/update")


def _format_row(row: dict) -> str:
    """The console line of a metrics row; the generation's timings shrink to one part."""
    parts = [f"step {row['step']}"]
    for key, value in row.items():
        if key == "step" or key in TIMING_KEYS or value is None:
            continue
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    timings = [row.get(key) for key in TIMING_KEYS]
    if all(isinstance(t, (int, float)) for t in timings) and sum(timings) > 0:
        total = sum(timings)
        parts.append(f"generation {total:.3g} s (evaluate {timings[0] / total:.0%}, "
                     f"communicate {timings[1] / total:.1%})")
    return " | ".join(parts)


class RunLog:
    """Rank 0's log of a run in ``run_dir``.

    Args:
      config_yaml: text written to ``config.yaml``.
      wandb_mode: 'offline' | 'online' | 'disabled'.
    """

    def __init__(self, run_dir, config: dict, config_yaml: str, wandb_mode: str):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / CONFIG, config_yaml)
        self._metrics = None
        self._wandb = self._start_wandb(config, wandb_mode)
        self._bar = None

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
        self._bar = tqdm(total=total_steps, initial=start_step, unit="gen", dynamic_ncols=True,
                         file=sys.stdout, mininterval=1.0, disable=None)

    def _start_wandb(self, config: dict, mode: str):
        if mode == "disabled":
            return None
        import wandb  # noqa: PLC0415 — slow import, only when used

        # A stable id per run directory, so a resumed run continues the same wandb run.
        run_id = "".join(ch if ch.isalnum() else "-" for ch in self.run_dir.resolve().name)[-64:]
        settings = config.get("logging", {})
        return wandb.init(project="vsml", dir=str(self.run_dir), mode=mode, config=config,
                          id=run_id, resume="allow", settings=wandb.Settings(silent=True),
                          tags=settings.get("tags") or None, job_type=settings.get("job_type"))

    def log(self, row: dict) -> None:
        """Appends one row (must hold ``step``) to metrics.jsonl, wandb and stdout."""
        row = {key: _jsonable(value) for key, value in row.items()}
        if self._metrics is None:
            self._metrics = open(self.run_dir / METRICS, "a")
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if k != "step" and v is not None}, step=row["step"])
        self.message(_format_row(row))

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
                lines += [f"{train_step},{dataset},{episode},{step},{episode_loss[step]:.6g},"
                          f"{episode_accuracy[step]:.6g}\n" for step in range(loss.shape[1])]
        with open(path, "a") as handle:
            handle.writelines(lines)

    def progress(self, meta_loss: float | None = None) -> None:
        """Advances the progress bar by one generation."""
        if self._bar is not None:
            if meta_loss is not None:
                self._bar.set_postfix(meta_loss=f"{meta_loss:.4f}", refresh=False)
            self._bar.update(1)

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def attach(self, path) -> None:
        """Adds ``path`` (a file in the run directory) to the wandb run's files, kept current as it changes."""
        if self._wandb is not None:
            self._wandb.save(str(Path(path).resolve()), base_path=str(self.run_dir.resolve()), policy="live")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
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

    def progress(self, meta_loss: float | None = None) -> None:
        return None

    def message(self, text: str) -> None:
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
