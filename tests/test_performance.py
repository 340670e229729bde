"""Speed machinery must not change results: chunked ES evaluation, its memory bound,
the per-generation timings, the runtime settings, and the benchmark's own check."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from tests.conftest import ROOT, TINY, launch
from vsml import runtime
from vsml.comm import SingleProcessComm
from vsml.config import build_config, resolve_for_rank
from vsml.evaluation import load_task
from vsml.experiment import make_outer_loop
from vsml.learners import build_learner
from vsml.meta import es, fit_chunk, memory, objective, slicing
from vsml.settings import data_settings, run_settings


def _outer_loop(pairs, chunk, msg=4, slow=4, length=6, optimizer="es"):
    config = build_config(
        [],
        [
            "training.dataset=digits",
            f"training.population_size={pairs}",
            f"training.episode_length={length}",
            f"training.pairs_per_chunk={json.dumps(chunk)}",
            f"model.sub_rnn.msg_size={msg}",
            f"model.sub_rnn.slow_size={slow}",
            f"optimizer.type={optimizer}",
            "logging.wandb=disabled",
        ],
    )
    rank_config = resolve_for_rank(config, 0)
    task = load_task("digits", "train", data_settings(rank_config), length, 1)
    learner = build_learner(rank_config["model"])
    params = learner.init(jax.random.PRNGKey(0))
    outer_loop = make_outer_loop(learner, task, run_settings(rank_config), params, SingleProcessComm())
    return outer_loop, outer_loop.init(params, seed=5), task, learner


@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 8])
def test_chunked_slice_evaluation_equals_member_by_member_fitness(chunk):
    outer_loop, state, task, learner = _outer_loop(pairs=5, chunk=chunk)  # 5 pairs: chunks 2 and 3 leave a remainder
    fitness = outer_loop.evaluate(state, task.arrays)

    # Reference: every member on its own, from the documented noise and episode keys.
    flat, unravel = ravel_pytree(state.params)
    member_loss = jax.jit(objective.make_fitness(objective.make_episode(learner.run, task.sampler()), "mean"))
    sigma = outer_loop.config.noise_std
    for pair in range(5):
        eps = es.pair_epsilon(state.rng["noise"], 0, pair, flat.shape[0])
        key = slicing.item_key(state.rng["data"], 0, pair)
        expected = [member_loss(unravel(flat + sign * sigma * eps), key, task.arrays) for sign in (1.0, -1.0)]
        np.testing.assert_allclose(fitness[pair], expected, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["es", "metagrad"])
def test_chunking_does_not_change_the_run(optimizer):
    results = []
    for chunk in (None, 2):
        outer_loop, state, task, _ = _outer_loop(pairs=4, chunk=chunk, optimizer=optimizer)
        for _ in range(2):
            state, _ = outer_loop.step(state, task.arrays)
        results.append(ravel_pytree(state.params)[0])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-7)


def test_evaluation_memory_grows_with_the_chunk_not_with_the_slice():
    def temp_bytes(pairs, chunk):
        outer_loop, state, task, _ = _outer_loop(pairs=pairs, chunk=chunk, msg=8, slow=16, length=4)
        return outer_loop.memory_analysis(state, task.arrays).temp_size_in_bytes

    # One member's learner state (h and c of 64x10 synapses x 16) is 80 KiB: big enough to dominate.
    chunked_small, chunked_large = temp_bytes(2, 1), temp_bytes(16, 1)
    whole_small, whole_large = temp_bytes(2, None), temp_bytes(16, None)
    assert chunked_large < 1.25 * chunked_small  # 8x the pairs, the same working memory
    assert whole_large > 4 * whole_small  # without chunks it follows the slice
    assert whole_large > 4 * chunked_large


@pytest.mark.parametrize("optimizer", ["es", "metagrad"])
def test_auto_chunk_fits_the_budget_and_changes_nothing(optimizer):
    outer_loop, state, task, _ = _outer_loop(pairs=6, chunk=None, msg=8, slow=16, length=4, optimizer=optimizer)

    def outputs(loop):  # ES: fitness [n, 2]; meta-gradients: (gradient sum, finite flags, losses)
        if optimizer == "es":
            return [loop.evaluate(state, task.arrays)]
        return list(loop.partial_sums(state, task.arrays))

    per_pair = outer_loop.working_bytes_per_item(state.params, task.arrays)
    fitted, measured = fit_chunk(outer_loop, state.params, task.arrays, budget_bytes=int(2.5 * per_pair))
    assert (fitted.pairs_per_chunk, measured) == (2, per_pair)
    assert outer_loop.pairs_per_chunk is None  # the original loop is left as it was
    for a, b in zip(outputs(outer_loop), outputs(fitted)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert fit_chunk(outer_loop, state.params, task.arrays, budget_bytes=100 * per_pair)[0].pairs_per_chunk is None


@pytest.mark.parametrize(
    "per_pair,budget,pairs,expected",
    [(10, 100, 4, None), (10, 100, 10, None), (10, 100, 11, 10), (10, 25, 64, 2), (10, 5, 64, 1), (0, 5, 8, None)],
)
def test_chunk_for_budget(per_pair, budget, pairs, expected):
    assert memory.chunk_for_budget(per_pair, budget, pairs) == expected


def test_chunk_budget_is_half_the_l3_cache_or_half_the_device_memory(tmp_path):
    for index, (level, size) in enumerate([("1", "48K"), ("2", "1024K"), ("3", "32768K")]):
        (tmp_path / f"index{index}").mkdir()
        (tmp_path / f"index{index}" / "level").write_text(level + "\n")
        (tmp_path / f"index{index}" / "size").write_text(size + "\n")
    assert runtime.l3_cache_bytes(str(tmp_path)) == 32 * 2**20
    assert runtime.l3_cache_bytes(str(tmp_path / "nowhere")) is None
    assert runtime.chunk_budget_bytes("cpu", l3_bytes=32 * 2**20) == 16 * 2**20
    assert runtime.chunk_budget_bytes("cpu") == runtime.CPU_CHUNK_BUDGET_FALLBACK // 2
    assert runtime.chunk_budget_bytes("gpu", device_bytes_limit=80 * 2**30) == 40 * 2**30
    assert runtime.chunk_budget_bytes("gpu") is None


def test_a_generation_reports_where_its_time_went():
    outer_loop, state, task, _ = _outer_loop(pairs=2, chunk=None)
    outer_loop.step(state, task.arrays)  # compiles
    start = time.perf_counter()
    _, stats = outer_loop.step(state, task.arrays)
    wall = time.perf_counter() - start
    parts = [stats["time/evaluate"], stats["time/communicate"], stats["time/update"]]
    assert all(part >= 0 for part in parts)
    assert sum(parts) <= wall


# --------------------------------------------------------------------------- runtime settings


YNN = "--xla_cpu_experimental_ynn_fusion_type="


@pytest.mark.parametrize(
    "xla_flags,cpu,ynn_known,expected",
    [
        ("", {"avx2", "avx512f"}, False, "--xla_cpu_prefer_vector_width=512"),
        ("", {"avx2", "avx512f"}, True, f"{YNN} --xla_cpu_prefer_vector_width=512"),
        ("--xla_dump_to=/tmp/x", {"avx512f"}, False, "--xla_dump_to=/tmp/x --xla_cpu_prefer_vector_width=512"),
        ("--xla_cpu_prefer_vector_width=256", {"avx512f"}, True, f"--xla_cpu_prefer_vector_width=256 {YNN}"),
        ("", {"avx2", "fma"}, False, ""),  # no AVX-512: XLA's default is right
        ("", {"avx2", "fma"}, True, YNN),
        (f"{YNN}ynn_fusion_type_elementwise", set(), True, f"{YNN}ynn_fusion_type_elementwise"),  # the user's choice
        ("--xla_dump_to=/tmp/x", set(), False, "--xla_dump_to=/tmp/x"),
    ],
)
def test_project_flags_never_override_the_user(xla_flags, cpu, ynn_known, expected):
    assert runtime.xla_flags(xla_flags, cpu, ynn_known) == expected
    once = runtime.xla_flags(xla_flags, cpu, ynn_known)
    assert runtime.xla_flags(once, cpu, ynn_known) == once  # a child process adds nothing


def test_wide_vectors_can_be_left_to_xla():
    assert runtime.xla_flags("", {"avx512f"}, True, wide_vectors=False) == YNN


@pytest.mark.parametrize(
    "version,expected",
    [
        ("0.8.0", False),
        ("0.8.1", True),
        ("0.9.2", True),
        ("0.10.2", True),
        ("0.12.0.1", True),
        ("0.4.38", False),
        (None, False),
    ],
)
def test_ynn_flag_only_for_jaxlib_versions_that_know_it(version, expected):
    assert runtime.knows_ynn_flag(version, None) is expected


def test_a_jaxlib_newer_than_any_checked_is_asked_its_library(tmp_path):
    # XLA aborts on a flag it does not know: beyond the checked versions, the library decides.
    assert not runtime.knows_ynn_flag("9.0.0", tmp_path)
    (tmp_path / "libjax_common.so").write_bytes(b"\0junk\0xla_cpu_experimental_ynn_fusion_type\0")
    assert runtime.knows_ynn_flag("9.0.0", tmp_path)
    assert not runtime.knows_ynn_flag("0.8.0", tmp_path)  # checked: absent there


def test_version_tuples():
    assert runtime.version_tuple("0.12.0.1") == (0, 12, 0, 1)
    assert runtime.version_tuple("0.10.0rc1") == (0, 10, 0)
    assert runtime.version_tuple("0.11.0.dev20260101") == (0, 11, 0)


def test_cpu_flags_come_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu sse\n")
    assert runtime.cpu_flags(str(info)) == {"fpu", "sse", "avx2", "avx512f"}
    assert runtime.cpu_flags(str(tmp_path / "missing")) == set()


@pytest.mark.parametrize(
    "setting,backend,expected",
    [
        ("auto", "cpu", None),
        ("auto", "gpu", "XDG/vsml/jax"),
        ("off", "gpu", None),
        ("some/dir", "cpu", "some/dir"),
    ],
)
def test_compilation_cache_setting(setting, backend, expected):
    directory = runtime.compilation_cache_dir(setting, backend, environ={"XDG_CACHE_HOME": "XDG"})
    assert (None if directory is None else directory.as_posix()) == expected


def test_second_run_loads_every_program_from_the_compilation_cache(tmp_path):
    cache = tmp_path / "cache"
    env = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}  # cache even the tiny programs of this run
    entries = []
    for attempt in range(2):
        proc = launch(
            "--config",
            *TINY,
            "training.iterations=2",
            f"runtime.compilation_cache={cache}",
            "--run_dir",
            tmp_path / f"run{attempt}",
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        entries.append(sorted(path.name for path in cache.glob("*-cache")))
    assert entries[0], "nothing was cached"
    assert entries[1] == entries[0]  # the second run compiled nothing new


# --------------------------------------------------------------------------- the benchmark


# ~1 min: a benchmark's own pipeline, kept out of the default run.
@pytest.mark.slow
def test_benchmark_quick_run_agrees_with_the_literal_version(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "throughput.py"), "--quick", "--sections", "grid", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["cpu_cores"] >= 1 and report["traffic"]["bytes_per_update"] > 0
    roofline = report["sections"]["grid_roofline"]["rows"]  # every ceiling, and the best rate's fraction of it
    assert len(roofline) >= 8 and all(row["updates_per_s"] > 0 and row["fraction"] > 0 for row in roofline)
    grid = report["sections"]["grid"]
    for fast in (r for r in grid if r["impl"] == "fast"):
        literal = next(r for r in grid if r["impl"] == "literal" and r["pairs"] == fast["pairs"])
        np.testing.assert_allclose(fast["fitness"], literal["fitness"], rtol=1e-5)
        assert fast["synapse_updates"] == 2 * fast["pairs"] * fast["length"] * 784 * 10 * 2
    assert "Fast path" in proc.stdout
