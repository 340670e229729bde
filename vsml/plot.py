"""Draw and summarise runs: meta-training loss and meta-test learning curves.

    python3 -m vsml.plot RUN_DIR [RUN_DIR ...] [--smooth N] [--out FILE.png]

The figure (PNG, matplotlib's Agg backend, no display needed) has

* one panel of meta-training loss (``meta_loss`` of ``metrics.jsonl`` against
  ``step``), one line per run;
* one panel per meta-test dataset with the learning curve of the latest
  evaluation in ``evaluation.csv`` (accuracy against inner step, averaged over
  episodes), one line per run -- a Figure-8-style comparison of learners;
* for runs without ``evaluation.csv``, one panel per dataset with the
  ``eval/<dataset>/accuracy`` of ``metrics.jsonl`` against meta-training step;
* chance (dashed): accuracy 1/K of guessing among the dataset's K classes, and
  on the meta-loss panel ln K, the loss of a uniform guess on the training
  data (read from each run's ``config.yaml``; one gray line where the runs agree,
  else one per run in its color);
* ``--smooth N``: each line is the mean of its last N points (fewer at the
  start), drawn over the faint raw line.

The figure goes to ``FIRST_RUN_DIR/curves.png`` for one run and
``FIRST_RUN_DIR/compare.png`` for several, unless ``--out`` says otherwise.

A short summary table (final meta-loss, final accuracies per dataset and run)
goes to stdout. :func:`load_curves` returns exactly what is drawn.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vsml import environment
from vsml.runlog import CONFIG, EVALUATION, EVALUATION_COLUMNS, METRICS, read_metrics

MEAN_EPISODE = "mean"
_EVAL_ACCURACY = re.compile(r"^eval/(.+)/accuracy$")


@dataclass
class Curve:
    """One line: ``y`` against ``x`` (float arrays of equal length)."""

    x: np.ndarray
    y: np.ndarray


@dataclass
class RunCurves:
    """What :func:`load_curves` reads from one run directory.

    Attributes:
      run_dir: the directory.
      meta_loss: meta_loss against meta-training step (None without metrics.jsonl rows).
      learning: dataset -> mean accuracy against inner step 0..T-1, from the
        latest train_step of evaluation.csv.
      learning_loss: the same for the loss.
      learning_train_step: dataset -> the train_step those curves belong to.
      eval_accuracy: dataset -> eval/<dataset>/accuracy against meta-training
        step, from metrics.jsonl (filled only when evaluation.csv is absent).
      final: dataset -> (accuracy averaged over the episode, accuracy at its last
        step) of the latest evaluation, from evaluation.csv or else metrics.jsonl.
      chance: dataset -> accuracy of guessing (1 / classes), from config.yaml.
      uniform_loss: ln(classes) of the training data (the meta-loss of a uniform
        guess), from config.yaml; None where unknown or different per rank.
    """

    run_dir: Path
    meta_loss: Curve | None = None
    learning: dict[str, Curve] = field(default_factory=dict)
    learning_loss: dict[str, Curve] = field(default_factory=dict)
    learning_train_step: dict[str, int] = field(default_factory=dict)
    eval_accuracy: dict[str, Curve] = field(default_factory=dict)
    final: dict[str, tuple[float, float]] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)
    uniform_loss: float | None = None


def _float(value) -> float:
    """A float from a CSV/JSON value; blank or null becomes NaN."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    return float(value)


def meta_loss_curve(rows: list[dict]) -> Curve | None:
    """``meta_loss`` against ``step`` over the metrics rows that have one (None if none do)."""
    points = [(row["step"], _float(row["meta_loss"])) for row in rows if "meta_loss" in row and "step" in row]
    if not points:
        return None
    steps, losses = zip(*sorted(points))
    return Curve(np.asarray(steps, dtype=float), np.asarray(losses, dtype=float))


