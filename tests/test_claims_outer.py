"""bench/claims_outer.py: ES against meta-gradients at an equal budget (the outer-loop axis of the claims bench)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import claims, claims_outer  # noqa: E402


def test_every_learner_once_per_outer_loop_es_first():
    names = claims_outer.with_outer_loops(["VSML", "MetaRNN"], ["es", "metagrad"])
    assert names == ["VSML", "VSML+metagrad", "MetaRNN", "MetaRNN+metagrad"]
    # A name that already says its outer loop is kept once, whatever the axis asks.
    assert claims_outer.with_outer_loops(["VSML+metagrad"], ["es", "metagrad"]) == ["VSML+metagrad"]
    assert claims_outer.with_outer_loops(["VSML"], ["es"]) == ["VSML"]


def test_metagrad_steps_spend_the_es_cells_episodes():
    # ES: generations 0..G, each 2 episodes per antithetic pair; a meta-gradient step: the
    # population of configs/backprop.yaml, read here independently of the module.
    population = yaml.safe_load((ROOT / "configs" / "backprop.yaml").read_text())["training"]["population_size"]
    scale = {"generations": 199, "pairs": 16}
    es_episodes = (199 + 1) * 2 * 16
    equal, steps = claims_outer.metagrad_steps(scale)
    assert equal * population == es_episodes and steps == equal
    _, longer = claims_outer.metagrad_steps(scale, margin=1.5)
    assert longer == 1.5 * equal


@pytest.mark.parametrize("equal", [400, 402, 97, 20, 3])
def test_a_step_checkpoint_lands_on_the_equal_episodes_step(equal):
    every = claims_outer.checkpoint_every(equal)
    assert equal % every == 0
    assert every <= max(1, equal // claims_outer.STEP_CHECKPOINTS)


def test_sweep_task_of_a_metagrad_cell_is_the_es_cell_with_backprop_yaml(tmp_path):
    from vsml.config import build_config, resolve_for_rank
    from vsml.settings import run_settings

    args = claims.parse_args(
        ["--out", str(tmp_path), "--scale", "outer", "--learners", "VSML-quickstart", "--outer-loops", "es", "metagrad"]
    )
    claims.write_sweep(args)
    matrix = claims.cells(args)
    backprop = yaml.safe_load((ROOT / "configs" / "backprop.yaml").read_text())
    es, metagrad = (build_config([], [], str(tmp_path / "sweep.yaml"), n) for n in (1, 2))
    assert matrix[0][0] == "VSML-quickstart" and matrix[1][0] == "VSML-quickstart+metagrad"
    assert es["optimizer"]["type"] == "es" and metagrad["optimizer"]["type"] == backprop["optimizer"]["type"]
    assert metagrad["optimizer"]["lr"] == backprop["optimizer"]["lr"]
    assert metagrad["training"]["population_size"] == backprop["training"]["population_size"]
    assert metagrad["model"] == es["model"] and metagrad["data"] == es["data"]
    assert metagrad["training"]["episode_length"] == es["training"]["episode_length"]
    es_episodes = es["training"]["iterations"] * 2 * es["training"]["population_size"]
    assert metagrad["training"]["iterations"] * metagrad["training"]["population_size"] == es_episodes
    assert metagrad["checkpoint"]["with_step"] is True
    # Both tasks pass launch.py's own checks (e.g. evaluation.frequency a multiple of summary.frequency).
    for config in (es, metagrad):
        run_settings(resolve_for_rank(config, 0))


def _fake_run(run_dir: Path, times: dict[int, float], checkpoints: list[int]) -> Path:
    """A run directory with metrics rows ``{step: time}`` and empty step checkpoint files."""
    run_dir.mkdir(parents=True)
    rows = [{"step": s, "time": t, "meta_loss": 2.0} for s, t in sorted(times.items())]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for step in checkpoints:
        (run_dir / f"checkpoint-{step}.npz").write_bytes(b"")
    return run_dir


def test_equal_time_picks_the_newest_checkpoint_reached_within_es_wall_time(tmp_path):
    es = _fake_run(tmp_path / "es", {0: 2.0, 10: 30.0, 20: 60.0}, [])
    # Step k is done when metrics row k - 1 is written: checkpoint-10 at t = 45 (row 9), -20 at 95 (row 19).
    metagrad = _fake_run(tmp_path / "mg", {0: 5.0, 9: 45.0, 19: 95.0, 29: 140.0}, [10, 20, 30])
    chosen = claims_outer.equal_time_checkpoint(es, metagrad)
    assert chosen["step"] == 10 and chosen["es_time_s"] == 60.0 and chosen["metagrad_time_s"] == 45.0
    assert not chosen["capped"]
    # ES took longer than the whole meta-gradient run: its last checkpoint, marked as capped.
    slow_es = _fake_run(tmp_path / "slow-es", {0: 1.0, 20: 500.0}, [])
    assert claims_outer.equal_time_checkpoint(slow_es, metagrad)["capped"]
    # Not one checkpoint within ES's time: no equal-time view.
    fast_es = _fake_run(tmp_path / "fast-es", {0: 1.0, 20: 10.0}, [])
    assert claims_outer.equal_time_checkpoint(fast_es, metagrad) is None


def _view(own: list[float], unseen: list[float]) -> dict:
    return {"own": claims_outer.spread(own), "unseen": claims_outer.spread(unseen)}


def test_verdict_names_which_half_of_the_claim_fails():
    es = _view([0.6, 0.62, 0.64, 0.7], [0.40, 0.42, 0.45, 0.5])
    assert claims_outer.verdict(es, _view([0.7, 0.7, 0.72, 0.75], [0.2, 0.25, 0.3, 0.35])).startswith("holds:")
    overlap = claims_outer.verdict(es, _view([0.7, 0.7, 0.72, 0.75], [0.2, 0.3, 0.4, 0.45]))
    assert overlap.startswith("holds in the medians only") and "ranges overlap" in overlap
    worse_fit = claims_outer.verdict(es, _view([0.5, 0.5, 0.5, 0.5], [0.2, 0.2, 0.2, 0.2]))
    assert worse_fit.startswith("does not hold") and "do not fit" in worse_fit
    better_unseen = claims_outer.verdict(es, _view([0.7, 0.7, 0.7, 0.7], [0.5, 0.5, 0.6, 0.6]))
    assert better_unseen.startswith("does not hold") and "does not generalise better" in better_unseen


def test_no_verdict_where_an_outer_loop_never_left_the_plateau():
    es = {**_view([0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1]), "left_plateau": 1, "seeds": [0, 1, 2, 3]}
    metagrad = {**_view([0.7, 0.7, 0.7, 0.7], [0.5, 0.5, 0.5, 0.5]), "left_plateau": 4, "seeds": [0, 1, 2, 3]}
    text = claims_outer.verdict(es, metagrad)
    assert text.startswith("not tested at this budget (ES left the ln 10 plateau in 1 of 4 seeds)")
