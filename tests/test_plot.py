"""``python3 -m vsml.plot``: what it reads from a run directory, the PNG and the summary it prints."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import HANG_GUARD_S, ROOT, TINY, launch
from vsml import plot

HEADER = ["train_step", "dataset", "episode", "step", "loss", "accuracy"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real 4-generation run (evaluated at steps 0 and 2), shared by the tests of this module."""
    run_dir = tmp_path_factory.mktemp("plot") / "run"
    result = launch("--run_dir", run_dir, "--config", *TINY, "training.iterations=4")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return run_dir


@pytest.fixture
def run_copy(trained, tmp_path):
    """A private copy of the trained run (without any evaluation.csv the training wrote)."""
    run_dir = tmp_path / trained.name
    shutil.copytree(trained, run_dir, ignore=shutil.ignore_patterns("wandb", "evaluation.csv"))
    return run_dir


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _write_table(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)


def _table_rows(with_mean: bool):
    """Two train_steps x two datasets x two episodes x 5 inner steps, with known accuracies in [0, 1]."""
    rows = []
    for train_step in (0, 2):
        for d, dataset in enumerate(["digits", "mnist_offline"]):
            episodes = [[0.05 * s + 0.01 * d + 0.1 * train_step + 0.02 * e for s in range(5)] for e in (0, 1)]
            for e, accs in enumerate(episodes):
                rows += [[train_step, dataset, e, s, 2.0 - a, a] for s, a in enumerate(accs)]
            if with_mean:
                rows += [
                    [train_step, dataset, "mean", s, 2.0 - (a + b) / 2, (a + b) / 2 + 0.3]
                    for s, (a, b) in enumerate(zip(*episodes))
                ]  # +0.3: tells mean rows apart
    return rows


def _cli(*args, cwd=None):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "vsml.plot", *map(str, args)],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env=env,
    )


def test_load_curves_reads_meta_loss_and_eval_accuracy_from_metrics(run_copy):
    rows = _metrics(run_copy)
    curves = plot.load_curves(run_copy)
    assert curves.meta_loss.x.tolist() == [row["step"] for row in rows] == [0, 1, 2, 3]
    np.testing.assert_allclose(curves.meta_loss.y, [row["meta_loss"] for row in rows])
    evaluated = [row for row in rows if "eval/digits/accuracy" in row]
    assert [row["step"] for row in evaluated] == [0, 2, 3]  # every 2, and the last generation
    assert curves.learning == {} and list(curves.eval_accuracy) == ["digits"]
    assert curves.eval_accuracy["digits"].x.tolist() == [0, 2, 3]
    np.testing.assert_allclose(curves.eval_accuracy["digits"].y, [row["eval/digits/accuracy"] for row in evaluated])
    last = evaluated[-1]
    np.testing.assert_allclose(
        curves.final["digits"], (last["eval/digits/accuracy"], last["eval/digits/final_accuracy"])
    )


def test_learning_curve_is_the_latest_train_steps_mean_rows(run_copy):
    _write_table(run_copy / "evaluation.csv", _table_rows(with_mean=True))
    curves = plot.load_curves(run_copy)
    assert sorted(curves.learning) == ["digits", "mnist_offline"] and curves.eval_accuracy == {}
    assert curves.learning_train_step == {"digits": 2, "mnist_offline": 2}
    digits = curves.learning["digits"]
    assert digits.x.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(digits.y, [0.05 * s + 0.2 + 0.01 + 0.3 for s in range(5)])  # mean rows only
    np.testing.assert_allclose(curves.final["digits"], (np.mean(digits.y), digits.y[-1]))


def test_learning_curve_averages_episodes_without_mean_rows(run_copy):
    _write_table(run_copy / "evaluation.csv", _table_rows(with_mean=False))
    curve = plot.load_curves(run_copy).learning["mnist_offline"]
    np.testing.assert_allclose(curve.y, [0.05 * s + 0.01 + 0.2 + 0.01 for s in range(5)])


def test_learning_curves_of_the_training_runs_own_table(trained):
    table = trained / "evaluation.csv"
    assert table.exists(), "training writes evaluation.csv at every evaluation"
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    latest = max(int(row["train_step"]) for row in rows)
    assert latest == 3  # evaluated at steps 0 and 2, and at the last generation (3)
    mean = [
        row
        for row in rows
        if row["train_step"] == str(latest) and row["episode"] == "mean" and row["dataset"] == "digits"
    ]
    curves = plot.load_curves(trained)
    assert curves.learning_train_step["digits"] == latest
    assert curves.learning["digits"].x.tolist() == [int(row["step"]) for row in mean] == list(range(12))
    np.testing.assert_allclose(curves.learning["digits"].y, [float(row["accuracy"]) for row in mean])


def test_bad_evaluation_table_names_the_missing_column(run_copy):
    (run_copy / "evaluation.csv").write_text("train_step,dataset,step,accuracy\n0,digits,0,0.5\n")
    with pytest.raises(ValueError, match="episode"):
        plot.load_curves(run_copy)
    result = _cli(run_copy)
    assert result.returncode == 2 and "episode" in result.stderr and "Traceback" not in result.stderr


