"""The paper's claims, measured: learned learners meta-trained on one set, meta-tested on many.

    python3 bench/claims.py --out runs/claims --jobs 2            # the CPU matrix (~80 min on 2 cores)
    python3 bench/claims.py --quick --out /tmp/claims             # the whole pipeline in about a minute
    python3 bench/claims.py --out runs/claims --report-only       # rebuild the report from what exists
    python3 bench/claims.py --scale paper --out runs/claims-paper --sweep-only   # write the sweep file only
    bash slurm/schedule.sh --array=1-48 --nodes=32 -- python3 launch.py --array runs/claims-paper/sweep.yaml
    python3 bench/claims.py --out runs/claims-outer --scale outer --learners VSML-quickstart MetaRNN-lr0.025 \
        --outer-loops es metagrad --hand-designed      # ES against meta-gradients (~50 min on 2 cores)

Kirsch & Schmidhuber (2021), Sections 4.2 and 4.4, Figures 6 and 8, make three
claims this script measures:

1. VSML meta-trained on one dataset keeps learning on datasets it never saw,
   where a Meta RNN and fast-weight memory overfit their meta-training set;
2. meta-training on augmented tasks (random projections) widens that;
3. the learned algorithm learns by fast association: accuracy on a class rises
   after its first few labelled examples, unlike SGD.

The matrix: every learner of :data:`LEARNERS` (the same ES settings and budget:
generations x pairs x episode length) meta-trained on every set of
:data:`TRAIN_SETS`, ``--seeds`` seeds each. Every cell is one ``launch.py``
process writing a normal run directory ``OUT/runs/<cell>/train``; the same
tasks are written to ``OUT/sweep.yaml`` (``launch.py --array`` /
``slurm/schedule.sh --array``; each task's ``logging.dir`` is its cell folder, so
a cluster's runs land where ``--report-only`` finds them). Then every result is
meta-tested on every set of :data:`META_TEST_SETS` (one process per learner,
all its cells), as are the hand-designed references (online SGD and Adam over a
small learning-rate grid, the best rate per meta-test set reported; no
meta-training) on the same episodes. Every dataset is presented at one common
size so that the fixed-size learners fit all of them: 14x14x1 inputs (bilinear
resize; 8x8 ``digits`` are enlarged) and 10 output units (``pad.output``).

The outer loop is an axis too (``--outer-loops es metagrad``; :mod:`bench.claims_outer`): a
learner ``NAME+metagrad`` is ``NAME`` meta-trained by meta-gradients (``configs/backprop.yaml``) on
ES's budget, meta-tested at equal episodes and at equal wall-clock, and the report sets the two
outer loops side by side.

Finished cells are skipped, a stopped cell resumes from its checkpoint
(``launch.py --resume``), and a cell's meta-test results (``metatest.json`` in
its folder) are kept, so a crash or a stop loses at most the generations since
a cell's last checkpoint. The report (``OUT/report.md``, ``OUT/*.png``) is
built from whatever run directories exist.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import claims_outer  # noqa: E402

# ----------------------------------------------------------------------------- the matrix

# Every run and every meta-test: one presentation size for every dataset, and the ES
# settings that leave the ln C plateau on a CPU budget (bench/RESULTS.md, "Leaving the ln C plateau").
COMMON = {
    "data.preprocess.resize": [14, 14],
    "data.preprocess.pad.output": 10,
    "optimizer.type": "es",
    "optimizer.lr": 0.1,
    "optimizer.noise_std": 0.1,
    "optimizer.fitness_shaping": "centered_rank",
    "training.batch_size": 1,
    "training.loss_type": "mean",
    "evaluation.subset": "test",
    "logging.wandb": "disabled",
}

# The meta-learned learners: the paper's VSML (sub-LSTM 16, messages 8, 2 micro ticks, label fed back)
# and the baselines of its Figure 8 at the original release's sizes (configs/default.yaml).
LEARNERS = {
    "VSML": {
        "model.type": "VSMLRNN",
        "model.sub_rnn.slow_size": 16,
        "model.sub_rnn.msg_size": 8,
        "model.vsml_rnn.num_micro_ticks": 2,
        "model.vsml_rnn.feed_label": True,
    },
    "MetaRNN": {"model.type": "MetaRNN"},
    "FWMemory": {"model.type": "FWMemory"},
    "HebbianFW": {"model.type": "HebbianFW", "model.hebbian_fw.use_oja": True},
    # Not in the default matrix: MetaRNN with the paper's smaller ES step, to tell whether the
    # shared step (tuned for VSML's 2,384 meta-parameters) is what holds MetaRNN's 177,930 back.
    "MetaRNN-lr0.025": {"model.type": "MetaRNN", "optimizer.lr": 0.025, "optimizer.noise_std": 0.05},
    # Not in the default matrix: the quick start's VSML (configs/quickstart.yaml: LSTM 4, messages 2,
    # 1 micro tick, 164 meta-parameters), the learner of the ES-against-meta-gradients comparison.
    "VSML-quickstart": {
        "model.type": "VSMLRNN",
        "model.sub_rnn.slow_size": 4,
        "model.sub_rnn.msg_size": 2,
        "model.vsml_rnn.num_micro_ticks": 1,
        "model.vsml_rnn.feed_label": True,
    },
}
DEFAULT_LEARNERS = ["VSML", "MetaRNN", "FWMemory", "HebbianFW"]

# Meta-training sets. 'mnist14-proj' is the augmented variant: MNIST behind one fixed random
# projection (one process is one rank, so one matrix; the paper's runs drew one per rank).
TRAIN_SETS = {
    "digits": {"training.dataset": "digits"},
    "mnist14": {"training.dataset": "mnist_offline"},
    "mnist14-proj": {"training.dataset": "mnist_offline", "data.preprocess.rand_proj": 7},
    "random": {"training.dataset": "random"},
}
# Per scale: what a 2-core CPU affords in ~80 minutes with 2 streams (bench/RESULTS.md,
# "The paper's claims, measured"), and the full set at paper scale.
DEFAULT_TRAIN_SETS = {
    "cpu": ["mnist14", "mnist14-proj", "digits"],
    "paper": ["digits", "mnist14", "mnist14-proj", "random"],
    "quick": ["digits"],
    "outer": ["digits"],
}

NPZ_FILE = "data/mnist_inverted.npz"  # under OUT: MNIST test digits with inverted pixels, 10 classes
FEW_CLASSES = [0, 1, 2, 3, 4]

# Meta-test sets: (dataset, data overrides). The test split of each (a fresh pool for 'random').
META_TEST_SETS = {
    "digits": ("digits", {}),
    "mnist14": ("mnist_offline", {}),
    "mnist14-proj": ("mnist_offline", {"data.preprocess.rand_proj": 7}),
    "random": ("random", {}),
    "mnist14-shuffled": ("mnist_offline", {"data.preprocess.shuffle": 101}),
    "mnist14-newproj": ("mnist_offline", {"data.preprocess.rand_proj": 102}),
    "mnist14-5cls": ("mnist_offline", {"data.filter_classes": FEW_CLASSES}),
    "npz-inverted": ("npz:" + NPZ_FILE, {}),
}
# A learner that runs on any class count (VSML) sees the 5-class set with 5 output units;
# the fixed-size learners keep their 10 (five never occur as labels).
ANY_SIZE_LEARNERS = {"VSML"}

# Hand-designed references, evaluated without meta-training: (model.sgd.optimizer, learning rates).
HAND_DESIGNED = {"SGD": ("sgd", [0.03, 0.1, 0.3, 1.0]), "Adam": ("adam", [0.001, 0.003, 0.01, 0.03])}

# Budgets. 'cpu' is what a 2-core machine affords in ~80 minutes with two cells at once
# (bench/RESULTS.md, "The paper's claims, measured"); 'paper' is the original's
# (configs/default.yaml: 10,001 generations of 1,024 pairs x 500 steps).
SCALES = {
    "cpu": {"generations": 300, "pairs": 16, "episode_length": 100, "test_length": 100, "test_episodes": 32},
    "paper": {"generations": 10000, "pairs": 1024, "episode_length": 500, "test_length": 2000, "test_episodes": 32},
    "quick": {"generations": 4, "pairs": 2, "episode_length": 8, "test_length": 12, "test_episodes": 3},
    # ES against meta-gradients (--outer-loops es metagrad) on a 2-core CPU: the quick start's episodes
    # (bench/RESULTS.md, "ES against meta-gradients at an equal budget").
    "outer": {"generations": 200, "pairs": 16, "episode_length": 50, "test_length": 100, "test_episodes": 32},
}
# --quick also shrinks the learners (only to check the pipeline end to end).
QUICK_MODEL = {
    "VSML": {"model.sub_rnn.slow_size": 4, "model.sub_rnn.msg_size": 2, "model.vsml_rnn.num_micro_ticks": 1},
    "MetaRNN": {"model.meta_rnn.slow_size": 8},
    "FWMemory": {"model.fw_memory.slow_size": 8, "model.fw_memory.memory_size": 4},
    "HebbianFW": {},
    "MetaRNN-lr0.025": {"model.meta_rnn.slow_size": 8},
    "VSML-quickstart": {},
}
FIRST_STEPS = 10  # "before it has seen much": accuracy over an episode's first steps
CHECKPOINT_EVERY = 50  # generations: what a crash can cost a cell at most


def cell_name(learner: str, train_set: str, seed: int) -> str:
    return f"{learner}--{train_set}--seed{seed}"


def parse_cell(name: str) -> tuple[str, str, int]:
    learner, train_set, seed = name.split("--")
    return learner, train_set, int(seed.removeprefix("seed"))


def scale_of(args) -> dict:
    scale = dict(SCALES["quick" if args.quick else args.scale])
    if args.generations is not None:
        scale["generations"] = args.generations
    return scale


def common_overrides(args) -> dict:
    """What every run of the matrix shares (budget, ES, presentation, a shared compilation cache)."""
    scale = scale_of(args)
    return {
        **COMMON,
        "training.population_size": scale["pairs"],
        "training.episode_length": scale["episode_length"],
        "training.iterations": scale["generations"] + 1,  # generations 0..G: theta_G is evaluated too
        "evaluation.episode_length": scale["test_length"],
        "evaluation.count": scale["test_episodes"],
        "evaluation.frequency": scale["generations"],  # (no datasets: the meta-test below does it, on every set)
        "summary.frequency": 10 if scale["generations"] % 10 == 0 else 1,
        "checkpoint.frequency": min(CHECKPOINT_EVERY, scale["generations"]),
        "runtime.compilation_cache": str(Path(args.out).resolve() / "jax-cache"),
    }


def cell_overrides(args, learner: str, train_set: str, seed: int) -> dict:
    """One cell's overrides on top of :func:`common_overrides` (a ``+metagrad`` learner: its outer loop)."""
    base = claims_outer.base_learner(learner)
    outer = claims_outer.outer_loop(learner)
    return {
        **LEARNERS[base],
        **(QUICK_MODEL[base] if args.quick else {}),
        **(claims_outer.cell_overrides(scale_of(args), args.metagrad_margin) if outer == "metagrad" else {}),
        **TRAIN_SETS[train_set],
        "evaluation.datasets": [],
        "seed": seed,
        "logging.dir": str(Path(args.out).resolve() / "runs" / cell_name(learner, train_set, seed)),
    }


