"""The Python API: train in-process on an npz: dataset, load the run, run the learned algorithm on arrays."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from sklearn.datasets import load_digits

import launch
from tests import conftest
from tests.conftest import checkpoint_arrays
from vsml import api, checkpoint, evaluation, runs
from vsml.comm import SingleProcessComm
from vsml.plot import read_evaluation_table
from vsml.preemption import STOP_SIGNALS


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    bunch = load_digits()
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x=bunch.images, y=bunch.target)  # [1797, 8, 8] floats 0..16, [1797] ints
    return path


def _overrides(npz):
    # pairs_per_chunk: null skips the memory-plan compile of 'auto' (the result does not depend on it)
    return {
        "training.dataset": f"npz:{npz}",
        "evaluation.datasets": [f"npz:{npz}"],
        "training.iterations": 2,
        "training.pairs_per_chunk": None,
    }


@pytest.fixture(scope="module")
def trained(digits_npz, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "npz-run"
    result = api.train(config_files=["configs/test.yaml"], overrides=_overrides(digits_npz), run_dir=run_dir)
    return result


def test_train_on_npz_then_run_on_another_input_size(trained, digits_npz):
    assert trained.generation == 2 and trained.stopped_by is None
    assert [row["step"] for row in trained.metrics] == [0, 1]
    assert f"eval/npz:{digits_npz}/accuracy" in trained.metrics[0]
    algorithm = api.load(trained.run_dir)
    assert algorithm.step == 2 and algorithm.input_shape is None
    rng = np.random.default_rng(0)
    inputs, labels = rng.normal(size=(7, 5, 5, 1)), rng.integers(0, 3, size=7)  # 5x5 inputs, 3 classes
    logits = algorithm.run(inputs, labels)
    assert logits.shape == (7, 3) and logits.dtype == np.float32 and np.isfinite(logits).all()
    np.testing.assert_array_equal(algorithm.run(inputs, labels), logits)  # deterministic
    np.testing.assert_array_equal(api.load(trained.run_dir).run(inputs, labels), logits)  # and across loads
    batch = algorithm.run(rng.normal(size=(7, 2, 30)), rng.integers(0, 4, size=(7, 2)))  # [T, B, D], 4 classes
    assert batch.shape == (7, 2, 4)
    assert algorithm.run(inputs, np.eye(3)[labels]).shape == (7, 3)  # one-hot labels


def test_run_is_online_prediction_before_feedback(trained):
    """logits[t] may depend on inputs[:t+1] and labels[:t], never on labels[t] or anything later."""
    algorithm = api.load(trained.run_dir)
    rng = np.random.default_rng(1)
    inputs, labels = rng.normal(size=(10, 6, 6)), rng.integers(0, 4, size=10)
    base = algorithm.run(inputs, labels, num_classes=4)
    t = 5
    later_inputs, later_labels = inputs.copy(), labels.copy()
    later_inputs[t + 1 :] = rng.normal(size=later_inputs[t + 1 :].shape)
    later_labels[t:] = (later_labels[t:] + 1) % 4
    changed = algorithm.run(later_inputs, later_labels, num_classes=4)
    np.testing.assert_array_equal(changed[: t + 1], base[: t + 1])
    other_label = labels.copy()
    other_label[t] = (labels[t] + 1) % 4
    relabelled = algorithm.run(inputs, other_label, num_classes=4)  # only the feedback after step t differs
    np.testing.assert_array_equal(relabelled[: t + 1], base[: t + 1])
    assert not np.array_equal(relabelled[t + 1 :], base[t + 1 :])  # it learns from the feedback it gets


def test_checkpoint_file_loads_like_its_run_dir_and_holds_the_trained_params(trained):
    by_dir, by_file = api.load(trained.run_dir), api.load(trained.run_dir / checkpoint.LATEST)
    saved = checkpoint_arrays(trained.run_dir)
    flat = checkpoint.flatten_tree("params", by_file.params)
    assert flat.keys() == saved.keys()
    for name, value in flat.items():
        np.testing.assert_array_equal(value, saved[name])
    x, y = np.ones((4, 3)), np.array([0, 1, 0, 1])
    np.testing.assert_array_equal(by_dir.run(x, y), by_file.run(x, y))


def test_evaluate_matches_call_evaluate(trained, digits_npz, tmp_path):
    dataset = f"npz:{digits_npz}"
    algorithm = api.load(trained.run_dir)
    curves = algorithm.evaluate(dataset, episodes=3, length=9)
    assert curves["loss"].shape == curves["accuracy"].shape == (3, 9)
    assert set(np.unique(curves["accuracy"])) <= {0.0, 1.0}  # batch 1: each prediction right or wrong
    np.testing.assert_array_equal(algorithm.evaluate(dataset, episodes=3, length=9)["loss"], curves["loss"])
    # the command line's evaluation of the same checkpoint, settings and seed (in-process, same code path)
    config = api.build_config(
        ["configs/test.yaml"],
        {
            **_overrides(digits_npz),
            "call": "evaluate",
            "checkpoint.restore.path": str(trained.run_dir),
            "evaluation.count": 3,
            "evaluation.episode_length": 9,
        },
    )
    evaluation.evaluate(config, SingleProcessComm(), tmp_path)
    rows = [row for row in read_evaluation_table(tmp_path / "evaluation.csv") if row["episode"] != "mean"]
    table = np.zeros((3, 9))
    for row in rows:
        table[row["episode"], row["step"]] = row["accuracy"]
    np.testing.assert_allclose(table, curves["accuracy"])
    other = algorithm.evaluate("digits", episodes=2, length=5, seed=7)  # any dataset, another seed
    assert other["accuracy"].shape == (2, 5)


def test_repeated_training_in_one_process_equals_launch_py(trained, digits_npz, tmp_path, capsys):
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    again = api.train(["configs/test.yaml"], _overrides(digits_npz), run_dir=tmp_path / "again")
    overrides = [f"{key}={'null' if value is None else value}" for key, value in _overrides(digits_npz).items()]
    status = launch.main(
        [
            "--config_files",
            "configs/test.yaml",
            "--run_dir",
            str(tmp_path / "cli"),
            "--config",
            *[o.replace("['", "[").replace("']", "]") for o in overrides],
        ]
    )
    assert status == 0, capsys.readouterr().err[-2000:]
    reference = checkpoint_arrays(trained.run_dir)
    for run_dir in (again.run_dir, tmp_path / "cli"):
        arrays = checkpoint_arrays(run_dir)
        assert arrays.keys() == reference.keys()
        for name in reference:
            np.testing.assert_array_equal(arrays[name], reference[name])
    # api.train and launch.main (called in-process) put the caller's signal handlers back
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == handlers


def test_ctrl_c_stops_api_training_with_one_line_naming_how_to_resume(digits_npz, tmp_path, capsys):
    run_dir = tmp_path / "run"
    rows = run_dir / "metrics.jsonl"

    def interrupt_after_a_few_generations():
        while not (rows.exists() and len(rows.read_text().splitlines()) >= 3):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_a_few_generations, daemon=True).start()
    result = api.train(
        ["configs/test.yaml"], {**_overrides(digits_npz), "training.iterations": 100000}, run_dir=run_dir
    )
    assert result.stopped_by == "SIGINT" and 3 <= result.generation < 100000
    stop_lines = [line for line in capsys.readouterr().out.splitlines() if "stopped" in line]
    assert stop_lines == [
        f"stopped by SIGINT after gen {result.generation - 1}/100000 ({result.generation} generations done; "
        f"checkpoint saved); resume with: vsml.api.train(run_dir={str(run_dir)!r}, resume=True)"
    ]
    assert result.metrics[-1]["step"] == result.generation - 1


def test_existing_runs_are_refused_and_resumed(trained, digits_npz, tmp_path):
    with pytest.raises(ValueError, match="already holds a run; continue it with resume=True"):
        api.train(["configs/test.yaml"], _overrides(digits_npz), run_dir=trained.run_dir)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.yaml", "metrics.jsonl", checkpoint.LATEST):
        (copy / name).write_bytes((trained.run_dir / name).read_bytes())
    resumed = api.train(overrides={"training.iterations": 3}, run_dir=copy, resume=True)
    assert resumed.generation == 3 and [row["step"] for row in resumed.metrics] == [0, 1, 2]


def test_bad_input_is_one_line(tmp_path, digits_npz):
    with pytest.raises(ValueError, match=r"unknown config key 'training.populaton_size' in overrides \(did you mean"):
        api.train(overrides={"training.populaton_size": 4}, run_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="no checkpoint at"):
        api.load(tmp_path)
    with pytest.raises(ValueError, match="call: vsml.api.train needs call: train"):
        api.train(overrides={"call": "evaluate"}, run_dir=tmp_path / "y")


def test_default_run_dir_is_one_level_for_npz_datasets(tmp_path):
    config = {"training": {"dataset": "npz:data/my digits.npz"}, "logging": {"dir": str(tmp_path)}, "call": "train"}
    path = runs.default_run_dir(config)
    assert path.parent == tmp_path and path.name.endswith("-train-npz-my-digits")
    odd = runs.default_run_dir({**config, "training": {"dataset": "a/b c"}})
    assert odd.parent == tmp_path and odd.name.endswith("-train-a-b-c")
    assert runs.LATEST_CHECKPOINT == checkpoint.LATEST


def test_a_fixed_size_learner_runs_on_its_training_size_only(tmp_path):
    result = api.train(
        ["configs/test.yaml"],
        {
            "model.type": "MetaRNN",
            "model.meta_rnn.slow_size": 8,
            "training.iterations": 1,
            "training.pairs_per_chunk": None,
        },
        run_dir=tmp_path / "meta_rnn",
    )
    algorithm = api.load(result.run_dir)
    assert algorithm.input_shape == (8, 8, 1) and algorithm.num_classes == 10
    rng = np.random.default_rng(2)
    assert algorithm.run(rng.normal(size=(6, 8, 8, 1)), np.arange(6) % 3).shape == (6, 10)  # its 10 classes
    with pytest.raises(ValueError, match=r"MetaRNN was built for inputs of shape \(8, 8, 1\) and 10 classes"):
        algorithm.run(rng.normal(size=(6, 5, 5)), np.arange(6) % 3)


def test_mismatched_arrays_are_one_line_errors(trained):
    algorithm = api.load(trained.run_dir)
    with pytest.raises(ValueError, match=r"inputs of shape \[5, 3\] and labels of shape \[4\] disagree on the steps T"):
        algorithm.run(np.zeros((5, 3)), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match=r"inputs: give \[T, \*input_shape\]"):
        algorithm.run(np.zeros(5), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="class 3 does not fit num_classes=2"):
        algorithm.run(np.zeros((4, 3)), np.array([0, 1, 2, 3]), num_classes=2)
    with pytest.raises(ValueError, match="labels: give integer class indices or one-hot floats"):
        algorithm.run(np.zeros((2, 3)), np.array(["a", "b"]))


def test_run_episodes_equals_one_run_per_episode(trained):
    """E episodes in one call are E independent episodes: each equals its own single-episode call."""
    algorithm = api.load(trained.run_dir)
    rng = np.random.default_rng(3)
    inputs, labels = rng.normal(size=(4, 9, 5, 5)), rng.integers(0, 3, size=(4, 9))  # E=4 episodes of T=9 steps
    together = algorithm.run_episodes(inputs, labels, num_classes=3, seed=2)
    assert together.shape == (4, 9, 3) and together.dtype == np.float32
    one_by_one = np.stack([algorithm.run(x, y, num_classes=3, seed=2) for x, y in zip(inputs, labels, strict=True)])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-6)
    # the same E episodes as B streams of ONE episode share the learner's state: other logits
    streams = algorithm.run(inputs.swapaxes(0, 1), labels.swapaxes(0, 1), num_classes=3, seed=2)
    assert streams.shape == (9, 4, 3)
    assert not np.allclose(streams.swapaxes(0, 1)[:, 1:], one_by_one[:, 1:], atol=1e-4)
    # episodes of B shared-state streams, and one-hot labels
    batched = algorithm.run_episodes(inputs[:, :, None], np.eye(3, dtype=np.float32)[labels][:, :, None], seed=2)
    np.testing.assert_allclose(batched[:, :, 0], one_by_one, rtol=1e-5, atol=1e-6)


def test_run_episodes_bad_arrays_and_float_indices_are_one_line(trained):
    algorithm = api.load(trained.run_dir)
    with pytest.raises(ValueError, match=r"disagree on the episodes E, the steps T"):
        algorithm.run_episodes(np.zeros((2, 5, 3)), np.zeros((3, 5), dtype=int))
    with pytest.raises(ValueError, match=r"class indices as floats\? pass labels.astype\(int\)"):
        algorithm.run(np.zeros((4, 3)), np.array([0.0, 1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=r"class indices as floats\? pass labels.astype\(int\)"):
        algorithm.run_episodes(np.zeros((2, 4, 3)), np.zeros((2, 4)))


def test_api_and_command_line_give_identical_numbers_in_fresh_processes(tmp_path):
    """Each process sets the project's XLA flags itself (``import vsml``), so a fresh Python's
    ``.evaluate`` and ``launch.py``'s ``call: evaluate`` compute the same numbers, bit for bit.
    The case is one where the flags change the numbers (digits, batch 4: the YNNPACK fusion's last bits)."""
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}  # as a user's shell has it
    if conftest.USER_XLA_FLAGS:
        env["XLA_FLAGS"] = conftest.USER_XLA_FLAGS
    env["JAX_PLATFORMS"] = "cpu"
    script = (
        "import json, numpy as np; from vsml import api; "
        "c = api.pretrained('vsml-digits').evaluate('digits', episodes=4, length=50, batch_size=4, seed=5); "
        "print(json.dumps({k: float(np.mean(v)) for k, v in c.items()}))"
    )
    command_line = [
        *(sys.executable, str(conftest.ROOT / "launch.py"), "--run_dir", str(tmp_path / "cli"), "--config"),
        *("call=evaluate", "checkpoint.restore.path=pretrained:vsml-digits", "evaluation.datasets=[digits]"),
        *("evaluation.count=4", "evaluation.episode_length=50", "evaluation.batch_size=4", "evaluation.seed=5"),
        "logging.wandb=disabled",
    ]
    runs_together = [
        subprocess.Popen(args, cwd=conftest.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args in ([sys.executable, "-c", script], command_line)
    ]
    (api_out, api_err), (cli_out, cli_err) = [run.communicate(timeout=conftest.HANG_GUARD_S) for run in runs_together]
    assert [run.returncode for run in runs_together] == [0, 0], api_err[-2000:] + cli_err[-2000:]
    from_api = json.loads(api_out.splitlines()[-1])
    row = json.loads((tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["eval/digits/loss"] == from_api["loss"] and row["eval/digits/accuracy"] == from_api["accuracy"]


def test_an_evaluate_run_is_named_after_the_datasets_it_evaluates(tmp_path):
    config = {
        "call": "evaluate",
        "training": {"dataset": "digits"},
        "evaluation": {"datasets": ["npz:data/mine.npz", "npz:/x/other set.npz"]},
        "logging": {"dir": str(tmp_path)},
    }
    path = runs.default_run_dir(config)
    assert path.parent == tmp_path and path.name.endswith("-evaluate-npz-mine+npz-other-set")
    assert runs.default_run_dir({**config, "call": "train"}).name.endswith("-train-digits")
