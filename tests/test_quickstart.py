"""The README's main job: both quick starts meta-learn from scratch (2–6 minutes each on 2 idle cores;
`pytest -m slow`): the 4-unit model, and the paper's model (configs/quickstart_paper.yaml)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import launch


@pytest.mark.slow
@pytest.mark.parametrize("config_file", ["configs/quickstart.yaml", "configs/quickstart_paper.yaml"])
def test_quickstart_meta_learns_above_chance(config_file, tmp_path):
    result = launch(
        "--config_files", config_file, "--run_dir", tmp_path, "--config", "logging.wandb=disabled", timeout=3600
    )  # a hang guard only
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = np.array([row["meta_loss"] for row in rows])
    assert losses[-10:].mean() < losses[:3].mean() - 0.3
    evaluated = [row for row in rows if "eval/digits/final_accuracy" in row]
    first, last = evaluated[0], evaluated[-1]
    assert first["eval/digits/accuracy"] < 0.15  # chance for 10 classes is 0.1
    assert last["eval/digits/accuracy"] > 0.4 and last["eval/digits/final_accuracy"] > 0.5
