"""The dataset-source registry: every dataset is reached through ``vsml.data.registry``, and a new
kind of dataset needs nothing but a source module and its entry there (docs/DESIGN.md §10.2)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsml import data
from vsml.config import load_default
from vsml.data import registry
from vsml.data.base import Loaded, LoadOptions, table_stats
from vsml.settings import data_settings


@pytest.fixture(scope="module")
def config():
    return load_default()


def test_every_name_has_exactly_one_source_and_unknown_names_list_them():
    for name in (*registry.available_datasets(), "npz:some/file.npz"):
        assert sum(source.provides(name) for source in registry.SOURCES) == 1, name
    with pytest.raises(
        ValueError,
        match=r"training.dataset: unknown dataset 'mnsit' \(did you mean 'mnist'\?\); valid: .*, or npz:PATH",
    ):
        registry.source_of("mnsit", "training.dataset")
    # a name like none of them gets the list only
    with pytest.raises(ValueError, match=r"unknown dataset 'zzz'; valid: "):
        registry.source_of("zzz", "evaluation.datasets")


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("fashion_mnst", "fashion_mnist"),
        ("MNIST", "mnist"),
        ("omniglot_fewshots", "omniglot_fewshot"),
        ("cifar", "cifar10"),
    ],
)
def test_a_mistyped_dataset_name_gets_the_name_meant(typed, meant):
    assert meant in registry.available_datasets()
    with pytest.raises(
        ValueError, match=f"evaluation.datasets: unknown dataset '{typed}' \\(did you mean '{meant}'\\?\\)"
    ):
        registry.source_of(typed, "evaluation.datasets")


def test_an_offline_dataset_from_the_registry_loads_and_samples_its_own_examples(config):
    name = next(
        name
        for name in registry.available_datasets()
        if registry.source_of(name).stored_classes and registry.source_of(name) is registry.SOURCES[0]
    )  # an offline source: no download
    source = registry.source_of(name)
    loaded = source.load(name, "test", data_settings(config), LoadOptions())
    spec, arrays = data.load_dataset(name, "test", data_settings(config))
    assert spec.input_shape == loaded.base_shape and spec.num_classes == source.class_count(name, data_settings(config))
    inputs, labels = jax.jit(lambda key: data.sample_episode(spec, arrays, key, 9, 4))(jax.random.PRNGKey(0))
    assert inputs.shape == (9, 4, *spec.input_shape) and labels.shape == (9, 4, spec.num_classes)
    # Every sampled (input, label) pair is an example of the split, normalised as the spec says.
    stored = (
        loaded.arrays["images"].reshape(len(loaded.arrays["labels"]), -1).astype(np.float64) * loaded.scale - spec.mean
    ) / spec.std
    flat, classes = np.asarray(inputs).reshape(36, -1), np.asarray(labels).reshape(36, -1).argmax(1)
    for row, label in zip(flat, classes):
        match = np.abs(stored - row).max(axis=1) < 1e-5
        assert match.any() and label in set(loaded.arrays["labels"][match].tolist())


@dataclasses.dataclass(frozen=True)
class ParitySampler:
    """±1 inputs ``[*shape]``; the label is whether an even number of them are negative."""

    shape: tuple[int, ...]
    kind = "parity"

    def sample(self, arrays, key, length, batch):
        signs = jnp.where(jax.random.bernoulli(key, 0.5, (length, batch, *self.shape)), -1.0, 1.0)
        negatives = jnp.sum(signs < 0, axis=tuple(range(2, signs.ndim)))
        return signs, (negatives % 2 == 1).astype(jnp.int32)


class ParitySource:
    stored_classes = False
    pattern = None

    def names(self):
        return ("parity",)

    def provides(self, name):
        return name == "parity"

    def check(self, name, settings, key):
        pass

    def class_count(self, name, settings):
        return 2

    def stats(self, name, settings):
        return table_stats(settings, name)

    def example_shape(self, name, settings):
        return (5,)

    def load(self, name, subset, settings, options):
        return Loaded(sampler=ParitySampler((5,)), arrays={}, base_shape=(5,), classes=2)

    def status(self, directory):
        return "procedural", [("parity", "ready", "is the number of negative inputs odd")]


def test_a_new_source_needs_only_its_module_and_a_registry_entry(config, monkeypatch):
    monkeypatch.setattr(registry, "SOURCES", (*registry.SOURCES, ParitySource()))
    assert "parity" in registry.available_datasets()
    data.check_dataset_available("parity", data_settings(config), "training.dataset")
    assert data.class_count("parity", data_settings(config)) == 2
    padded = {
        **config,
        "data": {
            **config["data"],
            "preprocess": {**config["data"]["preprocess"], "pad": {"input": [7], "output": [4]}},
        },
    }
    spec, arrays = data.load_dataset("parity", "train", data_settings(padded))
    assert spec.input_shape == (7,) and spec.num_classes == 4 and spec.kind == "parity"
    inputs, labels = map(np.asarray, data.sample_episode(spec, arrays, jax.random.PRNGKey(3), 50, 2))
    assert (inputs[..., 5:] == 0).all() and labels[..., 2:].sum() == 0  # padding after the source's data
    expected = (inputs[..., :5] < 0).sum(-1) % 2  # an independent count
    np.testing.assert_array_equal(labels.argmax(-1), expected)
    filtered = {**config, "data": {**config["data"], "filter_classes": [0]}}
    with pytest.raises(ValueError, match="data.filter_classes: applies to stored datasets, not to 'parity'"):
        data.check_dataset_available("parity", data_settings(filtered))


def _with(config, preprocess=None, **data_keys):
    """``config`` with ``data`` keys and ``data.preprocess`` keys replaced."""
    section = {**config["data"], **data_keys}
    section["preprocess"] = {**config["data"]["preprocess"], **(preprocess or {})}
    return {**config, "data": section}


@pytest.mark.parametrize(
    "name, keys",
    [
        ("digits", {}),
        ("mnist_offline", {"preprocess": {"resize": [14, 14]}}),
        ("digits", {"preprocess": {"pad": {"input": [28, 28, 1], "output": [62]}}}),
        ("digits", {"filter_classes": [3, 7]}),
        ("random", {}),
        ("sum", {"preprocess": {"resize": [6, 6]}}),
        ("npz:VECTORS", {}),
        ("npz:VECTORS", {"preprocess": {"pad": {"input": [9], "output": None}}}),
        ("breast_cancer", {}),
        ("mixture", {"mixture": {"datasets": ["wine", "iris"], "weights": None, "width": None}}),
        ("mixture", {"mixture": {"datasets": ["digits", "iris"], "weights": None, "width": 80}}),
        (
            "mixture",
            {
                "mixture": {"datasets": ["wine", "sum"], "weights": None, "width": None},
                "preprocess": {"pad": {"input": None, "output": [12]}},
            },
        ),
    ],
)
def test_learner_sizes_are_those_of_the_loaded_data(name, keys, config, tmp_path):
    """What a fixed-size learner is built for, known before loading, is what loading the data gives."""
    if name == "npz:VECTORS":
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "vectors.npz", x=rng.normal(size=(60, 6)), y=np.arange(60) % 4)
        name = f"npz:{tmp_path / 'vectors.npz'}"
    settings = data_settings(_with(config, **keys))
    spec, _ = data.load_dataset(name, "train", settings)
    assert data.learner_sizes(name, settings) == (spec.input_shape, spec.num_classes)