def eval_accuracy_curves(rows: list[dict]) -> dict[str, Curve]:
    """dataset -> ``eval/<dataset>/accuracy`` against ``step``, from metrics rows."""
    points: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        for key, value in row.items():
            match = _EVAL_ACCURACY.match(key)
            if match and value is not None:
                points.setdefault(match.group(1), []).append((row["step"], _float(value)))
    return {
        name: Curve(*(np.asarray(column, dtype=float) for column in zip(*sorted(pts))))
        for name, pts in sorted(points.items())
    }


def final_from_metrics(rows: list[dict]) -> dict[str, tuple[float, float]]:
    """dataset -> (eval/<d>/accuracy, eval/<d>/final_accuracy) of the latest row that has them."""
    final = {}
    for row in rows:
        for key, value in row.items():
            match = _EVAL_ACCURACY.match(key)
            if match and value is not None:
                name = match.group(1)
                final[name] = (_float(value), _float(row.get(f"eval/{name}/final_accuracy")))
    return dict(sorted(final.items()))


def read_evaluation_table(path) -> list[dict]:
    """Rows of an ``evaluation.csv``: train_step and step as int, episode as int or 'mean', loss/accuracy as float."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(EVALUATION_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(sorted(missing))}; "
                f"expected header {','.join(EVALUATION_COLUMNS)}"
            )
        rows = []
        for row in reader:
            episode = row["episode"].strip()
            rows.append(
                {
                    "train_step": int(row["train_step"]),
                    "dataset": row["dataset"],
                    "episode": episode if episode == MEAN_EPISODE else int(episode),
                    "step": int(row["step"]),
                    "loss": _float(row["loss"]),
                    "accuracy": _float(row["accuracy"]),
                }
            )
    return rows


def learning_curves(rows: list[dict], column: str = "accuracy") -> tuple[dict[str, Curve], dict[str, int]]:
    """Per dataset, ``column`` against inner step at the dataset's latest train_step.

    Uses that train_step's ``mean`` rows; without them, averages the episodes
    (NaNs ignored). Returns ``(dataset -> Curve, dataset -> train_step)``.
    """
    latest: dict[str, int] = {}
    for row in rows:
        latest[row["dataset"]] = max(latest.get(row["dataset"], row["train_step"]), row["train_step"])
    curves = {}
    for name, train_step in sorted(latest.items()):
        chosen = [r for r in rows if r["dataset"] == name and r["train_step"] == train_step]
        means = [r for r in chosen if r["episode"] == MEAN_EPISODE]
        by_step: dict[int, list[float]] = {}
        for r in means or chosen:
            by_step.setdefault(r["step"], []).append(r[column])
        steps = sorted(by_step)
        values = [np.nanmean(by_step[s]) if np.isfinite(by_step[s]).any() else math.nan for s in steps]
        curves[name] = Curve(np.asarray(steps, dtype=float), np.asarray(values, dtype=float))
    return curves, latest


def chance_levels(config: dict, datasets) -> tuple[dict[str, float], float | None]:
    """``({dataset: 1 / classes}, ln(training classes))`` for a run's layered config.

    A value is left out (None) where the class count is unknown or differs
    between ranks (``mpi_split``); all ranks of one split period are checked.
    """
    from vsml import data  # noqa: PLC0415 — imports jax; only where a run has a config
    from vsml.config import resolve_for_rank, split_period  # noqa: PLC0415
    from vsml.settings import run_settings  # noqa: PLC0415

    ranks = [run_settings(resolve_for_rank(config, rank)) for rank in range(min(split_period(config), 256))]
    ranks = [(settings.training.dataset, settings.data_settings) for settings in ranks]

    def agreed(count) -> int | None:
        values = {count(train_dataset, settings) for train_dataset, settings in ranks}
        return values.pop() if len(values) == 1 else None

    chance = {}
    for name in datasets:
        classes = agreed(lambda _, settings, name=name: data.class_count(name, settings))
        if classes:
            chance[name] = 1.0 / classes
    train_classes = agreed(lambda train_dataset, settings: data.class_count(train_dataset, settings))
    return chance, (math.log(train_classes) if train_classes else None)


def _read_config(run_dir: Path) -> dict | None:
    import yaml  # noqa: PLC0415

    try:
        config = yaml.safe_load((run_dir / CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def load_curves(run_dir) -> RunCurves:
    """Everything the plot and the summary show for one run directory."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    result = RunCurves(run_dir=run_dir, meta_loss=meta_loss_curve(rows))
    config = _read_config(run_dir)
    table = run_dir / EVALUATION
    if table.is_file():
        evaluation = read_evaluation_table(table)
        result.learning, result.learning_train_step = learning_curves(evaluation, "accuracy")
        result.learning_loss, _ = learning_curves(evaluation, "loss")
        result.final = {
            name: (
                float(np.nanmean(c.y)) if np.isfinite(c.y).any() else math.nan,
                float(c.y[-1]) if len(c.y) else math.nan,
            )
            for name, c in result.learning.items()
        }
    else:
        result.eval_accuracy = eval_accuracy_curves(rows)
        result.final = final_from_metrics(rows)
    if config is not None:
        try:
            result.chance, result.uniform_loss = chance_levels(
                config, sorted({*result.learning, *result.eval_accuracy})
            )
        except (KeyError, TypeError, ValueError):  # a config of another version: no chance lines
            pass
    return result


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average: point i is the mean of ``y[max(0, i - window + 1) : i + 1]`` (NaNs skipped)."""
    y = np.asarray(y, dtype=float)
    if window <= 1 or len(y) == 0:
        return y
    valid = np.isfinite(y)
    sums = np.concatenate([[0.0], np.cumsum(np.where(valid, y, 0.0))])
    counts = np.concatenate([[0], np.cumsum(valid)])
    upper = np.arange(1, len(y) + 1)
    lower = np.maximum(upper - window, 0)
    n = counts[upper] - counts[lower]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[upper] - sums[lower]) / np.maximum(n, 1), np.nan)


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Short names for runs: the directory name, with its parent's when names repeat."""
    names = [Path(d).resolve().name for d in run_dirs]
    return [
        f"{Path(d).resolve().parent.name}/{name}" if names.count(name) > 1 else name for d, name in zip(run_dirs, names)
    ]


