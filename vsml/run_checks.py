"""Checks of a whole layered config before a run starts: every rank's view, its data, learner and checkpoint.

:func:`check_config` refuses what this version cannot run with one line naming
the key, before any data loading or compilation (first :func:`check_names`: the
names a registry of the code must know, which the settings layer, importing no
component, leaves to this module); :func:`check_restore` reads the
checkpoint a new run starts from (and gives ``call: evaluate`` the checkpoint's own
model, :func:`checkpoint_model`); :func:`resolve_restore` turns
a wandb ``checkpoint.restore.run_path`` into a local path on every rank.
Both run from :func:`vsml.preparation.prepare_run`, for ``launch.py`` and the
Python API alike.
"""

from __future__ import annotations

import copy
import functools
import importlib
from pathlib import Path

import jax

from vsml import checkpoint, data
from vsml import config as cfg
from vsml.comm import Comm
from vsml.config import resolve_for_rank
from vsml.config_tree import ConfigError
from vsml.learners import build_learner, learner_type
from vsml.meta import TRUNCATED_LOOPS, outer_loop_name
from vsml.meta.slicing import item_slice
from vsml.settings import CheckpointSettings, PreprocessSettings, RunSettings, SettingError, key_of, run_settings
from vsml.settings.fields import NameIn, leaves


def registry_names(rule: NameIn) -> tuple:
    """The names a :class:`~vsml.settings.fields.NameIn` setting accepts: its registry's keys (or tuple)."""
    module, attribute = rule.source
    return tuple(getattr(importlib.import_module(module), attribute))


def check_names(settings: RunSettings) -> None:
    """Refuses, in one line naming the key and the choices, a setting that names what no registry knows
    (``model.type``, ``optimizer.type``, ...: every key declared with ``one_of_names_in``)."""
    for leaf in leaves(RunSettings):
        if isinstance(leaf.rule, NameIn):
            value = functools.reduce(getattr, leaf.key.split("."), settings)
            problem = leaf.rule.names_problem(leaf.key, value, registry_names(leaf.rule))
            if problem:
                raise ConfigError(problem)


def check_config(config: dict, comm: Comm) -> None:
    """Refuses configs this version cannot run, before any data loading or compilation."""
    checked = set()  # (dataset, data dir): a missing dataset may cost a network probe, so once each
    for rank in range(comm.size):
        settings = run_settings(resolve_for_rank(config, rank))
        check_names(settings)
        try:
            item_slice(settings.training.population_size, 0, comm.size)
        except ValueError as err:
            raise SettingError(settings.training, "population_size", str(err)) from None
        needed = (
            [(settings.training.dataset, key_of(settings.training, "dataset"), True)]
            if settings.call == "train"
            else []
        )
        needed += [(name, key_of(settings.evaluation, "datasets"), False) for name in settings.evaluation.datasets]
        for name, key, training in needed:
            # a missing dataset may cost a network probe; the training dataset's check reads data.mixture too
            seen = (name, settings.data.dir, settings.data.mixture if training else None)
            if seen not in checked:
                data.check_dataset_available(name, settings.data_settings, key, training)
                checked.add(seen)
        learner = build_learner(settings.model)
        if settings.call == "train":
            check_truncated_loop(settings, learner)
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


