"""bench/plateau.py: the escape-generation rule, the last-quarter accuracy, and a --quick run end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import plateau

ROOT = Path(__file__).resolve().parent.parent


def test_escape_is_the_first_generation_from_which_the_loss_stays_below():
    t = 2.29
    steps = list(range(7))
    # dips below at 1, back above at 2, below for good from 3
    assert plateau.escape_generation(steps, [2.30, 2.28, 2.31, 2.28, 2.2, 2.1, 2.0], t) == 3
    assert plateau.escape_generation(steps, [2.30, 2.28, 2.2, 2.1, 2.0, 1.9, 2.295], t) is None  # back up at the end
    assert plateau.escape_generation(steps, [2.0] * 7, t) == 0
    assert plateau.escape_generation([], [], t) is None


def test_last_quarter_accuracy_averages_the_last_quarter_of_steps(tmp_path):
    rows = ["train_step,dataset,episode,step,loss,accuracy"]
    for gen in (0, 10):
        for step in range(8):  # last quarter: steps 6 and 7
            acc = 1.0 if (gen == 10 and step >= 6) else 0.25 if step == 7 else 0.0
            rows.append(f"{gen},d,mean,{step},2.3,{acc}")
            rows.append(f"{gen},d,0,{step},2.3,0.5")  # single episodes are ignored
        rows.append(f"{gen},other,mean,7,2.3,0.9")  # another dataset is ignored
    (tmp_path / "evaluation.csv").write_text("\n".join(rows) + "\n")
    assert plateau.last_quarter_accuracy(tmp_path, "d") == {0: 0.125, 10: 1.0}


def test_eval_frequency_hits_every_reported_generation():
    assert plateau.eval_frequency([100, 200, 300]) == 100
    assert plateau.eval_frequency([150, 400]) == 50


# ~1 min of meta-training: a benchmark's own pipeline, kept out of the default run.
@pytest.mark.slow
def test_quick_run_reports_every_seed(tmp_path):
    out = tmp_path / "plateau.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "plateau.py"),
            "--quick",
            "--runs_dir",
            str(tmp_path / "runs"),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "escape gen" in proc.stdout and "machine:" in proc.stdout
    data = json.loads(out.read_text())
    assert data["num_classes"] == 10 and data["machine"]["jax"]
    assert [r["seed"] for r in data["results"]] == [0, 1]
    for r in data["results"]:
        assert r["generations_run"] == 25 and r["wall_s"] > 0
        # every seed is its own run directory written by launch.py
        assert (Path(r["run_dir"]) / "metrics.jsonl").exists()
        for g in ("12", "24"):
            at = r["at"][g]
            # 24 generations of a tiny model on 10-step episodes: still at chance, meta-loss ~ ln 10
            assert abs(at["meta_loss"] - math.log(10)) < 0.05
            assert 0 <= at["accuracy"] <= 1 and 0 <= at["last_quarter_accuracy"] <= 1
        assert r["escape_generation"] is None or 0 <= r["escape_generation"] <= 24


def test_summarise_reports_a_finished_run_directory(tmp_path, capsys):
    run = tmp_path / "other-seed3"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 3\n")
    # plateau until 4, a dip at 2, below ln 10 - 0.01 from 5 on; evaluated at 0 and 10
    losses = [2.303, 2.303, 2.28, 2.303, 2.30, 2.25, 2.2, 2.1, 2.0, 1.9, 1.8]
    rows = [{"step": i, "meta_loss": v, "time": 2.0 * i} for i, v in enumerate(losses)]
    rows[10]["eval/mnist_offline/accuracy"] = 0.4
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (run / "evaluation.csv").write_text(
        "train_step,dataset,episode,step,loss,accuracy\n"
        + "".join(f"10,mnist_offline,mean,{s},2.0,{0.2 if s < 3 else 0.6}\n" for s in range(4))
    )
    assert plateau.main(["--summarise", str(run), "--generations", "10", "--at", "10"]) == 0
    out = capsys.readouterr().out
    window = sum(losses[1:11]) / 10  # the 10 generations ending at 10; the last quarter of 4 steps is step 3
    assert f"| 3 | 5 | {window:.3f} / 40.0% / 60.0% | 20 |" in out
