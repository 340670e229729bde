"""The README's main job: the quick start meta-learns (2–6 minutes on 2 idle cores; `pytest -m slow`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import launch


@pytest.mark.slow
def test_quickstart_meta_learns_above_chance(tmp_path):
    result = launch("--config_files", "configs/quickstart.yaml", "--run_dir", tmp_path,
                    "--config", "logging.wandb=disabled", timeout=3600)  # a hang guard only
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = np.array([row["meta_loss"] for row in rows])
    assert losses[-10:].mean() < losses[:3].mean() - 0.3
    evaluated = [row for row in rows if "eval/digits/final_accuracy" in row]
    first, last = evaluated[0], evaluated[-1]
    assert first["eval/digits/accuracy"] < 0.15  # chance for 10 classes is 0.1
    assert last["eval/digits/accuracy"] > 0.4 and last["eval/digits/final_accuracy"] > 0.5
