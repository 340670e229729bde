"""The claims matrix (``bench/claims.py``): its learners, sets, budgets, cells and their run directories.

What every run of the matrix shares (:data:`COMMON`), the meta-learned learners, the
meta-training and meta-test sets, the hand-designed references, the budgets per scale; a
cell's name, overrides and run directory, and the sweep file of every cell.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import claims_outer  # noqa: E402
from bench.online_baselines import LR_GRID  # noqa: E402

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
# Tabular meta-test sets (bench/online_baselines.py): written as npz:PATH files under OUT and
# streamed from their training split, as bench/tabular.py streams them (the inputs standardised per
# feature, the npz default for vectors). Vectors cannot be resized: only learners that run on any
# input size (VSML) and the hand-designed rules meta-test on them, each with the set's own class
# count; the report gives them their own block and average, so the image sets' columns and unseen
# average stay those of the matrix before they were added.
TABULAR_TEST_SETS = {
    name: (f"npz:data/{name}.npz", {"data.preprocess.resize": None, "data.preprocess.pad.output": None})
    for name in ("iris", "mixed_scales")
}
TABULAR_SUBSET = "train"
# Meta-testing a given algorithm (--algorithm) adds MNIST at its own 28x28 (issue 29's target set);
# not in the matrix, whose fixed-size learners take 14x14 inputs.
ALGORITHM_TEST_SETS = {"mnist28": ("mnist_offline", {"data.preprocess.resize": None})}
# The dataset whose meta-training makes a meta-test set "seen" (--algorithm's verdict counts the
# others as unseen). None: a new input distribution (a projection, a pixel permutation, inverted
# pixels, a generated table), unseen whatever the algorithm meta-trained on.
SEEN_AS = {
    "digits": "digits",
    "mnist14": "mnist_offline",
    "mnist14-proj": None,
    "random": "random",
    "mnist14-shuffled": None,
    "mnist14-newproj": None,
    "mnist14-5cls": "mnist_offline",
    "npz-inverted": None,
    "iris": "iris",
    "mixed_scales": None,
    "mnist28": "mnist_offline",
}

# Hand-designed references, evaluated without meta-training: (rule, learning rates). 'sgd' / 'adam':
# online SGD / Adam on configs/sgd.yaml's MLP (model.sgd.optimizer; a fresh network per episode and
# seed, 10 output units as the fixed-size learners); logistic regression and nearest class mean
# (bench/online_baselines.py) on the same episodes with the set's own class count. The report gives
# each rule's best rate per set, chosen on that set itself (an upper bound for the rule). The top
# rate of each grid (SGD 3, Adam 0.1, LogReg 3) was added when the grid's former top was the best on
# several sets of --algorithm's meta-test (bench/RESULTS.md, "A shipped algorithm against
# hand-designed learners"); the matrix's stored results predate it.
HAND_DESIGNED = {
    "SGD": ("sgd", [0.03, 0.1, 0.3, 1.0, 3.0]),
    "Adam": ("adam", [0.001, 0.003, 0.01, 0.03, 0.1]),
    "LogReg": ("logistic_regression", [*LR_GRID, 3.0]),
    "NCM": ("nearest_class_mean", [None]),
}
NUMPY_RULES = ("logistic_regression", "nearest_class_mean")  # no jax model: run on the drawn episodes

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


def test_sets(args) -> list[str]:
    """Every meta-test set of this run: the matrix's image sets (+ mnist28 with --algorithm), then the tabular."""
    extra = list(ALGORITHM_TEST_SETS) if getattr(args, "algorithm", None) else []
    return [*META_TEST_SETS, *extra, *TABULAR_TEST_SETS]


def image_sets(args) -> list[str]:
    return [t for t in test_sets(args) if t not in TABULAR_TEST_SETS]


def test_set_source(test_set: str) -> tuple[str, dict]:
    """``(dataset, data overrides)`` of any meta-test set."""
    return {**META_TEST_SETS, **ALGORITHM_TEST_SETS, **TABULAR_TEST_SETS}[test_set]


def rates_of(rule: str, quick: bool) -> list:
    """The learning rates a hand-designed rule is meta-tested with (--quick: two of the grid)."""
    rates = HAND_DESIGNED[rule][1]
    return rates[1:3] if quick and len(rates) > 2 else rates


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
