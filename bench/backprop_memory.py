"""Memory of a meta-gradient through long episodes, with and without rematerialisation and truncation.

    python3 bench/backprop_memory.py                                  # paper model, mnist_offline, T = 100, 500
    python3 bench/backprop_memory.py --lengths 500 --plans 0,0 22,0 0,50 --max-run-gib 8
    python3 bench/backprop_memory.py --quick                          # tiny: checks the benchmark (seconds)

For every episode length T and plan ``REMAT,TRUNCATION`` (``optimizer.remat_steps``,
``optimizer.truncation``; 0: off) a fresh process builds the meta-gradient loop
exactly as a run does (``--config_files``, default the quick start's paper model
with ``configs/backprop.yaml``, on ``mnist_offline``, the paper's 28x28 MNIST, one
episode of batch 1 a step) and reports, for ONE episode's value-and-gradient:

* XLA's buffer plan of the compiled evaluation (``memory_analysis()``, compiled
  ahead of time, nothing runs): temp (working) bytes, and argument + output bytes;
* the compile time of that plan;
* when the plan is below ``--max-run-gib``: one meta-gradient step run for real,
  its time after compilation and the process's peak resident memory (host RSS;
  on a GPU also the device's peak bytes in use), minus the process's RSS before
  the loop was built (the Python, jax and data baseline).

A fresh process per configuration keeps each peak its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_CONFIG_FILES = ["configs/quickstart_paper.yaml", "configs/backprop.yaml"]
DEFAULT_OVERRIDES = ["training.dataset=mnist_offline", "training.batch_size=1", "logging.wandb=disabled"]
QUICK_OVERRIDES = ["training.dataset=digits", "model.sub_rnn.slow_size=4", "model.sub_rnn.msg_size=2"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config_files", nargs="+", default=DEFAULT_CONFIG_FILES)
    parser.add_argument("--config", nargs="*", default=[], help="K=V overrides, layered last")
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 500], help="episode lengths T")
    parser.add_argument(
        "--plans", nargs="+", default=["0,0", "1,0", "22,0", "0,50"], metavar="REMAT,TRUNCATION"
    )  # fmt: skip
    parser.add_argument("--max-run-gib", type=float, default=3.0, help="run a step only when the plan is below this")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny model, T = 20, two plans")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one configuration
    args = parser.parse_args(argv)
    args.config_files = [str((ROOT / f).resolve()) for f in args.config_files]
    if args.quick:
        args.lengths, args.plans, args.config = [20], ["0,0", "5,0"], QUICK_OVERRIDES + args.config
    try:
        args.plans = [tuple(int(v) for v in p.split(",")) for p in args.plans]
    except ValueError:
        parser.error("--plans: each plan is REMAT,TRUNCATION, e.g. 22,0")
    return args


def rss_bytes() -> int:
    """The current resident memory of this process (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(config_files, overrides, max_run_bytes: float) -> dict:
    """One configuration, in this process: the memory plan of one episode's gradient, and one step if it fits."""
    import jax  # noqa: PLC0415

    from bench.machine import cpu_peak_rss_bytes, device_peak_bytes  # noqa: PLC0415
    from vsml.comm import SingleProcessComm  # noqa: PLC0415
    from vsml.config import build_config  # noqa: PLC0415
    from vsml.evaluation import load_task  # noqa: PLC0415
    from vsml.experiment import backprop_plan  # noqa: PLC0415
    from vsml.learners import build_learner  # noqa: PLC0415
    from vsml.meta import build_outer_loop, objective  # noqa: PLC0415
    from vsml.settings import run_settings  # noqa: PLC0415

    settings = run_settings(build_config(config_files, overrides))
    training = settings.training
    task = load_task(training.dataset, "train", settings.data_settings, training.episode_length, training.batch_size)
    baseline = rss_bytes()
    learner = build_learner(
        settings.model, task.spec.input_shape, task.spec.num_classes, backprop_plan=backprop_plan(settings.optimizer)
    )
    fitness = objective.make_fitness(objective.make_episode(learner.run, task.sampler()), training.loss_type)
    params = learner.init(jax.random.PRNGKey(settings.seed))
    loop = build_outer_loop(settings.optimizer, 1, None, fitness, params, SingleProcessComm())
    state = loop.init(params, settings.seed)
    start = time.perf_counter()
    plan = loop.memory_analysis(state, task.arrays)  # the slice is the one episode
    row = {
        "temp_bytes": int(plan.temp_size_in_bytes),
        "io_bytes": int(plan.argument_size_in_bytes + plan.output_size_in_bytes),
        "compile_s": time.perf_counter() - start,
        "ran": False,
    }
    if row["temp_bytes"] + row["io_bytes"] <= max_run_bytes:
        state, _ = loop.step(state, task.arrays)  # compiles and runs
        start = time.perf_counter()
        _, stats = loop.step(state, task.arrays)
        row.update(
            ran=True,
            step_s=time.perf_counter() - start,
            peak_rss_bytes=cpu_peak_rss_bytes(),
            peak_rss_over_baseline_bytes=cpu_peak_rss_bytes() - baseline,
            device_peak_bytes=device_peak_bytes(),
            meta_loss=stats["meta_loss"],
        )
    return row


def run_one(args, length: int, plan: tuple[int, int]) -> dict:
    overrides = [
        *DEFAULT_OVERRIDES,
        f"training.episode_length={length}",
        f"optimizer.remat_steps={plan[0]}",
        f"optimizer.truncation={plan[1]}",
        *args.config,
    ]
    spec = json.dumps({"config_files": args.config_files, "overrides": overrides, "max_run_gib": args.max_run_gib})
    proc = subprocess.run(
        [sys.executable, __file__, "--one", spec], cwd=ROOT, capture_output=True, text=True, check=False
    )
    row = {"length": length, "remat_steps": plan[0], "truncation": plan[1], "returncode": proc.returncode}
    if proc.returncode == 0:
        row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    else:
        row["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
    return row


def mib(value) -> str:
    return "–" if value is None else f"{value / 2**20:.1f}"


def report(rows: list[dict], machine: str) -> str:
    lines = [
        f"machine: {machine}",
        "one episode's meta-gradient (batch 1); plan: XLA's compiled buffer plan; RSS: peak resident memory "
        "of the process over its baseline before the loop was built",
        "",
        "| T | remat_steps | truncation | plan temp MiB | plan args+out MiB | compile s | step s | "
        "peak RSS over baseline MiB | device peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["returncode"] != 0:
            lines.append(f"| {r['length']} | {r['remat_steps']} | {r['truncation']} | failed: {r['error']} |")
            continue
        step = f"{r['step_s']:.2f}" if r["ran"] else "not run"
        lines.append(
            f"| {r['length']} | {r['remat_steps']} | {r['truncation']} | {mib(r['temp_bytes'])} | "
            f"{mib(r['io_bytes'])} | {r['compile_s']:.1f} | {step} | "
            f"{mib(r.get('peak_rss_over_baseline_bytes'))} | {mib(r.get('device_peak_bytes'))} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        spec = json.loads(args.one)
        print(json.dumps(measure(spec["config_files"], spec["overrides"], spec["max_run_gib"] * 2**30)))
        return 0
    from bench.machine import cpu_model  # noqa: PLC0415

    rows = [run_one(args, length, plan) for length in args.lengths for plan in args.plans]
    print(report(rows, cpu_model()))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
