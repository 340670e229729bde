"""The claims matrix's meta-test (``bench/claims.py``'s worker processes): every set, the same episodes.

A worker meta-tests one group — the finished cells of one meta-learned learner, one
hand-designed rule over its learning-rate grid, or the algorithm given by ``--algorithm`` — on
every meta-test set, writing one ``metatest.json`` per cell (per rule, rate and seed; per seed).

Episodes: episode ``i`` of a set has the key ``fold_in(fold_in(PRNGKey(s), 0), i)`` (as
:func:`vsml.evaluation.make_evaluator`), ``s`` the set's ``evaluation.seed`` in the matrix (every
seed and learner sees the same episodes; the seeds are meta-training seeds and initial weights) and
``evaluation.seed + seed`` with ``--algorithm`` (the algorithm is fixed: the seeds are episode
draws; seed 0 is the matrix's episodes). Every learner and rule of a run sees the same episodes of
a set in the same order: the jax learners through one sampler and key split
(:func:`vsml.meta.objective.make_episode`), the NumPy rules on those episodes drawn once
(:func:`episode_streams`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import claims_algorithm, claims_outer, online_baselines  # noqa: E402
from bench.claims_matrix import (  # noqa: E402
    HAND_DESIGNED,
    NPZ_FILE,
    NUMPY_RULES,
    TABULAR_SUBSET,
    TABULAR_TEST_SETS,
    cell_iterations,
    cell_name,
    cells,
    common_overrides,
    is_finished,
    rates_of,
    run_dir_of,
    scale_of,
    test_set_source,
    test_sets,
)


def make_data_files(out: Path) -> None:
    """The ``npz:`` sets under OUT: the MNIST test digits with inverted pixels, and the tabular sets."""
    from vsml.data.offline_source import load_array_source  # noqa: PLC0415

    path = out / NPZ_FILE
    if not path.exists():
        images, labels, _ = load_array_source("mnist_offline", "test")
        inverted = np.round(255 * (1.0 - images[..., 0])).astype(np.uint8)  # [N, 28, 28]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, x=inverted, y=labels, x_test=inverted, y_test=labels)
        tmp.replace(path)
    for name, (dataset, _) in TABULAR_TEST_SETS.items():
        online_baselines.write_npz(name, out / dataset.removeprefix("npz:"))


def test_config(args, test_set: str, model: dict | None = None, any_size: bool = False) -> dict:
    """The configuration a meta-test set is loaded with (and, for a hand-designed rule, its model).

    ``any_size``: a learner that runs on any class count (VSML, the NumPy rules) sees the 5-class
    set with 5 output units; the others keep their 10 (five never occur as labels).
    """
    from vsml import api  # noqa: PLC0415

    dataset, data = test_set_source(test_set)
    overrides = {**common_overrides(args), **(model or {}), **data}
    if dataset.startswith("npz:"):
        dataset = "npz:" + str(Path(args.out).resolve() / dataset[len("npz:") :])
    if test_set == "mnist14-5cls" and any_size:
        overrides["data.preprocess.pad.output"] = None
    overrides["evaluation.datasets"] = [dataset]
    overrides["training.dataset"] = dataset
    return api.build_config(overrides=overrides)


def load_set(args, test_set: str, model: dict | None = None, any_size: bool = False):
    """``(settings, task)`` of a meta-test set: its episodes of the scale's test length, batch 1."""
    from vsml import evaluation  # noqa: PLC0415
    from vsml.config import resolve_for_rank  # noqa: PLC0415
    from vsml.settings import run_settings  # noqa: PLC0415

    settings = run_settings(resolve_for_rank(test_config(args, test_set, model, any_size), 0))
    subset = TABULAR_SUBSET if test_set in TABULAR_TEST_SETS else "test"
    length = scale_of(args)["test_length"]
    return settings, evaluation.load_task(settings.training.dataset, subset, settings.data_settings, length, 1)


def episode_seed(args, evaluation_seed: int, seed: int) -> int:
    """The seed of a set's episodes: the matrix's fixed one, or one draw per seed with --algorithm."""
    return evaluation_seed + seed if args.algorithm else evaluation_seed


