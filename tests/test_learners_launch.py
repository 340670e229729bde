"""Every learner runs one ES generation and one meta-gradient step through launch.py."""

from __future__ import annotations

import json

import pytest

import launch
from tests.conftest import TINY

MODEL_TYPES = ["VSMLRNN", "MetaRNN", "HebbianFW", "FWP", "FWMemory", "SGD", "NodePert"]
SMALL_BASELINES = [
    "model.meta_rnn.slow_size=16",
    "model.fw_memory.slow_size=8",
    "model.sgd.hidden_size=16",
    "model.nodepert.hidden_size=16",
    "model.fwp.fast_size=8",
]


def _one_generation(tmp_path, model_type, optimizer, pad, capsys):
    args = ["--run_dir", str(tmp_path / "run")]
    if pad:
        args += ["--config_files", "configs/pad.yaml"]
    args += [
        "--config",
        *TINY,
        *SMALL_BASELINES,
        f"model.type={model_type}",
        f"optimizer.type={optimizer}",
        "training.iterations=1",
        "training.population_size=2",
        "evaluation.count=1",
    ]
    status = launch.main(args)
    captured = capsys.readouterr()
    assert status == 0, captured.err[-3000:]
    (row,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert row["step"] == 0 and row["meta_loss"] is not None and "eval/digits/accuracy" in row


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_each_learner_trains_one_es_generation(tmp_path, model_type, capsys):
    _one_generation(tmp_path, model_type, "es", pad=False, capsys=capsys)


@pytest.mark.parametrize("model_type", ["VSMLRNN", "SGD"])
def test_meta_gradient_step_with_padding(tmp_path, model_type, capsys):
    _one_generation(tmp_path, model_type, "sgd", pad=True, capsys=capsys)


@pytest.mark.slow
@pytest.mark.parametrize("pad", [False, True])
@pytest.mark.parametrize("optimizer", ["es", "metagrad"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_learner_optimizer_and_padding(tmp_path, model_type, optimizer, pad, capsys):
    _one_generation(tmp_path, model_type, optimizer, pad=pad, capsys=capsys)


@pytest.mark.parametrize("model_type", ["SGD", "NodePert"])
def test_hand_designed_rules_evaluate_without_a_checkpoint(tmp_path, model_type, capsys):
    status = launch.main(
        [
            "--run_dir",
            str(tmp_path),
            "--config",
            *TINY,
            *SMALL_BASELINES,
            "call=evaluate",
            f"model.type={model_type}",
            "evaluation.episode_length=300",
        ]
    )
    assert status == 0, capsys.readouterr().err[-3000:]
    (row,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert row["step"] == 0 and 0.0 <= row["eval/digits/accuracy"] <= 1.0
    curve = [line.split(",") for line in (tmp_path / "evaluation.csv").read_text().splitlines()[1:]]
    assert len([cells for cells in curve if cells[2] == "mean"]) == 300


def test_meta_learned_evaluate_without_a_checkpoint_is_refused(tmp_path, capsys):
    status = launch.main(["--run_dir", str(tmp_path), "--config", *TINY, "call=evaluate"])
    err = capsys.readouterr().err
    assert status == 2 and "call: evaluate of a meta-learned VSMLRNN needs checkpoint.restore.path" in err