def cell_iterations(args, learner: str) -> int:
    """Generations (ES: 0..G) or meta-gradient steps a finished cell of ``learner`` has run."""
    if claims_outer.outer_loop(learner) == "metagrad":
        return claims_outer.metagrad_steps(scale_of(args), args.metagrad_margin)[1]
    return scale_of(args)["generations"] + 1


def cells(args) -> list[tuple[str, str, int]]:
    # Seed-major order: a matrix stopped early still has every learner on every set for its first seeds.
    return [(lr, ts, s) for s in args.seeds for lr in args.learners for ts in args.train_sets]


def write_sweep(args) -> Path:
    """``OUT/sweep.yaml``: task N meta-trains cell N of :func:`cells` (``launch.py --array``)."""
    out = Path(args.out)
    matrix = cells(args)
    lines = [
        f"# bench/claims.py --scale {'quick' if args.quick else args.scale}: {len(matrix)} tasks, one cell each",
        "# (learner--training set--seed, in this order):",
        *[f"#   {n:3d} {cell_name(*c)}" for n, c in enumerate(matrix, start=1)],
        "# Run them on a cluster, then meta-test and report from this folder:",
        f"#   bash slurm/schedule.sh --array=1-{len(matrix)} --nodes=32 -- python3 launch.py --array {out / 'sweep.yaml'}",
        f"#   python3 bench/claims.py --out {out} --report-only --meta-test"
        + (" --scale " + args.scale if not args.quick else " --quick"),
    ]
    doc = {
        "base": common_overrides(args),
        "array": [cell_overrides(args, *c) for c in matrix],
    }
    path = out / "sweep.yaml"
    path.write_text("\n".join(lines) + "\n" + yaml.safe_dump(doc, sort_keys=False, width=120))
    return path


