"""Guards against a broken JAX/XLA build: compiled batched code must equal eager code.

jax 0.10.2 on CPU returned wrong values from ``jit(vmap(f))`` for batches of
a few thousand rows (e.g. rows 2730.. of 4096 off by ~0.5). ES evaluates a
whole population slice with exactly this pattern, so a regression here would
silently corrupt every fitness value.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

SCALES = jnp.linspace(0.5, 3.0, 12)
PROJECTION = jnp.ones((13, 4))


def _with_sin(x):
    return jnp.sum(SCALES * (x[:12] - 1.0) ** 2) + jnp.sum(jnp.sin(3.0 * x[:12]))


def _with_matmul(x):
    return jnp.sum(jnp.tanh(x @ PROJECTION)) + jnp.sum(SCALES * x[:12])


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


def test_the_same_holds_with_the_512_bit_vectors_launch_py_asks_for():
    # launch.py adds this flag on AVX-512 CPUs (vsml/runtime.py): the check must hold under it too.
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_prefer_vector_width=512",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"{__file__}::test_jit_vmap_equals_row_by_row_float64"],
                          cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
