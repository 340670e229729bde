"""Results are pinned: short quick-start runs give the checkpoints stored in tests/data.

The reference was produced by the code before the restructure of issue 14 (see
``tests/data/make_reference.py``); any change of a meta-parameter, optimiser state or
RNG key — even in the last bit — fails here. A deliberate result change regenerates
the reference in its own commit.

Bit-for-bit holds only for the jax and numpy versions and XLA flags that made the
reference (the flags follow the CPU's vector width). Elsewhere the comparison allows
what another compiler may change — the last bits of float32 sums, grown over the run —
and still fails on any change a restructure could make (a different draw, update or
ordering moves values by orders of magnitude more).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.data.make_reference import REFERENCE, REGENERATE, run_case, versions


def reference_arrays(case: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with np.load(REFERENCE, allow_pickle=False) as data:
        made_with = {key.split("/", 1)[1]: str(data[key]) for key in data.files if key.startswith("version/")}
        arrays = {key.split("/", 1)[1]: data[key] for key in data.files if key.startswith(f"{case}/")}
    return arrays, made_with


def state_kind(key: str) -> str:
    """The kind of state an entry belongs to: ``params``, or an optimiser moment such as
    ``opt_state/1/0/mu`` (a near-zero moment of one bias is rounding noise of that kind)."""
    parts = key.split("/")
    for end, part in enumerate(parts):
        if part in ("mu", "nu"):
            return "/".join(parts[: end + 1])
    return parts[0]


def state_scales(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest magnitude of each kind of floating-point state."""
    scales: dict[str, float] = {}
    for key, value in arrays.items():
        if np.issubdtype(value.dtype, np.floating):
            kind = state_kind(key)
            scales[kind] = max(scales.get(kind, 0.0), float(np.max(np.abs(value), initial=0.0)))
    return scales


@pytest.mark.parametrize(
    "case",
    [
        "es_1rank",
        pytest.param("es_2ranks", marks=[pytest.mark.mpi, pytest.mark.slow]),  # ~30 s on 2 busy cores
        "metagrad_1rank",
    ],
)
def test_run_reproduces_the_stored_checkpoint(case, tmp_path):
    expected, made_with = reference_arrays(case)
    assert expected, f"{REFERENCE} has no case {case}; regenerate it with `{REGENERATE}`"
    got = run_case(case, tmp_path)
    assert sorted(got) == sorted(expected), "the checkpoint layout changed"
    note = (
        f"{case} no longer reproduces {REFERENCE.name} (made with jax {made_with['jax']}, "
        f"numpy {made_with['numpy']}; running jax {versions()['jax']}, numpy {versions()['numpy']}). "
        f"If the change is deliberate, regenerate it with `{REGENERATE}` in that commit and say so"
    )
    exact = made_with == versions()
    scales = state_scales(expected)
    for key in sorted(expected):
        if exact or not np.issubdtype(expected[key].dtype, np.floating):
            np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{key}: {note}")
        else:  # another compiler: equal up to float32 rounding, relative to the magnitude of that kind of state
            scale = scales[state_kind(key)]
            np.testing.assert_allclose(
                got[key],
                expected[key],
                rtol=1e-3,
                atol=1e-4 * scale,
                err_msg=f"{key} (compared within float32 rounding: {made_with} vs {versions()}): {note}",
            )