# ----------------------------------------------------------------------------- running cells


def run_dir_of(args, cell: tuple[str, str, int]) -> Path | None:
    """The cell's run directory: ``train`` (this script's) or the one a sweep task wrote under the cell folder."""
    folder = Path(args.out) / "runs" / cell_name(*cell)
    if (folder / "train" / "config.yaml").exists():
        return folder / "train"
    found = sorted(p.parent for p in folder.glob("*/config.yaml"))
    return found[-1] if found else None


def generations_done(run_dir: Path) -> int:
    """Generations a run directory has logged (its last metrics row's step + 1)."""
    from vsml.runlog import read_metrics  # noqa: PLC0415

    rows = [r for r in read_metrics(run_dir) if "step" in r] if (run_dir / "metrics.jsonl").exists() else []
    return int(rows[-1]["step"]) + 1 if rows else 0


def is_finished(run_dir: Path | None, iterations: int) -> bool:
    return run_dir is not None and (run_dir / "checkpoint.npz").exists() and generations_done(run_dir) >= iterations


def train_cell(args, sweep: Path, task: int, cell: tuple[str, str, int]) -> dict:
    """Meta-trains one cell in its own ``launch.py`` process: new, resumed, or skipped when finished."""
    iterations = cell_iterations(args, cell[0])
    existing = run_dir_of(args, cell)
    folder = Path(args.out) / "runs" / cell_name(*cell)
    if is_finished(existing, iterations):
        return {"cell": cell_name(*cell), "status": "finished before", "run_dir": str(existing)}
    if existing is not None and (existing / "checkpoint.npz").exists():
        command = [sys.executable, str(ROOT / "launch.py"), "--resume", str(existing)]
        run_dir, status = existing, "resumed"
    else:
        if existing is not None:  # stopped before its first checkpoint: nothing to keep
            shutil.rmtree(existing)
        run_dir, status = folder / "train", "trained"
        command = [sys.executable, str(ROOT / "launch.py"), "--array", str(sweep), "--task", str(task)]
        command += ["--run_dir", str(run_dir)]
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(folder / "train.log", "a") as log:
        proc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        status = f"failed (exit {proc.returncode}, see {folder / 'train.log'})"
    return {"cell": cell_name(*cell), "status": status, "run_dir": str(run_dir), "wall_s": time.perf_counter() - start}


def meta_test_process(args, group: str, cell: str | None = None) -> dict:
    """Meta-tests every finished cell of one learner (or one hand-designed rule; or one cell) in its own process."""
    command = [sys.executable, str(Path(__file__).resolve()), "--out", str(args.out), "--meta-test-group", group]
    command += ["--meta-test-cell", cell] if cell else []
    command += ["--seeds", *map(str, args.seeds), "--train-sets", *args.train_sets, "--learners", *args.learners]
    command += ["--quick"] if args.quick else ["--scale", args.scale]
    command += ["--metagrad-margin", str(args.metagrad_margin)]
    if args.generations is not None:
        command += ["--generations", str(args.generations)]
    log_path = Path(args.out) / (f"runs/{cell}/metatest.log" if cell else f"metatest-{group}.log")
    with open(log_path, "a") as log:
        proc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    return {"group": group, "returncode": proc.returncode, "log": str(log_path)}


# ----------------------------------------------------------------------------- meta-testing (in a worker process)


def make_npz(out: Path) -> Path:
    """``OUT/data/mnist_inverted.npz``: the MNIST test digits with inverted pixels (a user's ``npz:`` set)."""
    from vsml.data.offline_source import load_array_source  # noqa: PLC0415

    path = out / NPZ_FILE
    if not path.exists():
        images, labels, _ = load_array_source("mnist_offline", "test")
        inverted = np.round(255 * (1.0 - images[..., 0])).astype(np.uint8)  # [N, 28, 28]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, x=inverted, y=labels, x_test=inverted, y_test=labels)
        tmp.replace(path)
    return path


