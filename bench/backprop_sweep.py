"""Which meta-gradient step leaves the ln C plateau? A sweep of ``configs/backprop.yaml``'s settings.

    python3 bench/backprop_sweep.py --out runs/backprop-sweep                     # the grid below, seeds 0-3
    python3 bench/backprop_sweep.py --out runs/bp-paper --config_files configs/quickstart_paper.yaml \\
        configs/backprop.yaml --lr 0.03 --clip 1 --population 16 --iterations 601
    python3 bench/backprop_sweep.py --out runs/backprop-sweep --report-only       # the table of what finished
    python3 bench/backprop_sweep.py --quick --out /tmp/bp-quick                   # checks the benchmark (~1 min)

Every run meta-trains from scratch with meta-gradients (``optimizer.type: metagrad``:
Adam on the mean gradient of ``training.population_size`` episodes) through the
project's own path: one ``launch.py`` process per run, ``--config_files`` (the
quick start and ``configs/backprop.yaml`` by default) with the grid's
``optimizer.lr``, ``optimizer.clip_gradnorm`` (0: no clipping) and
``training.population_size`` as overrides, at the config's own budget
(``training.iterations``) unless ``--iterations`` says otherwise. The runs go one
at a time, seed-major (seed 0 of every setting, then seed 1, ...), so a sweep
stopped early has the same seeds for every setting; each finished run is
appended to ``OUT/results.jsonl`` at once, and a rerun skips what is there.

Per run it records, from the run's ``metrics.jsonl``:

* the final meta-loss: the mean of the logged meta-losses of the last
  :data:`FINAL_WINDOW` steps (single steps are noisy), and that of the last 10;
* whether it *left the plateau*: that final meta-loss is below
  :data:`LEFT_FRACTION` · ln C (C: the meta-training set's class count; 2.07 for
  10 classes: a learner at chance sits at ln C, and 10 % below it is far outside
  the plateau's step-to-step noise of ~0.001), and the escape step: the first
  step from which the meta-loss stays below that line
  (:func:`bench.plateau.escape_generation`);
* the meta-test the run does itself (``evaluation.datasets``): episode-mean and
  last-step accuracy on every evaluated set at the last evaluation;
* the largest gradient norm (``grad/norm``, before clipping) and the number of
  steps whose norm exceeded ``clip_gradnorm`` (where clipping acted);
* the wall time of the process, compilation and evaluations included.

The report gives per setting: how many seeds left the plateau, and the median
[min–max] over seeds of every figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.plateau import describe_machine, escape_generation, fmt  # noqa: E402

DEFAULT_CONFIG_FILES = ["configs/quickstart.yaml", "configs/backprop.yaml"]
LEFT_FRACTION = 0.9  # "left the plateau": final meta-loss < 0.9 ln C
FINAL_WINDOW = 100  # steps whose logged meta-losses make the final meta-loss
QUICK = [
    "training.episode_length=10",
    "evaluation.episode_length=12",
    "evaluation.count=2",
    "evaluation.frequency=10",
    "summary.frequency=1",
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="folder of the run directories and results.jsonl")
    parser.add_argument("--config_files", nargs="+", default=DEFAULT_CONFIG_FILES)
    parser.add_argument("--config", nargs="*", default=[], help="K=V overrides for every run, layered last")
    parser.add_argument("--lr", type=float, nargs="+", default=[0.003, 0.01, 0.03])
    parser.add_argument("--clip", type=float, nargs="+", default=[1.0, 0.0], help="clip_gradnorm values; 0: none")
    parser.add_argument("--population", type=int, nargs="+", default=[16], help="episodes per step")
    parser.add_argument(
        "--settings",
        nargs="+",
        default=None,
        metavar="LR,CLIP,POP",
        help="an explicit list of settings instead of the --lr x --clip x --population grid",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--iterations", type=int, default=None, help="steps per run (default: the config's)")
    parser.add_argument("--report-only", action="store_true", help="run nothing: the table of results.jsonl")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 2 settings, 21 short steps")
    args = parser.parse_args(argv)
    args.config_files = [str((ROOT / f).resolve()) for f in args.config_files]
    if args.quick:
        args.seeds, args.iterations, args.settings = [0, 1], 21, ["0.03,1,4", "0.01,0,2"]
        args.config = QUICK + args.config
    if args.settings:
        try:
            args.grid = [(float(lr), float(clip), int(pop)) for lr, clip, pop in (s.split(",") for s in args.settings)]
        except ValueError:
            parser.error("--settings: each setting is LR,CLIP,POP, e.g. 0.03,1,16")
    else:
        args.grid = list(itertools.product(args.lr, args.clip, args.population))
    return args


def label(setting: tuple[float, float, int]) -> str:
    lr, clip, pop = setting
    return f"lr{lr:g}-clip{clip:g}-pop{pop}"


def overrides(args, setting, seed: int) -> list[str]:
    lr, clip, pop = setting
    its = [f"training.iterations={args.iterations}"] if args.iterations else []
    return [
        "logging.wandb=disabled",
        "summary.frequency=1",  # every step's meta-loss and gradient norm
        f"optimizer.lr={lr}",
        f"optimizer.clip_gradnorm={clip}",
        f"training.population_size={pop}",
        f"seed={seed}",
        *its,
        *args.config,
    ]


def run_facts(args) -> tuple[int, int, str, list[str]]:
    """``(iterations, classes C, meta-training set, evaluated sets)`` of the runs (also checks the config)."""
    from vsml.config import build_config  # noqa: PLC0415
    from vsml.data import load_dataset  # noqa: PLC0415
    from vsml.settings import data_settings  # noqa: PLC0415

    config = build_config(args.config_files, overrides(args, args.grid[0], args.seeds[0]))
    name = config["training"]["dataset"]
    spec, _ = load_dataset(name, "test", data_settings(config))
    return int(config["training"]["iterations"]), spec.num_classes, name, list(config["evaluation"]["datasets"])


def summarise_run(run_dir: Path, num_classes: int, datasets: list[str], clip: float = 0.0) -> dict:
    """The figures of one finished run directory (see the module docstring)."""
    from vsml.runlog import read_metrics  # noqa: PLC0415

    rows = read_metrics(run_dir)
    losses = [(int(r["step"]), float(r["meta_loss"])) for r in rows if "meta_loss" in r]
    line = LEFT_FRACTION * math.log(num_classes)
    last = losses[-1][0] if losses else 0
    window = [loss for step, loss in losses if step > last - FINAL_WINDOW]
    final = statistics.fmean(window) if window else None
    norms = [float(r["grad/norm"]) for r in rows if "grad/norm" in r]
    evals = [r for r in rows if any(f"eval/{d}/accuracy" in r for d in datasets)]
    last_eval = evals[-1] if evals else {}
    return {
        "steps": last + 1 if losses else 0,
        "final_meta_loss": final,
        "last10_meta_loss": statistics.fmean([v for s, v in losses if s > last - 10]) if losses else None,
        "left": final is not None and final < line,
        "line": line,
        "escape_step": escape_generation([s for s, _ in losses], [v for _, v in losses], line),
        "max_grad_norm": max(norms) if norms else None,
        "clipped_steps": sum(n > clip for n in norms) if clip > 0 else 0,
        "eval_step": last_eval.get("step"),
        **{f"{d}/accuracy": last_eval.get(f"eval/{d}/accuracy") for d in datasets},
        **{f"{d}/final_accuracy": last_eval.get(f"eval/{d}/final_accuracy") for d in datasets},
    }


def run_one(args, setting, seed: int, out: Path) -> dict:
    """One ``launch.py`` process; its record (setting, seed, exit status, wall time, figures)."""
    run_dir = out / f"{label(setting)}-seed{seed}"
    command = [sys.executable, str(ROOT / "launch.py"), "--run_dir", str(run_dir), "--config_files"]
    command += [*args.config_files, "--config", *overrides(args, setting, seed)]
    start = time.perf_counter()
    with open(out / f"{run_dir.name}.log", "w") as log:
        proc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    return {
        "setting": label(setting),
        "lr": setting[0],
        "clip": setting[1],
        "population": setting[2],
        "seed": seed,
        "returncode": proc.returncode,
        "wall_s": time.perf_counter() - start,
        "run_dir": str(run_dir),
    }


def read_results(path: Path) -> list[dict]:
    """The records of ``results.jsonl``, the last one of each (setting, seed) (a rerun replaces a failed run)."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return list({(r["setting"], r["seed"]): r for r in records}.values())


