"""Command-line entry: build the configuration and run ``call`` (train | evaluate).

    python3 launch.py --config_files configs/quickstart.yaml --config training.population_size=128
    mpiexec -n 4 python3 launch.py --config_files ...           # same run, spread over 4 ranks
    python3 launch.py --array configs/array/sweep.yaml --task 3  # one task of a sweep
    python3 launch.py --array configs/array/sgd.yaml --subset 1 3 --task 2 --tags sgd  # entry 3 (0-based)
    python3 launch.py --resume runs/RUN [--config training.iterations=N]
    python3 launch.py --config_files configs/quickstart.yaml --print_config  # show it, run nothing

Bad input exits with status 2 and one line naming the problem, before any
data is loaded or anything is compiled.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE_ERROR = 2

EPILOG = """examples:
  python3 launch.py --config_files configs/test.yaml                  # seconds-long smoke run
  python3 launch.py --config_files configs/quickstart.yaml --config training.population_size=64
  python3 launch.py --config_files configs/quickstart.yaml --print_config   # show the config, run nothing
  python3 launch.py --config_files configs/quickstart.yaml --config training.dataset=npz:mine.npz
  mpiexec -n 4 python3 launch.py --config_files configs/quickstart.yaml
  python3 launch.py --array configs/array/datasets.yaml --task 3
  python3 launch.py --resume runs/RUN --config training.iterations=3001
  python3 launch.py --config_files configs/quickstart.yaml --config call=evaluate checkpoint.restore.path=runs/RUN