def _episodes(run, task, count: int):
    """``f(params, seed) -> run's outputs [E, ...]`` over the ``count`` episodes of ``seed`` (jitted once)."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from vsml.meta import objective  # noqa: PLC0415

    episode = objective.make_episode(run, task.sampler())

    @jax.jit
    def over_episodes(params, arrays, seed):
        base = jax.random.fold_in(jax.random.PRNGKey(seed), 0)
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(count))
        return jax.vmap(lambda key: episode(params, key, arrays))(keys)

    return lambda params, seed: over_episodes(params, task.arrays, seed)


def episode_runner(learner_obj, task, count: int):
    """``run(params, seed) -> (accuracy [E, T], labels [E, T])`` of the learner on the episodes of ``seed``."""
    import jax.numpy as jnp  # noqa: PLC0415

    from vsml.meta import objective  # noqa: PLC0415

    episodes = _episodes(learner_obj.run, task, count)

    def run(params, seed: int):
        logits, labels = episodes(params, seed)  # [E, T, 1, C]
        accuracy = objective.step_accuracies(logits[:, :, 0], labels[:, :, 0])
        return np.asarray(accuracy), np.asarray(jnp.argmax(labels[:, :, 0], -1))

    return run


def episode_streams(task, count: int):
    """``draw(seed) -> (inputs [E, T, *shape], labels [E, T])``: the episodes every learner of ``seed`` sees."""
    import jax.numpy as jnp  # noqa: PLC0415

    episodes = _episodes(lambda params, key, inputs, labels: inputs, task, count)

    def draw(seed: int):
        inputs, labels = episodes(None, seed)  # [E, T, 1, *shape], [E, T, 1, C]
        return np.asarray(inputs[:, :, 0]), np.asarray(jnp.argmax(labels[:, :, 0], -1))

    return draw


def numpy_rule_accuracy(rule: str, lr, inputs: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """``[E, T]`` 1.0 where a NumPy rule's online prediction was right."""
    if rule == "logistic_regression":
        predicted = online_baselines.logistic_regression(inputs, labels, classes, lr)
    else:
        predicted = online_baselines.nearest_class_mean(inputs, labels, classes)
    return (predicted == labels).astype(np.float64)


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


def has_every_set(args, file: Path) -> bool:
    """Whether a rule's ``metatest.json`` exists with every set of this run (older ones lack the newer sets)."""
    return file.exists() and set(test_sets(args)) <= set(json.loads(file.read_text())["results"])


def hand_designed_group(args, rule: str) -> int:
    """Worker: one hand-designed rule over its learning-rate grid, every seed, every set."""
    import jax  # noqa: PLC0415

    from vsml.learners import build_learner  # noqa: PLC0415

    out = Path(args.out)
    count = scale_of(args)["test_episodes"]
    kind, _ = HAND_DESIGNED[rule]
    for lr in rates_of(rule, args.quick):
        name = rule + (f"--lr{lr:g}" if lr is not None else "")
        draws = "draw" if args.algorithm else "seed"
        folders = {seed: out / "hand" / f"{name}--{draws}{seed}" for seed in args.seeds}
        todo = [seed for seed, folder in folders.items() if not has_every_set(args, folder / "metatest.json")]
        if not todo:
            continue
        results: dict = {seed: {} for seed in todo}
        for test_set in test_sets(args):  # one compiled program per set, every seed through it
            if kind in NUMPY_RULES:
                settings, task = load_set(args, test_set, any_size=True)
                draw = episode_streams(task, count)
                for seed in todo:
                    inputs, labels = draw(episode_seed(args, settings.evaluation.seed, seed))
                    accuracy = numpy_rule_accuracy(kind, lr, inputs, labels, task.spec.num_classes)
                    results[seed][test_set] = summarise_episodes(accuracy, labels, task.spec.data_classes)
                continue
            model = {"model.type": "SGD", "model.sgd.optimizer": kind, "model.sgd.lr": lr}
            settings, task = load_set(args, test_set, model)
            learner = build_learner(settings.model, task.spec.input_shape, task.spec.num_classes)
            runner = episode_runner(learner, task, count)
            for seed in todo:
                params = learner.init(jax.random.PRNGKey(seed))
                accuracy, labels = runner(params, episode_seed(args, settings.evaluation.seed, seed))
                results[seed][test_set] = summarise_episodes(accuracy, labels, task.spec.data_classes)
        for seed in todo:
            folders[seed].mkdir(parents=True, exist_ok=True)
            doc = {"learner": rule, "lr": lr, "seed": seed, "meta_params": 0, "draws": bool(args.algorithm)}
            write_json(folders[seed] / "metatest.json", {**doc, "results": results[seed]})
            print(f"meta-tested {folders[seed].name}", flush=True)
    return 0


