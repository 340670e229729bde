"""Meta-training: the wiring of config, data, learner, outer loop, meta-tests, checkpoints and logs.

Training is a setup step (:func:`setup_training`: task, learner, evaluators,
outer loop, restored state) and a loop that only steps, evaluates, logs and
checkpoints (:func:`run_generations`); :func:`train` opens the log around both.
The meta-test itself (episodes, gathering, ``call: evaluate``) is
:mod:`vsml.evaluation`; the checks before a run, :mod:`vsml.run_checks`.

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

from vsml import checkpoint, run_platform, runtime
from vsml.comm import Comm
from vsml.config import resolve_for_rank, to_yaml
from vsml.console import stop_line
from vsml.evaluation import Task, build_evaluators, load_task, run_evaluations
from vsml.learners import FULL_BACKPROP, BackpropPlan, build_learner
from vsml.meta import (
    NonFiniteError,
    OuterLoop,
    build_outer_loop,
    fit_chunk,
    objective,
)
from vsml.preemption import StopRequest
from vsml.runlog import Stopwatch, open_run_log
from vsml.runs import TrainResult
from vsml.settings import OptimizerSettings, RunSettings, SettingError, TrainingSettings, key_of, run_settings


def make_outer_loop(learner, task: Task, settings: RunSettings, params_template, comm: Comm) -> OuterLoop:
    """The outer loop named by ``optimizer.type`` (:data:`vsml.meta.OUTER_LOOPS`): ES, meta-gradients or PES
    (which unrolls the learner's truncations, :func:`vsml.meta.objective.make_truncations`).

    ``training.pairs_per_chunk: auto`` sizes the chunks from XLA's memory plan of a
    one-pair slice and :func:`vsml.runtime.device_chunk_budget_bytes`. All loops see the same fitness
    (PES the same episodes a truncation at a time) and checkpoint their own state alike (docs/DESIGN.md §6.5).
    """
    training = settings.training
    fitness = objective.make_fitness(objective.make_episode(learner.run, task.sampler()), training.loss_type)
    chunk = training.pairs_per_chunk
    truncations = None  # a learner with start/advance can be stepped a truncation at a time (checked: run_checks)
    if learner.start is not None and learner.advance is not None:
        begin, unroll = objective.make_truncations(learner.start, learner.advance, task.sampler())
        truncations = objective.Truncations(begin, unroll, task.episode_length, task.arrays)
    loop = build_outer_loop(
        settings.optimizer,
        training.population_size,
        None if chunk == "auto" else chunk,
        fitness,
        params_template,
        comm,
        truncations=truncations,
    )
    if chunk == "auto":
        budget = runtime.device_chunk_budget_bytes(ranks_on_node=comm.local_size)
        if budget is not None:
            loop, per_item = fit_chunk(loop, params_template, task.arrays, budget)
            check_fits(per_item, loop.pairs_per_chunk or len(loop.item_indices), training, comm)
    return loop


def check_fits(bytes_per_item: int, items_at_once: int, training: TrainingSettings, comm: Comm) -> None:
    """Refuses, in one line and before the step is compiled, a chunk whose working memory (XLA's plan of a
    one-item slice, ``bytes_per_item``) exceeds the memory a rank may use (:func:`vsml.runtime.device_available_bytes`).

    The least of every rank's figure decides, so all ranks refuse together (none waits in a collective)."""
    local = runtime.device_available_bytes(ranks_on_node=comm.local_size)
    known = [int(v) for v in comm.allgather(np.asarray([-1 if local is None else local], np.int64)) if v >= 0]
    needed = bytes_per_item * items_at_once
    if not known or needed <= min(known):
        return
    available = min(known)
    gib = 2.0**30
    raise SettingError(
        training,
        "episode_length",
        f"{items_at_once} episode(s) of {training.episode_length} steps need {needed / gib:.1f} GiB of working "
        f"memory (XLA's plan, {bytes_per_item / gib:.2f} GiB each) but {available / gib:.1f} GiB are available; "
        f"with meta-gradients set {key_of(OptimizerSettings, 'remat_steps')} (e.g. "
        f"{max(1, round(training.episode_length**0.5))}) or {key_of(OptimizerSettings, 'truncation')}, "
        "or shorten the episodes",
    )


def backprop_plan(optimizer: OptimizerSettings) -> BackpropPlan:
    """How a meta-gradient goes back through the training episode (``optimizer.remat_steps``, ``truncation``)."""
    return BackpropPlan(remat_steps=optimizer.remat_steps, truncation=optimizer.truncation)


def chunk_text(loop: OuterLoop) -> str:
    return "all at once" if loop.pairs_per_chunk is None else f"{loop.pairs_per_chunk} at a time"


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
    if resume:  # the whole state, into the structure of the loop's own
        if Path(restore_path).is_dir():
            saved, path, problems = checkpoint.restore_latest(restore_path, state)
            for problem in problems:
                log.message(f"warning: skipped unreadable checkpoint: {problem}")
            log.message(f"resuming from {path} (generation {saved['state'].generation})")
        else:
            saved = checkpoint.restore_state(restore_path, state, file_name=settings.checkpoint.restore.file_name)
        return saved["state"], saved["wall_time"]
    # A new run takes the meta-parameters; a loop with an optax state (``opt_state``) also takes the
    # original release's Adam moments from its model.chkp.
    opt_template = getattr(state, "opt_state", None)
    saved = checkpoint.restore(
        restore_path, state.params, opt_template, file_name=settings.checkpoint.restore.file_name
    )
    fresh = outer_loop.init(jax.tree_util.tree_map(jnp.asarray, saved["params"]), seed)
    if saved["adam_continues"]:  # the original release's model.chkp: its Adam moments and count carry on
        log.message(f"continuing the original release's Adam state (step {saved['step']}) from {restore_path}")
        fresh = fresh.replace(opt_state=jax.tree_util.tree_map(jnp.asarray, saved["opt_state"]))
    return fresh, 0.0


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
    state: object  # the outer loop's state (its init's type): fresh, or restored from a checkpoint
    schedule: Schedule
    log: object  # vsml.runlog.RunLog (rank 0) or NullLog
    clock: Stopwatch  # wall time of the run, across resumes
    save: Callable[[object], None]  # writes a checkpoint of a state (rank 0)


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
    task = load_task(
        training.dataset, "train", settings.data_settings, training.episode_length, training.batch_size, training=True
    )
    learner = build_learner(settings.model, task.spec.input_shape, task.spec.num_classes)
    evaluators = build_evaluators(learner, settings, comm)
    params = learner.init(jax.random.PRNGKey(settings.seed))
    if training.pairs_per_chunk == "auto":
        log.message("choosing pairs_per_chunk from the memory plan of a compiled one-pair slice…")
    plan = backprop_plan(settings.optimizer)
    if plan != FULL_BACKPROP:  # only the training episodes are differentiated
        learner = build_learner(settings.model, task.spec.input_shape, task.spec.num_classes, backprop_plan=plan)
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
    checkpoint, on every rank, and one line (:func:`vsml.console.stop_line`, naming
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
    for line in run_platform.announce() if comm.is_root else []:  # what it runs on, also into console.log
        log.message(line, to_stderr=line.startswith("warning"))
    run_platform.setup(settings.runtime.compilation_cache)
    announce, stop.announce = stop.announce, log.message  # a stop signal is acknowledged on the console at once
    try:
        run = setup_training(settings, comm, run_dir, resume, log, config_yaml)
        return run_generations(run, stop, resume_command)
    finally:
        stop.announce = announce
        log.close()


def _save(
    state,
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
            state,
            wall_time=clock.elapsed(),
            config_yaml=config_yaml,
            with_step=with_step,
            keep=keep,
        )
        log.attach(latest)  # the wandb run carries it, for checkpoint.restore.run_path
