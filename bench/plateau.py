"""When does ES meta-training from scratch leave the ln C plateau?

    python3 bench/plateau.py                                    # the small setting, seeds 0-3, 500 generations
    python3 bench/plateau.py --seeds 0 1 --generations 300 --config optimizer.lr=0.05 --label lr0.05
    python3 bench/plateau.py --quick                            # seconds-to-a-minute; checks the benchmark
    python3 bench/plateau.py --json out.json                    # also write every figure as JSON

Every seed meta-trains VSML from scratch in its own process through the
project's own path (``launch.py`` → ``vsml.experiment.train``), writing a
normal run directory; this script then reads its ``metrics.jsonl`` and
``evaluation.csv``. The small setting (:data:`SMALL_SETTING`) is the one of
issue 15: MNIST digits from ``mnist_offline`` resized to 14×14, 16 antithetic
pairs, episodes of 100 steps, the paper's model and ES settings
(``configs/default.yaml``), evaluation on the held-out test split. Any key can
be overridden with ``--config`` / ``--config_files`` (σ, lr, shaping, model
sizes, normalisation, init scale, ...).

Per seed it reports:

* the *escape generation*: the first generation g from which the meta-loss
  stays below ln C − 0.01 up to the last generation run (C: the dataset's
  class count) — "not within N" when the last generation is still above;
* the meta-loss at fixed generations (mean of the 10 generations ending there,
  since single generations are noisy) and the held-out accuracy measured there:
  the episode mean and the mean over the last quarter of the episode's steps;
* the wall time of the process (compilation included), and the machine.

The processes run one at a time by default (``--jobs`` runs several at once;
they then share the cores). Pin the whole benchmark to cores with
``taskset -c 1 python3 bench/plateau.py ...``: child processes inherit it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Issue 15's small setting; the model and ES settings are the paper's (configs/default.yaml).
SMALL_SETTING = [
    "training.dataset=mnist_offline",
    "data.preprocess.resize=[14, 14]",
    "training.population_size=16",
    "training.episode_length=100",
    "training.batch_size=1",
    "evaluation.datasets=[mnist_offline]",
    "evaluation.subset=test",
    "evaluation.episode_length=100",
    "evaluation.count=16",
    "summary.frequency=1",
    "logging.wandb=disabled",
]
# --quick: a tiny model on tiny episodes, only to check that the benchmark works end to end.
QUICK_SETTING = [
    "data.preprocess.resize=[7, 7]",
    "training.population_size=4",
    "training.episode_length=10",
    "evaluation.episode_length=12",
    "evaluation.count=2",
    "model.sub_rnn.slow_size=4",
    "model.sub_rnn.msg_size=2",
    "model.vsml_rnn.num_micro_ticks=1",
]
PLATEAU_MARGIN = 0.01
SMOOTH = 10  # generations averaged for "meta-loss at generation g"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--generations", type=int, default=500, help="ES generations per seed (default 500)")
    parser.add_argument(
        "--at",
        type=int,
        nargs="+",
        default=None,
        help="generations to report meta-loss and accuracy at (default: 5 evenly spaced); "
        "held-out accuracy is evaluated at each of them",
    )
    parser.add_argument("--config_files", nargs="*", default=[], help="YAML files layered on the small setting")
    parser.add_argument("--config", nargs="*", default=[], help="K=V overrides layered last")
    parser.add_argument("--label", default="", help="a name for this setting in the report")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once (default 1)")
    parser.add_argument("--runs_dir", default=None, help="where the run directories go (default runs/plateau-<time>)")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, 2 seeds, 24 generations: checks the benchmark"
    )
    parser.add_argument(
        "--summarise",
        nargs="+",
        default=None,
        metavar="RUN_DIR",
        help="run nothing: report finished run directories (metrics.jsonl, evaluation.csv, "
        "config.yaml with the seed), e.g. runs of another implementation written in this format",
    )
    args = parser.parse_args(argv)
    args.config_files = [str(Path(f).resolve()) for f in args.config_files]  # the runs start in the repository
    if args.quick:
        args.seeds, args.generations, args.at, args.jobs = [0, 1], 24, [12, 24], 2
    if args.generations < 1:
        parser.error("--generations must be >= 1")
    if args.at is None:
        step = max(1, args.generations // 5)
        args.at = sorted({min(args.generations, step * k) for k in range(1, 6)})
    if any(g < 0 or g > args.generations for g in args.at):
        parser.error(f"--at: every generation must be within 0..{args.generations}")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    return args


def eval_frequency(points: list[int]) -> int:
    """The largest evaluation frequency that evaluates at every generation of ``points``."""
    return math.gcd(*[g for g in points if g > 0]) or 1


def overrides_for(args, seed: int) -> list[str]:
    """The ``--config`` list of one seed's run (the small setting, then the user's overrides)."""
    base = SMALL_SETTING + (QUICK_SETTING if args.quick else [])
    return [
        *base,
        f"training.iterations={args.generations + 1}",  # generations 0..N, so N is evaluated too
        f"evaluation.frequency={eval_frequency(args.at)}",
        f"checkpoint.frequency={args.generations + 1}",
        f"seed={seed}",
        *args.config,
    ]


def run_seed(args, seed: int, run_dir: Path) -> dict:
    """Meta-trains one seed in a fresh ``launch.py`` process; its wall time and exit status."""
    command = [sys.executable, str(ROOT / "launch.py"), "--run_dir", str(run_dir)]
    if args.config_files:
        command += ["--config_files", *args.config_files]
    command += ["--config", *overrides_for(args, seed)]
    start = time.perf_counter()
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        proc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    return {
        "seed": seed,
        "returncode": proc.returncode,
        "wall_s": time.perf_counter() - start,
        "run_dir": str(run_dir),
        "log": str(run_dir.parent / f"{run_dir.name}.log"),
    }


def escape_generation(steps: list[int], losses: list[float], threshold: float) -> int | None:
    """First generation from which every later meta-loss is below ``threshold``; None if the last is not."""
    escape = None
    for step, loss in zip(steps, losses):
        if loss < threshold:
            escape = step if escape is None else escape
        else:
            escape = None
    return escape


def last_quarter_accuracy(run_dir: Path, dataset: str) -> dict[int, float]:
    """Per evaluated generation: mean accuracy over the last quarter of the episode's steps."""
    per_step: dict[int, list[tuple[int, float]]] = {}
    path = run_dir / "evaluation.csv"
    if not path.exists():
        return {}
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["dataset"] == dataset and row["episode"] == "mean":
                per_step.setdefault(int(row["train_step"]), []).append((int(row["step"]), float(row["accuracy"])))
    out = {}
    for gen, rows in per_step.items():
        length = max(s for s, _ in rows) + 1
        tail = [a for s, a in rows if s >= length - length // 4]
        out[gen] = sum(tail) / len(tail)
    return out


def summarise(run: dict, args, num_classes: int, dataset: str) -> dict:
    """The per-seed figures of one finished run directory."""
    from vsml.runlog import read_metrics  # noqa: PLC0415

    run_dir = Path(run["run_dir"])
    rows = [r for r in read_metrics(run_dir) if "meta_loss" in r]
    steps = [int(r["step"]) for r in rows]
    losses = [float(r["meta_loss"]) for r in rows]
    threshold = math.log(num_classes) - PLATEAU_MARGIN
    quarter = last_quarter_accuracy(run_dir, dataset)
    by_step = {int(r["step"]): r for r in rows}
    at = {}
    for g in args.at:
        window = [loss for s, loss in zip(steps, losses) if g - SMOOTH < s <= g]
        row = by_step.get(g, {})
        at[g] = {
            "meta_loss": sum(window) / len(window) if window else None,
            "accuracy": row.get(f"eval/{dataset}/accuracy"),
            "last_quarter_accuracy": quarter.get(g),
        }
    return {
        **run,
        "generations_run": (max(steps) + 1) if steps else 0,
        "escape_generation": escape_generation(steps, losses, threshold),
        "threshold": threshold,
        "at": at,
    }


def fmt(value, spec=".3f", missing="–") -> str:
    return missing if value is None else format(value, spec)


def report(results: list[dict], args, machine: dict) -> str:
    lines = [
        f"setting: {args.label or 'small setting'} | generations {args.generations} | "
        f"overrides: {' '.join(args.config) or '(none)'}"
        + (f" | config files: {' '.join(args.config_files)}" if args.config_files else ""),
        f"machine: {machine['cpu']}, {machine['cpu_cores']} cores ({machine['affinity']} usable), "
        f"jax {machine['jax']}, Python {machine['python']}",
        f"escape: first generation from which the meta-loss stays below ln C - {PLATEAU_MARGIN} "
        f"= {results[0]['threshold']:.4f}"
        if results
        else "no results",
        "",
    ]
    header = ["seed", "escape gen"] + [f"g{g}: loss / acc / last¼" for g in args.at] + ["wall s"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for r in results:
        if r["returncode"] != 0:
            lines.append(f"| {r['seed']} | run failed (exit {r['returncode']}, see {r['log']}) |")
            continue
        escape = (
            str(r["escape_generation"]) if r["escape_generation"] is not None else f"not within {r['generations_run']}"
        )
        cells = [
            f"{fmt(a['meta_loss'])} / {fmt(a['accuracy'], '.1%')} / {fmt(a['last_quarter_accuracy'], '.1%')}"
            for a in r["at"].values()
        ]
        lines.append("| " + " | ".join([str(r["seed"]), escape, *cells, f"{r['wall_s']:.0f}"]) + " |")
    escapes = sorted(
        r["escape_generation"] for r in results if r["returncode"] == 0 and r["escape_generation"] is not None
    )
    lines.append("")
    lines.append(
        f"escaped: {len(escapes)} of {len(results)} seeds"
        + (f"; median escape generation of those: {escapes[len(escapes) // 2]}" if escapes else "")
    )
    return "\n".join(lines)


def describe_machine() -> dict:
    import jax  # noqa: PLC0415

    from bench.machine import cpu_model  # noqa: PLC0415

    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "jax": jax.__version__,
        "python": platform.python_version(),
    }


def dataset_facts(args) -> tuple[str, int]:
    """The meta-training dataset's name and class count (C of ln C), from the config the runs use."""
    from vsml.config import build_config  # noqa: PLC0415
    from vsml.data import load_dataset  # noqa: PLC0415
    from vsml.settings import data_settings  # noqa: PLC0415

    config = build_config(args.config_files, overrides_for(args, args.seeds[0]))
    name = config["training"]["dataset"]
    spec, _ = load_dataset(name, "test", data_settings(config))
    return name, spec.num_classes


def existing_run(run_dir: str) -> dict:
    """A finished run directory as :func:`run_seed` would describe it (wall time: its last logged ``time``)."""
    import yaml  # noqa: PLC0415

    from vsml.runlog import read_metrics  # noqa: PLC0415

    path = Path(run_dir)
    if not (path / "metrics.jsonl").exists():
        raise SystemExit(f"--summarise: {path} has no metrics.jsonl; give a run directory")
    config = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").exists() else {}
    rows = read_metrics(path)
    return {
        "seed": config.get("seed", "?"),
        "returncode": 0,
        "wall_s": float(rows[-1].get("time", 0.0)) if rows else 0.0,
        "run_dir": str(path),
        "log": str(path),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    dataset, num_classes = dataset_facts(args)  # also rejects a bad config before any run starts
    if args.summarise:
        results = [summarise(existing_run(d), args, num_classes, dataset) for d in args.summarise]
        print(report(results, args, describe_machine()))
        return 0
    runs_dir = Path(args.runs_dir or ROOT / "runs" / time.strftime("plateau-%Y%m%d-%H%M%S"))
    runs_dir.mkdir(parents=True, exist_ok=True)
    label = args.label.replace(" ", "_") or "run"
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(lambda s: run_seed(args, s, runs_dir / f"{label}-seed{s}"), args.seeds))
    results = [summarise(r, args, num_classes, dataset) for r in runs]
    machine = describe_machine()
    print(report(results, args, machine))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "label": args.label,
                    "generations": args.generations,
                    "config": args.config,
                    "config_files": args.config_files,
                    "dataset": dataset,
                    "num_classes": num_classes,
                    "machine": machine,
                    "results": results,
                },
                indent=1,
            )
        )
    return 0 if all(r["returncode"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
