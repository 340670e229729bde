"""Meta-test: a dataset as a task, fixed evaluation episodes split over ranks, and ``call: evaluate``.

:func:`make_evaluator` gives every evaluation of a run the same episodes on any
number of ranks (episode ``j`` has one key whichever rank runs it);
:func:`run_evaluations` gathers them on rank 0 as per-step curves and a summary
row. Training (:mod:`vsml.experiment`) meta-tests theta_g with these at its
evaluation generations; :func:`evaluate` is the whole ``call: evaluate`` run:
restored (or hand-designed) parameters, one row, the curves in evaluation.csv.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vsml import checkpoint, data, run_platform
from vsml.comm import Comm
from vsml.config import resolve_for_rank, to_yaml
from vsml.learners import build_learner, learner_type
from vsml.meta import objective
from vsml.runlog import open_run_log
from vsml.settings import RunSettings, run_settings


@dataclasses.dataclass
class Task:
    """A dataset ready for episodes: static spec, device arrays and a sampler."""

    name: str
    spec: data.DataSpec
    arrays: dict
    episode_length: int
    batch_size: int

    def sampler(self):
        spec, length, batch = self.spec, self.episode_length, self.batch_size
        return lambda arrays, key: data.sample_episode(spec, arrays, key, length, batch)


def load_task(
    name: str,
    subset: str,
    data_settings: data.DataSettings,
    episode_length: int,
    batch_size: int,
    training: bool = False,
) -> Task:
    """``training``: meta-training episodes, the only ones ``data.episode_augment`` transforms."""
    spec, arrays = data.load_dataset(name, subset, data_settings, training)
    return Task(name, spec, arrays, episode_length, batch_size)


def episode_slice(count: int, rank: int, ranks: int) -> range:
    """The global indices of the evaluation episodes that rank ``rank`` of ``ranks`` runs.

    Contiguous blocks in rank order (sizes differ by at most one; a rank may have
    none), so rank 0's gather concatenates them as episodes ``0 .. count - 1``.
    """
    return range(count * rank // ranks, count * (rank + 1) // ranks)


def make_evaluator(learner, task: Task, count: int, seed: int, rank: int = 0, ranks: int = 1):
    """``evaluate(params) -> {'loss' [n, T], 'accuracy' [n, T]}``: this rank's share of ``count`` fixed episodes.

    Episode ``j`` (global index, :func:`episode_slice`) has the key
    ``fold_in(fold_in(PRNGKey(seed), 0), j)`` whichever rank runs it, so every
    evaluation of a run sees the same episodes, and the gathered curves are the
    same on any number of ranks. (The inner 0 keeps the episodes single-process
    runs always had, when the key was folded with the rank.)
    """
    curves = objective.make_curves(objective.make_episode(learner.run, task.sampler()))
    indices = episode_slice(count, rank, ranks)
    if not indices:  # more ranks than episodes
        empty = np.zeros((0, task.episode_length), np.float32)
        return lambda params: {"loss": empty, "accuracy": empty}
    base = jax.random.fold_in(jax.random.PRNGKey(seed), 0)
    keys = jax.vmap(lambda j: jax.random.fold_in(base, j))(jnp.arange(indices.start, indices.stop))

    @jax.jit
    def evaluate(params, arrays):
        loss, accuracy = jax.vmap(lambda key: curves(params, key, arrays))(keys)
        return {"loss": loss, "accuracy": accuracy}

    return lambda params: evaluate(params, task.arrays)


def summarize_curves(curves: dict[str, np.ndarray], prefix: str) -> dict[str, float]:
    """Episode-mean and last-step loss/accuracy over every gathered episode."""
    return {
        f"{prefix}/loss": float(np.mean(curves["loss"])),
        f"{prefix}/accuracy": float(np.mean(curves["accuracy"])),
        f"{prefix}/final_loss": float(np.mean(curves["loss"][:, -1])),
        f"{prefix}/final_accuracy": float(np.mean(curves["accuracy"][:, -1])),
    }


def run_evaluations(evaluators: dict, params, comm: Comm) -> tuple[dict[str, float], dict]:
    """Evaluates on every dataset; rank 0 receives every rank's episodes.

    Returns ``(row, curves)``: the summary metrics and, per dataset, the
    gathered per-step curves ``{'loss', 'accuracy'}: [episodes, T]`` (both
    empty on other ranks).
    """
    row, curves = {}, {}
    for name, evaluate in evaluators.items():
        local = {key: np.asarray(value) for key, value in evaluate(params).items()}
        gathered = comm.gather_objects(local)
        if comm.is_root:
            curves[name] = {key: np.concatenate([g[key] for g in gathered]) for key in local}
            row.update(summarize_curves(curves[name], f"eval/{name}"))
    return row, curves


def build_evaluators(learner, settings: RunSettings, comm: Comm) -> dict:
    cfg = settings.evaluation
    return {
        name: make_evaluator(
            learner,
            load_task(name, cfg.subset, settings.data_settings, cfg.episode_length, cfg.batch_size),
            cfg.count,
            cfg.seed,
            comm.rank,
            comm.size,
        )
        for name in cfg.datasets
    }


def _fresh_evaluators(settings: RunSettings, comm: Comm) -> dict:
    """Evaluators that ignore the params they are given: each runs a learner built for its
    dataset's input shape and class count from its initial weights (seed ``seed``)."""
    cfg = settings.evaluation
    evaluators = {}
    for name in cfg.datasets:
        task = load_task(name, cfg.subset, settings.data_settings, cfg.episode_length, cfg.batch_size)
        learner = build_learner(settings.model, task.spec.input_shape, task.spec.num_classes)
        initial = learner.init(jax.random.PRNGKey(settings.seed))
        evaluate_fresh = make_evaluator(learner, task, cfg.count, cfg.seed, comm.rank, comm.size)
        evaluators[name] = lambda _params, run=evaluate_fresh, params=initial: run(params)
    return evaluators


