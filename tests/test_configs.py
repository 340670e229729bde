"""Every paper config and every task of every sweep file builds, validates, loads its data and builds its learner.

TFDS datasets cannot be downloaded here, so ``tfds_source.load`` is replaced by
tiny arrays of each dataset's real shape and class count (the table in
``vsml.data.tfds_source.TFDS_SOURCES``); everything after it (class filtering,
resizing, padding, projections, few-shot episodes) is the real code. The learner
is initialised and run on an episode (of the configured length) of every dataset abstractly
(``jax.eval_shape``), which catches a fixed-size baseline whose parameters do
not fit an evaluation dataset. Also runs ``configs/test.yaml`` end to end.
"""

from __future__ import annotations

import functools
import json
import types

import jax
import numpy as np
import pytest

from tests.conftest import HANG_GUARD_S, ROOT, launch
from vsml import data
from vsml.config import build_config, load_yaml_file, resolve_for_rank
from vsml.data import tfds_source
from vsml.learners import build_learner, learner_type
from vsml.run_checks import check_config
from vsml.settings import data_settings, validate
from vsml.sweeps import sweep_tasks

RANKS = 11  # views of ranks 0..10 (resolving does not depend on the rank count)
LAUNCH_SIZES = (1, 4)  # rank counts the whole start-up check (population split included) must pass
NOT_STANDALONE = {"default.yaml"}

CONFIG_FILES = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p.name not in NOT_STANDALONE)
ARRAY_FILES = sorted((ROOT / "configs" / "array").glob("*.yaml"))


# The layer files the original README puts in front of a sweep file (Section 4.4, Figure 8).
ORIGINAL_COMBINATIONS = [
    (("metarnn.yaml", "pad.yaml"), "datasets.yaml"),
    (("fwmemory.yaml", "pad.yaml"), "datasets.yaml"),
    (("hebbian.yaml", "pad.yaml"), "datasets.yaml"),
    (("sgd.yaml",), "sgd.yaml"),
    (("rand_proj.yaml", "backprop.yaml"), None),
    (("omniglot.yaml", "sgd_omniglot.yaml"), None),
]


def _cases():
    cases = [pytest.param(("file", (path,), None, None), id=path.name) for path in CONFIG_FILES]
    for path in ARRAY_FILES:
        for number in range(1, len(sweep_tasks(load_yaml_file(path), str(path))) + 1):
            cases.append(pytest.param(("array", (), path, number), id=f"array/{path.name}:{number}"))
    for files, array in ORIGINAL_COMBINATIONS:
        paths = tuple(ROOT / "configs" / name for name in files)
        name = "+".join(files)
        if array is None:
            cases.append(pytest.param(("file", paths, None, None), id=name))
            continue
        array_path = ROOT / "configs" / "array" / array
        for number in range(1, len(sweep_tasks(load_yaml_file(array_path), str(array_path))) + 1):
            cases.append(pytest.param(("array", paths, array_path, number), id=f"{name}+array/{array}:{number}"))
    return cases


def _fake_tfds(name, subset, config):
    """Tiny stand-in for a prepared TFDS split: the real shape and class count, every class present."""
    source = tfds_source.TFDS_SOURCES[name]
    classes_present = min(source.num_classes, 20)  # omniglot: 20 of its 1,623 classes suffice
    labels = np.repeat(np.arange(classes_present, dtype=np.int32), 2)
    images = (np.arange(len(labels))[:, None, None, None] * 7 % 256 * np.ones((1, *source.shape))).astype(np.uint8)
    return images, labels, source.num_classes


@pytest.fixture(autouse=True)
def offline_tfds(monkeypatch):
    monkeypatch.setattr(tfds_source, "load", _fake_tfds)
    monkeypatch.setattr(tfds_source, "check_available", lambda name, config, key="dataset": None)


def _data_key(name, subset, rank_config):
    relevant = {
        k: rank_config[k] for k in ("seed", "data", "random_dataset", "sum_dataset", "omniglot_fewshot_dataset")
    }
    return (name, subset, json.dumps(relevant, sort_keys=True))


_SPECS: dict = {}


def _spec(name, subset, rank_config, length=1, batch=1):
    """The dataset's DataSpec and an episode's abstract inputs/labels (cached: projections are big)."""
    key = (*_data_key(name, subset, rank_config), length, batch)
    if key not in _SPECS:
        spec, arrays = data.load_dataset(name, subset, data_settings(rank_config))
        episode = jax.eval_shape(
            lambda a, k: data.sample_episode(spec, a, k, length, batch), arrays, jax.random.PRNGKey(0)
        )
        _SPECS[key] = (spec, episode)
    return _SPECS[key]


@functools.cache
def _check_learner(model_json, input_shape, num_classes, episode_shapes):
    model = json.loads(model_json)
    learner = build_learner(model, input_shape, num_classes)
    params = jax.eval_shape(learner.init, jax.random.PRNGKey(0))
    inputs, labels = (jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in episode_shapes)
    logits = jax.eval_shape(learner.run, params, jax.random.PRNGKey(0), inputs, labels)
    assert logits.shape == labels.shape, (model["type"], logits.shape, labels.shape)