config keys: every key and its default is in configs/default.yaml (commented);
what each one means is in docs/DESIGN.md section 9. Datasets: python3 -m vsml.data status.
Plots: python3 -m vsml.plot RUN_DIR. Python API: vsml/api.py (README "Python API")."""


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Meta-train or evaluate learned learning algorithms (VSML).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config_files",
        nargs="+",
        default=[],
        metavar="FILE",
        help="YAML files layered in order on configs/default.yaml",
    )
    parser.add_argument(
        "--config",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="overrides, values parsed as YAML (e.g. training.population_size=128)",
    )
    parser.add_argument("--array", metavar="FILE", help="sweep file with 'array:' or 'grid:' tasks")
    parser.add_argument("--task", type=int, help="1-based task of --array (default: SLURM_ARRAY_TASK_ID)")
    parser.add_argument(
        "--subset",
        type=int,
        nargs="+",
        metavar="I",
        help="0-based entries of --array: task N runs entry subset[N-1] (as the original release)",
    )
    parser.add_argument(
        "--tags",
        nargs="+",
        action="extend",
        default=[],
        metavar="TAG",
        help="wandb tags (added to logging.tags and the --array task's tags)",
    )
    parser.add_argument("--job_type", metavar="NAME", help="wandb job type (logging.job_type)")
    parser.add_argument("--run_dir", metavar="DIR", help="where outputs go (default: under logging.dir)")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue RUN_DIR from its latest checkpoint with its saved config"
    )
    parser.add_argument(
        "--print_config",
        action="store_true",
        help="print the resolved configuration (rank 0, and every rank's mpi_split values) "
        "and exit, without loading data or compiling",
    )
    return parser.parse_args(argv)


def build(args):
    """The layered configuration the arguments ask for (no data, no jax); ValueError with one line."""
    from vsml import config as cfg  # noqa: PLC0415 — after argparse, so --help is instant

    if not args.resume:
        return cfg.build_config(args.config_files, args.config, args.array, args.task, **_sweep_args(args))
    saved = Path(args.resume) / "config.yaml"
    if not saved.is_file():
        raise ValueError(f"--resume {args.resume}: no config.yaml there; give a run directory written by launch.py")
    config = cfg.build_config(
        args.config_files, args.config, args.array, args.task, base=cfg.load_yaml_file(saved), **_sweep_args(args)
    )
    config["checkpoint"]["restore"]["path"] = str(args.resume)
    return config


def _sweep_args(args) -> dict:
    return {"subset": args.subset, "tags": args.tags, "job_type": args.job_type}


def prepare(args, comm):
    """Returns ``(config, run_dir, resume)`` or raises ValueError / ConfigError with one line."""
    from vsml import checkpoint, runs  # noqa: PLC0415
    from vsml import config as cfg
    from vsml.experiment import check_config, resolve_restore  # noqa: PLC0415

    config = build(args)
    if args.resume:
        run_dir = Path(args.resume)
        checkpoint.resolve_path(run_dir)
        resume = True
    else:
        resume = False
        run_dir = Path(args.run_dir) if args.run_dir else None
        if run_dir is None and comm.is_root:
            run_dir = runs.default_run_dir(cfg.resolve_for_rank(config, 0))
        run_dir = Path(comm.bcast_object(str(run_dir) if run_dir else None))
        runs.check_new_run(run_dir, config["call"], f"--resume {run_dir}")
    check_config(config, comm)
    if not resume:
        config = resolve_restore(config, comm, run_dir)  # a wandb run_path becomes a local checkpoint file
    return config, run_dir, resume


def print_config(args, comm) -> int:
    """``--print_config``: the checked configuration on stdout (rank 0 only); loads no data, compiles nothing."""
    from vsml.config import describe_config, resolve_for_rank, split_period  # noqa: PLC0415
    from vsml.settings import validate  # noqa: PLC0415

    try:
        config = build(args)
        for rank in range(min(max(comm.size, split_period(config)), 256)):  # types and ranges, as a run checks
            validate(resolve_for_rank(config, rank))
        text = describe_config(config, ranks=comm.size)
    except ValueError as err:
        if comm.is_root:
            print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR
    if comm.is_root:
        print(text, flush=True)
    return 0


def run(config, run_dir, resume, comm, stop) -> int:
    from vsml import experiment  # noqa: PLC0415 — imports jax; only once the input is known good
    from vsml.environment import python_command  # noqa: PLC0415

    if config["call"] == "evaluate":
        experiment.evaluate(config, comm, run_dir)
        return 0
    result = experiment.train(config, comm, run_dir, resume=resume, stop=stop)
    if comm.is_root:
        if result.stopped_by:
            print(
                f"stopped after generation {result.state.generation} ({result.stopped_by}); "
                f"resume with: {python_command()} launch.py --resume {run_dir}",
                flush=True,
            )
        else:
            print(f"done: {result.state.generation} generations; outputs in {run_dir}", flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from vsml import environment  # noqa: PLC0415 — standard library only

    environment.exit_if_missing("launch.py")  # one line naming the install command, not a traceback
    from vsml import runtime  # noqa: PLC0415

    runtime.apply_xla_flags()  # XLA reads its flags when jax creates a backend: before any jax use
    from vsml.comm import world  # noqa: PLC0415

    if args.print_config:
        return print_config(args, world())
    from vsml.preemption import StopRequest  # noqa: PLC0415

    # Signals that arrive while jax loads and compiles must not kill the run either.
    stop = StopRequest().install()
    comm = world()
    if not comm.is_root:
        stop.announce = lambda text: None  # rank 0 acknowledges a stop signal for every rank
    try:
        config, run_dir, resume = prepare(args, comm)
    except ValueError as err:  # ConfigError and CheckpointError are ValueErrors
        if comm.is_root:
            print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR
    try:
        return run(config, run_dir, resume, comm, stop)
    except Exception as err:  # noqa: BLE001 — every failure must end all ranks, not hang them
        return fail(err, comm)


def fail(err: Exception, comm) -> int:
    """Reports a failure once and makes sure no rank is left waiting in a collective.

    Failures every rank detects together (RunError, non-finite meta-parameters)
    are one line from rank 0; anything else is this rank's traceback, after
    which MPI_Abort ends the other ranks.
    """
    import traceback  # noqa: PLC0415

    from vsml.experiment import RunError  # noqa: PLC0415
    from vsml.meta.es import NonFiniteError  # noqa: PLC0415

    if isinstance(err, (RunError, NonFiniteError)):
        if comm.is_root:
            print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    print(f"rank {comm.rank} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
    if comm.size > 1:
        comm.abort(1)
    return 1


if __name__ == "__main__":
    sys.exit(main())