def algorithm_results(args, algorithm, runners: dict, seed: int = 0) -> dict:
    """Per meta-test set, the summary of ``algorithm`` on the episodes of ``seed`` (sets it cannot run: left out).

    ``runners`` caches one compiled runner per set for every algorithm of one learner.
    """
    any_size = algorithm.input_shape is None
    results = {}
    for test_set in test_sets(args):
        if test_set not in runners:
            settings, task = load_set(args, test_set, any_size=any_size)
            fits = any_size or (
                tuple(task.spec.input_shape) == tuple(algorithm.input_shape)
                and task.spec.num_classes == algorithm.num_classes
            )
            runner = episode_runner(algorithm.learner, task, count=scale_of(args)["test_episodes"]) if fits else None
            runners[test_set] = (runner, settings.evaluation.seed, task.spec.data_classes)
        runner, evaluation_seed, classes = runners[test_set]
        if runner is None:  # a fixed-size learner on a set of another input size (the tabular sets)
            continue
        accuracy, labels = runner(algorithm.params, episode_seed(args, evaluation_seed, seed))
        results[test_set] = summarise_episodes(accuracy, labels, classes)
    return results


def algorithm_group(args) -> int:
    """Worker: the algorithm of --algorithm on every set, one episode draw per seed."""
    folder = claims_algorithm.folder(args)
    algorithm = claims_algorithm.load(args.algorithm)
    runners: dict = {}
    for seed in args.seeds:
        file = folder / f"seed{seed}" / "metatest.json"
        if file.exists() and json.loads(file.read_text())["algorithm"] != args.algorithm:
            sys.exit(
                f"{file} holds {json.loads(file.read_text())['algorithm']}, not {args.algorithm}; give another --out"
            )
        if file.exists():
            continue
        file.parent.mkdir(parents=True, exist_ok=True)
        doc = claims_algorithm.describe(args.algorithm, algorithm)
        write_json(file, {**doc, "seed": seed, "results": algorithm_results(args, algorithm, runners, seed)})
        print(f"meta-tested {args.algorithm}, episode draw {seed}", flush=True)
    return 0


def meta_test_group(args, group: str, only_cell: str | None = None) -> int:
    """Worker: meta-tests ``group`` — a hand-designed rule, the --algorithm, or every finished cell of a
    learner lacking ``metatest.json`` (one compile per set).

    The programs go through the matrix's persistent compilation cache, so the cells of one
    learner after the first load them instead of compiling again.
    """
    from vsml import api, run_platform  # noqa: PLC0415

    out = Path(args.out)
    run_platform.setup(common_overrides(args)["runtime.compilation_cache"])
    make_data_files(out)
    if group in HAND_DESIGNED:
        return hand_designed_group(args, group)
    if group == claims_algorithm.GROUP:
        return algorithm_group(args)
    scale = scale_of(args)
    iterations = cell_iterations(args, group)
    runners: dict = {}  # test set -> compiled runner, shared by every cell of this learner

    def meta_test(checkpoint: Path, file: Path, extra: dict) -> None:
        algorithm = api.load(checkpoint)
        results = algorithm_results(args, algorithm, runners)
        write_json(
            file,
            {
                "learner": group,
                "train_set": cell[1],
                "seed": cell[2],
                "run_dir": str(run_dir.resolve()),  # read again by the report, maybe from another folder
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
