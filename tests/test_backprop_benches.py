"""bench/backprop_sweep.py and bench/backprop_memory.py: what they read from a run, and a --quick run end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import backprop_sweep

ROOT = Path(__file__).resolve().parent.parent


def write_run(run_dir: Path, losses: list[float], norms: list[float]) -> None:
    run_dir.mkdir()
    rows = [{"step": s, "meta_loss": loss, "grad/norm": n} for s, (loss, n) in enumerate(zip(losses, norms))]
    rows[-1].update({"eval/d/accuracy": 0.5, "eval/d/final_accuracy": 0.75})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_run_left_the_plateau_when_its_final_loss_is_below_the_line(tmp_path):
    plateau = [math.log(10)] * 150
    falling = plateau[:50] + [1.5] * 100  # below 0.9 ln 10 from step 50 on
    write_run(tmp_path / "flat", plateau, [0.1] * 150)
    write_run(tmp_path / "fell", falling, [0.5] * 149 + [3.0])
    flat = backprop_sweep.summarise_run(tmp_path / "flat", 10, ["d"], clip=1.0)
    fell = backprop_sweep.summarise_run(tmp_path / "fell", 10, ["d"], clip=1.0)
    assert not flat["left"] and flat["escape_step"] is None
    assert fell["left"] and fell["escape_step"] == 50
    assert fell["final_meta_loss"] == pytest.approx(1.5)  # the last 100 steps only
    assert fell["line"] == pytest.approx(0.9 * math.log(10))
    assert (fell["max_grad_norm"], fell["clipped_steps"]) == (3.0, 1)
    assert (fell["d/accuracy"], fell["d/final_accuracy"]) == (0.5, 0.75)


def test_a_rerun_replaces_the_failed_record_and_the_report_counts_seeds(tmp_path):
    path = tmp_path / "results.jsonl"
    base = {"setting": "lr0.03-clip1-pop16", "lr": 0.03, "clip": 1.0, "population": 16, "wall_s": 10.0}
    ok = {"final_meta_loss": 1.5, "left": True, "escape_step": 50, "max_grad_norm": 0.5, "clipped_steps": 0}
    records = [
        {**base, "seed": 0, "returncode": 1},
        {**base, "seed": 0, "returncode": 0, **ok},
        {**base, "seed": 1, "returncode": 0, **ok, "left": False, "final_meta_loss": 2.3, "escape_step": None},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    results = backprop_sweep.read_results(path)
    assert [(r["seed"], r["returncode"]) for r in results] == [(0, 0), (1, 0)]
    args = backprop_sweep.parse_args(["--out", str(tmp_path)])
    machine = {"cpu": "cpu", "cpu_cores": 2, "affinity": 2, "jax": "x", "python": "y"}
    table = backprop_sweep.report(results, (601, 10, "digits", []), args, machine)
    row = next(line for line in table.splitlines() if line.startswith("| 0.03 |"))
    assert "| 1/2 |" in row and "1.900 [1.500–2.300]" in row


@pytest.mark.slow
@pytest.mark.parametrize("script", ["backprop_sweep.py", "backprop_memory.py"])
def test_quick_run_works_end_to_end(tmp_path, script):
    extra = ["--out", str(tmp_path)] if script == "backprop_sweep.py" else []
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("\n| ") >= 2  # a table with its rows
