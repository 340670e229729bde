"""Every checkpoint problem through launch.py is one line and exit 2, before a run directory or any data.

And ``call: evaluate`` runs the model saved in the checkpoint: a shipped algorithm needs no
config files, and a model key that contradicts the checkpoint is named with both values.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

import launch
from tests.conftest import ROOT, TINY
from vsml import api, data, resources

ORIGINAL = ROOT / "tests" / "data" / "original"
PRETRAINED = resources.pretrained_file("vsml-digits")


class RunsCode:
    """A pickle that would run a shell command when loaded by pickle.load."""

    marker = None

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def no_data(monkeypatch):
    """Any dataset load fails the test: every refusal must come before the data."""

    def refuse(*args, **kwargs):
        raise AssertionError("data was loaded before the checkpoint problem was reported")

    monkeypatch.setattr(data, "load_dataset", refuse)


def _one_line_refusal(capsys, tmp_path, *config) -> str:
    run_dir = tmp_path / "run"
    capsys.readouterr()
    status = launch.main(["--run_dir", str(run_dir), "--config", *TINY, "training.iterations=1", *config])
    err = capsys.readouterr().err
    assert status == 2, err[-3000:]
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert not run_dir.exists()
    return err


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("call", ["train", "evaluate"])
def test_a_pickle_that_would_run_code_is_refused_in_one_line_for_every_protocol(
    protocol, call, tmp_path, capsys, no_data
):
    RunsCode.marker = tmp_path / "ran"
    evil = tmp_path / "model.chkp"
    evil.write_bytes(pickle.dumps({"params": RunsCode(), "opt_state": None}, protocol=protocol))
    err = _one_line_refusal(capsys, tmp_path, f"call={call}", f"checkpoint.restore.path={evil}")
    assert f"refusing '{evil}'" in err and f"{os.system.__module__}.system" in err and "allow_pickle" not in err
    assert not RunsCode.marker.exists()


@pytest.mark.parametrize(
    "content, words",
    [
        (b"a text file, not a checkpoint\n", "it is neither this project's .npz nor the original"),
        (PRETRAINED.read_bytes()[:700], "cannot read checkpoint"),  # a truncated copy
        (np.zeros(3).tobytes(), "it is neither this project's .npz"),
    ],
)
def test_foreign_and_truncated_files_are_one_line(content, words, tmp_path, capsys, no_data):
    bad = tmp_path / "checkpoint.npz"
    bad.write_bytes(content)
    err = _one_line_refusal(capsys, tmp_path, "call=evaluate", f"checkpoint.restore.path={bad}")
    assert words in err and str(bad) in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without read permission")
def test_an_unreadable_file_is_one_line(tmp_path, capsys, no_data):
    locked = tmp_path / "checkpoint.npz"
    locked.write_bytes(PRETRAINED.read_bytes())
    locked.chmod(0)
    err = _one_line_refusal(capsys, tmp_path, "call=evaluate", f"checkpoint.restore.path={locked}")
    assert "cannot read checkpoint" in err and "Permission denied" in err


@pytest.mark.parametrize(
    "config, words",
    [
        # the original's MetaRNN read as VSML (a template to map onto), and the original's VSML read as
        # MetaRNN (a fixed-size learner: its sizes come from data, so the model name is compared)
        ([f"checkpoint.restore.path={ORIGINAL}/meta_rnn/model.chkp"], "set model.type: MetaRNN"),
        (
            ["model.type=MetaRNN", f"checkpoint.restore.path={ORIGINAL}/vsml/model.chkp"],
            "holds the original's VSMLRNN; set model.type: VSMLRNN",
        ),
        (["model.type=MetaRNN", f"checkpoint.restore.path={PRETRAINED}"], "holds a VSMLRNN; set model.type: VSMLRNN"),
        (
            ["model.sub_rnn.slow_size=8", f"checkpoint.restore.path={PRETRAINED}"],
            "has shape (8,), this config needs (4,)",
        ),
    ],
)
def test_a_checkpoint_of_another_model_is_one_line_naming_the_fix(config, words, tmp_path, capsys, no_data):
    err = _one_line_refusal(capsys, tmp_path, "call=train", *config)
    assert words in err and "checkpoint.restore.path" in err


def test_evaluate_takes_the_model_from_the_checkpoint_and_names_a_contradicting_key(tmp_path, capsys, no_data):
    err = _one_line_refusal(capsys, tmp_path, "call=evaluate", "checkpoint.restore.path=pretrained:vsml-digits")
    assert err.strip() == (  # TINY sets model.sub_rnn.msg_size: 4; the shipped algorithm has 8
        "error: model.sub_rnn.msg_size: pretrained:vsml-digits was trained with 8, the config gives 4; "
        "drop model.sub_rnn.msg_size (the checkpoint's model is used) or restore another checkpoint"
    )


def test_evaluate_of_a_shipped_algorithm_needs_no_config_files(tmp_path):
    run_dir = tmp_path / "eval"
    config = ["call=evaluate", "checkpoint.restore.path=pretrained:vsml-digits", "logging.wandb=disabled"]
    config += ["evaluation.datasets=[digits]", "evaluation.count=2", "evaluation.episode_length=10"]
    assert launch.main(["--run_dir", str(run_dir), "--config", *config]) == 0
    saved = (run_dir / "config.yaml").read_text()
    assert "slow_size: 16" in saved and "msg_size: 8" in saved  # the checkpoint's model, not the defaults


def test_api_load_names_a_model_override_that_contradicts_the_checkpoint():
    with pytest.raises(ValueError, match=r"^model.vsml_rnn.num_micro_ticks: .* trained with 2, the config gives 3;"):
        api.pretrained("vsml-digits", overrides={"model.vsml_rnn.num_micro_ticks": 3})
    same = api.pretrained("vsml-digits", overrides={"model.vsml_rnn.num_micro_ticks": 2})  # agrees: fine
    assert same.config["model"]["sub_rnn"]["slow_size"] == 16


@pytest.fixture(scope="module")
def fixed_size_checkpoint(tmp_path_factory):
    """A MetaRNN (a fixed-size learner) meta-trained for one generation on 8x8 digits, 10 classes."""
    run_dir = tmp_path_factory.mktemp("metarnn") / "run"
    assert (
        launch.main(["--run_dir", str(run_dir), "--config", *TINY, "model.type=MetaRNN", "training.iterations=1"]) == 0
    )
    return run_dir / "checkpoint.npz"


@pytest.mark.parametrize("call", ["train", "evaluate"])
def test_a_fixed_size_checkpoint_for_other_data_sizes_is_one_line_before_the_data(
    call, fixed_size_checkpoint, tmp_path, capsys, no_data
):
    err = _one_line_refusal(
        capsys,
        tmp_path,
        f"call={call}",
        "model.type=MetaRNN",
        f"checkpoint.restore.path={fixed_size_checkpoint}",
        "training.dataset=mnist_offline",  # 28x28 inputs: not the digits' 8x8 it was built for
    )
    assert "training.dataset mnist_offline gives inputs [28, 28, 1] and 10 classes" in err, err
    assert str(fixed_size_checkpoint) in err