def _fmt(value: float, percent: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{100 * value:.1f}%" if percent else f"{value:.4f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *rows]
    ]
    return "\n".join(lines)


def summary(runs: list[RunCurves], labels: list[str]) -> str:
    """Two text tables: final meta-loss per run, and final accuracies per run and dataset."""
    loss_rows = []
    for run, label in zip(runs, labels):
        curve = run.meta_loss
        loss_rows.append(
            [label, "-" if curve is None else str(int(curve.x[-1])), "-" if curve is None else _fmt(float(curve.y[-1]))]
        )
    acc_rows = []
    for run, label in zip(runs, labels):
        source = EVALUATION if run.learning else METRICS
        for name, (mean_acc, last_acc) in run.final.items():
            at = run.learning_train_step.get(name)
            if at is None and name in run.eval_accuracy and len(run.eval_accuracy[name].x):
                at = int(run.eval_accuracy[name].x[-1])
            acc_rows.append(
                [label, name, "-" if at is None else str(at), _fmt(mean_acc, True), _fmt(last_acc, True), source]
            )
    text = _table(["run", "last step", "final meta_loss"], loss_rows)
    if acc_rows:
        text += "\n\n" + _table(
            ["run", "dataset", "at step", "accuracy (episode mean)", "accuracy (last step)", "from"], acc_rows
        )
    else:
        text += "\n\n(no meta-test results: no evaluation.csv and no eval/* in metrics.jsonl)"
    return text


def chance_lines(values: list, labels: list[str], colors: list[str]) -> list[tuple[float, str, str]]:
    """``(level, color, whose)`` per dashed chance line, from each run's level (None: unknown).

    One gray line where the runs that know it agree; else one per run, in the run's
    color and named after it (runs of different class counts keep their chance lines).
    """
    known = [(round(value, 12), index) for index, value in enumerate(values) if value is not None]
    if len({level for level, _ in known}) == 1:
        return [(known[0][0], "gray", "")]
    return [(level, colors[index % len(colors)], f" {labels[index]}") for level, index in known]


