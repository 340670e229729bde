"""Guards against a broken JAX/XLA build: compiled batched code must equal eager code.

jaxlib 0.10 and later on CPU return wrong values from ``jit(vmap(f))`` (e.g.
rows 2730.. of 4096 off by ~0.5; with a matmul + tanh every row wrong) when
XLA:CPU's YNNPACK fusion is on. ES evaluates a whole population slice with
exactly this pattern, so a regression here would silently corrupt every
fitness value. ``vsml/runtime.py`` turns the fusion off; these tests run under
exactly the flags it sets (``tests/conftest.py`` applies them, as ``launch.py``
does), on whatever jax is installed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import conftest
from vsml import runtime

SCALES = jnp.linspace(0.5, 3.0, 12)
PROJECTION = jnp.ones((13, 4))


def _with_sin(x):
    return jnp.sum(SCALES * (x[:12] - 1.0) ** 2) + jnp.sum(jnp.sin(3.0 * x[:12]))


def _with_matmul(x):
    return jnp.sum(jnp.tanh(x @ PROJECTION)) + jnp.sum(SCALES * x[:12])


def test_runs_under_exactly_the_flags_launch_py_sets():
    assert os.environ["XLA_FLAGS"] == runtime.project_xla_flags(conftest.USER_XLA_FLAGS)
    version, directory = runtime.installed_jaxlib()
    if runtime.version_tuple(version) >= (0, 10):  # the releases with the YNNPACK miscompile
        assert f"{runtime.YNN_FUSION_FLAG}=" in os.environ["XLA_FLAGS"].split()


@pytest.mark.parametrize("f", [_with_sin, _with_matmul])
@pytest.mark.parametrize("rows", [64, 4096, 8192])
def test_jit_vmap_equals_row_by_row_float64(f, rows):
    x = (0.2 + 0.01 * np.random.default_rng(0).standard_normal((rows, 13))).astype(np.float32)
    compiled = np.asarray(jax.jit(jax.vmap(f))(x))
    x64, scales = x.astype(np.float64), np.asarray(SCALES, np.float64)
    if f is _with_sin:
        expected = (scales * (x64[:, :12] - 1) ** 2).sum(1) + np.sin(3 * x64[:, :12]).sum(1)
    else:
        expected = np.tanh(x64 @ np.ones((13, 4))).sum(1) + (scales * x64[:, :12]).sum(1)
    np.testing.assert_allclose(compiled, expected, rtol=1e-5, atol=1e-5)


def test_import_vsml_sets_the_flags_or_says_once_that_it_is_too_late():
    """``import vsml`` applies the flags before any backend; after one exists it sets nothing and says so."""
    fresh = {}
    assert runtime.apply_xla_flags_at_import(fresh) is not None or not runtime.project_xla_flags()  # backend exists
    assert "XLA_FLAGS" not in fresh  # the variable never claims flags this process does not run with
    flagged = {"XLA_FLAGS": runtime.project_xla_flags()}
    assert runtime.apply_xla_flags_at_import(flagged) is None  # already in effect: nothing to say
    script = "import jax; jax.numpy.zeros(1).block_until_ready(); import vsml, os; print(os.environ.get('XLA_FLAGS'))"
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    late = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=conftest.ROOT)
    assert late.returncode == 0 and late.stdout.strip() == "None"
    warnings = [line for line in late.stderr.splitlines() if "XLA flags" in line]
    if runtime.project_xla_flags():
        assert len(warnings) == 1 and "import vsml before using jax" in warnings[0], late.stderr
    early = subprocess.run(
        [sys.executable, "-c", "import vsml, os; print(os.environ.get('XLA_FLAGS', ''))"],
        capture_output=True,
        text=True,
        env=env,
        cwd=conftest.ROOT,
    )
    assert early.stdout.strip() == runtime.project_xla_flags() and early.stderr == ""
