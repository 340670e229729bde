"""``python -m vsml.convert_original model.chkp --config_files ... --out converted.npz``.

Converts the original release's ``model.chkp`` (read by :mod:`vsml.checkpoint_original`)
into this project's checkpoint .npz, with the configuration that describes its model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

from vsml import checkpoint, checkpoint_original
from vsml.checkpoint_base import CheckpointError


def convert(path, config: dict, out) -> Path:
    """Writes ``out`` in this project's checkpoint format from a model.chkp and a config.

    VSML loads no data; a fixed-size learner (MetaRNN) takes its sizes from its training dataset.

    ``step`` is the original's generation count, ``rng`` the config seed's base keys; the file can
    be restored (``checkpoint.restore.path``) or, in a run directory with its config.yaml, resumed.
    """
    from vsml.config import resolve_for_rank, to_yaml  # noqa: PLC0415 — the command line only
    from vsml.evaluation import trained_sizes  # noqa: PLC0415
    from vsml.learners import build_learner  # noqa: PLC0415
    from vsml.meta.base import MetaState  # noqa: PLC0415
    from vsml.meta.sliced import make_optimizer  # noqa: PLC0415
    from vsml.meta.slicing import base_keys  # noqa: PLC0415
    from vsml.settings import run_settings  # noqa: PLC0415

    settings = run_settings(resolve_for_rank(config, 0))
    learner = build_learner(settings.model, *trained_sizes(settings))
    params = learner.init(jax.random.PRNGKey(settings.seed))
    opt = settings.optimizer
    opt_state = make_optimizer(opt.lr, opt.kwargs, opt.clip_gradnorm).init(params)
    restored = checkpoint_original.restore(path, params, opt_state)
    state = MetaState(
        params=restored["params"],
        opt_state=restored["opt_state"] if restored["adam_continues"] else opt_state,
        generation=restored["step"],
        rng=base_keys(settings.seed),
    )
    arrays = checkpoint.state_arrays(state, wall_time=0.0, config_yaml=to_yaml(config))
    out = Path(out)
    checkpoint.atomic_write_npz(out, arrays)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vsml.convert_original",
        description="Convert the original release's model.chkp into this project's checkpoint .npz.",
    )
    parser.add_argument("checkpoint", help="a model.chkp written by the original release")
    parser.add_argument("--config_files", nargs="+", default=[], metavar="FILE", help="the run's model config")
    parser.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE", help="overrides, as launch.py")
    parser.add_argument("--out", required=True, help="the .npz to write")
    args = parser.parse_args(argv)
    from vsml.config import ConfigError, build_config  # noqa: PLC0415

    try:
        out = convert(args.checkpoint, build_config(args.config_files, args.config), args.out)
    except (CheckpointError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