def spread(values, spec: str = ".3f") -> str:
    """``median [min–max]`` of the values that exist."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return "–"
    return f"{fmt(statistics.median(values), spec)} [{fmt(values[0], spec)}–{fmt(values[-1], spec)}]"


def report(results: list[dict], facts: tuple, args, machine: dict) -> str:
    iterations, num_classes, dataset, datasets = facts
    files = " ".join(str(Path(f).relative_to(ROOT)) if Path(f).is_relative_to(ROOT) else f for f in args.config_files)
    lines = [
        f"config files: {files} | steps: {args.iterations or iterations} | extra overrides: "
        f"{' '.join(args.config) or '(none)'}",
        f"machine: {machine['cpu']}, {machine['cpu_cores']} cores ({machine['affinity']} usable), "
        f"jax {machine['jax']}, Python {machine['python']}",
        f"left the plateau: meta-loss over the last {FINAL_WINDOW} steps < {LEFT_FRACTION} ln {num_classes} "
        f"= {LEFT_FRACTION * math.log(num_classes):.3f} (meta-training set {dataset}); "
        "figures: median [min–max] over seeds; accuracy at the last evaluation, episode mean / last step",
        "",
    ]
    header = [
        "lr",
        "clip",
        "episodes/step",
        "left",
        "final meta-loss",
        "last 10 steps",
        "escape step (n: seeds below the line at the end)",
    ]
    header += [f"{d} mean / last" for d in datasets] + ["max grad norm", "clipped steps", "wall s"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for setting in dict.fromkeys(r["setting"] for r in results):
        runs = [r for r in results if r["setting"] == setting]
        ok = [r for r in runs if r["returncode"] == 0]
        failed = f" ({len(runs) - len(ok)} failed)" if len(ok) < len(runs) else ""
        escapes = [r["escape_step"] for r in ok if r["escape_step"] is not None]
        cells = [
            f"{runs[0]['lr']:g}",
            f"{runs[0]['clip']:g}" if runs[0]["clip"] > 0 else "none",
            str(runs[0]["population"]),
            f"{sum(r['left'] for r in ok)}/{len(runs)}{failed}",
            spread([r["final_meta_loss"] for r in ok]),
            spread([r.get("last10_meta_loss") for r in ok]),
            (spread(escapes, ".0f") + f" (n={len(escapes)})") if escapes else "–",
        ]
        cells += [
            f"{spread([r.get(f'{d}/accuracy') for r in ok], '.1%')} / "
            f"{spread([r.get(f'{d}/final_accuracy') for r in ok], '.1%')}"
            for d in datasets
        ]
        cells.append(spread([r.get("max_grad_norm") for r in ok]))
        cells.append(spread([r.get("clipped_steps") for r in ok], ".0f"))
        cells.append(spread([r["wall_s"] for r in runs], ".0f"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    facts = run_facts(args)  # a bad config fails here, before any run
    _, num_classes, _, datasets = facts
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    if not args.report_only:
        done = {(r["setting"], r["seed"]) for r in read_results(results_path) if r["returncode"] == 0}
        for seed, setting in itertools.product(args.seeds, args.grid):  # seed-major: balanced when stopped
            if (label(setting), seed) in done:
                continue
            record = run_one(args, setting, seed, out)
            if record["returncode"] == 0:
                record.update(summarise_run(Path(record["run_dir"]), num_classes, datasets, setting[1]))
            with open(results_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"{record['setting']} seed {seed}: exit {record['returncode']}, {record['wall_s']:.0f} s", flush=True)
    wanted = {label(s) for s in args.grid}
    results = [r for r in read_results(results_path) if r["setting"] in wanted or args.report_only]
    if args.report_only:  # re-read the run directories that are here (figures added since are filled in)
        for r in results:
            if r["returncode"] == 0 and (Path(r["run_dir"]) / "metrics.jsonl").exists():
                r.update(summarise_run(Path(r["run_dir"]), num_classes, datasets, r["clip"]))
    text = report(results, facts, args, describe_machine())
    (out / "report.md").write_text(text + "\n")
    print(text)
    return 0 if all(r["returncode"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