def check_truncated_loop(settings: RunSettings, learner) -> None:
    """A loop that unrolls truncations (``optimizer.type: pes``, docs/DESIGN.md §6.6) needs a learner with
    ``start``/``advance``, ``optimizer.pes_truncation_steps`` dividing ``training.episode_length``, and
    ``training.loss_type: mean`` (every step's loss counts); refused in one line otherwise."""
    optimizer, training = settings.optimizer, settings.training
    if outer_loop_name(optimizer.type) not in TRUNCATED_LOOPS:
        return
    if learner.start is None or learner.advance is None:
        raise SettingError(optimizer, "type", f"{optimizer.type} needs a learner that can be stepped a truncation "
                           f"at a time; {settings.model.type} cannot (use es or metagrad)")  # fmt: skip
    length, steps = training.episode_length, optimizer.pes_truncation_steps
    if length % steps:
        divisors = ", ".join(str(k) for k in range(1, length + 1) if length % k == 0)
        raise SettingError(
            optimizer, "pes_truncation_steps", f"{steps} must divide {key_of(training, 'episode_length')} {length}; "
            f"use one of {divisors}",
        )  # fmt: skip
    if training.loss_type != "mean":
        raise SettingError(
            training,
            "loss_type",
            f"{optimizer.type} sums every step's loss over the truncations; use mean, got {training.loss_type!r}",
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


def checkpoint_model(config: dict, saved: dict, source: str) -> dict:
    """``config`` with the ``model`` section of ``saved`` (the configuration a checkpoint was written with).

    The meta-parameters only mean something for the model they were trained with,
    so that model is taken whole. A key of that model (``model.type`` and the
    learner's sections) that ``config`` sets to a value other than the default and
    the checkpoint's contradicts it: ConfigError, one line naming the key and both values.
    """
    section = key_of(RunSettings, "model")
    if not isinstance(saved, dict) or not isinstance(saved.get(section), dict):
        return config  # the file does not say which model it holds: the config's is used
    base = cfg.load_default()
    saved = cfg.apply_layer(copy.deepcopy(base), saved, base, f"the config saved in {source}")
    model = saved[section]
    kind = learner_type(model["type"])
    own = {name: model[name] for name in ("type", kind.section, *kind.extra_sections) if name in model}
    for key, value in cfg.flatten({section: own}).items():
        given = cfg.get(config, key)
        if given != cfg.get(base, key) and given != value:
            raise ConfigError(
                f"{key}: {source} was trained with {value!r}, the config gives {given!r}; drop {key} "
                f"(the checkpoint's model is used) or restore another checkpoint"
            )
    return {**config, section: copy.deepcopy(model)}


def evaluated_config(config: dict) -> dict:
    """The config a new ``call: evaluate`` of ``checkpoint.restore.path`` runs: the checkpoint's model
    (:func:`checkpoint_model`), for ``--print_config``. Reads the file (one line for a bad one) but builds
    nothing and starts no backend; any other config is returned as it is."""
    settings = run_settings(resolve_for_rank(config, 0))
    restore = settings.checkpoint.restore
    if settings.call != "evaluate" or restore.path is None or restore.run_path is not None:
        return config
    try:
        saved = checkpoint.check_restorable(restore.path, restore.file_name)
    except checkpoint.CheckpointError as err:
        raise SettingError(restore, "path", str(err)) from None
    return config if saved is None else checkpoint_model(config, saved, str(restore.path))


def check_restore(config: dict, run_path_resolved: bool = False) -> dict:
    """Reads the checkpoint a new run restores from, before anything else; returns the config to run.

    Every checkpoint problem is one line (CheckpointError naming the key): a missing,
    unreadable or foreign file, a refused pickle, parameters of another model. A
    ``call: evaluate`` of a checkpoint of this project runs the model saved in it
    (:func:`checkpoint_model`), so a shipped algorithm needs no config files. A wandb
    ``run_path`` is checked once :func:`resolve_restore` made it a local path
    (``run_path_resolved``); with ``path`` as well, resolve_restore says to give one.
    """
    settings = run_settings(resolve_for_rank(config, 0))
    restore = settings.checkpoint.restore
    if restore.path is None or (restore.run_path is not None and not run_path_resolved):
        return config
    try:
        saved = checkpoint.check_restorable(restore.path, restore.file_name)
        if saved is not None and settings.call == "evaluate":
            config = checkpoint_model(config, saved, str(restore.path))
            settings = run_settings(resolve_for_rank(config, 0))
        sizes = None if learner_type(settings.model.type).any_size else _training_sizes(settings)
        template = None
        if learner_type(settings.model.type).any_size or sizes is not None:
            template = build_learner(settings.model, *(sizes or ())).init(jax.random.PRNGKey(settings.seed))
        try:
            checkpoint.check_restorable(restore.path, restore.file_name, template, settings.model.type)
        except checkpoint.CheckpointError as err:
            if sizes is None:
                raise
            raise checkpoint.CheckpointError(
                f"{err} (a {settings.model.type} is built for its training data's sizes: "
                f"{key_of(settings.training, 'dataset')} {settings.training.dataset} gives inputs {list(sizes[0])} "
                f"and {sizes[1]} classes; give the data and {key_of(PreprocessSettings, 'pad')} it was trained with)"
            ) from None
    except checkpoint.CheckpointError as err:
        raise SettingError(restore, "path", str(err)) from None
    return config


def _training_sizes(settings: RunSettings) -> tuple[tuple[int, ...], int] | None:
    """The sizes a fixed-size learner is built for (:func:`vsml.evaluation.trained_sizes`), read without
    loading the data; None when they cannot be known yet (check_config names the dataset's problem)."""
    try:
        return data.learner_sizes(settings.training.dataset, settings.data_settings)
    except ValueError:
        return None
