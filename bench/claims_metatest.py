"""The claims matrix's meta-test (``bench/claims.py``'s worker processes): every set, the same episodes.

A worker meta-tests one group — the finished cells of one meta-learned learner, or one
hand-designed rule over its learning-rate grid — on every meta-test set, writing one
``metatest.json`` per cell (per rule, rate and seed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import claims_outer  # noqa: E402
from bench.claims_matrix import (  # noqa: E402
    ANY_SIZE_LEARNERS,
    HAND_DESIGNED,
    META_TEST_SETS,
    NPZ_FILE,
    cell_iterations,
    cell_name,
    cells,
    common_overrides,
    is_finished,
    run_dir_of,
    scale_of,
)


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
