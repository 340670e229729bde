"""Preemption, failures and checkpoint fallback: a job never hangs and never loses work."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import HANG_GUARD_S, MPIEXEC, ROOT, TINY, assert_hint_runs_this_python, checkpoint_arrays, launch
from vsml import checkpoint
from vsml.comm import SingleProcessComm
from vsml.experiment import RunError, check_ranks_agree

LONG = [*TINY, "evaluation.frequency=50", "checkpoint.frequency=1000"]


def _popen(args, ranks=None):
    command = [sys.executable, str(ROOT / "launch.py"), *map(str, args)]
    if ranks:
        command = [str(MPIEXEC), "-n", str(ranks), *command]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def _rank_pids(run_dir: Path) -> list[int]:
    """PIDs of the Python ranks (not the MPI launcher) running with ``run_dir``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if str(run_dir) in words and any(w.endswith("launch.py") for w in words) and "-n" not in words:
            pids.append(int(entry.name))
    return sorted(pids)


def _wait_for(predicate, timeout=HANG_GUARD_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _metric_rows(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.mpi
# (2, 1) signals one rank of two (the other must follow) and resumes on one; (1, 2), resuming on
# more ranks, follows from exact resume and rank-count independence, tested apart: it runs with `slow`.
@pytest.mark.parametrize("ranks_before,ranks_after", [(2, 1), pytest.param(1, 2, marks=pytest.mark.slow)])
def test_sigterm_stops_cleanly_and_resume_equals_uninterrupted(tmp_path, ranks_before, ranks_after):
    whole, part = tmp_path / "whole", tmp_path / "part"
    iterations = 300
    proc = _popen(
        ["--run_dir", part, "--config", *LONG, f"training.iterations={iterations}"],
        ranks=ranks_before if ranks_before > 1 else None,
    )
    stop_after = random.Random().randint(3, 40)
    assert _wait_for(lambda: _metric_rows(part) >= stop_after), "run never got going"
    victim = _rank_pids(part)[-1]  # one rank only: the others must follow it
    os.kill(victim, signal.SIGTERM)
    out, err = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 0, err[-3000:]
    hint = next(line for line in out.splitlines() if "resume with: " in line)
    assert hint.endswith(f" launch.py --resume {part}")
    assert_hint_runs_this_python(hint)
    with np.load(part / "checkpoint.npz") as saved:
        stopped_at = int(saved["step"])
    assert stop_after <= stopped_at < iterations
    resumed = launch("--resume", part, ranks=ranks_after if ranks_after > 1 else None)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = launch("--run_dir", whole, "--config", *LONG, f"training.iterations={iterations}")
    assert reference.returncode == 0, reference.stderr[-3000:]
    for prefix in ("params/", "opt_state/"):
        a, b = checkpoint_arrays(whole, prefix), checkpoint_arrays(part, prefix)
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.mpi
def test_killed_rank_ends_the_job_and_the_checkpoint_survives(tmp_path):
    proc = _popen(
        ["--run_dir", tmp_path, "--config", *TINY, "checkpoint.frequency=5", "training.iterations=1000000"], ranks=2
    )
    assert _wait_for(lambda: (tmp_path / "checkpoint.npz").exists()), "no checkpoint written"
    os.kill(_rank_pids(tmp_path)[-1], signal.SIGKILL)
    proc.communicate(timeout=HANG_GUARD_S)  # ends rather than hangs (no speed asserted: machines get busy)
    assert proc.returncode != 0
    saved = checkpoint.load_arrays(tmp_path)  # complete and readable: writes are atomic
    assert int(saved["step"]) >= 5 and any(name.startswith("params/") for name in saved)


@pytest.mark.mpi
def test_exception_on_one_rank_ends_every_rank_with_its_traceback(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.argv = ["launch.py"]
        import launch
        from vsml import experiment
        from vsml.comm import world
        if world().rank == 1:
            def broken(*args, **kwargs):
                raise RuntimeError("boom on purpose")
            experiment.train = broken
        sys.exit(launch.main(["--run_dir", {str(tmp_path)!r}, "--config", *{TINY!r}, "training.iterations=100000"]))
    """)
    result = subprocess.run(
        [str(MPIEXEC), "-n", "2", sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode != 0
    assert result.stderr.count("rank 1 failed") == 1 and "RuntimeError: boom on purpose" in result.stderr


def test_corrupt_latest_checkpoint_falls_back_and_resumes_exactly(tmp_path):
    part, whole = tmp_path / "part", tmp_path / "whole"
    assert launch("--run_dir", part, "--config", *TINY, "training.iterations=4").returncode == 0
    latest = part / "checkpoint.npz"
    latest.write_bytes(latest.read_bytes()[:300])  # a truncated copy, as after a full disk
    resumed = launch("--resume", part, "--config", "training.iterations=6")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "skipped unreadable checkpoint" in resumed.stdout
    assert "checkpoint.prev.npz (generation 2)" in resumed.stdout
    assert launch("--run_dir", whole, "--config", *TINY, "training.iterations=6").returncode == 0
    a, b = checkpoint_arrays(whole), checkpoint_arrays(part)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_non_finite_meta_parameters_stop_the_run(tmp_path):
    # A huge step saturates every member to the same fitness, the ES gradient becomes exactly 0,
    # and Adam without epsilon then divides 0 by 0.
    result = launch(
        "--run_dir",
        tmp_path,
        "--config",
        *TINY,
        "training.iterations=50",
        "checkpoint.frequency=1",
        "optimizer.lr=1e38",
        "optimizer.kwargs.b1=0.0",
        "optimizer.kwargs.b2=0.0",
        "optimizer.kwargs.eps=0.0",
    )
    assert result.returncode == 1
    assert "meta-parameters became non-finite in generation" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    with np.load(tmp_path / "checkpoint.npz") as saved:  # the last good state, never the broken one
        assert all(np.isfinite(saved[name]).all() for name in saved.files if name.startswith("params/"))


class _DisagreeingComm(SingleProcessComm):
    size = 3

    def allgather(self, local):
        return np.concatenate([local, local, local + 1])


def test_rank_digest_mismatch_names_the_ranks():
    params = {"w": np.ones(3)}
    check_ranks_agree(params, SingleProcessComm(), 5)
    with pytest.raises(RunError, match=r"ranks \[2\] differ from rank 0's at generation 5"):
        check_ranks_agree(params, _DisagreeingComm(), 5)