def trained_sizes(settings: RunSettings) -> tuple:
    """``(input_shape, num_classes)`` a run's learner was built for; ``(None, None)`` for VSML (any size).

    The fixed-size learners are built for the training data's (padded) sizes,
    as during meta-training, which loads that dataset.
    """
    if learner_type(settings.model.type).any_size:
        return None, None
    train_spec, _ = data.load_dataset(settings.training.dataset, "train", settings.data_settings)
    return train_spec.input_shape, train_spec.num_classes


def evaluate(config: dict, comm: Comm, run_dir: Path) -> dict[str, float]:
    """Evaluates restored meta-parameters (or a hand-designed rule's initial weights) on
    ``evaluation.datasets``; rank 0 returns the row.

    Writes the summary row to metrics.jsonl and every episode's per-step
    curve (plus their mean) to evaluation.csv.
    """
    settings = run_settings(resolve_for_rank(config, comm.rank))
    run_platform.setup(settings.runtime.compilation_cache, announce_to_console=comm.is_root)
    restore_path = settings.checkpoint.restore.path
    if restore_path is None:
        # A hand-designed rule (SGD, NodePert) needs no meta-training: without a checkpoint
        # each dataset gets a network of its own sizes from its initial weights, as in the
        # original release (check_config refuses this for meta-learned learners).
        evaluators = _fresh_evaluators(settings, comm)
        saved = {"params": None, "step": 0}
    else:
        learner = build_learner(settings.model, *trained_sizes(settings))
        saved = checkpoint.restore(
            restore_path,
            learner.init(jax.random.PRNGKey(settings.seed)),
            file_name=settings.checkpoint.restore.file_name,
        )
        evaluators = build_evaluators(learner, settings, comm)
    log = open_run_log(
        comm.is_root, run_dir=run_dir, config=config, config_yaml=to_yaml(config), wandb_mode=settings.logging.wandb
    )
    try:
        log.message(f"meta-testing generation {saved['step']} on {', '.join(evaluators)} (compiling first)…")
        summary, curves = run_evaluations(evaluators, saved["params"], comm)
        row = {"step": saved["step"], **summary}
        log.log(row)
        log.write_evaluation(saved["step"], curves, per_episode=True)
    finally:
        log.close()
    return row
