"""Writes tests/data/original/: model.chkp files and outputs made by the original release's own code.

Runs ONLY in a scratch venv with the original release's stack (see README.md here), never under
pytest (the file name does not match ``test_*.py``). It imports the original's ``experiment.py``,
``models.py``, ``vsml_layers.py``, ``recurrent.py``, ``config.py`` and ``mpiutils.py`` unchanged;
stand-ins replace only modules it imports for I/O and distribution (``wandb``, ``mpi4py``,
``mpi4jax``, and ``data``, whose loader needs TensorFlow), three aliases jax 0.4.30 no longer has
(``jax.tree_multimap``, ``jax.tree_structure``, ``jax.tree_unflatten``), and haiku's own opt-out for
code written before ``hk.vmap`` required ``split_rng`` (``hk.vmap.require_split_rng = False``: the old
behaviour, the same RNG key in every vmapped call).

Per case it builds ``Experiment(config)`` (the original's init of the model and of Adam), runs two
ES updates through ``Experiment._update_func`` (what ``Experiment.step`` runs, unjitted: jax 0.4.30
would trace the original's ``jnp.array(p.shape)`` under jit), writes ``model.chkp``
with ``Experiment.checkpoint`` (its own ``pickle.dump``), then runs ``Experiment.forward.apply`` on
fixed inputs and saves inputs, labels, logits and each layer's initial cell state (recorded as
``recurrent.CustomLSTM.initial_vsml_state`` returns it) to ``outputs.npz``.

Usage: venv/bin/python make_original_checkpoints.py --original SRC --out tests/data/original
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import types
from pathlib import Path

import numpy as np

# The cases: the paper's VSML model (configs/default.yaml) with small sizes, one with every option
# that adds or renames haiku modules (layer norm, layer-wise and separate backward sub-RNNs), and the
# MetaRNN baseline (Hochreiter et al.) with a small LSTM.
SMALL = {"model.sub_rnn.msg_size": 4, "model.sub_rnn.slow_size": 4}
CASES = {
    "vsml": {**SMALL, "model.vsml_rnn.layer_specs": [{"type": "dense", "out_size": 3}, {"type": "dense"}]},
    "vsml_options": {
        **SMALL,
        "model.sub_rnn.init_rand_proportion": 0.0,
        "model.sub_rnn.layer_norm": True,
        "model.vsml_rnn.layer_specs": [{"type": "dense", "out_size": 3}, {"type": "dense"}],
        "model.vsml_rnn.backward_pass": True,
        "model.vsml_rnn.separate_backward_rnn": True,
        "model.vsml_rnn.layerwise_rnns": True,
        "model.vsml_rnn.feed_label": True,
    },
    "meta_rnn": {"model.type": "MetaRNN", "model.meta_rnn.slow_size": 4},
}
STEPS, BATCH, FEATURES, CLASSES, POPULATION = 6, 1, 5, 3, 2


def install_stand_ins(out_dir: Path) -> None:
    """Modules the original imports for I/O and MPI, replaced by single-process equivalents."""
    import haiku as hk  # noqa: PLC0415
    import jax  # noqa: PLC0415

    hk.vmap.require_split_rng = False
    for name in ("tree_multimap", "tree_structure", "tree_unflatten"):
        if not hasattr(jax, name):
            setattr(jax, name, getattr(jax.tree_util, "tree_map" if name == "tree_multimap" else name))

    wandb = types.ModuleType("wandb")
    wandb.run = types.SimpleNamespace(dir=str(out_dir))
    wandb.save = lambda path: None
    wandb.log = lambda *args, **kwargs: None
    wandb.summary = {}

    class Comm:
        def Get_rank(self):  # noqa: N802 — mpi4py's names
            return 0

        def Get_size(self):  # noqa: N802
            return 1

        def barrier(self):
            pass

    mpi = types.ModuleType("mpi4py.MPI")
    mpi.COMM_WORLD, mpi.SUM = Comm(), "sum"
    mpi4py = types.ModuleType("mpi4py")
    mpi4py.MPI = mpi
    mpi4jax = types.ModuleType("mpi4jax")
    mpi4jax.allreduce = lambda x, op, comm=None, token=None: (x, token)
    mpi4jax.bcast = lambda x, root, comm=None, token=None: (x, token)
    mpi4jax.gather = lambda x, root, comm=None, token=None: (x[None], token)

    data = types.ModuleType("data")

    class DataLoader:
        """Fixed ES episodes ``[P, T, B, F]`` instead of the TensorFlow pipeline."""

        def __init__(self, *args):
            rng = np.random.default_rng(0)
            self.images = rng.normal(size=(POPULATION, STEPS, BATCH, FEATURES)).astype(np.float32)
            classes = rng.integers(0, CLASSES, size=(POPULATION, STEPS, BATCH))
            self.labels = np.eye(CLASSES, dtype=np.float32)[classes]

        def build_train_dataset(self):
            while True:
                yield self.images, self.labels

    data.DataLoader = DataLoader
    sys.modules.update({"wandb": wandb, "mpi4py": mpi4py, "mpi4py.MPI": mpi, "mpi4jax": mpi4jax, "data": data})


def build_config(original: Path, overrides: dict):
    import config as original_config  # noqa: PLC0415 — the original's config.py
    import yaml  # noqa: PLC0415

    flat = original_config.flatten_dot_items(yaml.safe_load((original / "configs" / "default.yaml").read_text()))
    flat.update(copy.deepcopy(overrides))
    flat.update({"training.population_size": POPULATION, "training.batch_size": BATCH})
    cfg = original_config.expand_dot_items(original_config.DotDict(flat))
    original_config.GLOBAL_CONFIG.clear()
    original_config.GLOBAL_CONFIG.update(cfg)
    return cfg


def make_case(original: Path, name: str, overrides: dict, out_dir: Path) -> None:
    import experiment  # noqa: PLC0415 — the original's experiment.py
    import jax  # noqa: PLC0415
    import recurrent  # noqa: PLC0415

    case_dir = out_dir / name
    case_dir.mkdir(parents=True, exist_ok=True)
    sys.modules["wandb"].run.dir = str(case_dir)
    exp = experiment.Experiment(build_config(original, overrides))
    images, labels = exp.data_loader.images, exp.data_loader.labels
    for generation in range(2):
        # Unjitted (the class's function): under jit, jax 0.4.30 traces the ES code's jnp.array(p.shape).
        exp._params, exp._opt_state, _ = experiment.Experiment._update_func(
            exp, exp._params, exp._opt_state, generation, images, labels, jax.random.PRNGKey(100 + generation)
        )
    exp.checkpoint()  # writes case_dir/model.chkp with the original's pickle.dump

    cells = []
    initial_vsml_state = recurrent.CustomLSTM.initial_vsml_state

    def recording(self, shape, rand_proportion):
        state = initial_vsml_state(self, shape, rand_proportion)
        cells.append(np.asarray(state.cell))
        return state

    recurrent.CustomLSTM.initial_vsml_state = recording
    try:
        inputs, episode_labels = images[0], labels[0]  # [T, B, F], [T, B, C]
        logits = exp.forward.apply(exp._params, jax.random.PRNGKey(7), inputs, episode_labels)
    finally:
        recurrent.CustomLSTM.initial_vsml_state = initial_vsml_state
    arrays = {"inputs": inputs, "labels": episode_labels, "logits": np.asarray(logits)}
    arrays.update({f"initial_cell_{i}": cell for i, cell in enumerate(cells)})
    arrays["overrides"] = np.asarray(json.dumps(overrides))
    np.savez(case_dir / "outputs.npz", **arrays)
    print(name, {key: value.shape for key, value in arrays.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", type=Path, required=True, help="a checkout of louiskirsch/vsml-neurips2021")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out_dir = args.out.resolve()
    install_stand_ins(out_dir)
    sys.path.insert(0, str(args.original.resolve()))
    for name, overrides in CASES.items():
        make_case(args.original.resolve(), name, overrides, out_dir)


if __name__ == "__main__":
    main()
