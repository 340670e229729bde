"""One place per setting: every configuration key declared once, as a typed field of a frozen section
(docs/DESIGN.md §8, §9).

Each key is a field of a frozen dataclass (:mod:`vsml.settings.sections`,
:mod:`~vsml.settings.data`, :mod:`~vsml.settings.model`) with its type, its default,
an optional rule (range or choices) and a one-line doc (:func:`~vsml.settings.fields.setting`).
Everything else derives from these declarations: :func:`run_settings` checks one
rank's resolved config and builds its :class:`RunSettings` (one line naming the
dotted key for any bad value), each module receives its typed section,
:class:`SettingError` lets the code that uses a setting complain in its own
terms while the key is named here, and ``python -m vsml.settings --markdown``
writes the key reference of docs/DESIGN.md §9. ``configs/default.yaml`` lists
the same keys and defaults for reading (a test holds them equal). This package
is the only place that names config keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from vsml.config_tree import ConfigError
from vsml.settings.data import (
    DataSection,
    DataSettings,
    EpisodeAugmentSettings,
    FewShotSettings,
    MixtureSettings,
    PadSettings,
    PreprocessSettings,
    RandomDatasetSettings,
    SumDatasetSettings,
)
from vsml.settings.fields import NameIn, build, is_open, leaves, or_null, type_text
from vsml.settings.model import (
    FWMemorySettings,
    FWPSettings,
    HebbianSettings,
    MetaRNNSettings,
    ModelSettings,
    NodePertSettings,
    SGDSettings,
    SubRNNSettings,
    VSMLRNNSettings,
)
from vsml.settings.sections import (
    CheckpointSettings,
    EvaluationSettings,
    LoggingSettings,
    OptimizerSettings,
    RestoreSettings,
    RunSettings,
    RuntimeSettings,
    SettingError,
    SummarySettings,
    TrainingSettings,
    key_of,
)


def run_settings(rank_config: Mapping) -> RunSettings:
    """Checks one rank's resolved config (no ``mpi_split`` left) and builds its typed sections.

    Raises ConfigError of one line naming the key.
    """
    settings = build(RunSettings, rank_config)
    if settings.evaluation.frequency % settings.summary.frequency:
        raise ConfigError(
            f"evaluation.frequency ({settings.evaluation.frequency}) must be a multiple of "
            f"summary.frequency ({settings.summary.frequency})"
        )
    return settings


def validate(rank_config: Mapping) -> None:
    """Raises ConfigError (one line naming the key) for the first ill-typed or out-of-range value."""
    run_settings(rank_config)


def data_settings(rank_config: Mapping) -> DataSettings:
    """The data sections of one rank's resolved config, checked (see :attr:`RunSettings.data_settings`)."""
    return run_settings(rank_config).data_settings


def model_settings(model: ModelSettings | Mapping) -> ModelSettings:
    """``model`` as typed settings: a ``model`` mapping read from YAML is checked and built."""
    return model if isinstance(model, ModelSettings) else build(ModelSettings, model, "model.")


def open_keys(root: type = RunSettings) -> tuple[str, ...]:
    """Dotted keys whose value is a free-form mapping (typed ``Mapping``): the config layers accept new
    entries below them (extra ``optax.adam`` arguments, statistics of a user's dataset)."""
    return tuple(leaf.key for leaf in leaves(root) if is_open(leaf.hint))


def reference_markdown(root: type = RunSettings, names_of: Callable | None = None) -> str:
    """The key reference of docs/DESIGN.md §9: one table row per key of ``root``, from the declarations.

    ``names_of(rule)`` lists the names a registry setting accepts (:func:`vsml.run_checks.registry_names`,
    which the entry points pass; this layer imports no registry); without it the row names the registry.
    """
    rows = ["| key | default | type / range | meaning |", "| --- | --- | --- | --- |"]
    for leaf in leaves(root):
        kind = type_text(leaf.hint)
        if isinstance(leaf.rule, NameIn) and names_of is not None:
            kind = f"one of {', '.join(map(str, names_of(leaf.rule)))}"
        elif leaf.rule is not None and leaf.rule.description:
            kind = or_null(leaf.rule.description) if kind.startswith("null or ") else leaf.rule.description
        cells = (f"`{leaf.key}`", _yaml_text(leaf.default), kind, leaf.doc)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def _yaml_text(value) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_yaml_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_yaml_text(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


__all__ = [
    "CheckpointSettings",
    "DataSection",
    "DataSettings",
    "EpisodeAugmentSettings",
    "EvaluationSettings",
    "FWMemorySettings",
    "FWPSettings",
    "FewShotSettings",
    "HebbianSettings",
    "LoggingSettings",
    "MetaRNNSettings",
    "MixtureSettings",
    "ModelSettings",
    "NodePertSettings",
    "OptimizerSettings",
    "PadSettings",
    "PreprocessSettings",
    "RandomDatasetSettings",
    "RestoreSettings",
    "RunSettings",
    "RuntimeSettings",
    "SGDSettings",
    "SettingError",
    "SubRNNSettings",
    "SumDatasetSettings",
    "SummarySettings",
    "TrainingSettings",
    "VSMLRNNSettings",
    "data_settings",
    "key_of",
    "model_settings",
    "open_keys",
    "reference_markdown",
    "run_settings",
    "validate",
]