def test_config(args, learner: str, test_set: str, model: dict | None = None) -> dict:
    """The configuration a meta-test set is loaded with (and, for a hand-designed rule, its model)."""
    from vsml import api  # noqa: PLC0415

    dataset, data = META_TEST_SETS[test_set]
    overrides = {**common_overrides(args), **(model or {}), **data}
    if dataset.startswith("npz:"):
        dataset = "npz:" + str(Path(args.out).resolve() / dataset[len("npz:") :])
    if test_set == "mnist14-5cls" and learner.split("-")[0].removesuffix(claims_outer.METAGRAD) in ANY_SIZE_LEARNERS:
        overrides["data.preprocess.pad.output"] = None
    overrides["evaluation.datasets"] = [dataset]
    overrides["training.dataset"] = dataset
    return api.build_config(overrides=overrides)


def episode_runner(learner_obj, task, count: int, seed: int):
    """``run(params) -> (accuracy [E, T], labels [E, T])`` on the episodes ``call: evaluate`` uses.

    The keys are :func:`vsml.evaluation.make_evaluator`'s (evaluation.seed, rank 0, index), so
    every learner sees exactly the same episodes of a meta-test set.
    """
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from vsml.meta import objective  # noqa: PLC0415

    episode = objective.make_episode(learner_obj.run, task.sampler())
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 0), i))(jnp.arange(count))

    @jax.jit
    def run(params, arrays):
        def one(key):
            logits, labels = episode(params, key, arrays)  # [T, 1, C]
            return objective.step_accuracies(logits, labels)[:, 0], jnp.argmax(labels, -1)[:, 0]

        return jax.vmap(one)(keys)

    return lambda params: tuple(np.asarray(a) for a in run(params, task.arrays))


def seen_before(labels: np.ndarray) -> np.ndarray:
    """``labels [E, T]`` -> ``[E, T]``: how many earlier steps of the episode had the same label."""
    counts = np.zeros_like(labels)
    for e, row in enumerate(labels):
        tally: dict[int, int] = {}
        for t, label in enumerate(row):
            counts[e, t] = tally.get(int(label), 0)
            tally[int(label)] = counts[e, t] + 1
    return counts