def test_cli_draws_a_png_and_prints_a_summary(run_copy, tmp_path):
    other = tmp_path / "other" / run_copy.name  # same name: labels get the parent directory
    shutil.copytree(run_copy, other)
    _write_table(other / "evaluation.csv", _table_rows(with_mean=True))
    out = tmp_path / "figs" / "compare.png"
    result = _cli(run_copy, other, "--out", out)
    assert result.returncode == 0, result.stderr

    import matplotlib.image  # noqa: PLC0415

    image = matplotlib.image.imread(out)
    assert image.shape[0] >= 300 and image.shape[1] >= 600
    assert image[..., :3].std() > 0.05  # not a blank canvas

    final_loss = _metrics(run_copy)[-1]["meta_loss"]
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["run", "last", "step", "final", "meta_loss"]
    assert f"{final_loss:.4f}" in lines[1] and lines[1].split()[1] == "3"
    assert any(line.split()[:2] == [f"{tmp_path.name}/{run_copy.name}", "digits"] for line in lines)
    mean_row = next(line for line in lines if line.startswith(f"other/{run_copy.name}") and "mnist_offline" in line)
    assert "evaluation.csv" in mean_row and "72.0%" in mean_row  # last inner step of the mean rows: 0.72
    assert f"wrote {out}" in result.stdout


def test_cli_default_output_is_curves_png_in_the_run_dir(run_copy):
    result = _cli(run_copy)
    assert result.returncode == 0, result.stderr
    assert (run_copy / "curves.png").stat().st_size > 10_000


def test_cli_refuses_a_directory_that_is_not_a_run(tmp_path):
    result = _cli(tmp_path)
    assert result.returncode == 2 and "not a run directory" in result.stderr


def test_run_labels_disambiguate_repeated_names(tmp_path):
    assert plot.run_labels([tmp_path / "a" / "task-1", tmp_path / "b" / "task-1", tmp_path / "c"]) == [
        "a/task-1",
        "b/task-1",
        "c",
    ]


def test_nan_accuracy_is_shown_as_a_dash():
    assert plot._fmt(math.nan, True) == "-" and plot._fmt(0.5, True) == "50.0%"


def test_smooth_is_the_mean_of_the_last_n_points():
    y = np.array([1.0, 3.0, np.nan, 5.0, 9.0, 2.0])
    expected = []
    for i in range(len(y)):
        window = [v for v in y[max(0, i - 2) : i + 1] if not math.isnan(v)]
        expected.append(sum(window) / len(window))
    np.testing.assert_allclose(plot.smooth(y, 3), expected)
    np.testing.assert_array_equal(plot.smooth(y, 1), y)


def test_chance_levels_come_from_the_runs_config(run_copy):
    curves = plot.load_curves(run_copy)
    assert curves.chance == {"digits": pytest.approx(0.1)}
    assert curves.uniform_loss == pytest.approx(math.log(10))
    from vsml.config import build_config  # noqa: PLC0415

    config = build_config(
        (),
        [
            "training.dataset=random",
            "random_dataset.target_count=5",
            "data.filter_classes={mpi_split: [[1, 2], [1, 2, 3]]}",
        ],
    )
    chance, uniform = plot.chance_levels(config, ["sum", "random", "digits", "omniglot_fewshot"])
    # filter_classes differs per rank: no single chance level for a stored dataset
    assert chance == {"sum": 0.5, "random": 0.2, "omniglot_fewshot": 0.2} and uniform == pytest.approx(math.log(5))


def test_cli_several_runs_go_to_the_first_run_dir_and_smooth(run_copy, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run_copy, other)
    result = _cli(run_copy, other, "--smooth", "3")
    assert result.returncode == 0, result.stderr
    assert (run_copy / "compare.png").stat().st_size > 10_000 and f"wrote {run_copy / 'compare.png'}" in result.stdout
    bad = _cli(run_copy, "--smooth", "0")
    assert bad.returncode == 2 and "positive integer" in bad.stderr


def test_runs_of_different_class_counts_keep_their_chance_lines(run_copy, tmp_path):
    colors = ["C0", "C1", "C2"]
    assert plot.chance_lines([0.1, 0.1, None], ["a", "b", "c"], colors) == [(0.1, "gray", "")]  # they agree
    assert plot.chance_lines([0.1, 0.2, None], ["a", "b", "c"], colors) == [(0.1, "C0", " a"), (0.2, "C1", " b")]
    assert plot.chance_lines([None, None], ["a", "b"], colors) == []
    five = plot.load_curves(run_copy)
    five.chance = {name: 0.2 for name in five.chance}  # as if its dataset had 5 classes
    five.uniform_loss = math.log(5)
    out = plot.plot([plot.load_curves(run_copy), five], ["ten", "five"], tmp_path / "mixed.png")
    assert out.stat().st_size > 10_000
