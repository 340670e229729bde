"""End to end through ``launch.py``: run directory, resume, MPI equivalence, evaluate, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from tests.conftest import TINY, checkpoint_arrays, launch

EVAL_KEYS = {f"eval/digits/{name}" for name in ("loss", "accuracy", "final_loss", "final_accuracy")}


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _ok(result):
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_typo_in_a_key_exits_at_once_naming_the_right_key():
    result = launch("--config", "training.populaton_size=8")
    assert result.returncode == 2
    assert "training.population_size" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_train_writes_config_metrics_and_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    _ok(
        launch(
            "--run_dir",
            run_dir,
            "--config",
            *TINY,
            "training.iterations=4",
            "checkpoint.with_step=true",
            "logging.wandb=offline",
        )
    )
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["training"]["iterations"] == 4 and saved["training"]["dataset"] == "digits"
    rows = _rows(run_dir)
    assert [row["step"] for row in rows] == [0, 1, 2, 3]
    for row in rows:
        assert {"meta_loss", "time", "es/nonfinite", "time/evaluate", "time/communicate", "time/update"} <= set(row)
        assert np.isfinite(row["meta_loss"])
        # every evaluation.frequency (2) generations, and the last one (3) so the run ends with a meta-test
        assert (EVAL_KEYS <= set(row)) == (row["step"] % 2 == 0 or row["step"] == 3)
    assert 0.0 <= rows[0]["eval/digits/accuracy"] <= 1.0
    assert sorted(p.name for p in run_dir.glob("checkpoint*.npz")) == [
        "checkpoint-2.npz",
        "checkpoint-4.npz",
        "checkpoint.npz",
        "checkpoint.prev.npz",
    ]
    table = (run_dir / "evaluation.csv").read_text().splitlines()
    assert table[0] == "train_step,dataset,episode,step,loss,accuracy"
    # the mean curve over evaluation episodes, 12 inner steps, at generations 0, 2 and the last, 3
    assert [line.split(",")[:4] for line in table[1:]] == [
        [str(g), "digits", "mean", str(t)] for g in (0, 2, 3) for t in range(12)
    ]
    mean_accuracy = np.mean([float(line.split(",")[5]) for line in table[1:13]])
    assert mean_accuracy == pytest.approx(rows[0]["eval/digits/accuracy"], abs=1e-5)
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as ckpt:
        assert int(ckpt["step"]) == 4
        assert yaml.safe_load(str(ckpt["config"])) == saved
        assert any(name.startswith("opt_state/") for name in ckpt.files)
    assert list((run_dir / "wandb").glob("offline-run-*")), "wandb offline run missing"


def test_a_run_shorter_than_the_evaluation_frequency_still_ends_with_a_meta_test(tmp_path):
    _ok(launch("--run_dir", tmp_path, "--config", *TINY, "training.iterations=3", "evaluation.frequency=50"))
    evaluated = [row["step"] for row in _rows(tmp_path) if EVAL_KEYS <= set(row)]
    assert evaluated == [0, 2]  # generation 0, then the last generation


def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    _ok(launch("--run_dir", whole, "--config", *TINY, "training.iterations=5"))
    _ok(launch("--run_dir", part, "--config", *TINY, "training.iterations=3"))
    _ok(launch("--resume", part, "--config", "training.iterations=5"))
    for prefix in ("params/", "opt_state/"):
        a, b = checkpoint_arrays(whole, prefix), checkpoint_arrays(part, prefix)
        assert a.keys() == b.keys() and a
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # Wall-clock figures (time, time/evaluate, ...) differ between any two runs.
    strip = lambda rows: [{k: v for k, v in row.items() if k.split("/")[0] != "time"} for row in rows]  # noqa: E731
    assert strip(_rows(whole)) == strip(_rows(part))


@pytest.mark.mpi
def test_two_ranks_give_the_same_meta_parameters_and_meta_test_results_as_one(tmp_path):
    args = [
        "--config_files",
        "configs/quickstart.yaml",
        "--config",
        "training.iterations=3",
        "training.population_size=4",
        "evaluation.count=3",  # split 1 + 2 over two ranks
        "logging.wandb=disabled",
    ]
    _ok(launch(*args, "--run_dir", tmp_path / "one"))
    two = _ok(launch(*args, "--run_dir", tmp_path / "two", ranks=2))
    assert "ranks: 2" in two.stdout
    one_params, two_params = checkpoint_arrays(tmp_path / "one"), checkpoint_arrays(tmp_path / "two")
    assert one_params.keys() == two_params.keys() and one_params
    for name in one_params:
        np.testing.assert_array_equal(one_params[name], two_params[name], err_msg=name)
    assert [r["meta_loss"] for r in _rows(tmp_path / "one")] == [r["meta_loss"] for r in _rows(tmp_path / "two")]
    # evaluation.count episodes in all, whatever the rank count: the same meta-test numbers and curves
    evaluated = [{k: v for k, v in r.items() if k.startswith("eval/")} for r in _rows(tmp_path / "one")]
    assert any(evaluated) and evaluated == [
        {k: v for k, v in r.items() if k.startswith("eval/")} for r in _rows(tmp_path / "two")
    ]
    table = (tmp_path / "one" / "evaluation.csv").read_text()
    assert table.count("\n") > 1 and (tmp_path / "two" / "evaluation.csv").read_text() == table


@pytest.mark.mpi
def test_population_not_divisible_by_ranks_is_refused():
    result = launch("--config", *TINY, "training.population_size=3", ranks=2)
    assert result.returncode == 2
    assert "training.population_size: a population of 3 cannot be split evenly among 2 ranks" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_restores_and_reports(tmp_path):
    _ok(launch("--run_dir", tmp_path / "train", "--config", *TINY, "training.iterations=2"))
    evaluated = launch(
        "--run_dir",
        tmp_path / "eval",
        "--config",
        *TINY,
        "call=evaluate",
        f"checkpoint.restore.path={tmp_path / 'train'}",
    )
    _ok(evaluated)
    # the last line says where the results went, as a training run's does
    assert evaluated.stdout.strip().splitlines()[-1].startswith(f"done: meta-test in {tmp_path / 'eval'} (")
    (row,) = _rows(tmp_path / "eval")
    assert row["step"] == 2 and EVAL_KEYS <= set(row)
    table = [line.split(",") for line in (tmp_path / "eval" / "evaluation.csv").read_text().splitlines()[1:]]
    episodes = sorted({cells[2] for cells in table})
    assert episodes == ["0", "1", "mean"] and len(table) == 3 * 12
    last_step = [float(cells[5]) for cells in table if cells[3] == "11" and cells[2] != "mean"]
    assert np.mean(last_step) == pytest.approx(row["eval/digits/final_accuracy"])


def test_array_task_from_slurm_environment(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"grid": [{"training.loss_type": ["mean", "last"]}, {"seed": [1, 2, 3]}]}))
    _ok(
        launch(
            "--array",
            sweep,
            "--run_dir",
            tmp_path / "run",
            "--config",
            *TINY,
            "training.iterations=1",
            env={"SLURM_ARRAY_TASK_ID": "4"},
        )
    )
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    # n = 4 - 1 = 3; the first axis varies fastest (the original release's numbering):
    # loss_type option 3 % 2 = 1, seed option 3 // 2 = 1.
    assert saved["training"]["loss_type"] == "last" and saved["seed"] == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--resume", "/nonexistent/run"], "no config.yaml there"),
        (["--config", *TINY, "model.type=Nope"], "model.type: must be one of VSMLRNN, MetaRNN"),
        (["--config", *TINY, "training.dataset=mnsit"], "unknown dataset 'mnsit'"),
        (["--config", *TINY, "evaluation.frequency=3", "summary.frequency=2"], "multiple of summary.frequency"),
        (
            ["--config", *TINY, "optimizer.fitness_shaping=rank"],
            "optimizer.fitness_shaping: must be one of raw, centered_rank",
        ),
        (["--config", "training.dataset=mnist"], "'mnist' is a TFDS dataset"),
        (["--config_files", "configs/missing.yaml"], "missing.yaml"),
    ],
)
def test_bad_input_is_refused_with_one_line(args, message):
    result = launch(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_existing_run_directory_is_not_overwritten(tmp_path):
    _ok(launch("--run_dir", tmp_path, "--config", *TINY, "training.iterations=1"))
    result = launch("--run_dir", tmp_path, "--config", *TINY, "training.iterations=1")
    assert result.returncode == 2 and f"--resume {tmp_path}" in result.stderr