def summarise_episodes(accuracy: np.ndarray, labels: np.ndarray, classes: int) -> dict:
    """Per-episode figures, the mean learning curve and the introspection curve of ``[E, T]`` arrays.

    ``classes``: how many classes the set's labels come from (chance is 1 / classes).
    """
    length = accuracy.shape[1]
    seen = seen_before(labels)
    by_seen = [accuracy[seen == k] for k in range(int(seen.max()) + 1)]
    return {
        "episode_mean": accuracy.mean(axis=1).tolist(),
        "last_quarter": accuracy[:, length - max(1, length // 4) :].mean(axis=1).tolist(),
        "curve": accuracy.mean(axis=0).tolist(),
        "by_seen": [float(a.mean()) for a in by_seen],
        "by_seen_count": [len(a) for a in by_seen],
        "classes": classes,
    }


def count_params(params) -> int:
    import jax  # noqa: PLC0415

    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def seconds_per_generation(run_dir: Path) -> float | None:
    """Wall seconds per generation between the first and last metrics rows (compilation excluded)."""
    from vsml.runlog import read_metrics  # noqa: PLC0415

    rows = [r for r in read_metrics(run_dir) if "time" in r and "step" in r]
    if len(rows) < 2 or rows[-1]["step"] == rows[0]["step"]:
        return None
    return (rows[-1]["time"] - rows[0]["time"]) / (rows[-1]["step"] - rows[0]["step"])


def meta_loss_trend(run_dir: Path, window: int = 10) -> dict:
    """Mean meta-loss of the first and of the last ``window`` logged generations (did it leave ln C?)."""
    from vsml.runlog import read_metrics  # noqa: PLC0415

    losses = [float(r["meta_loss"]) for r in read_metrics(run_dir) if "meta_loss" in r]
    return {"first": float(np.mean(losses[:window])), "last": float(np.mean(losses[-window:]))}


def write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)  # a reader never sees half a file; a stop never leaves one


def meta_test_group(args, group: str, only_cell: str | None = None) -> int:
    """Worker: meta-tests every finished cell of ``group`` lacking ``metatest.json`` (one compile per set).

    The programs go through the matrix's persistent compilation cache, so the cells of one
    learner after the first load them instead of compiling again.
    """
    import jax  # noqa: PLC0415

    from vsml import api, evaluation, run_platform  # noqa: PLC0415
    from vsml.config import resolve_for_rank  # noqa: PLC0415
    from vsml.learners import build_learner  # noqa: PLC0415
    from vsml.settings import run_settings  # noqa: PLC0415

    out = Path(args.out)
    run_platform.setup(common_overrides(args)["runtime.compilation_cache"])
    make_npz(out)
    scale = scale_of(args)
    length, count = scale["test_length"], scale["test_episodes"]

    def task_of(settings):
        return evaluation.load_task(settings.training.dataset, "test", settings.data_settings, length, 1)

    if group in HAND_DESIGNED:
        optimizer, rates = HAND_DESIGNED[group]
        for lr in rates[1:3] if args.quick else rates:  # --quick: two rates of the grid
            folders = {seed: out / "hand" / f"{group}--lr{lr:g}--seed{seed}" for seed in args.seeds}
            todo = [seed for seed, folder in folders.items() if not (folder / "metatest.json").exists()]
            if not todo:
                continue
            model = {"model.type": "SGD", "model.sgd.optimizer": optimizer, "model.sgd.lr": lr}
            results: dict = {seed: {} for seed in todo}
            for test_set in META_TEST_SETS:  # one compiled program per set, every seed's initial weights through it
                settings = run_settings(resolve_for_rank(test_config(args, group, test_set, model), 0))
                task = task_of(settings)
                learner = build_learner(settings.model, task.spec.input_shape, task.spec.num_classes)
                runner = episode_runner(learner, task, count, settings.evaluation.seed)
                for seed in todo:
                    accuracy, labels = runner(learner.init(jax.random.PRNGKey(seed)))
                    results[seed][test_set] = summarise_episodes(accuracy, labels, task.spec.data_classes)
            for seed in todo:
                folders[seed].mkdir(parents=True, exist_ok=True)
                write_json(
                    folders[seed] / "metatest.json",
                    {"learner": group, "lr": lr, "seed": seed, "meta_params": 0, "results": results[seed]},
                )
                print(f"meta-tested {folders[seed].name}", flush=True)
        return 0

    iterations = cell_iterations(args, group)
    runners: dict = {}  # test set -> compiled runner, shared by every cell of this learner

    def meta_test(checkpoint: Path, file: Path, extra: dict) -> None:
        algorithm = api.load(checkpoint)
        results = {}
        for test_set in META_TEST_SETS:
            if test_set not in runners:
                settings = run_settings(resolve_for_rank(test_config(args, group, test_set), 0))
                task = task_of(settings)
                runner = episode_runner(algorithm.learner, task, count, settings.evaluation.seed)
                runners[test_set] = (runner, task.spec.data_classes)
            runner, classes = runners[test_set]
            accuracy, labels = runner(algorithm.params)
            results[test_set] = summarise_episodes(accuracy, labels, classes)
        write_json(
            file,
            {
                "learner": group,
                "train_set": cell[1],
                "seed": cell[2],
                "run_dir": str(run_dir),
                "checkpoint": str(checkpoint),
                "generation": algorithm.step,
                "meta_params": count_params(algorithm.params),
                "seconds_per_generation": seconds_per_generation(run_dir),
                "meta_loss": meta_loss_trend(run_dir),
                "results": results,
                **extra,
            },
        )
        print(f"meta-tested {file.parent.name}/{file.name}", flush=True)

    for cell in [c for c in cells(args) if c[0] == group and only_cell in (None, cell_name(*c))]:
        run_dir = run_dir_of(args, cell)
        folder = out / "runs" / cell_name(*cell)
        if not is_finished(run_dir, iterations):
            continue
        if claims_outer.outer_loop(group) == "es":
            if not (folder / "metatest.json").exists():
                meta_test(run_dir / "checkpoint.npz", folder / "metatest.json", {})
            continue
        # Meta-gradients: at the ES cell's episodes, and at its wall time (once the ES cell has finished).
        equal_episodes, _ = claims_outer.metagrad_steps(scale, args.metagrad_margin)
        if not (folder / "metatest.json").exists():
            checkpoint = claims_outer.step_checkpoint(run_dir, equal_episodes) or run_dir / "checkpoint.npz"
            meta_test(checkpoint, folder / "metatest.json", {"view": "equal episodes"})
        es_cell = (claims_outer.base_learner(group), cell[1], cell[2])
        es_run_dir = run_dir_of(args, es_cell)
        if (folder / claims_outer.EQUAL_TIME_FILE).exists() or not is_finished(
            es_run_dir, cell_iterations(args, es_cell[0])
        ):
            continue
        chosen = claims_outer.equal_time_checkpoint(es_run_dir, run_dir)
        if chosen is not None:
            meta_test(
                Path(chosen["checkpoint"]),
                folder / claims_outer.EQUAL_TIME_FILE,
                {"view": "equal wall-clock", **chosen},
            )
    return 0


# ----------------------------------------------------------------------------- the report


def load_results(args, file_name: str = "metatest.json") -> tuple[list[dict], list[dict]]:
    """Every ``file_name`` there is: (meta-learned cells of the matrix, hand-designed cells)."""
    out = Path(args.out)
    wanted = {cell_name(*c) for c in cells(args)}
    learned = [json.loads(p.read_text()) for p in sorted(out.glob(f"runs/*/{file_name}")) if p.parent.name in wanted]
    hand = [json.loads(p.read_text()) for p in sorted(out.glob("hand/*/metatest.json"))]
    hand = [h for h in hand if h["seed"] in args.seeds and h["learner"] in args.hand_designed]
    return learned, hand


def spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)), "n": len(values)}


def table_rows(args, learned: list[dict], hand: list[dict]) -> list[dict]:
    """One row per learner x training set (and per hand-designed rule, its best rate per column)."""
    rows = []
    for learner in args.learners:
        for train_set in args.train_sets:
            members = [r for r in learned if r["learner"] == learner and r["train_set"] == train_set]
            if not members:
                continue
            row = {"learner": learner, "train_set": train_set, "seeds": sorted(r["seed"] for r in members)}
            row["meta_params"] = members[0]["meta_params"]
            speeds = [r["seconds_per_generation"] for r in members if r["seconds_per_generation"]]
            row["meta_loss_first"] = spread([r["meta_loss"]["first"] for r in members])
            row["meta_loss_last"] = spread([r["meta_loss"]["last"] for r in members])
            row["seconds_per_generation"] = spread(speeds) if speeds else None
            row["cells"] = [
                {"seed": r["seed"], "run_dir": r["run_dir"], "checkpoint": r["checkpoint"]}
                for r in sorted(members, key=lambda r: r["seed"])
            ]
            row["results"] = {t: column(members, t) for t in META_TEST_SETS}
            row["unseen"] = unseen_summary(members, [t for t in META_TEST_SETS if t != train_set])
            rows.append(row)
    for rule in HAND_DESIGNED:
        members = [h for h in hand if h["learner"] == rule]
        if not members:
            continue
        row = {"learner": rule, "train_set": "none", "meta_params": 0, "seconds_per_generation": None, "results": {}}
        row["seeds"] = sorted({h["seed"] for h in members})
        row["best_lr"] = {}
        for test_set in META_TEST_SETS:
            by_lr = {}
            for h in members:
                by_lr.setdefault(h["lr"], []).append(h)
            best = max(
                by_lr, key=lambda lr: np.median([np.mean(h["results"][test_set]["episode_mean"]) for h in by_lr[lr]])
            )
            row["best_lr"][test_set] = best
            row["results"][test_set] = column(by_lr[best], test_set)
        rows.append(row)
    return rows


