"""What a run says it runs on, the missing-GPU-backend warning, and chunk budgets shared by ranks.

The warning is checked end to end through ``launch.py`` with a fake ``nvidia-smi``
on PATH; the budget division against plain arithmetic on the inputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from tests.conftest import HANG_GUARD_S, MPIEXEC, ROOT, TINY, launch
from vsml import comm, evaluation, experiment, run_platform, runtime
from vsml.settings import data_settings, run_settings

FAKE_NVIDIA_SMI = """#!/bin/sh
[ "$1" = "-L" ] && echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-0000-0000-0000-000000000000)"
exit 0
"""


def fake_nvidia_smi(directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    tool = directory / "nvidia-smi"
    tool.write_text(FAKE_NVIDIA_SMI)
    tool.chmod(0o755)
    return directory


# --------------------------------------------------------------------------- the first line, the warning


def test_a_run_names_what_it_runs_on_and_warns_once_about_an_unused_gpu_before_compiling(tmp_path):
    bin_dir = fake_nvidia_smi(tmp_path / "bin")
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "JAX_PLATFORMS": "", "JAX_LOG_COMPILES": "1"}
    for name in ("GPU_COUNT", "CUDA_VISIBLE_DEVICES"):
        env[name] = ""
    proc = launch(
        "--config_files",
        "configs/test.yaml",
        "--config",
        *TINY,
        "training.iterations=1",
        "--run_dir",
        tmp_path / "run",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = proc.stdout.splitlines()[0]
    assert first.startswith("runs on: cpu (") and f"jax {jax.__version__}" in first
    assert "devices per rank: 1" in first
    err = proc.stderr.splitlines()
    warnings = [i for i, line in enumerate(err) if line.startswith("warning: an NVIDIA GPU is visible")]
    assert len(warnings) == 1, proc.stderr[-3000:]
    assert "nvidia-smi lists 1 GPU" in err[warnings[0]] and "pip install -r requirements-cuda.txt" in err[warnings[0]]
    compiles = [i for i, line in enumerate(err) if "Compiling" in line or "Finished tracing" in line]
    assert compiles and warnings[0] < compiles[0]  # said before anything was compiled


@pytest.mark.parametrize(
    "environ,expected",
    [
        ({"GPU_COUNT": "4"}, "GPU_COUNT=4"),
        ({"CUDA_VISIBLE_DEVICES": "1,2"}, "CUDA_VISIBLE_DEVICES=1,2"),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, None),  # CUDA's way of hiding every GPU
        ({"CUDA_VISIBLE_DEVICES": ""}, None),
        ({"GPU_COUNT": "0"}, None),
        ({}, None),
    ],
)
def test_visible_gpu_from_the_environment(environ, expected, tmp_path):
    assert run_platform.visible_nvidia_gpu({"PATH": str(tmp_path), **environ}) == expected  # no nvidia-smi on PATH


def test_visible_gpu_from_nvidia_smi(tmp_path):
    bin_dir = fake_nvidia_smi(tmp_path / "bin")
    assert run_platform.visible_nvidia_gpu({"PATH": str(bin_dir)}) == "nvidia-smi lists 1 GPU"
    failing = tmp_path / "failing"
    failing.mkdir()
    (failing / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed: no driver' >&2\nexit 9\n")
    (failing / "nvidia-smi").chmod(0o755)
    assert run_platform.visible_nvidia_gpu({"PATH": str(failing)}) is None


def test_missing_gpu_warning_only_when_jax_falls_back_to_the_cpu(tmp_path):
    gpu = {"GPU_COUNT": "1", "PATH": str(tmp_path)}
    assert "requirements-cuda.txt" in run_platform.missing_gpu_warning("cpu", gpu, plugin_installed=False)
    assert "CUDA plugin is installed" in run_platform.missing_gpu_warning("cpu", gpu, plugin_installed=True)
    assert run_platform.missing_gpu_warning("gpu", gpu, plugin_installed=True) is None
    assert run_platform.missing_gpu_warning("cpu", {**gpu, "JAX_PLATFORMS": "cpu"}) is None  # the CPU on purpose
    assert run_platform.missing_gpu_warning("cpu", {"PATH": str(tmp_path)}) is None


def test_platform_line_points_to_assign_gpu_when_a_rank_sees_several_gpus():
    line = run_platform.platform_line("gpu", "NVIDIA H100 80GB HBM3", 4, "0.12.0", "0.12.0")
    assert line.startswith("runs on: gpu (NVIDIA H100 80GB HBM3) | devices per rank: 4")
    assert "assign_gpu.py" in line and "jax 0.12.0" in line
    assert "assign_gpu" not in run_platform.platform_line("gpu", "NVIDIA H100", 1, "0.12.0", "0.12.0")


# --------------------------------------------------------------------------- budgets shared by ranks

MIB, GIB = 2**20, 2**30


@pytest.mark.parametrize("ranks", [1, 2, 3, 8])
def test_cpu_budget_is_half_the_l3_split_among_the_ranks_on_the_node(ranks):
    assert runtime.chunk_budget_bytes("cpu", l3_bytes=32 * MIB, ranks_sharing=ranks) == 16 * MIB // ranks


def test_gpu_budget_is_half_of_this_ranks_share_of_the_device():
    total = 80 * GIB
    # assign_gpu.py gave each of 4 ranks 0.9/4 of the GPU: the allocator limit is already the share.
    limit = int(total * 0.225)
    assert runtime.chunk_budget_bytes("gpu", limit, ranks_sharing=4, device_total_bytes=total) == limit // 2
    # The user gave every rank 0.9 of the GPU: 4 ranks still plan for a quarter each.
    assert (
        runtime.chunk_budget_bytes("gpu", int(total * 0.9), ranks_sharing=4, device_total_bytes=total)
        == total // 4 // 2
    )
    # One rank: half the allocator's limit, as before.
    assert runtime.chunk_budget_bytes("gpu", 60 * GIB, ranks_sharing=1, device_total_bytes=total) == 30 * GIB
    assert runtime.chunk_budget_bytes("gpu", 60 * GIB, ranks_sharing=2) == 15 * GIB  # total unknown
    assert runtime.chunk_budget_bytes("gpu", None, ranks_sharing=2) is None
    # Whatever the fractions, the ranks on one GPU together plan for at most half of it.
    for fraction, ranks in ((0.9, 4), (0.75, 16), (0.45, 2), (0.225, 4)):
        limit = int(total * fraction)
        each = runtime.chunk_budget_bytes(
            "gpu",
            limit,
            ranks_sharing=ranks,
            device_total_bytes=runtime.device_total_bytes(limit, {"XLA_PYTHON_CLIENT_MEM_FRACTION": str(fraction)}),
        )
        assert each * ranks <= total // 2 + ranks and each <= limit // 2


def test_device_total_from_the_allocator_limit_and_fraction():
    assert runtime.device_total_bytes(60 * GIB, {}) == 80 * GIB  # jax's default fraction 0.75
    assert runtime.device_total_bytes(36 * GIB, {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.45"}) == 80 * GIB
    assert runtime.device_total_bytes(None, {}) is None
    assert runtime.device_total_bytes(1, {"XLA_PYTHON_CLIENT_MEM_FRACTION": "x"}) is None


def test_ranks_sharing_a_device():
    assert runtime.ranks_sharing_device("cpu", 4, {"VSML_RANKS_PER_DEVICE": "2"}) == 4  # the L3: the whole node
    assert runtime.ranks_sharing_device("gpu", 16, {"VSML_RANKS_PER_DEVICE": "4"}) == 4  # from assign_gpu.py
    assert runtime.ranks_sharing_device("gpu", 3, {}) == 3  # no assign_gpu.py: all on the first GPU
    assert runtime.ranks_sharing_device("gpu", 3, {"VSML_RANKS_PER_DEVICE": "junk"}) == 3


def test_auto_chunk_budget_of_a_run_is_divided_by_the_ranks_on_the_node(monkeypatch):
    class TwoOnTheNode(comm.SingleProcessComm):
        local_size = 2

    monkeypatch.setattr(runtime, "l3_cache_bytes", lambda: 32 * MIB)
    seen = []
    original = runtime.device_chunk_budget_bytes

    def recording(**kwargs):
        seen.append(original(**kwargs))
        return seen[-1]

    monkeypatch.setattr(runtime, "device_chunk_budget_bytes", recording)
    from vsml.config import build_config, resolve_for_rank  # noqa: PLC0415
    from vsml.learners import build_learner  # noqa: PLC0415

    rank_config = resolve_for_rank(build_config([], [*TINY, "training.pairs_per_chunk=auto"]), 0)
    training = rank_config["training"]
    task = evaluation.load_task(
        training["dataset"], "train", data_settings(rank_config), training["episode_length"], training["batch_size"]
    )
    learner = build_learner(rank_config["model"], task.spec.input_shape, task.spec.num_classes)
    params = learner.init(jax.random.PRNGKey(0))
    experiment.make_outer_loop(learner, task, run_settings(rank_config), params, TwoOnTheNode())
    assert seen == [8 * MIB]  # half of 32 MiB, split between 2 ranks


def test_comm_knows_the_ranks_on_its_node(tmp_path):
    code = (
        "import sys; from vsml.comm import world; c = world(); "
        f"open({str(tmp_path)!r} + f'/rank{{c.rank}}', 'w').write(f'{{c.size}} {{c.local_size}}')"
    )
    proc = subprocess.run(
        [str(MPIEXEC), "-n", "2", sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "rank0").read_text() == "2 2" and (tmp_path / "rank1").read_text() == "2 2"
    assert comm.SingleProcessComm().local_size == 1
