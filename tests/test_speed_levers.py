"""Speed levers that default to today's behaviour, and the one-command GPU check.

bfloat16 states cannot equal float32 bit for bit; they must be equally good:
the same fitness to well within the spread ES acts on, the same ES signal (the
pairs' fitness differences), and the same short meta-learning curve.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from tests.conftest import ROOT
from vsml.comm import SingleProcessComm
from vsml.config import ConfigError, build_config, resolve_for_rank
from vsml.evaluation import load_task
from vsml.experiment import make_outer_loop
from vsml.learners import build_learner, vsml, vsml_layer
from vsml.run_checks import check_config
from vsml.settings import data_settings, model_settings, run_settings, validate


def _outer_loop(dtype: str, overrides: list[str], files=()):
    config = build_config(
        list(files),
        [*overrides, "training.pairs_per_chunk=null", f"model.vsml_rnn.state_dtype={dtype}", "logging.wandb=disabled"],
    )
    rank_config = resolve_for_rank(config, 0)
    training = rank_config["training"]
    task = load_task(training["dataset"], "train", data_settings(rank_config), training["episode_length"], 1)
    learner = build_learner(rank_config["model"])
    params = learner.init(jax.random.PRNGKey(rank_config["seed"]))
    outer_loop = make_outer_loop(learner, task, run_settings(rank_config), params, SingleProcessComm())
    return outer_loop, outer_loop.init(params, seed=rank_config["seed"]), task


def test_bfloat16_states_give_the_same_fitness_and_the_same_es_signal():
    # The paper's sub-RNN (message 8, state 16, 2 ticks) on digits.
    overrides = ["training.dataset=digits", "training.population_size=8", "training.episode_length=30"]
    fitness = {}
    for dtype in ("float32", "bfloat16"):
        outer_loop, state, task = _outer_loop(dtype, overrides)
        fitness[dtype] = outer_loop.evaluate(state, task.arrays)
    exact, reduced = fitness["float32"], fitness["bfloat16"]
    np.testing.assert_allclose(reduced, exact, atol=1e-3)
    # ES weights each pair's noise by its fitness difference: those must point the same way.
    d_exact, d_reduced = exact[:, 0] - exact[:, 1], reduced[:, 0] - reduced[:, 1]
    cosine = d_exact @ d_reduced / (np.linalg.norm(d_exact) * np.linalg.norm(d_reduced))
    assert cosine > 0.95


def test_bfloat16_states_learn_like_float32_over_a_short_meta_training():
    # The quick start's learner and ES step, 10 generations of 8 pairs.
    overrides = ["training.population_size=8", "training.episode_length=20"]
    runs = {}
    for dtype in ("float32", "bfloat16"):
        outer_loop, state, task = _outer_loop(dtype, overrides, files=[ROOT / "configs/quickstart.yaml"])
        start = ravel_pytree(state.params)[0]
        curve = []
        for _ in range(10):
            state, stats = outer_loop.step(state, task.arrays)
            curve.append(stats["meta_loss"])
        runs[dtype] = (np.asarray(curve), np.asarray(ravel_pytree(state.params)[0] - start))
    (curve32, move32), (curve16, move16) = runs["float32"], runs["bfloat16"]
    np.testing.assert_allclose(curve16, curve32, atol=2e-3)
    # Near-ties may rank differently, so the meta-parameters drift apart a little, not in direction.
    assert move16 @ move32 / (np.linalg.norm(move16) * np.linalg.norm(move32)) > 0.7


def test_float32_is_the_default_and_bfloat16_keeps_the_gate_maths_in_float32():
    spec = vsml.spec_from_config(model_settings(resolve_for_rank(build_config([], []), 0)["model"]))
    assert spec.state_dtype == "float32"
    reduced = vsml.VSMLSpec(state_dtype="bfloat16")
    params = vsml.init(jax.random.PRNGKey(0), reduced)
    ((hidden, cell),) = vsml.initial_states(jax.random.PRNGKey(1), reduced, [vsml_layer.dense_geometry(3, 2)], batch=1)
    assert hidden.dtype == cell.dtype == jax.numpy.bfloat16
    fwd_in, bwd_in = jax.numpy.ones((1, 3, 8)), jax.numpy.zeros((1, 2, 8))
    (hidden, cell), fwd_out, bwd_out = vsml_layer.dense_layer(
        params["forward"][0], (hidden, cell), fwd_in, bwd_in, reduced
    )
    assert hidden.dtype == cell.dtype == jax.numpy.bfloat16  # stored reduced
    assert fwd_out.dtype == bwd_out.dtype == jax.numpy.float32  # messages in float32


def test_state_dtype_is_validated_with_one_line():
    # a registry name: checked by the run checks (the settings layer does not import the learners)
    with pytest.raises(ConfigError, match="^model.vsml_rnn.state_dtype: must be one of float32, bfloat16"):
        check_config(resolve_for_rank(build_config([], ["model.vsml_rnn.state_dtype=float16"]), 0), SingleProcessComm())
    conv = resolve_for_rank(
        build_config(
            [],
            [
                "model.vsml_rnn.state_dtype=bfloat16",
                "model.vsml_rnn.layer_specs=[{type: conv, kernel_size: 3, out_channels: 2}, {type: dense}]",
            ],
        ),
        0,
    )
    validate(conv)  # each key alone is valid; the learner's builder checks them together
    with pytest.raises(ValueError, match="model.vsml_rnn.state_dtype: bfloat16 states are for dense layers"):
        vsml.spec_from_config(model_settings(conv["model"]))


# --------------------------------------------------------------------------- bench/gpu_check.py


# ~2 min: run before a GPU session (`bench/gpu_check.py --smoke`, docs/performance.md), not in every test run.
@pytest.mark.slow
def test_gpu_check_smoke_runs_every_section(tmp_path):
    markdown = tmp_path / "gpu_check.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gpu_check.py"),
            "--smoke",
            "--budget",
            "600",
            "--markdown",
            str(markdown),
            "--json",
            str(tmp_path / "report.json"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for header in ("== machine", "== (c)", "== (a)", "== (b)", "== (h)", "== (g)", "== (d)", "== (e)", "== (f)"):
        assert header in proc.stdout, proc.stdout[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["sections"]["a"]["agree"] is True  # fast path == literal version
    assert report["sections"]["e"]["agree"] is True, report["sections"]["e"]  # the same run twice on the CPU
    assert report["sections"]["f"]["hours"] > 0
    steps = {step["step"]: step for step in report["sections"]["h"]}  # the fused kernel, interpret mode
    assert steps["fused"]["max_rel_fitness_diff"] <= 1e-5 and steps["fused"]["antithetic_cosine"] > 0.999
    assert report["sections"]["e_fused"]["agree"] is True, report["sections"]["e_fused"]
    ceilings = {row["short"] for row in report["sections"]["b"][0]["roofline"]}
    assert {"XLA layer mem", "h,c per step", "transc.", "model matmul"} <= ceilings
    levers = {lever["lever"].split(" (")[0]: lever for lever in report["sections"]["g"]}
    assert levers["all pairs in one chunk"]["max_rel_fitness_diff"] <= 1e-5
    assert levers["bfloat16 states"]["max_rel_fitness_diff"] <= 1e-2
    text = markdown.read_text()
    assert text.startswith("### GPU check") and "SMOKE" in text and "(f) Fig. 6 projection" in text


def test_bench_child_processes_keep_the_callers_python_path(tmp_path, monkeypatch):
    """A package installed with ``pip install --target DIR`` + ``PYTHONPATH=DIR`` reaches bench's children."""
    from bench import throughput  # noqa: PLC0415

    carried = tmp_path / "carried"
    carried.mkdir()
    (carried / "carried_package.py").write_text("NAME = 'carried'\n")
    monkeypatch.setenv("PYTHONPATH", str(carried))
    proc = subprocess.run(
        [sys.executable, "-c", "import carried_package, vsml; print(carried_package.NAME, vsml.__file__)"],
        cwd=tmp_path,  # neither the checkout nor the carried folder
        env=throughput.case_environ(""),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    name, vsml_file = proc.stdout.split()
    assert name == "carried" and Path(vsml_file).is_relative_to(ROOT)
