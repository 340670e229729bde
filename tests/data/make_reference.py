"""Regenerates ``tests/data/reference_runs.npz``: the checkpoints of short quick-start runs.

    python tests/data/make_reference.py

The file pins the results of the code as it is: ``tests/test_reference_runs.py``
reruns the same runs through ``launch.py`` and requires the same meta-parameters,
optimiser state and RNG keys bit for bit, so a restructure cannot change results
unnoticed. Update it ONLY with a deliberate result change (a new initialisation, a
different update rule, ...), in the commit that makes the change, and say so there.
It records the jax and numpy versions and the XLA flags that produced it: another jax
version or another CPU (the project's flags depend on its vector width) may legitimately
change the float32 numbers in the last bits, so the test compares exactly only where
all three match, and within a tolerance elsewhere.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.conftest import launch  # noqa: E402

REFERENCE = Path(__file__).resolve().parent / "reference_runs.npz"
REGENERATE = "python tests/data/make_reference.py"

# The quick start, cut to 20 generations (evaluation shrunk to 2 short digits episodes:
# it does not touch the meta-parameters), on 1 and on 2 ranks; and its meta-gradient
# variant (optimizer.type: metagrad from configs/backprop.yaml) for 3 steps of 4 short
# episodes (backprop through VSML is slow to compile), with the Adam step and clipping
# the stored reference was made with (backprop.yaml's defaults until issue 30) given
# explicitly, so a new default there does not change the pinned run.
SMALL_EVALUATION = ["evaluation.datasets=[digits]", "evaluation.count=2", "evaluation.episode_length=10"]
QUICKSTART = [
    "--config_files",
    "configs/quickstart.yaml",
    "--config",
    "logging.wandb=disabled",
    "training.iterations=20",
    *SMALL_EVALUATION,
]
CASES = {
    "es_1rank": (QUICKSTART, None),
    "es_2ranks": (QUICKSTART, 2),
    "metagrad_1rank": (
        [
            "--config_files",
            "configs/quickstart.yaml",
            "configs/backprop.yaml",
            "--config",
            "logging.wandb=disabled",
            "training.iterations=3",
            "training.population_size=4",
            "training.episode_length=10",
            "optimizer.lr=0.001",
            "optimizer.clip_gradnorm=1.0",
            *SMALL_EVALUATION,
        ],
        None,
    ),
}
# Checkpoint entries that must not change (not wall_time or the config text).
PINNED_PREFIXES = ("params/", "opt_state/", "rng/", "step")


def run_case(name: str, run_dir: Path) -> dict[str, np.ndarray]:
    """Runs case ``name`` into ``run_dir``; returns its pinned checkpoint arrays."""
    args, ranks = CASES[name]
    result = launch(*args, "--run_dir", run_dir, ranks=ranks)
    if result.returncode != 0:
        raise RuntimeError(f"reference run {name} failed:\n{result.stderr[-3000:]}")
    with np.load(Path(run_dir) / "checkpoint.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files if key.startswith(PINNED_PREFIXES)}


def versions() -> dict[str, str]:
    """What decides the float32 numbers besides the code: jax, numpy and the XLA flags of a run."""
    import jax  # noqa: PLC0415

    from vsml import runtime  # noqa: PLC0415

    return {"jax": jax.__version__, "numpy": np.__version__, "xla_flags": runtime.project_xla_flags()}


def main() -> None:
    arrays = {f"version/{tool}": np.asarray(version) for tool, version in versions().items()}
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            for key, value in run_case(name, Path(tmp) / name).items():
                arrays[f"{name}/{key}"] = value
    np.savez(REFERENCE, **arrays)
    print(f"wrote {REFERENCE} ({len(arrays)} arrays, {versions()})")


if __name__ == "__main__":
    main()
