"""Truncated episodes against whole ones: PES and NRES against full-episode ES at equal synapse updates.

    python3 bench/truncation.py --setting quickstart --jobs 2         # issue 29 part 3 (a): seeds 0-3
    python3 bench/truncation.py --setting mnist14-500 --jobs 2 --lr pes=0.03 nres=0.03
    python3 bench/truncation.py --setting quickstart --report-only    # report what has run, start nothing
    python3 bench/truncation.py --quick                               # a minute: checks the pipeline

Every run meta-trains in its own ``launch.py`` process (the path a user runs) into
``RUNS_DIR/<setting>/<method>-lr<lr>-seed<s>``. Re-running the command skips finished
runs, continues a partial one with ``launch.py --resume`` (resume is exact, docs/DESIGN.md
§11.3) and restarts one that died before its first checkpoint (its folder is renamed
``*.incomplete-N``).

**The compute axis: synapse updates**, what actually runs: a generation of ES unrolls
``2P`` members (antithetic pairs) for ``T`` steps, one of PES/NRES for ``K`` steps of a
truncation (:func:`synapse_updates_per_generation`); each member step updates
``batch × synapses × micro ticks`` synapse states. Evaluations are not counted (the same
for every method). ES runs ``G`` generations, a truncated method ``G·T/K``.

**The meta-loss of the central parameters**, measured the same way for every method: the
run's own meta-test (``evaluation.*``) of θ_g on ``evaluation.count`` fixed episodes of the
training length from the held-out (``test``) split of the meta-training set, at the same
synapse-update checkpoints for every method (every ``G/checkpoints`` ES generations, every
``G·T/(K·checkpoints)`` truncated ones); ``eval/<set>/loss`` is the mean over steps and episodes,
ES's ``loss_type: mean`` meta-loss. The fitness each method logs (``meta_loss``) is not
comparable between them (PES's is that of truncations at perturbed parameters) and is not used.
Held-out accuracy: the same episodes, episode mean and last quarter of the steps.

**The headline**: per seed, the synapse updates a truncated method needs to first reach
full-episode ES's final meta-loss of the same seed (linear interpolation between checkpoints,
:func:`updates_to_reach`), as a fraction of ES's budget; median and [min, max] over seeds.

**Step sizes**: ES runs the setting's own (tuned) outer step; each truncated method is swept over
``--sweep-lrs`` on seed 0 alone and runs its best (lowest final meta-loss) on every seed
(``--lr METHOD=VALUE`` fixes one instead); seed 0's sweep run is its seed-0 run. ``--methods es es-raw
--lr es-raw=0.1`` adds a control: full-episode ES with the raw fitness PES and NRES need (the quick start's
ES ranks its fitness), which tells the effect of the shaping from that of truncating the episodes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.claims_outer import spread, total_time  # noqa: E402
from bench.plateau import last_quarter_accuracy  # noqa: E402

# es-raw, a control (not run by default): full-episode ES with PES's raw fitness, to tell the effect of the
# shaping (PES and NRES need raw to be unbiased; the quick start's ES uses centered ranks) from that of truncation
METHODS = ("es", "pes", "nres", "es-raw")
FULL_EPISODE = ("es", "es-raw")
METHOD_CONFIGS = {"es": [], "pes": ["configs/pes.yaml"], "nres": ["configs/nres.yaml"], "es-raw": []}
METHOD_OVERRIDES = {"es-raw": ["optimizer.fitness_shaping=raw"]}
NAMES = {"es": "ES (full episodes)", "pes": "PES", "nres": "NRES", "es-raw": "ES, raw fitness (control)"}


@dataclasses.dataclass(frozen=True)
class Setting:
    config_files: tuple[str, ...]  # layered on configs/default.yaml, before the method's file
    overrides: tuple[str, ...]
    es_generations: int  # G: ES's budget in generations (the truncated methods get G*T/K)
    truncation_steps: int  # K
    checkpoints: int  # meta-tests over the budget (G must divide by it)
    eval_count: int  # fixed held-out episodes of every meta-test


SETTINGS = {
    # configs/quickstart.yaml as shipped (digits, 50-step episodes, 32 pairs, centered-rank lr 0.1), half its
    # 1500 generations: the meta-loss is near its end of the shipped run's fall by then (bench/RESULTS.md).
    "quickstart": Setting(("configs/quickstart.yaml",), (), 750, 10, 30, 64),
    # configs/mnist14.yaml at the paper's 500-step training episodes, with the quick start's small sub-RNN
    # (the paper's 16-unit one costs more per step: its quick start takes about twice the time).
    "mnist14-500": Setting(
        ("configs/mnist14.yaml",),
        (
            "training.episode_length=500",
            "model.sub_rnn.slow_size=4",
            "model.sub_rnn.msg_size=2",
            "model.vsml_rnn.num_micro_ticks=1",
        ),
        300,
        50,
        15,
        32,
    ),
    # --quick: seconds-long, only to check the pipeline end to end
    "quick": Setting(
        ("configs/quickstart.yaml",),
        ("training.episode_length=10", "training.population_size=4"),
        8,
        5,
        4,
        4,
    ),
}


def method_iterations(setting: Setting, method: str, episode_length: int) -> tuple[int, int]:
    """(generations between meta-tests, generations in all) of ``method``: equal synapse updates at each."""
    per_es = 1 if method in FULL_EPISODE else episode_length // setting.truncation_steps
    every = setting.es_generations // setting.checkpoints * per_es
    return every, setting.es_generations * per_es


def synapse_updates_per_generation(method: str, config: dict, synapses: int, truncation_steps: int) -> int:
    """Synapse updates one generation runs: 2P members x steps (T for ES, K for PES/NRES) x batch x synapses
    x micro ticks."""
    training = config["training"]
    steps = training["episode_length"] if method in FULL_EPISODE else truncation_steps
    ticks = config["model"]["vsml_rnn"]["num_micro_ticks"]
    return 2 * training["population_size"] * steps * training["batch_size"] * synapses * ticks


def synapse_count(config: dict) -> int:
    """Synapses of the run's VSML learner (dense layers) on its meta-training set's input and class count."""
    from vsml.data import load_dataset  # noqa: PLC0415
    from vsml.learners import vsml  # noqa: PLC0415
    from vsml.settings import data_settings, run_settings  # noqa: PLC0415

    spec, _ = load_dataset(config["training"]["dataset"], "test", data_settings(config))
    model = vsml.spec_from_config(run_settings(config).model, spec.input_shape, spec.num_classes)
    return sum(int(np.prod(g.synapses)) for g in vsml.layer_geometries(model, spec.input_shape, spec.num_classes))


def updates_to_reach(updates, losses, target: float) -> float | None:
    """The synapse updates at which the curve first reaches ``target`` (linear between checkpoints); None if never."""
    for j, (u, loss) in enumerate(zip(updates, losses)):
        if loss <= target:
            if j == 0:
                return float(u)
            u0, l0 = updates[j - 1], losses[j - 1]
            return float(u0 + (u - u0) * (l0 - target) / (l0 - loss))
    return None


# ----------------------------------------------------------------------------- runs


@dataclasses.dataclass(frozen=True)
class Run:
    method: str
    seed: int
    lr: float

    @property
    def name(self) -> str:
        return f"{self.method}-lr{self.lr:g}-seed{self.seed}"


def run_config(setting: Setting, run: Run, episode_length: int, dataset: str) -> tuple[list[str], list[str]]:
    """(config files, overrides) of one run."""
    every, generations = method_iterations(setting, run.method, episode_length)
    files = [str(ROOT / f) for f in (*setting.config_files, *METHOD_CONFIGS[run.method])]
    overrides = [
        *setting.overrides,
        *([] if run.method in FULL_EPISODE else [f"optimizer.pes_truncation_steps={setting.truncation_steps}"]),
        *METHOD_OVERRIDES.get(run.method, []),
        f"optimizer.lr={run.lr}",
        f"seed={run.seed}",
        f"training.iterations={generations + 1}",  # generations 0..G: theta_G is meta-tested too
        f"evaluation.datasets=[{dataset}]",
        "evaluation.subset=test",
        f"evaluation.episode_length={episode_length}",
        f"evaluation.count={setting.eval_count}",
        f"evaluation.frequency={every}",
        f"summary.frequency={max(1, every // 5)}",
        f"checkpoint.frequency={2 * every}",
        "logging.wandb=disabled",
    ]
    return files, overrides


def checkpoint_step(run_dir: Path) -> int | None:
    path = run_dir / "checkpoint.npz"
    if not path.exists():
        return None
    with np.load(path) as saved:
        return int(saved["step"])


def say(line: str) -> None:
    """One whole line to stdout (runs finish in threads; ``print`` may interleave their lines)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def launch(setting: Setting, run: Run, run_dir: Path, episode_length: int, dataset: str) -> dict:
    """Runs (or continues, or skips) one run in a ``launch.py`` process; returns its status."""
    _, generations = method_iterations(setting, run.method, episode_length)
    step = checkpoint_step(run_dir)
    if step is not None and step >= generations + 1:
        say(f"{run.name}: finished before")
        return {"run": run.name, "returncode": 0, "action": "finished before"}
    log = run_dir.parent / f"{run_dir.name}.log"
    if step is not None:
        command = [sys.executable, str(ROOT / "launch.py"), "--resume", str(run_dir)]
        command += ["--config", f"training.iterations={generations + 1}"]  # the budget, whatever the run was given
        action = f"resumed at generation {step}"
    else:
        if run_dir.exists():  # died before its first checkpoint: keep it aside, start again
            n = sum(1 for _ in run_dir.parent.glob(f"{run_dir.name}.incomplete-*"))
            run_dir.rename(run_dir.parent / f"{run_dir.name}.incomplete-{n}")
        files, overrides = run_config(setting, run, episode_length, dataset)
        command = [sys.executable, str(ROOT / "launch.py"), "--run_dir", str(run_dir)]
        command += ["--config_files", *files, "--config", *overrides]
        action = "started"
    say(f"{run.name}: {action}")
    with open(log, "a") as out:
        proc = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    say(f"{run.name}: exit {proc.returncode}")
    return {"run": run.name, "returncode": proc.returncode, "action": action, "log": str(log)}


