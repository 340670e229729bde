"""bench/truncation.py: synapse-update accounting, "updates to reach the target", the report, and a --quick run."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import truncation
from vsml.config import build_config

ROOT = Path(__file__).resolve().parent.parent


def quickstart_config(*overrides: str) -> dict:
    return build_config([str(ROOT / "configs" / "quickstart.yaml")], list(overrides))


def test_synapses_are_counted_from_the_layers():
    # digits: 8x8 = 64 inputs, 10 classes; one dense VSML layer has a synapse per (input, output)
    assert truncation.synapse_count(quickstart_config()) == 64 * 10
    deep = build_config([str(ROOT / "configs" / f) for f in ("quickstart.yaml", "deep.yaml")], [])
    assert truncation.synapse_count(deep) == 64 * 32 + 32 * 10


def test_a_truncation_costs_k_of_t_steps_of_a_generation():
    config = quickstart_config("model.vsml_rnn.num_micro_ticks=2", "training.batch_size=3")
    # by hand: 32 pairs x 2 members x steps x 3 episodes per batch x 640 synapses x 2 micro ticks
    es = truncation.synapse_updates_per_generation("es", config, 640, truncation_steps=10)
    pes = truncation.synapse_updates_per_generation("pes", config, 640, truncation_steps=10)
    assert es == 32 * 2 * 50 * 3 * 640 * 2
    assert pes == 32 * 2 * 10 * 3 * 640 * 2
    assert truncation.synapse_updates_per_generation("nres", config, 640, truncation_steps=10) == pes
    assert truncation.synapse_updates_per_generation("es-raw", config, 640, truncation_steps=10) == es


def test_every_method_is_meta_tested_at_the_same_synapse_updates():
    setting = truncation.SETTINGS["quickstart"]  # G = 750 ES generations, 30 meta-tests, K = 10 of T = 50
    assert truncation.method_iterations(setting, "es", 50) == (25, 750)
    assert truncation.method_iterations(setting, "pes", 50) == (125, 3750)
    assert truncation.method_iterations(setting, "es-raw", 50) == (25, 750)
    config = quickstart_config()
    es = truncation.synapse_updates_per_generation("es", config, 640, setting.truncation_steps)
    pes = truncation.synapse_updates_per_generation("pes", config, 640, setting.truncation_steps)
    assert 25 * es == 125 * pes and 750 * es == 3750 * pes


def test_updates_to_reach_interpolates_the_first_crossing():
    # a straight line L(u) = 3 - u/100 reaches 2.25 at u = 75, exactly
    updates = [0, 50, 100, 150]
    assert truncation.updates_to_reach(updates, [3 - u / 100 for u in updates], 2.25) == pytest.approx(75.0)
    # the first crossing counts, not a later one; a point on the target is reached there
    assert truncation.updates_to_reach([0, 10, 20, 30], [2.0, 1.0, 2.0, 0.5], 1.5) == pytest.approx(5.0)
    assert truncation.updates_to_reach([0, 10, 20], [2.0, 1.5, 1.0], 1.5) == pytest.approx(10.0)
    assert truncation.updates_to_reach([0, 10], [1.0, 0.5], 1.5) == 0.0
    assert truncation.updates_to_reach([0, 10, 20], [2.0, 1.9, 1.8], 1.5) is None


def fake_curve(losses: list[float], budget: int) -> dict:
    steps = len(losses) - 1
    return {
        "generation": list(range(steps + 1)),
        "updates": [budget * j // steps for j in range(steps + 1)],
        "loss": losses,
        "accuracy": [0.1 * (j + 1) for j in range(steps + 1)],
        "last_quarter": [0.2] * (steps + 1),
        "wall_s": 10.0,
    }


def test_report_on_fake_curves():
    budget = 400
    curves = {
        "es": {0: fake_curve([2.3, 2.0, 1.6, 1.5, 1.4], budget), 1: fake_curve([2.3, 2.2, 2.0, 1.9, 1.8], budget)},
        # seed 0 reaches 1.4 between 1/4 (1.5) and 1/2 (1.3): at 3/8; seed 1 reaches 1.8 at 1/4
        "pes": {0: fake_curve([2.3, 1.5, 1.3, 1.2, 1.1], budget), 1: fake_curve([2.3, 1.8, 1.7, 1.6, 1.5], budget)},
        # never below ES's final on seed 0
        "nres": {0: fake_curve([2.3, 2.2, 2.1, 2.0, 1.9], budget), 1: fake_curve([2.3, 2.0, 1.7, 1.6, 1.5], budget)},
    }
    summary = truncation.summarise(curves, budget)
    assert summary["pes"]["reach"][0]["fraction"] == pytest.approx(3 / 8)
    assert summary["pes"]["reach"][1]["fraction"] == pytest.approx(1 / 4)
    assert summary["pes"]["reach_median"] == pytest.approx((3 / 8 + 1 / 4) / 2)
    assert summary["nres"]["reach"][0]["fraction"] is None
    assert summary["nres"]["reach"][0]["best"] == pytest.approx(1.9)
    assert math.isinf(summary["nres"]["reach_median"])  # one of two seeds not reached: the median is too
    assert summary["es"]["final_loss"] == {"median": pytest.approx(1.6), "min": 1.4, "max": 1.8, "n": 2}
    assert summary["pes"]["at"][budget // 2]["median"] == pytest.approx(1.5)
    # one target for every seed, the median of ES's finals (1.6): PES seed 0 crosses it between 0 (2.3) and 1/4
    # (1.5), seed 1 meets it at 3/4; NRES seed 1 meets it at 3/4, seed 0 never
    assert summary["es"]["common_target"] == pytest.approx(1.6)
    assert summary["pes"]["common_fractions"] == pytest.approx([0.25 * (2.3 - 1.6) / (2.3 - 1.5), 0.75])
    assert summary["nres"]["common_fractions"][0] == pytest.approx(0.75)
    assert math.isinf(summary["nres"]["common_fractions"][1]) and math.isinf(summary["nres"]["common_median"])

    text = truncation.report(summary, budget, ["header"], {"es": 0.1, "pes": 0.03, "nres": 0.1}, {})
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "0.38" in rows["PES"] and "0.25" in rows["PES"] and rows["PES"].endswith("| 0.31 |")
    assert "not reached: best 1.9000 vs 1.4000 (+0.5000)" in rows["NRES"] and rows["NRES"].endswith("not reached |")
    assert "| 0.500 | 1.800 [1.600, 2.000] | 1.500 [1.300, 1.700] |" in text


def test_an_unfinished_run_is_not_reported_as_not_reached():
    budget = 400
    curves = {"es": {0: fake_curve([2.3, 2.0, 1.5], budget)}, "pes": {0: fake_curve([2.3, 2.2, 2.1], budget // 2)}}
    summary = truncation.summarise(curves, budget)
    assert summary["pes"]["seeds"] == [] and "reach_median" not in summary["pes"]
    assert truncation.fmt_reach(summary["pes"]["reach"][0]).startswith("not yet (0.50 run)")
    # an unfinished ES run sets no target; a run not started yet is said so
    curves["es"][1] = fake_curve([2.3, 2.0], budget // 2)
    not_started = {"generation": [], "updates": [], "loss": [], "accuracy": [], "last_quarter": [], "wall_s": None}
    curves["pes"][1] = not_started
    curves["pes"][2] = not_started
    curves["es"][2] = fake_curve([2.3, 2.0, 1.5], budget)
    summary = truncation.summarise(curves, budget)
    assert (
        sorted(summary["pes"]["reach"]) == [0, 2] and truncation.fmt_reach(summary["pes"]["reach"][2]) == "not started"
    )
    truncation.report(summary, budget, ["header"], {"es": 0.1, "pes": 0.1}, {})


# ~2-4 min of meta-training on 2 shared cores: the benchmark's own pipeline, kept out of the default run.
@pytest.mark.slow
def test_quick_run_reports_skips_finished_runs_and_resumes_a_partial_one_exactly(tmp_path):
    command = [sys.executable, str(ROOT / "bench" / "truncation.py"), "--quick", "--jobs", "2"]
    command += ["--runs_dir", str(tmp_path)]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "quick" / "report.md").exists() and "Synapse updates to first reach" in first.stdout
    run_dir = tmp_path / "quick" / "es-lr0.1-seed0"
    with np.load(run_dir / "checkpoint.npz") as saved:
        uninterrupted = {k: saved[k] for k in saved.files if k.startswith(("params/", "opt_state/"))}
    # the same run stopped after 5 of its 9 generations (what a killed bench leaves, checkpointed)
    shutil.rmtree(run_dir)
    files, overrides = truncation.run_config(truncation.SETTINGS["quick"], truncation.Run("es", 0, 0.1), 10, "digits")
    overrides = [o for o in overrides if not o.startswith("training.iterations=")] + ["training.iterations=5"]
    partial = [sys.executable, str(ROOT / "launch.py"), "--run_dir", str(run_dir), "--config_files", *files]
    subprocess.run([*partial, "--config", *overrides], cwd=ROOT, capture_output=True, check=True, timeout=300)

    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "es-lr0.1-seed0: resumed at generation 5" in again.stdout
    assert "started" not in again.stdout and again.stdout.count("finished before") == 7  # seed 0: 5 runs, seed 1: 3
    with np.load(run_dir / "checkpoint.npz") as saved:
        assert int(saved["step"]) == 9
        for key, value in uninterrupted.items():
            np.testing.assert_array_equal(saved[key], value, err_msg=key)
