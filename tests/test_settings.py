"""Typed configuration (docs/DESIGN.md §8): each rank's config becomes frozen, typed sections once,
after validation; every key of configs/default.yaml has a home in them."""

from __future__ import annotations

import dataclasses

import pytest

from vsml.config import ConfigError, build_config, load_default, resolve_for_rank
from vsml.settings import RunSettings, data_settings, run_settings


def settings_for(*overrides: str) -> RunSettings:
    return run_settings(resolve_for_rank(build_config(overrides=list(overrides)), 0))


def test_sections_are_typed_and_frozen():
    settings = settings_for(
        "training.population_size=24",
        "evaluation.datasets=[digits, mnist_offline]",
        "data.preprocess.resize=[14, 14]",
        "optimizer.kwargs.eps=1e-6",
    )
    assert settings.training.population_size == 24
    assert settings.evaluation.datasets == ("digits", "mnist_offline")
    assert settings.data.resize == (14, 14) and settings.data.pad_input is None
    assert settings.data.dataset_stats["mnist"] == (0.1307, 0.3081)
    assert settings.optimizer.adam_kwargs == {"b1": 0.9, "b2": 0.999, "eps": 1e-6}
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.training.population_size = 8
    with pytest.raises(TypeError):  # read-only mappings
        settings.optimizer.adam_kwargs["b1"] = 0.5
    with pytest.raises(TypeError):
        settings.model["type"] = "SGD"


def test_sections_follow_the_rank_resolution():
    config = build_config(
        overrides=[
            "training.dataset={mpi_split: [digits, mnist_offline]}",
            "data.preprocess.rand_proj={mpi_split: [1, 2]}",
        ]
    )
    ranks = [run_settings(resolve_for_rank(config, rank)) for rank in range(2)]
    assert [s.training.dataset for s in ranks] == ["digits", "mnist_offline"]
    assert [s.data.rand_proj for s in ranks] == [1, 2]


def test_building_validates_and_names_the_key():
    with pytest.raises(ConfigError, match="training.population_size: must be a positive integer, got 0"):
        settings_for("training.population_size=0")
    with pytest.raises(ValueError, match="data.preprocess.resize: .* is not a list of 2 positive integers"):
        data_settings(resolve_for_rank(build_config(overrides=["data.preprocess.resize=[14]"]), 0))
    with pytest.raises(ConfigError, match="data.preprocess.shuffle: must be true, false or an integer seed >= 0"):
        settings_for("data.preprocess.shuffle=maybe")
    assert settings_for("data.preprocess.shuffle=7").data.shuffle == 7  # a seed, as the docs promise
    with pytest.raises(ValueError, match="omniglot_fewshot_dataset.resize"):
        data_settings(resolve_for_rank(build_config(overrides=["omniglot_fewshot_dataset.resize=[0, 4]"]), 0))


# Keys kept as they are (a learner's section goes to its spec builder) or accepted and unused.
UNTYPED = {"model", "data.shuffle_buffer_size"}
# Where a key lives when its field name differs from the key.
RENAMED = {
    "summary.frequency": "summary_frequency",
    "runtime.compilation_cache": "compilation_cache",
    "optimizer.kwargs": "optimizer.adam_kwargs",
    "data.preprocess.pad.input": "data.pad_input",
    "data.preprocess.pad.output": "data.pad_output",
    "omniglot_fewshot_dataset": "data.fewshot",
    "random_dataset": "data.random_dataset",
    "sum_dataset": "data.sum_dataset",
}


def _field_paths(obj, prefix: str = "") -> set[str]:
    paths = set()
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        path = f"{prefix}{field.name}"
        paths.add(path)
        if dataclasses.is_dataclass(value):
            paths |= _field_paths(value, f"{path}.")
    return paths


def _home(key: str) -> str:
    """The settings path that holds config key ``key`` (an independent mapping of the YAML layout)."""
    for old, new in RENAMED.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old) :] if not new.startswith("data.fewshot") else new
    key = key.replace("checkpoint.restore.", "checkpoint.restore_")
    return key.replace("data.preprocess.", "data.")


def test_every_default_key_has_a_typed_home():
    settings = settings_for()
    paths = _field_paths(settings)
    default = load_default()

    def leaves(tree, prefix=""):
        for key, value in tree.items():
            dotted = f"{prefix}{key}"
            if dotted in UNTYPED or dotted.split(".")[0] in UNTYPED:
                continue
            if isinstance(value, dict) and dotted not in ("optimizer.kwargs", "data.preprocess.dataset_stats"):
                yield from leaves(value, dotted + ".")
            else:
                yield dotted

    missing = [key for key in leaves(default) if _home(key) not in paths]
    assert not missing, missing
