"""The run's sections: schedule, outputs, meta-training and the root :class:`RunSettings` (docs/DESIGN.md §9)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from vsml.config_tree import ConfigError
from vsml.settings.data import DataSection, DataSettings, FewShotSettings, RandomDatasetSettings, SumDatasetSettings
from vsml.settings.fields import (
    BELOW_ONE,
    NAME_LIST,
    NON_EMPTY_STR,
    NON_NEGATIVE_INT,
    NON_NEGATIVE_NUMBER,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    Rule,
    entries,
    one_of,
    one_of_names_in,
    section,
    section_paths,
    setting,
)
from vsml.settings.model import ModelSettings

_CHUNK = Rule(
    lambda v: v is None or v == "auto" or POSITIVE_INT.check(v), "auto, null or a positive integer", decides_type=True
)


@dataclasses.dataclass(frozen=True)
class SummarySettings:
    """``summary``: how often a metrics row is written."""

    frequency: int = setting(100, "a metrics row (metrics.jsonl, wandb, stdout) every N generations", POSITIVE_INT)


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """``evaluation``: meta-testing during training (and ``call: evaluate``)."""

    frequency: int = setting(100, "evaluate every N generations; a multiple of summary.frequency", POSITIVE_INT)
    datasets: tuple[str, ...] = setting(
        ("mnist", "fashion_mnist"), "meta-test datasets, each at its own shape", NAME_LIST
    )
    batch_size: int = setting(1, "inner batch B of evaluation episodes", POSITIVE_INT)
    episode_length: int = setting(2000, "T of evaluation episodes", POSITIVE_INT)
    seed: int = setting(22, "evaluation episode keys (fixed for the whole run)", NON_NEGATIVE_INT)
    subset: str = setting(
        "test", "split evaluated (procedural datasets ignore it)", one_of_names_in("vsml.data", "SUBSETS")
    )
    count: int = setting(1, "evaluation episodes in all, split over the ranks (§7.4)", POSITIVE_INT)


@dataclasses.dataclass(frozen=True)
class RestoreSettings:
    """``checkpoint.restore``: what a run starts from."""

    path: str | None = setting(
        None,
        "a run directory, checkpoint .npz, the original's model.chkp or pretrained:NAME to start from (--resume sets it)",
        NON_EMPTY_STR,
    )
    run_path: str | None = setting(
        None, "or a wandb run ENTITY/PROJECT/RUN_ID: a local wandb/ run directory with that id, else the wandb API",
        NON_EMPTY_STR,
    )  # fmt: skip
    file_name: str | None = setting(
        None,
        "the file of that wandb run, or of the run directory path, to restore (null: checkpoint.npz)",
        NON_EMPTY_STR,
    )


@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
    """``checkpoint``: when to save, what to keep, what to restore."""

    frequency: int = setting(500, "save after generation g when (g+1) % N = 0, and at the end", POSITIVE_INT)
    with_step: bool = setting(False, "also keep checkpoint-<step>.npz")
    keep: int | None = setting(
        None, "with with_step: keep only the newest N step checkpoints (null: all)", POSITIVE_INT
    )
    restore: RestoreSettings = section(RestoreSettings)


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """``training``: what is meta-trained on, and how much."""

    iterations: int = setting(10001, "generations (ES) or steps (meta-gradients)", NON_NEGATIVE_INT)
    dataset: str = setting(
        "mnist", "meta-training dataset: a name of `python3 -m vsml.data status` or npz:PATH", NON_EMPTY_STR
    )
    batch_size: int = setting(1, "inner batch B of training episodes", POSITIVE_INT)
    episode_length: int = setting(500, "T of training episodes", POSITIVE_INT)
    population_size: int = setting(
        1024, "ES antithetic pairs P (2P episodes a generation) or meta-gradient episodes a step; divides among ranks",
        POSITIVE_INT,
    )  # fmt: skip
    loss_type: str = setting(
        "mean", "meta-loss over the episode, or its last step", one_of_names_in("vsml.meta.objective", "LOSS_TYPES")
    )
    pairs_per_chunk: int | str | None = setting(
        "auto", "pairs a rank evaluates at once (auto: fit the cache / memory; null: the whole slice); never changes results",
        _CHUNK,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """``optimizer``: the outer loop (``type``, a name of ``meta.OUTER_LOOP_NAMES``), its ES settings and the
    outer optimiser (Adam after optional global-norm clipping)."""

    type: str = setting(
        "es", "the outer loop: es, metagrad (meta-gradients with Adam, §6.3; sgd, its old name, still works), "
        "pes (persistent ES over truncated episodes, §6.6) or nres (noise-reuse ES, §6.6)",
        one_of_names_in("vsml.meta", "OUTER_LOOP_NAMES"),
    )  # fmt: skip
    noise_std: float = setting(0.05, "ES sigma", POSITIVE_NUMBER)
    lr: float = setting(0.025, "Adam learning rate", POSITIVE_NUMBER)
    kwargs: Mapping[str, float] = setting(
        {"b1": 0.9, "b2": 0.999},
        "arguments of optax.adam (b1, b2 in [0, 1)); open: any other key goes to optax.adam too (e.g. eps)",
        entries({"b1": BELOW_ONE, "b2": BELOW_ONE}),
    )
    clip_gradnorm: float = setting(
        0.0, "global-norm clip of the gradient estimate before Adam; 0 disables", NON_NEGATIVE_NUMBER
    )
    fitness_shaping: str = setting("raw", "§6.2", one_of_names_in("vsml.meta.es", "FITNESS_SHAPINGS"))
    remat_steps: int = setting(
        0, "meta-gradients: rematerialise the episode in blocks of N steps (jax.checkpoint; 1: every step); "
        "0: keep every step's activations; changes memory and time, not the gradient (§6.3)",
        NON_NEGATIVE_INT,
    )  # fmt: skip
    truncation: int = setting(
        0, "meta-gradients: truncated backpropagation through segments of N steps; 0: the whole episode; "
        "biased, and saves no memory by itself (§6.3)",
        NON_NEGATIVE_INT,
    )  # fmt: skip
    pes_truncation_steps: int = setting(
        10, "pes, nres: learner steps per particle per generation (K); must divide training.episode_length (§6.6)",
        POSITIVE_INT,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """``runtime``: how this machine runs it; never changes results."""

    compilation_cache: str = setting(
        "auto",
        "persistent XLA cache: auto (~/.cache/vsml/jax on GPU/TPU, off on CPU), off, or a directory (any backend)",
        NON_EMPTY_STR,
    )


@dataclasses.dataclass(frozen=True)
class LoggingSettings:
    """``logging``: where a run's outputs go."""

    wandb: str = setting("offline", "wandb mode; offline needs no account", one_of("offline", "online", "disabled"))
    dir: str = setting("runs", "parent of default run directories", NON_EMPTY_STR)
    tags: tuple[str, ...] = setting(
        (), "wandb tags, also kept in config.yaml; --tags and a sweep task's are added", NAME_LIST
    )
    job_type: str | None = setting(None, "wandb job type (--job_type)", NON_EMPTY_STR)
    progress_seconds: float = setting(
        30.0, "output not a terminal (pipe, Slurm): a progress line at least every N s", NON_NEGATIVE_NUMBER
    )


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """One rank's whole configuration, checked and typed: one field per top-level key of the config."""

    seed: int = setting(
        42, "initial meta-parameters, ES noise and episode keys; seeds of rand_proj/shuffle: true", NON_NEGATIVE_INT
    )
    call: str = setting("train", "meta-train, or evaluate restored meta-parameters", one_of("train", "evaluate"))
    summary: SummarySettings = section(SummarySettings)
    evaluation: EvaluationSettings = section(EvaluationSettings)
    checkpoint: CheckpointSettings = section(CheckpointSettings)
    training: TrainingSettings = section(TrainingSettings)
    data: DataSection = section(DataSection)
    optimizer: OptimizerSettings = section(OptimizerSettings)
    model: ModelSettings = section(ModelSettings)
    random_dataset: RandomDatasetSettings = section(RandomDatasetSettings)
    sum_dataset: SumDatasetSettings = section(SumDatasetSettings)
    omniglot_fewshot_dataset: FewShotSettings = section(FewShotSettings)
    runtime: RuntimeSettings = section(RuntimeSettings)
    logging: LoggingSettings = section(LoggingSettings)

    @property
    def data_settings(self) -> DataSettings:
        """The sections a data source reads (the fields of :class:`DataSettings`, taken by name)."""
        return DataSettings(**{field.name: getattr(self, field.name) for field in dataclasses.fields(DataSettings)})


_PATHS = MappingProxyType({cls: path for cls, path in section_paths(RunSettings)})


def key_of(section, name: str) -> str:
    """The dotted config key of field ``name`` of ``section`` (a typed section or its class)."""
    cls = section if isinstance(section, type) else type(section)
    return f"{_PATHS[cls]}.{name}" if cls in _PATHS else name


class SettingError(ConfigError):
    """A bad value of one setting, raised by the code that uses it in its own terms.

    ``section`` is the typed section (or its class) holding the setting, ``name``
    its field, ``where`` an optional suffix (e.g. ``[2]`` for a list entry); the
    settings layer turns them into the dotted key that starts the one-line message.
    """

    def __init__(self, section, name: str, message: str, where: str = ""):
        super().__init__(f"{key_of(section, name)}{where}: {message}")
