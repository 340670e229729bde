"""bench/claims.py: the whole pipeline at --quick runs, and its report comes from the run directories."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import claims, claims_matrix, claims_metatest, claims_outer  # noqa: E402


def test_seen_before_counts_earlier_steps_of_the_same_label():
    labels = np.array([[3, 1, 3, 3, 1, 0]])
    np.testing.assert_array_equal(claims_metatest.seen_before(labels), [[0, 0, 1, 2, 1, 0]])


def test_summarise_episodes_introspection_groups_steps_by_examples_seen():
    # Right exactly from the second example of a class on: 0% at k = 0, 100% at k >= 1.
    labels = np.array([[0, 1, 0, 1, 1, 2]])
    accuracy = (claims_metatest.seen_before(labels) > 0).astype(float)
    summary = claims_metatest.summarise_episodes(accuracy, labels, 10)
    assert summary["by_seen"] == [0.0, 1.0, 1.0]
    assert summary["by_seen_count"] == [3, 2, 1]
    assert summary["episode_mean"] == [pytest.approx(0.5)]
    assert summary["last_quarter"] == [0.0]  # the last step (6 // 4 = 1 step) is a new class


def test_sweep_file_lists_every_cell_as_a_launch_array_task(tmp_path):
    from vsml.config import build_config

    args = claims.parse_args(["--out", str(tmp_path), "--scale", "paper"])
    sweep = claims_matrix.write_sweep(args)
    matrix = claims_matrix.cells(args)
    assert len(matrix) == len(claims_matrix.DEFAULT_LEARNERS) * len(claims_matrix.DEFAULT_TRAIN_SETS["paper"]) * 4
    for task in (1, len(matrix)):
        config = build_config([], [], str(sweep), task)
        learner, train_set, seed = matrix[task - 1]
        assert config["model"]["type"] == claims_matrix.LEARNERS[learner]["model.type"]
        assert config["training"]["dataset"] == claims_matrix.TRAIN_SETS[train_set]["training.dataset"]
        assert config["seed"] == seed
        assert config["training"]["population_size"] == claims_matrix.SCALES["paper"]["pairs"]
        assert Path(config["logging"]["dir"]).name == claims_matrix.cell_name(learner, train_set, seed)


def _parse_table(text: str, title: str) -> list[list[str]]:
    """The first table after the bold ``title`` (past any caption that follows the title)."""
    blocks = text.split(f"**{title}**")[1].strip().split("\n\n")
    block = next(b for b in blocks if b.startswith("|"))
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]


# The pipeline is the same for any learner and outer loop: VSML by ES and by meta-gradients
# (the outer-loop axis, bench/claims_outer.py), and every default learner. Both are `slow` (~80 s
# and more on 2 cores): the default run keeps the pipeline's parts (tests/test_claims_outer.py, the
# sweep file above); `pytest -m slow tests/test_claims.py` runs it end to end.
@pytest.mark.parametrize(
    "learners",
    [
        pytest.param(["VSML", "VSML+metagrad"], id="es-and-metagrad", marks=pytest.mark.slow),
        pytest.param(list(claims_matrix.DEFAULT_LEARNERS), id="every-learner", marks=pytest.mark.slow),
    ],
)
def test_quick_pipeline_report_comes_from_the_runs(tmp_path, learners):
    out = tmp_path / "claims"
    quick = ["--quick", "--out", str(out), "--learners", *learners]
    assert claims.main([*quick, "--jobs", "2"]) == 0
    args = claims.parse_args(quick)
    tests = list(claims_matrix.META_TEST_SETS)

    # Every cell: a real run directory with its checkpoint, meta-tested on every set.
    for cell in claims_matrix.cells(args):
        folder = out / "runs" / claims_matrix.cell_name(*cell)
        result = json.loads((folder / "metatest.json").read_text())
        assert Path(result["checkpoint"]).exists()
        if cell[0].endswith(claims_outer.METAGRAD):  # at ES's episodes: 2 per pair and generation
            scale = claims_matrix.SCALES["quick"]
            population = yaml.safe_load((ROOT / "configs" / "backprop.yaml").read_text())["training"]["population_size"]
            es_episodes = (scale["generations"] + 1) * 2 * scale["pairs"]  # generations 0..G
            assert result["generation"] == math.ceil(es_episodes / population)  # the fewest steps not short of it
        else:
            assert result["generation"] == claims_matrix.SCALES["quick"]["generations"] + 1
        # The tabular sets: only learners that run on any input size (VSML), never the fixed-size ones.
        any_size = claims_matrix.LEARNERS[claims_outer.base_learner(cell[0])]["model.type"] == "VSMLRNN"
        assert set(result["results"]) == set(tests) | (set(claims_matrix.TABULAR_TEST_SETS) if any_size else set())
        for summary in result["results"].values():
            assert len(summary["episode_mean"]) == claims_matrix.SCALES["quick"]["test_episodes"]
            assert len(summary["curve"]) == claims_matrix.SCALES["quick"]["test_length"]
        assert result["results"]["mnist14-5cls"]["classes"] == len(claims_matrix.FEW_CLASSES)

    # The table: one row per learner x training set plus the hand-designed rules, and a chance row;
    # each cell's median is the median over the seeds' metatest.json files.
    text = (out / "report.md").read_text()
    table = _parse_table(text, "Episode-mean accuracy")
    assert table[0][2:] == tests
    body = {(r[0], r[1]): r[2:] for r in table[2:]}
    expected_rows = {(lr, "digits") for lr in learners} | {(h, "none") for h in claims_matrix.HAND_DESIGNED}
    assert set(body) == expected_rows | {("chance", "–")}
    for learner in learners:
        seeds = [
            json.loads((out / "runs" / claims_matrix.cell_name(learner, "digits", s) / "metatest.json").read_text())
            for s in args.seeds
        ]
        for column, test_set in enumerate(tests):
            per_seed = [np.mean(s["results"][test_set]["episode_mean"]) for s in seeds]
            shown = body[(learner, "digits")][column]
            assert shown.startswith(f"{100 * np.median(per_seed):.1f} [")
            assert shown.endswith(" ★") == (test_set == "digits")
    assert body[("chance", "–")][tests.index("mnist14-5cls")] == "20.0"
    assert body[("chance", "–")][tests.index("mnist14")] == "10.0"
    assert len(_parse_table(text, "Last-quarter accuracy")) == len(table)
    figures = ["heatmap.png", "learning_curves.png", "introspection.png"]
    if "VSML+metagrad" in learners:
        figures.append("meta_loss_time.png")
        # The outer-loop comparison: ES and meta-gradients at equal episodes, each from its seeds' files.
        compared = {r[2]: r for r in _parse_table(text, "ES against meta-gradients")[2:]}
        for view, name in (("ES", "VSML"), ("meta-gradients, equal episodes", "VSML+metagrad")):
            seeds = [
                json.loads((out / "runs" / claims_matrix.cell_name(name, "digits", s) / "metatest.json").read_text())
                for s in args.seeds
            ]
            own = [np.mean(s["results"]["digits"]["episode_mean"]) for s in seeds]
            assert compared[view][8].startswith(f"{100 * np.median(own):.1f} [")
        assert '"meta-gradients fit, ES generalises"' in text
    for name in figures:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --report-only rebuilds the same table from the run directories alone; nothing is retrained.
    # A report over fewer seeds leaves the sweep file a running matrix reads alone.
    mtimes = {p: p.stat().st_mtime for p in out.glob("runs/*/train/checkpoint.npz")}
    sweep = (out / "sweep.yaml").read_text()
    (out / "report.md").unlink()
    assert claims.main([*quick, "--report-only"]) == 0
    assert _parse_table((out / "report.md").read_text(), "Episode-mean accuracy") == table
    assert mtimes == {p: p.stat().st_mtime for p in out.glob("runs/*/train/checkpoint.npz")}
    assert claims.main([*quick, "--report-only", "--seeds", "0"]) == 0
    assert (out / "sweep.yaml").read_text() == sweep
    one_seed = _parse_table((out / "report.md").read_text(), "Episode-mean accuracy")
    for row in one_seed[2:-1]:  # one seed: every spread collapses to a point
        for cell in row[2:]:
            low, high = cell.split("[")[1].split("]")[0].split("–")
            assert low == high