def plot(runs: list[RunCurves], labels: list[str], out, smoothing: int = 1) -> Path:
    """Draws the figure described in the module docstring to ``out`` (PNG); returns its path.

    ``smoothing``: window of the trailing moving average (1: raw lines only).
    """
    import matplotlib  # noqa: PLC0415 — only when drawing

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    learning_sets = sorted({name for run in runs for name in run.learning})
    eval_sets = sorted({name for run in runs for name in run.eval_accuracy})
    panels = [("meta", None)] + [("learning", n) for n in learning_sets] + [("eval", n) for n in eval_sets]
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.9 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def draw(ax, curve: Curve, color, label, **style):
        if smoothing > 1:
            ax.plot(curve.x, curve.y, color=color, alpha=0.25, linewidth=1)
            ax.plot(curve.x, smooth(curve.y, smoothing), color=color, label=label)
        else:
            ax.plot(curve.x, curve.y, color=color, label=label, **style)

    for ax, (kind, name) in zip(axes.flat, panels):
        for index, (run, label) in enumerate(zip(runs, labels)):
            color = colors[index % len(colors)]
            if kind == "meta" and run.meta_loss is not None:
                draw(ax, run.meta_loss, color, label)
            elif kind == "learning" and name in run.learning:
                draw(ax, run.learning[name], color, f"{label} (step {run.learning_train_step[name]})")
            elif kind == "eval" and name in run.eval_accuracy:
                draw(ax, run.eval_accuracy[name], color, label, marker="o", markersize=3)
        levels = [run.uniform_loss if kind == "meta" else run.chance.get(name) for run in runs]
        for level, color, whose in chance_lines(levels, labels, colors):
            what = f"ln {round(math.exp(level))} = {level:.3f}" if kind == "meta" else f"{level:.1%}"
            title = "uniform guess" if kind == "meta" else "chance"
            ax.axhline(level, color=color, linestyle="--", linewidth=1, label=f"{title}{whose} ({what})")
        if kind == "meta":
            ax.set(title="meta-training loss", xlabel="meta-training step (generation)", ylabel="meta-loss")
        elif kind == "learning":
            ax.set(
                title=f"meta-test on {name}: learning curve",
                xlabel="inner step (examples seen)",
                ylabel="accuracy (mean over episodes)",
                ylim=(0, 1),
            )
        else:
            ax.set(
                title=f"meta-test on {name} during meta-training",
                xlabel="meta-training step",
                ylabel="accuracy (episode mean)",
                ylim=(0, 1),
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def default_out(run_dirs: list[Path]) -> Path:
    """``RUN/curves.png`` for one run; ``FIRST_RUN/compare.png`` for several."""
    return Path(run_dirs[0]) / ("curves.png" if len(run_dirs) == 1 else "compare.png")


def _window(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer (points averaged; 1 = raw)")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=environment.module_command("vsml.plot"), description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument(
        "--out",
        type=Path,
        help="PNG file (default RUN_DIR/curves.png for one run, FIRST_RUN_DIR/compare.png for several)",
    )
    parser.add_argument(
        "--smooth",
        type=_window,
        default=1,
        metavar="N",
        help="draw each line as the mean of its last N points over the faint raw line (default 1: raw)",
    )
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        if not run_dir.is_dir():
            print(f"error: {run_dir} is not a directory", file=sys.stderr)
            return 2
        if not (run_dir / METRICS).is_file() and not (run_dir / EVALUATION).is_file():
            print(f"error: {run_dir} holds neither {METRICS} nor {EVALUATION}: not a run directory", file=sys.stderr)
            return 2
    try:
        runs = [load_curves(run_dir) for run_dir in args.run_dirs]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    labels = run_labels(args.run_dirs)
    print(summary(runs, labels))
    out = plot(runs, labels, args.out or default_out(args.run_dirs), smoothing=args.smooth)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