def _fresh_networks(view) -> bool:
    """A hand-designed rule evaluated without a checkpoint: a network per dataset, of its sizes."""
    return (
        view["call"] == "evaluate"
        and view["checkpoint"]["restore"]["path"] is None
        and learner_type(view["model"]["type"]).hand_designed
    )


def _build(case):
    _, files, array, number = case
    config = build_config(list(files), array_file=array, task=number)
    if (
        config["call"] == "evaluate"
        and config["checkpoint"]["restore"]["path"] is None
        and not learner_type(config["model"]["type"]).hand_designed
    ):
        # evaluation configs take the checkpoint on the command line, as their headers show; a
        # shipped one stands in for it (check_config only checks that the file is there)
        config = build_config(base=config, overrides=["checkpoint.restore.path=pretrained:vsml-digits"])
    return config


@pytest.mark.parametrize("case", _cases())
def test_config_builds_validates_and_loads_for_every_rank(case):
    config = _build(case)
    for size in LAUNCH_SIZES:
        check_config(config, types.SimpleNamespace(size=size))
    seen = set()
    for rank in range(RANKS):
        view = resolve_for_rank(config, rank)
        text = json.dumps(view, sort_keys=True)
        if text in seen:
            continue
        seen.add(text)
        validate(view)
        fixed_size = view["model"]["type"] != "VSMLRNN" and not _fresh_networks(view)
        if view["call"] == "train" or fixed_size:  # evaluate builds a baseline for the training data's sizes
            train_spec, _ = _spec(view["training"]["dataset"], "train", view)
        evaluation = view["evaluation"]
        training = view["training"]
        names = (
            [(training["dataset"], "train", training["episode_length"], training["batch_size"])]
            if view["call"] == "train"
            else []
        )
        names += [
            (name, evaluation["subset"], evaluation["episode_length"], evaluation["batch_size"])
            for name in evaluation["datasets"]
        ]
        for name, subset, length, batch in names:
            spec, (inputs, labels) = _spec(name, subset, view, length, batch)
            shape, classes = (
                (train_spec.input_shape, train_spec.num_classes) if fixed_size else (spec.input_shape, spec.num_classes)
            )
            if fixed_size:
                assert (spec.input_shape, spec.num_classes) == (shape, classes), (
                    f"rank {rank}: {view['model']['type']} is built for {shape}/{classes} but "
                    f"{name} has {spec.input_shape}/{spec.num_classes}; pad the data"
                )
            _check_learner(
                json.dumps(view["model"], sort_keys=True),
                tuple(shape),
                int(classes),
                ((inputs.shape, inputs.dtype), (labels.shape, labels.dtype)),
            )


def test_every_paper_run_has_a_config():
    names = {p.name for p in CONFIG_FILES} | {f"array/{p.name}" for p in ARRAY_FILES}
    for needed in (
        "rand_proj.yaml",
        "rand_proj_backprop.yaml",
        "invariance.yaml",
        "omniglot_fewshot.yaml",
        "evaluate_all.yaml",
        "test.yaml",
        "array/datasets.yaml",
        "array/learners_datasets.yaml",
        "array/eval_invariances.yaml",
    ):
        assert needed in names
    assert len(sweep_tasks(load_yaml_file(ROOT / "configs/array/datasets.yaml"))) == 11  # --array=1-11
    # The original release's configs/ (its names; where we renamed a file, both exist).
    for original in (
        "backprop.yaml",
        "backward_pass.yaml",
        "cifar10.yaml",
        "conv.yaml",
        "deep.yaml",
        "evaluation.yaml",
        "fwmemory.yaml",
        "hebbian.yaml",
        "invariances.yaml",
        "metarnn.yaml",
        "no_fashion_mnist.yaml",
        "omniglot.yaml",
        "pad.yaml",
        "pretrained.yaml",
        "rand_proj.yaml",
        "sgd.yaml",
        "sgd_omniglot.yaml",
        "test.yaml",
        "array/conv.yaml",
        "array/datasets.yaml",
        "array/eval_invariances.yaml",
        "array/sgd.yaml",
    ):
        assert original in names, original
    assert len(sweep_tasks(load_yaml_file(ROOT / "configs/array/sgd.yaml"))) == 4  # --array=1-4


@pytest.mark.parametrize(
    "original, ours", [("omniglot.yaml", "omniglot_fewshot.yaml"), ("invariances.yaml", "invariance.yaml")]
)
def test_renamed_files_keep_the_original_name_with_the_same_values(original, ours):
    assert build_config([ROOT / "configs" / original]) == build_config([ROOT / "configs" / ours])


def test_every_config_names_its_command():
    for path in [*CONFIG_FILES, *ARRAY_FILES]:
        if path.name in ("backprop.yaml", "pad.yaml", "quickstart.yaml"):
            continue  # layers meant to be combined with others; quickstart's commands are in the README
        assert "launch.py" in path.read_text(), f"{path} has no command line in its header"


def test_smoke_config_trains_and_writes_a_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    result = launch(
        "--config_files",
        "configs/test.yaml",
        "--run_dir",
        run_dir,
        "--config",
        "logging.wandb=disabled",
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "checkpoint.npz").is_file()