def column(members: list[dict], test_set: str) -> dict:
    """Median and min-max over seeds of one meta-test set's figures (each seed: mean over its episodes)."""
    results = [m["results"][test_set] for m in members]
    return {
        "episode_mean": spread([float(np.mean(r["episode_mean"])) for r in results]),
        "first_steps": spread([float(np.mean(r["curve"][:FIRST_STEPS])) for r in results]),
        "last_quarter": spread([float(np.mean(r["last_quarter"])) for r in results]),
        "curve": np.median([r["curve"] for r in results], axis=0).tolist(),
        "by_seen": median_ragged([r["by_seen"] for r in results]),
        "by_seen_count": results[0]["by_seen_count"],
        "chance": 1.0 / results[0]["classes"],
    }


def unseen_summary(members: list[dict], test_sets: list[str]) -> dict:
    """Per seed, the mean over ``test_sets`` of its accuracy there; median and min-max over seeds."""
    return {
        key: spread([float(np.mean([np.mean(m["results"][t][key]) for t in test_sets])) for m in members])
        for key in ("episode_mean", "last_quarter")
    }


def median_ragged(lists: list[list[float]]) -> list[float]:
    length = min(len(x) for x in lists)
    return np.median([x[:length] for x in lists], axis=0).tolist()


def pct(s: dict) -> str:
    return f"{100 * s['median']:.1f} [{100 * s['min']:.0f}–{100 * s['max']:.0f}]"


def describe_machine() -> str:
    import jax  # noqa: PLC0415

    from vsml.runtime import cpu_model  # noqa: PLC0415

    return (
        f"{cpu_model()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
        f"jax {jax.__version__}, Python {platform.python_version()}"
    )


