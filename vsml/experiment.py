"""Train and evaluate: wiring of config, data, learner, outer loop, checkpoints and logs.

Training is a setup step (:func:`setup_training`: task, learner, evaluators,
outer loop, restored state) and a loop that only steps, evaluates, logs and
checkpoints (:func:`run_generations`); :func:`train` opens the log around both.

``config`` is the layered configuration (``mpi_split`` unresolved, the same on
every rank); each rank resolves its own view with
:func:`vsml.config.resolve_for_rank`, so ranks may meta-train on different
datasets while sharing one set of meta-parameters, and turns it into typed,
frozen sections once (:func:`vsml.settings.run_settings`). Everything below
the entry points reads those sections; this module names the config keys
when a maths module's error needs one.

Generation ``g`` (0-based) evaluates the meta-parameters theta_g when
``g % evaluation.frequency == 0`` or g is the run's last generation, runs ES on theta_g, and writes a metrics row
for step ``g`` when ``g % summary.frequency == 0``. A checkpoint written after
generation g holds ``step = g + 1`` and theta_{g+1}; resuming from it continues
with generation g + 1, exactly as if the run had not stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vsml import checkpoint, data, runtime
from vsml.comm import Comm
from vsml.config import resolve_for_rank, to_yaml
from vsml.learners import build_learner, learner_type
from vsml.meta import MetaState, NonFiniteError, OuterLoop, build_outer_loop, fit_chunk, objective
from vsml.meta.slicing import item_slice
from vsml.preemption import StopRequest
from vsml.runlog import Stopwatch, open_run_log, stop_line
from vsml.runs import TrainResult
from vsml.settings import CheckpointSettings, OptimizerSettings, RunSettings, SettingError, key_of, run_settings


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


def load_task(name: str, subset: str, data_settings: data.DataSettings, episode_length: int, batch_size: int) -> Task:
    spec, arrays = data.load_dataset(name, subset, data_settings)
    return Task(name, spec, arrays, episode_length, batch_size)


def check_config(config: dict, comm: Comm) -> None:
    """Refuses configs this version cannot run, before any data loading or compilation."""
    checked = set()  # (dataset, data dir): a missing dataset may cost a network probe, so once each
    for rank in range(comm.size):
        settings = run_settings(resolve_for_rank(config, rank))
        try:
            item_slice(settings.training.population_size, 0, comm.size)
        except ValueError as err:
            raise SettingError(settings.training, "population_size", str(err)) from None
        needed = [(settings.training.dataset, key_of(settings.training, "dataset"))] if settings.call == "train" else []
        needed += [(name, key_of(settings.evaluation, "datasets")) for name in settings.evaluation.datasets]
        for name, key in needed:
            if (name, settings.data.dir) not in checked:
                data.check_dataset_available(name, settings.data_settings, key)
                checked.add((name, settings.data.dir))
        build_learner(settings.model)
        restore = settings.checkpoint.restore
        # A missing file or an unknown pretrained:NAME, before compiling (path and run_path together:
        # resolve_restore's one line says to give one of them).
        if restore.path is not None and restore.run_path is None:
            try:
                checkpoint.resolve_path(restore.path, restore.file_name)
            except checkpoint.CheckpointError as err:
                raise SettingError(restore, "path", str(err)) from None
        if (
            settings.call == "evaluate"
            and restore.path is None
            and restore.run_path is None
            and not learner_type(settings.model.type).hand_designed
        ):
            raise ValueError(
                f"call: evaluate of a meta-learned {settings.model.type} needs "
                f"{key_of(restore, 'path')} (a run directory or checkpoint file) "
                f"or {key_of(restore, 'run_path')} (a wandb run)"
            )


def resolve_restore(config: dict, comm: Comm, run_dir: Path) -> dict:
    """``config`` with ``checkpoint.restore.run_path`` (a wandb run) made a local ``checkpoint.restore.path``.

    Rank 0 finds the run's ``checkpoint.restore.file_name`` in a local wandb run
    directory or downloads it into ``run_dir/restored/``; every rank gets the same
    path, or raises the same one-line CheckpointError, before anything expensive.
    """
    restore = resolve_for_rank(config, 0)["checkpoint"]["restore"]
    if restore.get("run_path") is None:
        return config
    if restore["path"] is not None:
        raise ValueError(
            f"{key_of(CheckpointSettings, 'restore')}: give path (a run directory or checkpoint file) or run_path "
            f"(a wandb run), not both (path {restore['path']}, run_path {restore['run_path']})"
        )
    outcome = None
    if comm.is_root:
        try:
            local = checkpoint.fetch_wandb_file(
                restore["run_path"], restore.get("file_name"), config["logging"]["dir"], Path(run_dir) / "restored"
            )
            outcome = ("path", str(local))
        except checkpoint.CheckpointError as err:
            outcome = ("error", str(err))
    kind, value = comm.bcast_object(outcome)
    if kind == "error":
        raise checkpoint.CheckpointError(value)
    resolved = {
        **config,
        "checkpoint": {**config["checkpoint"], "restore": {**config["checkpoint"]["restore"], "path": value}},
    }
    return resolved


# --------------------------------------------------------------------------- evaluation


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


# --------------------------------------------------------------------------- training


def make_outer_loop(learner, task: Task, settings: RunSettings, params_template, comm: Comm) -> OuterLoop:
    """The outer loop named by ``optimizer.type`` (:data:`vsml.meta.OUTER_LOOPS`): ES or meta-gradients.

    ``training.pairs_per_chunk: auto`` sizes the chunks from XLA's memory plan of a
    one-pair slice and :func:`vsml.runtime.device_chunk_budget_bytes`. All loops see the same fitness
    and the same per-(generation, pair) episodes and share the state layout, so checkpoints and
    resume work alike.
    """
    training = settings.training
    fitness = objective.make_fitness(objective.make_episode(learner.run, task.sampler()), training.loss_type)
    chunk = training.pairs_per_chunk
    loop = build_outer_loop(
        settings.optimizer, training.population_size, None if chunk == "auto" else chunk, fitness, params_template, comm
    )
    if chunk == "auto":
        budget = runtime.device_chunk_budget_bytes(ranks_on_node=comm.local_size)
        if budget is not None:
            loop, _ = fit_chunk(loop, params_template, task.arrays, budget)
    return loop


def chunk_text(loop: OuterLoop) -> str:
    return "all at once" if loop.items_per_chunk is None else f"{loop.items_per_chunk} at a time"


class RunError(RuntimeError):
    """A failure every rank detects together (so one line on rank 0 says it all)."""


def initial_state(outer_loop: OuterLoop, params, settings: RunSettings, resume: bool, log):
    """A fresh state from ``params``, or one restored from ``checkpoint.restore.path``.

    ``resume`` continues the checkpoint's run exactly (optimiser state,
    generation, RNG) from the newest readable checkpoint of the run directory;
    otherwise a restored checkpoint only provides the initial meta-parameters
    of a new run (and, from the original release's model.chkp, its Adam state). Returns ``(state, wall_time_so_far)``.
    """
    seed = settings.seed
    state = outer_loop.init(params, seed)
    restore_path = settings.checkpoint.restore.path
    if restore_path is None:
        return state, 0.0
    if resume and Path(restore_path).is_dir():
        saved, path, problems = checkpoint.restore_latest(restore_path, state.params, state.opt_state)
        for problem in problems:
            log.message(f"warning: skipped unreadable checkpoint: {problem}")
        log.message(f"resuming from {path} (generation {saved['step']})")
    else:
        saved = checkpoint.restore(
            restore_path, state.params, state.opt_state, file_name=settings.checkpoint.restore.file_name
        )
    params = jax.tree_util.tree_map(jnp.asarray, saved["params"])
    if not resume:
        fresh = outer_loop.init(params, seed)
        if saved["adam_continues"]:  # the original release's model.chkp: its Adam moments and count carry on
            log.message(f"continuing the original release's Adam state (step {saved['step']}) from {restore_path}")
            fresh = fresh.replace(opt_state=jax.tree_util.tree_map(jnp.asarray, saved["opt_state"]))
        return fresh, 0.0
    restored = MetaState(
        params=params,
        opt_state=jax.tree_util.tree_map(jnp.asarray, saved["opt_state"]),
        generation=saved["step"],
        rng={name: jnp.asarray(key) for name, key in saved["rng"].items()},
    )
    return restored, saved["wall_time"]


def check_ranks_agree(params, comm: Comm, generation: int) -> None:
    """Raises RunError naming the ranks whose meta-parameters differ from rank 0's."""
    digests = comm.allgather(np.asarray([checkpoint.digest(params)], dtype=np.int64))
    differing = [rank for rank, value in enumerate(digests) if value != digests[0]]
    if differing:
        raise RunError(
            f"meta-parameters of ranks {differing} differ from rank 0's at generation {generation}; "
            "ranks must run the same code, jax version and optimizer config"
        )


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When a training run evaluates, logs and checkpoints (generations, from the rank's config)."""

    iterations: int  # training.iterations: the run ends when the generation counter reaches it
    summary_every: int  # summary.frequency: a metrics row for generations g % this == 0
    evaluate_every: int  # evaluation.frequency: meta-test theta_g when g % this == 0 (and at the last generation)
    checkpoint_every: int  # checkpoint.frequency: a checkpoint when the counter (g + 1) % this == 0

    @classmethod
    def from_settings(cls, settings: RunSettings) -> Schedule:
        return cls(
            iterations=settings.training.iterations,
            summary_every=settings.summary.frequency,
            evaluate_every=settings.evaluation.frequency,
            checkpoint_every=settings.checkpoint.frequency,
        )


@dataclasses.dataclass
class TrainingRun:
    """One rank's training run, set up: everything :func:`run_generations` steps, evaluates, logs and saves."""

    comm: Comm
    run_dir: Path
    task: Task
    outer_loop: OuterLoop
    evaluators: dict  # dataset name -> evaluate(params)
    state: MetaState  # fresh, or restored from a checkpoint
    schedule: Schedule
    log: object  # vsml.runlog.RunLog (rank 0) or NullLog
    clock: Stopwatch  # wall time of the run, across resumes
    save: Callable[[MetaState], None]  # writes a checkpoint of a state (rank 0)


def setup_training(
    settings: RunSettings, comm: Comm, run_dir: Path, resume: bool, log, config_yaml: str
) -> TrainingRun:
    """Builds the run: the training task, learner, evaluators, outer loop and (restored) state.

    Everything expensive that can fail happens here, before the first generation;
    the console shows what it is doing while it compiles or loads.
    """
    training = settings.training
    log.message(
        f"loading data: {training.dataset} (training), {', '.join(settings.evaluation.datasets) or 'none'} (meta-test)…"
    )
    task = load_task(training.dataset, "train", settings.data_settings, training.episode_length, training.batch_size)
    learner = build_learner(settings.model, task.spec.input_shape, task.spec.num_classes)
    evaluators = build_evaluators(learner, settings, comm)
    params = learner.init(jax.random.PRNGKey(settings.seed))
    if training.pairs_per_chunk == "auto":
        log.message("choosing pairs_per_chunk from the memory plan of a compiled one-pair slice…")
    outer_loop = make_outer_loop(learner, task, settings, params, comm)
    state, wall_offset = initial_state(outer_loop, params, settings, resume, log)
    clock = Stopwatch(wall_offset)
    save = partial(
        _save,
        comm=comm,
        run_dir=run_dir,
        config_yaml=config_yaml,
        clock=clock,
        with_step=settings.checkpoint.with_step,
        keep=settings.checkpoint.keep,
        log=log,
    )
    log.message(
        f"run directory: {run_dir} | ranks: {comm.size} | {outer_loop.unit} per rank: "
        f"{len(outer_loop.item_indices)} ({chunk_text(outer_loop)}) | meta-parameters: {outer_loop.dim}"
    )
    return TrainingRun(
        comm=comm,
        run_dir=run_dir,
        task=task,
        outer_loop=outer_loop,
        evaluators=evaluators,
        state=state,
        schedule=Schedule.from_settings(settings),
        log=log,
        clock=clock,
        save=save,
    )


def run_generations(run: TrainingRun, stop: StopRequest, resume_command: str | None = None) -> TrainResult:
    """The training loop: step, evaluate, log and checkpoint until the last generation or a stop signal.

    A stop signal on any rank ends the run after the current generation with a
    checkpoint, on every rank, and one line (:func:`vsml.runlog.stop_line`, naming
    ``resume_command`` to continue it).
    """
    comm, log, schedule, state = run.comm, run.log, run.schedule, run.state
    log.start(start_step=state.generation, total_steps=schedule.iterations)
    stopped_by = None
    while state.generation < schedule.iterations:
        generation = state.generation
        row = {}
        # The last generation is always meta-tested, so every run ends with a meta-test.
        if generation % schedule.evaluate_every == 0 or generation + 1 == schedule.iterations:
            row, curves = run_evaluations(run.evaluators, state.params, comm)
            log.write_evaluation(generation, curves, per_episode=False)
        try:
            state, stats = run.outer_loop.step(state, run.task.arrays)
        except NonFiniteError as err:
            levers = ", ".join(key_of(OptimizerSettings, name) for name in ("lr", "noise_std", "clip_gradnorm"))
            raise RunError(f"{err} ({levers})") from err
        log.progress(stats)
        if comm.any(stop.requested):
            stopped_by = stop.signal_name or "a stop signal on another rank"
        # The last generation of the run (or of this session) always gets a row.
        if generation % schedule.summary_every == 0 or state.generation == schedule.iterations or stopped_by:
            log.log({"step": generation, **stats, "time": run.clock.elapsed(), **row})
        if state.generation % schedule.checkpoint_every == 0 or state.generation == schedule.iterations or stopped_by:
            check_ranks_agree(state.params, comm, state.generation)
            run.save(state)
        if stopped_by:
            log.message(stop_line(stopped_by, state.generation, schedule.iterations, resume_command))
            break
    return TrainResult(run_dir=run.run_dir, generation=int(state.generation), stopped_by=stopped_by, state=state)


def train(
    config: dict,
    comm: Comm,
    run_dir: Path,
    resume: bool = False,
    stop: StopRequest | None = None,
    resume_command: str | None = None,
) -> TrainResult:
    """Meta-trains for ``training.iterations`` generations: :func:`setup_training`, then :func:`run_generations`.

    A stop signal on any rank (see :mod:`vsml.preemption`) ends the run after
    the current generation with a checkpoint, on every rank; the line saying so
    names ``resume_command`` (how the caller continues the run).
    """
    settings = run_settings(resolve_for_rank(config, comm.rank))
    stop = stop or StopRequest()
    config_yaml = to_yaml(config)
    log = open_run_log(
        comm.is_root,
        run_dir=run_dir,
        config=config,
        config_yaml=config_yaml,
        wandb_mode=settings.logging.wandb,
        progress_seconds=settings.logging.progress_seconds,
    )
    for line in runtime.announce() if comm.is_root else []:  # what it runs on, also into console.log
        log.message(line, to_stderr=line.startswith("warning"))
    runtime.setup(settings.runtime.compilation_cache)
    announce, stop.announce = stop.announce, log.message  # a stop signal is acknowledged on the console at once
    try:
        run = setup_training(settings, comm, run_dir, resume, log, config_yaml)
        return run_generations(run, stop, resume_command)
    finally:
        stop.announce = announce
        log.close()


def _save(
    state: MetaState,
    *,
    comm: Comm,
    run_dir: Path,
    config_yaml: str,
    clock: Stopwatch,
    with_step: bool,
    keep: int | None,
    log,
) -> None:
    if comm.is_root:
        latest = checkpoint.save(
            run_dir,
            params=state.params,
            opt_state=state.opt_state,
            step=state.generation,
            rng=state.rng,
            wall_time=clock.elapsed(),
            config_yaml=config_yaml,
            with_step=with_step,
            keep=keep,
        )
        log.attach(latest)  # the wandb run carries it, for checkpoint.restore.run_path


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
    runtime.setup(settings.runtime.compilation_cache, announce_to_console=comm.is_root)
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