# ----------------------------------------------------------------------------- figures


def curve(run_dir: Path, dataset: str, updates_per_generation: int) -> dict:
    """A run's meta-tests: generation, synapse updates, meta-loss, accuracy and last-quarter accuracy at each."""
    from vsml.runlog import read_metrics  # noqa: PLC0415

    rows = [r for r in read_metrics(run_dir) if f"eval/{dataset}/loss" in r]
    quarter = last_quarter_accuracy(run_dir, dataset)
    generations = [int(r["step"]) for r in rows]
    return {
        "generation": generations,
        "updates": [g * updates_per_generation for g in generations],
        "loss": [float(r[f"eval/{dataset}/loss"]) for r in rows],
        "accuracy": [float(r[f"eval/{dataset}/accuracy"]) for r in rows],
        "last_quarter": [quarter.get(g) for g in generations],
        "wall_s": total_time(run_dir),
    }


def choose_lr(curves_by_lr: dict[float, dict], generations: int) -> float | None:
    """The step size whose finished sweep run ends at the lowest meta-loss (None until one has finished)."""
    done = {
        lr: c["loss"][-1] for lr, c in curves_by_lr.items() if c["generation"] and c["generation"][-1] == generations
    }
    return min(done, key=done.get) if done else None


def summarise(curves: dict[str, dict[int, dict]], budget: int) -> dict:
    """Per method: meta-loss at every shared checkpoint, final figures, and updates to reach ES's final meta-loss.

    ``curves[method][seed]`` is :func:`curve`'s dict; ``budget`` ES's synapse updates.
    """
    es_final = {  # targets only from finished ES runs
        seed: c["loss"][-1] for seed, c in curves.get("es", {}).items() if c["updates"] and c["updates"][-1] == budget
    }
    out = {}
    for method, by_seed in curves.items():
        complete = {s: c for s, c in by_seed.items() if c["updates"] and c["updates"][-1] == budget}
        points = sorted(set.intersection(*[set(c["updates"]) for c in complete.values()])) if complete else []
        at = {u: spread([c["loss"][c["updates"].index(u)] for c in complete.values()]) for u in points}
        reach = {}
        for seed, c in by_seed.items():
            if seed not in es_final:
                continue
            reached = updates_to_reach(c["updates"], c["loss"], es_final[seed])
            finished = bool(c["updates"]) and c["updates"][-1] == budget
            reach[seed] = {
                "fraction": None if reached is None else reached / budget,
                "target": es_final[seed],
                "best": min(c["loss"]) if c["loss"] else None,
                "spent": (c["updates"][-1] / budget) if c["updates"] else 0.0,
                "finished": finished,
            }
        fractions = [r["fraction"] for r in reach.values()]
        common = float(np.median(list(es_final.values()))) if es_final else None  # one target for every seed
        finished = {s: c for s, c in by_seed.items() if c["updates"] and c["updates"][-1] == budget}
        if common is not None and finished:
            reached = [updates_to_reach(c["updates"], c["loss"], common) for c in finished.values()]
            summary_common = sorted(math.inf if u is None else u / budget for u in reached)
        else:
            summary_common = []
        summary = {"seeds": sorted(complete), "at": at, "reach": reach, "common_target": common}
        if summary_common:
            summary["common_fractions"] = summary_common
            summary["common_median"] = float(np.median(summary_common))
        if complete:
            finals = list(complete.values())
            summary.update(
                final_loss=spread([c["loss"][-1] for c in finals]),
                accuracy=spread([c["accuracy"][-1] for c in finals]),
                last_quarter=spread([c["last_quarter"][-1] for c in finals if c["last_quarter"][-1] is not None]),
                wall_s=spread([c["wall_s"] for c in finals if c["wall_s"] is not None]),
            )
        if reach and all(r["finished"] for r in reach.values()):
            # median over seeds, "not reached" ranked above every fraction (the median is then an upper bound)
            ranked = sorted(math.inf if f is None else f for f in fractions)
            summary["reach_median"] = float(np.median(ranked))
        out[method] = summary
    return out