def report_markdown(args, rows: list[dict], status: dict) -> str:
    scale = scale_of(args)
    tests = list(META_TEST_SETS)
    lines = [
        f"Budget per meta-trained cell (every learner alike): {scale['generations']} ES generations x "
        f"{scale['pairs']} antithetic pairs x {scale['episode_length']}-step episodes "
        f"(scale '{'quick' if args.quick else args.scale}'); ES: centered-rank fitness, lr "
        f"{COMMON['optimizer.lr']}, noise_std {COMMON['optimizer.noise_std']}. Meta-test: "
        f"{scale['test_episodes']} episodes of {scale['test_length']} steps per set, the same episodes for every "
        "learner; every set at 14x14x1, 10 output units.",
        f"Machine: {describe_machine()}.",
        f"Cells: {status['finished']} of {status['planned']} meta-trained cells meta-tested"
        + (f"; matrix wall time {status['wall_s'] / 60:.1f} min" if status.get("wall_s") else "")
        + ".",
        "",
        "Accuracy in %: median [min–max] over seeds of each seed's mean over its meta-test episodes. "
        "SGD / Adam: online, batch 1, a fresh network per episode, the best learning rate of the grid per "
        "column (chosen on that column itself, so an upper bound). ★: the held-out split of the row's own "
        "meta-training set.",
    ]
    for key, title in (("episode_mean", "Episode-mean accuracy"), ("last_quarter", "Last-quarter accuracy")):
        lines += ["", f"**{title}**", ""]
        lines.append("| learner | meta-trained on | " + " | ".join(tests) + " |")
        lines.append("|---|---|" + "---|" * len(tests))
        for row in rows:
            cells_text = [pct(row["results"][t][key]) + (" ★" if t == row["train_set"] else "") for t in tests]
            lines.append(f"| {row['learner']} | {row['train_set']} | " + " | ".join(cells_text) + " |")
        chance = [f"{100 * rows[0]['results'][t]['chance']:.1f}" for t in tests] if rows else []
        lines.append("| chance | – | " + " | ".join(chance) + " |")
    lines += [
        "",
        "**Own set against unseen sets** (episode-mean / last-quarter accuracy in %; unseen: the mean over "
        "every meta-test set but the row's own, per seed, then median [min–max] over seeds)",
        "",
        "| learner | meta-trained on | own (held out), episode mean | unseen, episode mean | own, last quarter "
        f"| unseen, last quarter | own, first {FIRST_STEPS} steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "unseen" not in row:
            continue
        own = row["results"][row["train_set"]]
        lines.append(
            f"| {row['learner']} | {row['train_set']} | {pct(own['episode_mean'])} | "
            f"{pct(row['unseen']['episode_mean'])} | {pct(own['last_quarter'])} | {pct(row['unseen']['last_quarter'])} "
            f"| {pct(own['first_steps'])} |"
        )
    seen_ks = [0, 1, 2, 3, 5, 10]
    shown = [t for t in ("mnist14", "digits", "mnist14-newproj") if t in tests]
    lines += [
        "",
        "**Accuracy against labelled examples of the class seen before** (in %, median over seeds; the "
        "introspection figure): every step of every meta-test episode grouped by how many earlier steps of "
        "that episode carried its label",
        "",
        "| learner | meta-trained on | meta-test set | " + " | ".join(f"k = {k}" for k in seen_ks) + " |",
        "|---|---|---|" + "---|" * len(seen_ks),
    ]
    for row in rows:
        for t in shown:
            by_seen = row["results"][t]["by_seen"]
            values = [f"{100 * by_seen[k]:.1f}" if k < len(by_seen) else "–" for k in seen_ks]
            lines.append(f"| {row['learner']} | {row['train_set']} | {t} | " + " | ".join(values) + " |")
    lines += [
        "",
        "**Learners** (meta-loss: mean of the first / last 10 rows of metrics.jsonl, one every 10th generation; "
        "median [min–max] over seeds; "
        "ln 10 = 2.303 is the plateau of a learner that has not started to learn)",
        "",
        "| learner | meta-trained on | seeds | meta-parameters | s / generation | meta-loss first | meta-loss last |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for row in rows:
        speed = row["seconds_per_generation"]
        speed_text = (
            f"{speed['median']:.2f} [{speed['min']:.2f}–{speed['max']:.2f}]" if speed else "– (no meta-training)"
        )
        params = f"{row['meta_params']:,}" if row["meta_params"] else "0 (hand-designed)"
        seeds = ", ".join(map(str, row["seeds"]))
        losses = [
            f"{row[k]['median']:.3f} [{row[k]['min']:.3f}–{row[k]['max']:.3f}]" if k in row else "–"
            for k in ("meta_loss_first", "meta_loss_last")
        ]
        lines.append(
            f"| {row['learner']} | {row['train_set']} | {seeds} | {params} | {speed_text} | "
            + " | ".join(losses)
            + " |"
        )
    hand_rows = [r for r in rows if "best_lr" in r]
    if hand_rows:
        lines += [
            "",
            "Best learning rate per meta-test set: "
            + "; ".join(f"{r['learner']}: " + ", ".join(f"{t} {r['best_lr'][t]:g}" for t in tests) for r in hand_rows)
            + ".",
        ]
    lines += ["", "**Run directories** (checkpoint.npz in each)", ""]
    for row in rows:
        for c in row.get("cells", []):
            lines.append(f"- {row['learner']} / {row['train_set']} / seed {c['seed']}: `{c['run_dir']}`")
    return "\n".join(lines) + "\n"


def finish_panel(ax, rows: list[dict], test_set: str, xlabel: str) -> None:
    """A figure panel's chance line (that of its meta-test set), title and x label."""
    if rows:
        ax.axhline(rows[0]["results"][test_set]["chance"], color="gray", linewidth=0.8, label="chance")
    ax.set_title(test_set)
    ax.set_xlabel(xlabel)


def plot_figures(args, rows: list[dict]) -> list[Path]:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out = Path(args.out)
    tests = list(META_TEST_SETS)
    paths = []

    # Figure 8-like: median episode-mean accuracy, rows learner x training set, columns meta-test sets.
    values = np.array([[row["results"][t]["episode_mean"]["median"] for t in tests] for row in rows])
    fig, ax = plt.subplots(figsize=(1.1 * len(tests) + 3, 0.45 * len(rows) + 2))
    image = ax.imshow(100 * values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i, row in enumerate(rows):
        for j, t in enumerate(tests):
            ax.text(
                j, i, f"{100 * values[i, j]:.0f}", ha="center", va="center", color="w" if values[i, j] < 0.6 else "k"
            )
            if t == row["train_set"]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(len(tests)), tests, rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), [f"{r['learner']} ← {r['train_set']}" for r in rows])
    ax.set_xlabel("meta-test set")
    ax.set_title("Median episode-mean accuracy (%) over seeds; red: own meta-training set (held out)")
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    paths.append(out / "heatmap.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # Learning curves per meta-test set: colour = learner, line style = meta-training set.
    colors = dict(zip([*args.learners, *HAND_DESIGNED], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    styles = dict(zip([*args.train_sets, "none"], ["-", "--", ":", "-.", (0, (1, 3))]))
    ncols = 4
    nrows = math.ceil(len(tests) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False, sharey=True)
    window = max(1, scale_of(args)["test_length"] // 20)
    for ax, t in zip(axes.flat, tests):
        for row in rows:
            curve = np.convolve(row["results"][t]["curve"], np.ones(window) / window, mode="valid")
            ax.plot(
                curve,
                color=colors[row["learner"]],
                linestyle=styles[row["train_set"]],
                label=f"{row['learner']} ← {row['train_set']}",
            )
        finish_panel(ax, rows, t, "step in episode")
    for ax in axes.flat[len(tests) :]:
        ax.axis("off")
    axes[0, 0].set_ylabel("accuracy")
    fig.suptitle(f"Online accuracy per step (median over seeds of the episode mean, {window}-step running mean)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize="small")
    fig.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(labels) / 5), 1, 1))
    paths.append(out / "learning_curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # Introspection: accuracy on an example vs labelled examples of its class seen before it, same episodes.
    shown = [t for t in ("mnist14", "digits", "mnist14-newproj") if t in tests]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 3.5), squeeze=False, sharey=True)
    for ax, t in zip(axes[0], shown):
        for row in rows:
            if not row["learner"].startswith("VSML") and row["learner"] not in HAND_DESIGNED:
                continue
            ys = row["results"][t]["by_seen"]
            counts = row["results"][t]["by_seen_count"]
            keep = [k for k in range(len(ys)) if counts[k] >= 20]  # enough steps for a mean
            ax.plot(
                keep,
                [ys[k] for k in keep],
                marker="o",
                color=colors[row["learner"]],
                linestyle=styles[row["train_set"]],
                label=f"{row['learner']} ← {row['train_set']}",
            )
        finish_panel(ax, rows, t, "labelled examples of this class seen before")
    axes[0, 0].set_ylabel("accuracy (median over seeds)")
    axes[0, -1].legend(fontsize="small")
    fig.tight_layout()
    paths.append(out / "introspection.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def build_report(args, status: dict) -> tuple[Path, list[Path]]:
    learned, hand = load_results(args)
    rows = table_rows(args, learned, hand)
    status = {**status, "finished": len(learned), "planned": len(cells(args))}
    text = report_markdown(args, rows, status)
    out = Path(args.out)
    figures = plot_figures(args, rows) if rows else []
    report = {"rows": rows, "status": status}
    if any(claims_outer.outer_loop(r["learner"]) == "metagrad" for r in rows):
        equal_time = load_results(args, claims_outer.EQUAL_TIME_FILE)[0]
        es = [r for r in learned if claims_outer.outer_loop(r["learner"]) == "es"]
        compared = claims_outer.comparison(es, [r for r in learned if r not in es], equal_time, scale_of(args))
        text += claims_outer.comparison_markdown(compared, pct)
        report["outer_loops"] = compared
        runs = [(*c, run_dir_of(args, c)) for c in cells(args)]
        figures.append(claims_outer.plot_meta_loss_against_time(out, runs))
    (out / "report.md").write_text(text)
    write_json(out / "report.json", report)
    return out / "report.md", figures


# ----------------------------------------------------------------------------- entry


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output folder: runs/, hand/, sweep.yaml, report.md, *.png")
    parser.add_argument("--scale", choices=["cpu", "paper", "outer"], default="cpu", help="budget (default cpu)")
    parser.add_argument("--quick", action="store_true", help="tiny models and budget: checks the pipeline")
    parser.add_argument("--generations", type=int, default=None, help="override the scale's ES generations")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 3 (--quick: 0 1)")
    names = claims_outer.with_outer_loops(list(LEARNERS), list(claims_outer.OUTER_LOOPS))
    parser.add_argument("--learners", nargs="+", choices=names, default=list(DEFAULT_LEARNERS))
    parser.add_argument(
        "--outer-loops",
        nargs="+",
        choices=claims_outer.OUTER_LOOPS,
        default=["es"],
        help="meta-train every learner with each (metagrad: configs/backprop.yaml, at ES's budget; "
        "a learner named NAME+metagrad is one too)",
    )
    parser.add_argument(
        "--metagrad-margin",
        type=float,
        default=1.0,
        help="meta-gradient runs take this times ES's episodes, so an equal-wall-clock step beyond "
        "equal episodes can be reached (default 1)",
    )
    parser.add_argument("--train-sets", nargs="+", choices=list(TRAIN_SETS), default=None)
    parser.add_argument(
        "--hand-designed",
        nargs="*",
        choices=list(HAND_DESIGNED),
        default=list(HAND_DESIGNED),
        help="hand-designed references to meta-test (default all; none: no references)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="processes at once (default 1)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: meta-test nothing unless --meta-test; report from the run directories there are",
    )
    parser.add_argument("--meta-test", action="store_true", help="with --report-only: meta-test finished cells first")
    parser.add_argument("--sweep-only", action="store_true", help="write OUT/sweep.yaml and stop")
    parser.add_argument("--meta-test-group", default=None, help=argparse.SUPPRESS)  # the worker process
    parser.add_argument("--meta-test-cell", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0, 1] if args.quick else [0, 1, 2, 3]
    if args.train_sets is None:
        args.train_sets = list(DEFAULT_TRAIN_SETS["quick" if args.quick else args.scale])
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if args.metagrad_margin < 1:
        parser.error("--metagrad-margin must be >= 1 (meta-gradient runs reach at least ES's episodes)")
    args.learners = claims_outer.with_outer_loops(args.learners, args.outer_loops)
    if args.generations is not None and args.generations < 1:
        parser.error("--generations must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.meta_test_group:
        return meta_test_group(args, args.meta_test_group, args.meta_test_cell)
    # Only a run that trains (or --sweep-only) writes the sweep file: a report over fewer seeds
    # must never shrink the task list a running matrix reads.
    sweep = write_sweep(args) if args.sweep_only or not args.report_only else None
    if args.sweep_only:
        print(f"wrote {sweep}")
        return 0
    start = time.perf_counter()
    status = {}
    if not args.report_only or args.meta_test:
        make_npz(out)
        matrix = cells(args)

        def train_and_test(task: int) -> str:
            """One cell, start to end: meta-trained, then meta-tested at once (a stop keeps what is done)."""
            cell = matrix[task - 1]
            result = train_cell(args, sweep, task, cell)
            tested = meta_test_process(args, cell[0], cell_name(*cell))
            ok = "meta-tested" if tested["returncode"] == 0 else f"meta-test failed, see {tested['log']}"
            return f"{result['cell']}: {result['status']}, {ok} ({result['run_dir']})"

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            # The hand-designed references first (minutes), then every cell.
            for result in pool.map(lambda g: meta_test_process(args, g), args.hand_designed):
                ok = "done" if result["returncode"] == 0 else f"failed (exit {result['returncode']})"
                print(f"meta-test {result['group']}: {ok}, log {result['log']}", flush=True)
            if not args.report_only and not args.quick:
                for line in pool.map(train_and_test, range(1, len(matrix) + 1)):
                    print(line, flush=True)
            if not args.report_only and args.quick:  # every cell first, then one meta-test process per learner
                for result in pool.map(lambda n: train_cell(args, sweep, n, matrix[n - 1]), range(1, len(matrix) + 1)):
                    print(f"{result['cell']}: {result['status']} ({result['run_dir']})", flush=True)
            # --meta-test / --quick: whatever finished cells lack meta-test results, one process per learner
            for result in pool.map(lambda g: meta_test_process(args, g), args.learners):
                ok = "done" if result["returncode"] == 0 else f"failed (exit {result['returncode']})"
                print(f"meta-test {result['group']}: {ok}, log {result['log']}", flush=True)
        status["wall_s"] = time.perf_counter() - start
        timing = out / "timing.json"
        previous = json.loads(timing.read_text()) if timing.exists() else {"sessions_s": []}
        previous["sessions_s"].append(status["wall_s"])
        write_json(timing, previous)
        status["wall_s"] = sum(previous["sessions_s"])
    elif (out / "timing.json").exists():
        status["wall_s"] = sum(json.loads((out / "timing.json").read_text())["sessions_s"])
    report, figures = build_report(args, status)
    print(report.read_text())
    print("figures: " + ", ".join(map(str, figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
