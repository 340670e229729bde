"""Shared test helpers: tiny configs and launching ``launch.py`` (optionally under mpiexec)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from vsml import runtime

# Tests run under exactly the XLA flags launch.py sets (vsml/runtime.py): the YNNPACK
# fusion off where jaxlib has that flag, 512-bit vectors on AVX-512. Set before any
# test module creates a jax backend; subprocesses inherit them.
USER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")
runtime.apply_xla_flags()

ROOT = Path(__file__).resolve().parent.parent

# Properties are checked for correctness, never speed: no per-example deadline (a busy machine
# would otherwise fail them at random).
settings.register_profile("vsml", deadline=None)
settings.load_profile("vsml")

# Subprocess time limits only guard against hangs: wide enough for a machine at load 5.
HANG_GUARD_S = 600
MPIEXEC = Path(sys.executable).parent / "mpiexec"

# A config small enough that a generation takes milliseconds: 8x8 digits,
# short episodes, a small population and a small sub-RNN.
TINY = [
    "training.dataset=digits",
    "training.episode_length=12",
    "training.population_size=4",
    "evaluation.datasets=[digits]",
    "evaluation.episode_length=12",
    "evaluation.count=2",
    "evaluation.frequency=2",
    "summary.frequency=1",
    "checkpoint.frequency=2",
    "model.sub_rnn.msg_size=4",
    "model.sub_rnn.slow_size=4",
    "logging.wandb=disabled",
]


def launch(*args, ranks: int | None = None, timeout: float = 900, env: dict | None = None):
    """Runs ``python launch.py ARGS`` (under ``mpiexec -n ranks`` when given); returns the CompletedProcess.

    ``timeout`` guards against a hang, not a slow machine: 300 s tripped at load average 15+.
    """
    command = [sys.executable, str(ROOT / "launch.py"), *map(str, args)]
    if ranks:
        command = [str(MPIEXEC), "-n", str(ranks), *command]
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)


def assert_hint_runs_this_python(line: str) -> None:
    """The interpreter that a printed ``resume with: PYTHON launch.py ...`` hint names is, in a fresh
    shell at the repository root, the one running the tests."""
    word = line.split("resume with: ", 1)[1].split()[0]
    found = shutil.which(word) if word == "python3" else os.path.join(ROOT, os.path.expanduser(word))
    assert found is not None, line
    assert Path(os.path.abspath(found)).parent == Path(sys.executable).parent, (word, sys.executable)


def checkpoint_arrays(run_dir, prefix="params/"):
    with np.load(Path(run_dir) / "checkpoint.npz", allow_pickle=False) as data:
        return {name: data[name] for name in data.files if name.startswith(prefix)}


@pytest.fixture
def tiny():
    return list(TINY)


def pytest_collection_modifyitems(config, items):
    """`slow` tests (seed sweeps, long runs) have no per-test hang guard (pyproject.toml: timeout)."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(0))
