"""What a person watching a run reads: summary, meta-test, progress and stop lines, and ``console.log``.

:class:`Console` prints one line per metrics row and progress (a tqdm bar on a
terminal, a line every ``logging.progress_seconds`` otherwise) and keeps the
same lines in ``console.log``; the formatters are pure functions of a row, so
tests and other front ends use them directly.
"""

from __future__ import annotations

import math
import sys
import time

from tqdm import tqdm

TIMING_KEYS = ("time/evaluate", "time/communicate", "time/update")
TIMING_LABELS = ("eval", "comm", "update")


def format_duration(seconds: float) -> str:
    """``42s``, ``6m52s``, ``3h07m``, ``2d05h``: two units at most."""
    total = max(0, int(round(seconds)))
    minutes, secs = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def percent_shares(values) -> list[int]:
    """Whole percentages of ``values`` (non-negative, positive sum) that add up to exactly 100.

    Each is its exact share rounded down or up (largest remainders get the
    leftover points), so a part never shows more than 1 point off.
    """
    total = float(sum(values))
    exact = [100.0 * value / total for value in values]
    shares = [math.floor(share) for share in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - shares[i], reverse=True)
    for index in by_remainder[: 100 - sum(shares)]:
        shares[index] += 1
    return shares


def _seconds_per_generation(seconds: float) -> str:
    return f"{seconds:.3g} s/gen"


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def evaluation_line(row: dict) -> str | None:
    """The meta-test results of a metrics row on one line (None when it has none).

    ``meta-test gen 250 · digits 44.3% (last step 50.0%) · mnist_offline 19.0% (last step 18.8%)``:
    online accuracy averaged over the episode, and at its last step.
    """
    datasets = [
        key[len("eval/") : -len("/accuracy")]
        for key in row
        if key.startswith("eval/") and key.endswith("/accuracy") and not key.endswith("/final_accuracy")
    ]
    if not datasets:
        return None
    parts = [
        f"{name} {_percent(row.get(f'eval/{name}/accuracy'))} "
        f"(last step {_percent(row.get(f'eval/{name}/final_accuracy'))})"
        for name in datasets
    ]
    return " · ".join([f"meta-test gen {row['step']}", *parts])


def stop_line(stopped_by: str, done: int, total: int, resume_command: str | None) -> str:
    """The one line a run stopped by a signal ends with, numbered as the progress lines.

    ``stopped by SIGINT after gen 39/100 (40 generations done; checkpoint saved); resume with: …``:
    generations are numbered from 0 (as in the progress lines and metrics.jsonl), so
    the last one done is ``done - 1``.
    """
    line = f"stopped by {stopped_by} after gen {done - 1}/{total} ({done} generation{'s' if done != 1 else ''} done; "
    line += "checkpoint saved)"
    return line + (f"; resume with: {resume_command}" if resume_command else "")


