"""A shipped learned algorithm on tabular data, against online logistic regression and nearest class mean.

    python3 bench/tabular.py                      # seeds 0-3, 16 episodes of 100 steps per seed and dataset
    python3 bench/tabular.py --seeds 0 --episodes 2 --datasets iris   # seconds; checks the benchmark
    python3 bench/tabular.py --json out.json      # also write every figure as JSON

Each dataset is written as the ``npz:PATH`` a user would give (``x [N, D]``,
``y [N]``) and read through the project's own loader, so the inputs are what
``data.preprocess.npz_stats`` makes of them. Per seed, the episodes are drawn
by the project's sampler (``vsml.data.sample_episode``: ``length`` examples
uniformly with replacement from the split, keys from the seed); every learner
sees the *same* episodes in the same order (the hand-designed learners and the
sets: ``bench/online_baselines.py``):

* ``vsml-digits`` (``vsml.api.pretrained``, meta-trained on 8×8 digits only,
  never on these sets), on the ``per_feature`` stream (the default for
  vectors) and on the ``global`` stream (one mean and std: the same examples,
  normalised as before issue 28);
* online logistic regression: softmax weights from zero, one SGD step on each
  example's cross-entropy after predicting it; its step size is the best of
  :data:`LR_GRID` for each dataset, chosen on these same episodes (in
  hindsight: an upper bound of the baseline);
* online nearest class mean: predicts the class whose running mean of the
  inputs seen so far is closest (a class not seen yet is never predicted;
  before any label, class 0).

Every prediction is made before the example's label is shown (online
accuracy). Reported per dataset and learner: the episode-mean accuracy and
the accuracy over the last quarter of the steps, each as the median over
seeds of the per-seed mean over episodes, with the smallest and largest seed.

The tabular sets (scikit-learn's ``iris``, ``wine``, ``breast_cancer`` and a
``make_classification`` set whose 10 features are rescaled by factors from
1e-2 to 1e3) are streamed from their training split (the larger one; the
algorithm never saw any split of them). ``digits`` (as images ``[N, 8, 8]``)
is streamed from its test split, the one its meta-training did not use, and
checks the default for images (``global``) against ``per_feature``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.online_baselines import (  # noqa: E402
    LR_GRID,
    SKLEARN_SETS,
    logistic_regression,
    nearest_class_mean,
    write_npz,
)

ALGORITHM = "vsml-digits"
DATASETS = SKLEARN_SETS


def episodes(path: Path, subset: str, config: dict, npz_stats: str, seed: int, count: int, length: int):
    """``(inputs [E, T, *shape] float32, labels [E, T] int, classes)`` drawn by the project's loader and sampler."""
    import jax  # noqa: PLC0415

    from vsml import data  # noqa: PLC0415
    from vsml.settings import run_settings  # noqa: PLC0415

    config = copy.deepcopy(config)
    config["data"]["preprocess"]["npz_stats"] = npz_stats
    spec, arrays = data.load_dataset(f"npz:{path}", subset, run_settings(config).data_settings)
    drawn = [
        data.sample_episode(spec, arrays, jax.random.fold_in(jax.random.PRNGKey(seed), e), length, 1)
        for e in range(count)
    ]
    inputs = np.stack([np.asarray(x)[:, 0] for x, _ in drawn])
    labels = np.stack([np.asarray(y)[:, 0].argmax(-1) for _, y in drawn])
    return inputs, labels, spec.num_classes


def accuracies(predictions: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """``(episode-mean accuracy, last-quarter accuracy)`` over all episodes of ``[E, T]``."""
    right = predictions == labels
    return float(right.mean()), float(right[:, -(labels.shape[1] // 4) :].mean())


def measure(names, seeds, count: int, length: int, folder: Path) -> dict:
    """Every figure: ``{dataset: {"shape", "classes", "subset", "learners": {name: [(mean, last) per seed]}}}``."""
    from vsml import api  # noqa: PLC0415

    algorithm = api.pretrained(ALGORITHM)
    results = {}
    for name in names:
        path, subset = write_npz(name, folder / f"{name}.npz")
        with np.load(path) as stored:
            shape, classes_in_file = list(stored["x"].shape[1:]), int(stored["y"].max()) + 1
        learners: dict[str, list] = {}
        for seed in seeds:
            streams = {
                stats: episodes(path, subset, algorithm.config, stats, seed, count, length)
                for stats in ("per_feature", "global")
            }
            for stats, (inputs, labels, classes) in streams.items():
                logits = algorithm.run_episodes(inputs, labels, num_classes=classes, seed=seed)
                learners.setdefault(f"{ALGORITHM} ({stats})", []).append(accuracies(logits.argmax(-1), labels))
            inputs, labels, classes = streams["per_feature"]
            for lr in LR_GRID:
                predicted = logistic_regression(inputs, labels, classes, lr)
                learners.setdefault(f"logistic regression lr {lr}", []).append(accuracies(predicted, labels))
            learners.setdefault("nearest class mean", []).append(
                accuracies(nearest_class_mean(inputs, labels, classes), labels)
            )
            print(f"{name} seed {seed} done", file=sys.stderr, flush=True)
        results[name] = {
            "shape": shape,
            "classes": classes_in_file,
            "subset": subset,
            "learners": learners,
        }
    return results


def best_lr(learners: dict) -> str:
    """The logistic-regression row with the highest median episode-mean accuracy."""
    rows = [key for key in learners if key.startswith("logistic regression")]
    return max(rows, key=lambda key: np.median([mean for mean, _ in learners[key]]))


def report(results: dict, seeds, count: int, length: int) -> str:
    def cell(values):
        values = np.asarray(values)
        return f"{np.median(values):.1%} [{values.min():.1%}, {values.max():.1%}]".replace("%", " %")

    lines = [
        f"{len(seeds)} seeds × {count} episodes × {length} steps; median over seeds [smallest, largest seed] "
        "of the mean over episodes; the same episodes for every learner of a row group.",
        "",
        "| dataset (x shape, classes, split) | learner | accuracy, episode mean | last quarter |",
        "| --- | --- | --- | --- |",
    ]
    for name, result in results.items():
        learners = result["learners"]
        shown = [key for key in learners if not key.startswith("logistic regression")]
        shown.insert(2, best_lr(learners))
        title = f"{name} ({result['shape']}, {result['classes']}, {result['subset']})"
        for key in shown:
            label = key + (" (best of the grid)" if key.startswith("logistic") else "")
            means, lasts = zip(*learners[key])
            lines.append(f"| {title} | {label} | {cell(means)} | {cell(lasts)} |")
            title = ""
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="episode draws (default 0-3)")
    parser.add_argument("--episodes", type=int, default=16, help="episodes per seed and dataset")
    parser.add_argument("--length", type=int, default=100, help="steps per episode")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    from bench import machine  # noqa: PLC0415

    start = time.time()
    with tempfile.TemporaryDirectory() as folder:
        results = measure(args.datasets, args.seeds, args.episodes, args.length, Path(folder))
    print(report(results, args.seeds, args.episodes, args.length))
    print(f"\nmachine: {machine.summary_line(machine.describe())}; {time.time() - start:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "machine": machine.describe()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
