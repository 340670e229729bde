"""The shipped pre-trained learning algorithms: listed, loadable, documented, and they learn."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import yaml

from tests.conftest import launch
from vsml import api, checkpoint, resources
from vsml.data import offline_source

NAMES = resources.pretrained_names()
CARD_KEYS = {
    "name",
    "description",
    "model",
    "meta_parameters",
    "meta_trained_on",
    "training_data",
    "generations",
    "reproduce",
    "config_files",
    "commit",
    "made",
    "machine",
    "meta_test",
}


def test_there_are_shipped_algorithms_and_the_api_lists_them():
    assert NAMES and api.pretrained_names() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_shipped_algorithm_has_a_card_that_agrees_with_its_checkpoint(name):
    card = checkpoint.load_card(resources.pretrained_card(name))
    assert CARD_KEYS <= set(card) and card["name"] == name
    saved = checkpoint.load_arrays(resources.pretrained_file(name))
    config = yaml.safe_load(str(saved["config"]))
    assert card["meta_trained_on"] == config["training"]["dataset"]
    # It says where its training examples come from and on what terms: the file the loader reads.
    assert card["training_data"] == offline_source.PROVENANCE[card["meta_trained_on"]]
    assert offline_source.PACKAGED_FILES[card["meta_trained_on"]][1][-1] in card["training_data"]["source"]
    assert card["training_data"]["terms"]
    assert card["model"] == config["model"]["type"]
    assert card["generations"] == int(saved["step"])
    params = [array for key, array in saved.items() if key.startswith("params/")]
    assert card["meta_parameters"] == sum(array.size for array in params)
    results = card["meta_test"]["results"]
    assert set(card["meta_test"]["unseen"]) <= set(results)
    for scores in results.values():
        assert 0.0 <= scores["accuracy"] <= 1.0 and 0.0 <= scores["last_quarter_accuracy"] <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_a_shipped_algorithm_runs_on_arrays_of_any_size_and_learns_online(name):
    algorithm = api.pretrained(name)
    assert algorithm.card["name"] == name
    rng = np.random.default_rng(0)
    logits = algorithm.run(rng.normal(size=(30, 5, 7)).astype(np.float32), rng.integers(0, 4, size=30))
    assert logits.shape == (30, 4) and np.isfinite(logits).all()
    # It learns: on the held-out split of its meta-training set its online accuracy rises well
    # above chance (10 classes) within an episode, and the episode's second half beats the first.
    accuracy = algorithm.evaluate(algorithm.card["meta_trained_on"], episodes=8, length=100)["accuracy"]
    assert accuracy.mean() > 0.25
    assert accuracy[:, 50:].mean() > accuracy[:, :50].mean()


def test_an_unknown_name_is_one_line_with_the_closest_name():
    with pytest.raises(
        ValueError, match=r"^no pre-trained algorithm named 'vsml-digit'; did you mean 'vsml-digits'\?$"
    ):
        api.pretrained("vsml-digit")


def test_launch_evaluates_a_shipped_algorithm_by_name(tmp_path):
    card = checkpoint.load_card(resources.pretrained_card("vsml-digits"))
    result = launch(
        "--config_files", *card["config_files"], "--run_dir", tmp_path / "eval", "--config", "call=evaluate",
        "checkpoint.restore.path=pretrained:vsml-digits", "evaluation.datasets=[digits]", "evaluation.count=4",
        "evaluation.episode_length=50", "logging.wandb=disabled",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    row = json.loads((tmp_path / "eval" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["step"] == card["generations"] and row["eval/digits/accuracy"] > 0.25


def test_launch_refuses_an_unknown_shipped_name_in_one_line(tmp_path):
    result = launch(
        "--config_files", "configs/quickstart_paper.yaml", "--run_dir", tmp_path / "eval", "--config",
        "call=evaluate", "checkpoint.restore.path=pretrained:nothing-here", "logging.wandb=disabled",
    )  # fmt: skip
    assert result.returncode != 0
    assert "pretrained:nothing-here: no pre-trained algorithm named 'nothing-here'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_reproducing_the_digits_algorithm_gives_its_meta_parameters(tmp_path):
    """The card's command, run again: the same meta-parameters on the machine and jax it names.

    Elsewhere floats drift in the last digits after some hundreds of generations
    (docs/getting-started.md, "The quick start"), so there the reproduction only has to learn as well.
    """
    from bench import machine  # noqa: PLC0415

    card = checkpoint.load_card(resources.pretrained_card("vsml-digits"))
    command = card["reproduce"].split()
    assert command[:2] == ["python3", "launch.py"]
    result = launch(*command[2:], "--run_dir", tmp_path / "run", "--config", "logging.wandb=disabled", timeout=3600)
    assert result.returncode == 0, result.stderr
    shipped = api.pretrained("vsml-digits")
    again = api.load(tmp_path / "run")
    assert again.step == shipped.step
    if machine.summary_line(machine.describe()) == card["machine"]:
        for ours, theirs in zip(jax.tree_util.tree_leaves(again.params), jax.tree_util.tree_leaves(shipped.params)):
            np.testing.assert_array_equal(ours, theirs)
    else:
        accuracy = again.evaluate("digits", episodes=32, length=100)["accuracy"].mean()
        assert accuracy > card["meta_test"]["results"]["digits"]["accuracy"] - 0.1


def test_the_card_of_a_mixture_gives_each_dataset_its_source_and_terms():
    from bench.pretrained import _training_data  # noqa: PLC0415 - bench/ is not part of the package

    names = ["digits", "wine", "breast_cancer"]
    entries = _training_data({"mixture": names}, "runs/general")
    assert entries == {name: offline_source.PROVENANCE[name] for name in names}
    with pytest.raises(SystemExit, match=r"meta-trained on \['npz:mine.npz'\]; add source and terms"):
        _training_data({"mixture": ["digits", "npz:mine.npz"]}, "runs/general")