class Console:
    """What a person watching the run reads: one line per summary, progress, and the same in ``console.log``.

    On a terminal, progress is a tqdm bar (from the second generation on, so
    its rate and ETA never include compiling); otherwise (a pipe, a file,
    Slurm) a line ``gen 120/1501 · 0.31 s/gen · ETA 7m10s`` whenever
    ``progress_seconds`` passed without one. ``console.log`` always gets the
    lines, never the bar. The ETA comes from the wall time of the generations
    after this process's first (which includes compiling), meta-tests
    included.

    Args:
      log_file: ``console.log``'s path, or None for the terminal only.
      stream: where lines go (default stdout); a bar only if it is a terminal.
      clock: seconds, monotonic (``time.monotonic``; tests pass their own).
    """

    def __init__(self, log_file=None, stream=None, progress_seconds: float = 30.0, clock=time.monotonic):
        self._stream = stream or sys.stdout
        self._file = open(log_file, "a", buffering=1) if log_file is not None else None  # noqa: SIM115
        self._interactive = bool(getattr(self._stream, "isatty", lambda: False)())
        self._progress_seconds = progress_seconds
        self._clock = clock
        self._bar = None
        self._total = None
        self._done = 0  # generations completed (of the whole run)
        self._started_at = None  # when this process began its first generation
        self._first_done = None  # (time, generations done) after this process's first generation
        self._last_line_at = None
        self._window = [0.0, 0.0, 0.0]  # timing sums since the last summary, first generation excluded
        self._window_count = 0

    def start(self, done: int, total: int) -> None:
        self._done, self._total = done, total
        self._started_at = self._last_line_at = self._clock()
        if done < total:
            self.message("compiling the meta-test and the generation step (the first generation takes longest)…")

    def message(self, text: str, to_stderr: bool = False) -> None:
        """One line to the terminal (above the bar, if any; stderr for a warning) and to ``console.log``."""
        if to_stderr:
            print(text, file=sys.stderr, flush=True)
        elif self._bar is not None:
            self._bar.write(text, file=self._stream)
        else:
            print(text, file=self._stream, flush=True)
        if self._file is not None:
            self._file.write(text + "\n")
        self._last_line_at = self._clock()

    def _log_only(self, text: str) -> None:
        if self._file is not None:
            self._file.write(text + "\n")

    def seconds_per_generation(self) -> float | None:
        """Wall seconds per generation since this process's first, or None before the second."""
        if self._first_done is None or self._done == self._first_done[1]:
            return None
        at, done = self._first_done
        return (self._clock() - at) / (self._done - done)

    def eta(self) -> float | None:
        rate = self.seconds_per_generation()
        return None if rate is None or self._total is None else rate * max(0, self._total - self._done)

    def progress(self, stats: dict | None = None) -> None:
        """Counts one finished generation (``stats`` may hold its ``time/*`` and ``meta_loss``)."""
        stats = stats or {}
        now = self._clock()
        self._done += 1
        if self._first_done is None:
            self._first_done = (now, self._done)
            first_seconds = now - (self._started_at if self._started_at is not None else now)
            self.message(f"first generation took {first_seconds:.1f} s (compiling included)")
            if self._interactive and self._total is not None and self._done < self._total:
                self._bar = tqdm(
                    total=self._total,
                    initial=self._done,
                    unit="gen",
                    dynamic_ncols=True,
                    file=self._stream,
                    mininterval=1.0,
                )
            return
        timings = [stats.get(key) for key in TIMING_KEYS]
        if all(isinstance(t, (int, float)) for t in timings):
            self._window = [acc + t for acc, t in zip(self._window, timings)]
            self._window_count += 1
        if self._bar is not None:
            if isinstance(stats.get("meta_loss"), (int, float)):
                self._bar.set_postfix(meta_loss=f"{stats['meta_loss']:.4f}", refresh=False)
            self._bar.update(1)
        if self._total is not None and self._done < self._total and now - self._last_line_at >= self._progress_seconds:
            line = self.progress_line()
            self._log_only(line) if self._interactive else self.message(line)
            self._last_line_at = now

    def progress_line(self) -> str:
        """``gen 120/1501 · 0.31 s/gen · ETA 7m10s``: generations are numbered from 0, as in metrics.jsonl."""
        line = f"gen {self._done - 1}/{self._total}"
        rate, eta = self.seconds_per_generation(), self.eta()
        if rate is not None:
            line += f" · {_seconds_per_generation(rate)} · ETA {format_duration(eta)}"
        return line

    def summary_line(self, row: dict) -> str:
        """``gen 250/1501 · meta-loss 2.074 · 0.33 s/gen (eval 94% · comm 1% · update 5%) · ETA 6m52s``.

        The seconds per generation and their shares are the mean ``time/*`` of
        the generations since the previous summary line (the first generation,
        which compiles, apart).
        """
        parts = [f"gen {row['step']}/{self._total}" if self._total else f"gen {row['step']}"]
        loss = row.get("meta_loss")
        parts.append("meta-loss " + ("nan" if loss is None else f"{loss:#.4g}"))
        if row.get("es/nonfinite"):
            parts.append(f"{row['es/nonfinite']} non-finite fitness")
        if self._window_count and sum(self._window) > 0:
            mean = [t / self._window_count for t in self._window]
            shares = " · ".join(f"{label} {share}%" for label, share in zip(TIMING_LABELS, percent_shares(mean)))
            parts.append(f"{_seconds_per_generation(sum(mean))} ({shares})")
        if self._total is not None and self._done >= self._total:
            if isinstance(row.get("time"), (int, float)):  # wall time of the whole run, resumes included
                parts.append(f"done in {format_duration(row['time'])}")
        elif self.eta() is not None:
            parts.append(f"ETA {format_duration(self.eta())}")
        self._window, self._window_count = [0.0, 0.0, 0.0], 0
        return " · ".join(parts)

    def row(self, row: dict) -> None:
        """The console lines of one metrics row: a summary line (training) and a meta-test line."""
        if "meta_loss" in row:
            self.message(self.summary_line(row))
        evaluation = evaluation_line(row)
        if evaluation is not None:
            self.message(evaluation)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._file is not None:
            self._file.close()
            self._file = None
