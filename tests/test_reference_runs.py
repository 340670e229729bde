"""Results are pinned: short quick-start runs give the checkpoints stored in tests/data.

The reference was produced by the code before the restructure of issue 14 (see
``tests/data/make_reference.py``); any change of a meta-parameter, optimiser state or
RNG key — even in the last bit — fails here. A deliberate result change regenerates
the reference in its own commit.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.data.make_reference import CASES, REFERENCE, REGENERATE, run_case, versions


def reference_arrays(case: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with np.load(REFERENCE, allow_pickle=False) as data:
        made_with = {key.split("/", 1)[1]: str(data[key]) for key in data.files if key.startswith("version/")}
        arrays = {key.split("/", 1)[1]: data[key] for key in data.files if key.startswith(f"{case}/")}
    return arrays, made_with


@pytest.mark.parametrize("case", [
    "es_1rank",
    pytest.param("es_2ranks", marks=[pytest.mark.mpi, pytest.mark.slow]),  # ~30 s on 2 busy cores
    "metagrad_1rank",
])
def test_run_reproduces_the_stored_checkpoint(case, tmp_path):
    expected, made_with = reference_arrays(case)
    assert expected, f"{REFERENCE} has no case {case}; regenerate it with `{REGENERATE}`"
    got = run_case(case, tmp_path)
    assert sorted(got) == sorted(expected), "the checkpoint layout changed"
    note = (f"{case} no longer reproduces {REFERENCE.name} (made with jax {made_with['jax']}, "
            f"numpy {made_with['numpy']}; running jax {versions()['jax']}, numpy {versions()['numpy']}). "
            f"If the change is deliberate, regenerate it with `{REGENERATE}` in that commit and say so")
    for key in sorted(expected):
        np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{key}: {note}")