def fmt_spread(s: dict | None, spec: str = ".3f", scale: float = 1.0) -> str:
    if not s:
        return "–"
    return f"{scale * s['median']:{spec}} [{scale * s['min']:{spec}}, {scale * s['max']:{spec}}]"


def fmt_reach(r: dict) -> str:
    if r["fraction"] is not None:
        return f"{r['fraction']:.2f}"
    if r["best"] is None:
        return "not started"
    state = "not reached" if r["finished"] else f"not yet ({r['spent']:.2f} run)"
    return f"{state}: best {r['best']:.4f} vs {r['target']:.4f} (+{r['best'] - r['target']:.4f})"


def report(summary: dict, budget: int, header: list[str], lrs: dict, sweep: dict) -> str:
    lines = [*header, ""]
    methods = [m for m in METHODS if m in summary]
    lines += [
        "Meta-loss of the central parameters on the fixed held-out episodes, against synapse updates "
        "(fraction of ES's budget), median [min, max] over the seeds that finished:",
        "",
        "| updates / ES budget | " + " | ".join(f"{NAMES[m]} (lr {lrs.get(m, '?')})" for m in methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    points = sorted({u for m in methods for u in summary[m]["at"]})
    shown = points[:: max(1, len(points) // 10)]
    shown += [] if not points or shown[-1] == points[-1] else [points[-1]]
    for u in shown:
        lines.append(f"| {u / budget:.3f} | " + " | ".join(fmt_spread(summary[m]["at"].get(u)) for m in methods) + " |")
    lines += [
        "",
        "At the end (equal synapse updates): meta-loss, held-out accuracy (episode mean, last quarter, %), "
        "wall seconds of the training loop (a shared, contended CPU: upper bounds):",
        "",
        "| method | seeds | meta-loss | accuracy | last quarter | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for m in methods:
        s = summary[m]
        lines.append(
            f"| {NAMES[m]} | {len(s['seeds'])} | {fmt_spread(s.get('final_loss'))} | "
            f"{fmt_spread(s.get('accuracy'), '.1f', 100)} | {fmt_spread(s.get('last_quarter'), '.1f', 100)} | "
            f"{fmt_spread(s.get('wall_s'), '.0f')} |"
        )
    lines += [
        "",
        "Synapse updates to first reach ES's final meta-loss of the same seed, as a fraction of ES's budget "
        "(target ≤ 0.5):",
        "",
        "| method | " + " | ".join(f"seed {s}" for s in sorted(summary.get("es", {}).get("reach", {}))) + " | median |",
    ]
    seeds = sorted(summary.get("es", {}).get("reach", {}))
    lines.append("|---|" + "---|" * (len(seeds) + 1))
    for m in methods:
        reach = summary[m]["reach"]
        median = summary[m].get("reach_median")
        med = "–" if median is None else ("not reached" if math.isinf(median) else f"{median:.2f}")
        lines.append(
            f"| {NAMES[m]} | " + " | ".join(fmt_reach(reach[s]) if s in reach else "–" for s in seeds) + f" | {med} |"
        )
    common = [m for m in methods if "common_fractions" in summary[m]]
    if common:
        target = summary[common[0]]["common_target"]
        lines += [
            "",
            f"The same against one target for every seed, the median of ES's final meta-losses ({target:.4f}): "
            "fractions of ES's budget, sorted (inf: not reached), and their median:",
            "",
        ]
        for m in common:
            values = ", ".join("inf" if math.isinf(f) else f"{f:.2f}" for f in summary[m]["common_fractions"])
            median = summary[m]["common_median"]
            lines.append(f"- {NAMES[m]}: {values}; median {'not reached' if math.isinf(median) else f'{median:.2f}'}")
    if sweep:
        lines += ["", "Step-size sweep (seed 0, full budget): final meta-loss per lr", ""]
        for m, by_lr in sweep.items():
            cells = ", ".join(
                f"lr {lr:g}: " + (f"{v:.3f}" if v is not None else "unfinished") for lr, v in by_lr.items()
            )
            lines.append(f"- {NAMES[m]}: {cells}; chosen {lrs.get(m, '–')}")
    return "\n".join(lines) + "\n"


def plot(path: Path, curves: dict[str, dict[int, dict]], budget: int, dataset: str) -> None:
    """Meta-loss against synapse updates: per method the median over seeds and the [min, max] band."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, (method, by_seed) in enumerate(curves.items()):
        complete = [c for c in by_seed.values() if c["updates"] and c["updates"][-1] == budget]
        if not complete:
            continue
        length = min(len(c["loss"]) for c in complete)
        x = np.asarray(complete[0]["updates"][:length]) / budget
        y = np.asarray([c["loss"][:length] for c in complete])
        ax.plot(x, np.median(y, axis=0), color=f"C{i}", label=f"{NAMES[method]} ({len(complete)} seeds)")
        ax.fill_between(x, y.min(axis=0), y.max(axis=0), color=f"C{i}", alpha=0.2)
    ax.set_xlabel("synapse updates / ES's budget")
    ax.set_ylabel(f"meta-loss, held-out {dataset}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- the command


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--setting", choices=[s for s in SETTINGS if s != "quick"], default="quickstart")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS[:3]))
    parser.add_argument("--sweep-lrs", type=float, nargs="+", default=[0.1, 0.03])
    parser.add_argument("--lr", nargs="*", default=[], metavar="METHOD=LR", help="fix a method's lr (no sweep)")
    parser.add_argument("--jobs", type=int, default=1, help="training processes at once (default 1)")
    parser.add_argument("--runs_dir", default=str(ROOT / "runs" / "truncation"), help="default runs/truncation")
    parser.add_argument("--report-only", action="store_true", help="start nothing: where each run stands, a report")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 seeds, a few generations")
    args = parser.parse_args(argv)
    if args.quick:
        args.setting, args.seeds, args.sweep_lrs = "quick", [0, 1], [0.1, 0.03]
    fixed = {}
    for item in args.lr:
        method, _, value = item.partition("=")
        if method not in METHODS[1:] or not value:
            parser.error(f"--lr {item}: give METHOD=LR with METHOD one of {', '.join(METHODS[1:])}")
        fixed[method] = float(value)
    args.fixed_lrs = fixed
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    return args


def main(argv=None) -> int:
    from bench.machine import describe, summary_line  # noqa: PLC0415
    from vsml.config import build_config  # noqa: PLC0415

    args = parse_args(argv)
    setting = SETTINGS[args.setting]
    config = build_config([str(ROOT / f) for f in setting.config_files], list(setting.overrides))
    length, dataset = config["training"]["episode_length"], config["training"]["dataset"]
    if length % setting.truncation_steps or setting.es_generations % setting.checkpoints:
        raise SystemExit(f"setting {args.setting}: K must divide T and the checkpoints G")
    synapses = synapse_count(config)
    per_generation = {m: synapse_updates_per_generation(m, config, synapses, setting.truncation_steps) for m in METHODS}
    budget = setting.es_generations * per_generation["es"]
    out = Path(args.runs_dir) / args.setting
    out.mkdir(parents=True, exist_ok=True)

    def curves_of(runs):
        return {r: curve(out / r.name, dataset, per_generation[r.method]) for r in runs}

    es_lr = float(config["optimizer"]["lr"])
    # first the sweep (and seed 0 of ES), then every other seed, a seed of each method at a time
    swept = [m for m in args.methods if m != "es" and m not in args.fixed_lrs]
    first = [Run("es", args.seeds[0], es_lr)] if "es" in args.methods else []
    first += [Run(m, args.seeds[0], lr) for m in swept for lr in args.sweep_lrs]
    first += [Run(m, args.seeds[0], lr) for m, lr in args.fixed_lrs.items() if m in args.methods]

    def run_all(runs):
        if args.report_only:
            for r in runs:
                print(f"{r.name}: checkpoint at generation {checkpoint_step(out / r.name)}")
            return []
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            return list(pool.map(lambda r: launch(setting, r, out / r.name, length, dataset), runs))

    statuses = run_all(first)
    lrs, sweep = {"es": es_lr, **args.fixed_lrs}, {}
    for m in swept:
        by_lr = {r.lr: c for r, c in curves_of([Run(m, args.seeds[0], lr) for lr in args.sweep_lrs]).items()}
        generations = method_iterations(setting, m, length)[1]
        sweep[m] = {
            lr: (c["loss"][-1] if c["generation"] and c["generation"][-1] == generations else None)
            for lr, c in by_lr.items()
        }
        chosen = choose_lr(by_lr, generations)
        if chosen is not None:
            lrs[m] = chosen
    second = [Run(m, s, lrs[m]) for s in args.seeds[1:] for m in args.methods if m in lrs]
    statuses += run_all(second)

    runs = [Run(m, s, lrs[m]) for m in args.methods if m in lrs for s in args.seeds]
    curves: dict[str, dict[int, dict]] = {}
    for r, c in curves_of(runs).items():
        curves.setdefault(r.method, {})[r.seed] = c
    summary = summarise(curves, budget)
    info = describe()
    header = [
        f"setting {args.setting}: {' '.join(setting.config_files)} {' '.join(setting.overrides)}; "
        f"T = {length}, K = {setting.truncation_steps}, P = {config['training']['population_size']} pairs, "
        f"{synapses} synapses",
        f"budget: {setting.es_generations} ES generations = {budget:.3e} synapse updates "
        f"(ES {per_generation['es']:.3e} per generation, PES/NRES {per_generation['pes']:.3e}); "
        f"meta-tests: {setting.checkpoints + 1} x {setting.eval_count} fixed held-out ({dataset}, test) episodes "
        f"of {length} steps",
        f"machine: {summary_line(info)}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at report",
        f"command: python3 bench/truncation.py {' '.join(argv if argv is not None else sys.argv[1:])}",
    ]
    text = report(summary, budget, header, lrs, sweep)
    print(text)
    (out / "report.md").write_text(text)
    (out / "results.json").write_text(
        json.dumps(
            {
                "setting": args.setting,
                "budget": budget,
                "synapses": synapses,
                "per_generation": per_generation,
                "lrs": lrs,
                "sweep": {m: {str(k): v for k, v in d.items()} for m, d in sweep.items()},
                "curves": {m: {str(s): c for s, c in d.items()} for m, d in curves.items()},
                "summary": json.loads(json.dumps(summary, default=str)),
                "statuses": statuses,
                "machine": info,
                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=1,
        )
    )
    if any(curves.values()):
        plot(out / "meta_loss_updates.png", curves, budget, dataset)
    return 0 if all(s["returncode"] == 0 for s in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
