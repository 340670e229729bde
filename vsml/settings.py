"""One rank's configuration as typed, frozen sections, built once after validation (docs/DESIGN.md §8).

The layered config is a nested dict (``mpi_split`` values resolved per rank by
:func:`vsml.config.resolve_for_rank`). :func:`run_settings` validates one
rank's dict (:func:`vsml.validation.validate`) and turns it into
:class:`RunSettings`: one frozen dataclass per section, so the rest of the code
reads attributes with types instead of string keys, and a value cannot change
after the checks passed. This module (with ``validation``) is where config key
names live: the maths modules receive plain values and raise errors in their
own terms; the experiment names the key.

Sections owned by one component keep their own types next to that component:
the ``data`` keys and the dataset sections are :class:`vsml.data.DataSettings`,
the ``optimizer`` section is :class:`vsml.meta.OptimizerSettings`. A learner's
``model.<section>`` stays a mapping here: the learner registry turns it into
that learner's own frozen spec (``spec_from_config``), which is where its
structure (e.g. VSML's ``layer_specs``) is checked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from vsml.data import preprocess
from vsml.data.base import DataSettings, FewShotSettings, RandomDatasetSettings, SumDatasetSettings
from vsml.data.fewshot_source import FEWSHOT_SOURCES
from vsml.meta.base import OptimizerSettings
from vsml.validation import validate


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """``training.*``: what is meta-trained on, and how much."""

    iterations: int  # generations (ES) or steps (meta-gradients)
    dataset: str
    batch_size: int  # B of training episodes
    episode_length: int  # T of training episodes
    population_size: int  # ES antithetic pairs / meta-gradient episodes per step
    loss_type: str  # mean | last
    pairs_per_chunk: int | str | None  # "auto", None (the whole slice) or a count


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """``evaluation.*``: meta-testing during training (and ``call: evaluate``)."""

    frequency: int
    datasets: tuple[str, ...]
    batch_size: int
    episode_length: int
    seed: int
    subset: str  # train | test
    count: int  # episodes per rank


@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
    """``checkpoint.*``: when to save, what to keep, what to restore."""

    frequency: int
    with_step: bool
    keep: int | None
    restore_path: str | None  # checkpoint.restore.path
    restore_run_path: str | None  # checkpoint.restore.run_path (a wandb run)
    restore_file_name: str | None  # checkpoint.restore.file_name


@dataclasses.dataclass(frozen=True)
class LoggingSettings:
    """``logging.*``: where a run's outputs go."""

    wandb: str  # offline | online | disabled
    dir: str
    tags: tuple[str, ...]
    job_type: str | None
    progress_seconds: float


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """One rank's whole configuration, validated and typed."""

    seed: int
    call: str  # train | evaluate
    summary_frequency: int  # summary.frequency
    compilation_cache: str  # runtime.compilation_cache
    training: TrainingSettings
    optimizer: OptimizerSettings
    evaluation: EvaluationSettings
    data: DataSettings
    checkpoint: CheckpointSettings
    logging: LoggingSettings
    model: Mapping[str, Any]  # the model section, for the learner registry (read-only)


def run_settings(rank_config: dict) -> RunSettings:
    """Validates one rank's resolved config and builds its typed sections.

    Raises ``ConfigError`` / ``ValueError`` of one line naming the key.
    """
    validate(rank_config)
    training, evaluation = rank_config["training"], rank_config["evaluation"]
    ckpt, log = rank_config["checkpoint"], rank_config["logging"]
    return RunSettings(
        seed=rank_config["seed"],
        call=rank_config["call"],
        summary_frequency=rank_config["summary"]["frequency"],
        compilation_cache=rank_config["runtime"]["compilation_cache"],
        training=TrainingSettings(
            iterations=training["iterations"],
            dataset=training["dataset"],
            batch_size=training["batch_size"],
            episode_length=training["episode_length"],
            population_size=training["population_size"],
            loss_type=training["loss_type"],
            pairs_per_chunk=training["pairs_per_chunk"],
        ),
        optimizer=optimizer_settings(rank_config["optimizer"]),
        evaluation=EvaluationSettings(
            frequency=evaluation["frequency"],
            datasets=tuple(evaluation["datasets"]),
            batch_size=evaluation["batch_size"],
            episode_length=evaluation["episode_length"],
            seed=evaluation["seed"],
            subset=evaluation["subset"],
            count=evaluation["count"],
        ),
        data=data_settings(rank_config),
        checkpoint=CheckpointSettings(
            frequency=ckpt["frequency"],
            with_step=ckpt["with_step"],
            keep=ckpt["keep"],
            restore_path=ckpt["restore"]["path"],
            restore_run_path=ckpt["restore"].get("run_path"),
            restore_file_name=ckpt["restore"].get("file_name"),
        ),
        logging=LoggingSettings(
            wandb=log["wandb"],
            dir=log["dir"],
            tags=tuple(log["tags"]),
            job_type=log["job_type"],
            progress_seconds=float(log["progress_seconds"]),
        ),
        model=MappingProxyType(rank_config["model"]),
    )


def optimizer_settings(section: dict) -> OptimizerSettings:
    """The ``optimizer`` section (validated) as :class:`~vsml.meta.OptimizerSettings`."""
    return OptimizerSettings(
        type=section["type"],
        noise_std=float(section["noise_std"]),
        lr=float(section["lr"]),
        adam_kwargs=MappingProxyType(dict(section["kwargs"])),
        clip_gradnorm=float(section["clip_gradnorm"]),
        fitness_shaping=section["fitness_shaping"],
    )


def data_settings(rank_config: dict) -> DataSettings:
    """``data.*``, the dataset sections and ``seed`` of one rank's config as :class:`~vsml.data.DataSettings`.

    Parses shapes, class lists and transform seeds; raises ValueError of one line naming the key.
    """
    data, pre = rank_config["data"], rank_config["data"]["preprocess"]
    pad = pre.get("pad") or {}
    for key in ("shuffle", "rand_proj"):  # true, false or an integer seed
        preprocess.transform_seed(pre.get(key, False), f"data.preprocess.{key}", 0, "")
    random, total = rank_config["random_dataset"], rank_config["sum_dataset"]
    fewshot = {}
    for name in FEWSHOT_SOURCES:
        section = rank_config[f"{name}_dataset"]
        fewshot[name] = FewShotSettings(
            num_classes=int(section["num_classes"]),
            resize=preprocess.parse_shape(section.get("resize"), f"{name}_dataset.resize", 2),
            rotate=bool(section["rotate"]),
            test_last=bool(section["test_last"]),
        )
    return DataSettings(
        seed=rank_config["seed"],
        dir=data.get("dir"),
        filter_classes=preprocess.filter_class_list(data.get("filter_classes")),
        normalization_mode=pre["normalization_mode"],
        dataset_stats=MappingProxyType(
            {name: (float(stats["mean"]), float(stats["std"])) for name, stats in pre["dataset_stats"].items()}
        ),
        resize=preprocess.parse_shape(pre.get("resize"), "data.preprocess.resize", 2),
        pad_input=preprocess.parse_shape(pad.get("input"), "data.preprocess.pad.input"),
        pad_output=preprocess.parse_shape(pad.get("output"), "data.preprocess.pad.output", 1),
        shuffle=pre.get("shuffle", False),
        rand_proj=pre.get("rand_proj", False),
        random_dataset=RandomDatasetSettings(
            size=int(random["size"]), target_count=int(random["target_count"]), img_size=tuple(random["img_size"])
        ),
        sum_dataset=SumDatasetSettings(input_size=tuple(total["input_size"])),
        fewshot=MappingProxyType(fewshot),
    )
