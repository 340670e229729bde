"""Command-line entry: build the configuration and run ``call`` (train | evaluate).

    python3 launch.py --config_files configs/quickstart.yaml --config training.population_size=128
    mpiexec -n 4 python3 launch.py --config_files ...           # same run, spread over 4 ranks
    python3 launch.py --array configs/array/datasets.yaml --task 3  # one task of a sweep
    python3 launch.py --array configs/array/sgd.yaml --subset 1 3 --task 2 --tags sgd  # entry 3 (0-based)
    python3 launch.py --resume runs/RUN [--config training.iterations=N]
    python3 launch.py --config_files configs/quickstart.yaml --print_config  # show it, run nothing

Bad input exits with status 2 and one line naming the problem, before any
data is loaded or anything is compiled.
"""

from __future__ import annotations

import argparse
import sys

from vsml.settings import (
    EvaluationSettings,
    LoggingSettings,
    RestoreSettings,
    RunSettings,
    TrainingSettings,
    key_of,
)

USAGE_ERROR = 2

# The settings layer is standard library only, so --help stays instant; the examples name keys through it.
POPULATION = key_of(TrainingSettings, "population_size")


def epilog(command: str) -> str:
    """The examples and pointers of ``--help``, for the command that was typed (``vsml``, ``python3 launch.py``)."""
    import textwrap  # noqa: PLC0415

    from vsml import environment, resources  # noqa: PLC0415 — standard library only

    def listing(title: str, names: list[str]) -> str:
        return textwrap.fill(f"{title}: {', '.join(names)}", width=100, subsequent_indent="  ")

    iterations, call = key_of(TrainingSettings, "iterations"), key_of(RunSettings, "call")
    restore, datasets = key_of(RestoreSettings, "path"), key_of(EvaluationSettings, "datasets")
    python = environment.python_command()
    return f"""examples:
  {command} --config_files configs/test.yaml                  # seconds-long smoke run
  {command} --config_files configs/quickstart.yaml --config {POPULATION}=64
  {command} --config_files configs/quickstart.yaml --print_config   # show the config, run nothing
  {command} --config_files configs/quickstart.yaml --config {key_of(TrainingSettings, "dataset")}=npz:mine.npz
  mpiexec -n 4 {command} --config_files configs/quickstart.yaml
  {command} --array configs/array/datasets.yaml --task 3
  {command} --resume runs/RUN --config {iterations}=3001
  {command} --config {call}=evaluate {restore}=runs/RUN
  {command} --config {call}=evaluate {restore}=pretrained:vsml-digits {datasets}=[digits]

{listing("shipped configs (--config_files, from any folder)", resources.shipped_configs())}
{listing(f"pre-trained algorithms ({restore}=pretrained:NAME)", resources.pretrained_names())}

config keys: {command} --list-settings prints every key, its default and what it means.
Datasets: {python} -m vsml.data status. Plots: {python} -m vsml.plot RUN_DIR.
Python API: from vsml import api; help(api)."""


class ListSettings(argparse.Action):
    """``--list-settings``: prints the settings reference (every key, default, rule, meaning) and exits."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from vsml.run_checks import registry_names  # noqa: PLC0415 — the registries' names, for the choices
        from vsml.settings import reference_markdown  # noqa: PLC0415

        print(reference_markdown(names_of=registry_names), end="")
        parser.exit()


def parse_args(argv):
    from vsml import environment  # noqa: PLC0415 — standard library only

    command = environment.entry_command()
    parser = argparse.ArgumentParser(
        prog="launch.py" if command.endswith("launch.py") else "vsml",  # never __main__.py
        description="Meta-train or evaluate learned learning algorithms (VSML).",
        epilog=epilog(command),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--list-settings",
        action=ListSettings,
        help="print every config key with its default, rule and meaning (a Markdown table), and exit",
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
        help=f"overrides, values parsed as YAML (e.g. {POPULATION}=128)",
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
        help=f"wandb tags (added to {key_of(LoggingSettings, 'tags')} and the --array task's tags)",
    )
    parser.add_argument("--job_type", metavar="NAME", help=f"wandb job type ({key_of(LoggingSettings, 'job_type')})")
    parser.add_argument(
        "--run_dir", metavar="DIR", help=f"where outputs go (default: under {key_of(LoggingSettings, 'dir')})"
    )
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
    from vsml import preparation  # noqa: PLC0415 — after argparse, so --help is instant

    return preparation.layered_config(
        args.config_files,
        args.config,
        resume_dir=args.resume,
        array_file=args.array,
        task=args.task,
        subset=args.subset,
        tags=args.tags,
        job_type=args.job_type,
    )


def prepare(args, comm):
    """The :class:`vsml.preparation.PreparedRun` the arguments ask for; raises ValueError / ConfigError with one line."""
    from vsml import environment, preparation  # noqa: PLC0415

    return preparation.prepare_run(
        build(args),
        comm,
        run_dir=args.run_dir,
        resume_dir=args.resume,
        resume_hint=f"{environment.entry_command()} --resume {{run_dir}}",
    )


def print_config(args, comm) -> int:
    """``--print_config``: the checked configuration on stdout (rank 0 only); loads no data, compiles nothing."""
    from vsml.config import resolve_for_rank, split_period  # noqa: PLC0415
    from vsml.config_view import describe_config  # noqa: PLC0415
    from vsml.run_checks import evaluated_config  # noqa: PLC0415
    from vsml.settings import validate  # noqa: PLC0415

    try:
        config = build(args)
        if args.resume is None:  # an evaluate of a checkpoint runs the checkpoint's model: show that one
            config = evaluated_config(config)
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


def run(prepared, comm, stop) -> int:
    from vsml import environment, evaluation, experiment  # noqa: PLC0415 — imports jax; only once the input is known good
    from vsml.runlog import EVALUATION, METRICS  # noqa: PLC0415

    if prepared.config["call"] == "evaluate":
        evaluation.evaluate(prepared.config, comm, prepared.run_dir)
        if comm.is_root:
            print(f"done: meta-test in {prepared.run_dir} ({METRICS}; every episode's curve: {EVALUATION})", flush=True)
        return 0
    resume_command = f"{environment.entry_command()} --resume {prepared.run_dir}"
    result = experiment.train(
        prepared.config, comm, prepared.run_dir, resume=prepared.resume, stop=stop, resume_command=resume_command
    )
    if comm.is_root and not result.stopped_by:  # a stopped run's last line is the stop line, with resume_command
        print(f"done: {result.generation} generations; outputs in {prepared.run_dir}", flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from vsml import environment  # noqa: PLC0415 — standard library only

    environment.exit_if_missing(environment.entry_command())  # one line naming the install command, not a traceback
    from vsml import runtime  # noqa: PLC0415

    runtime.apply_xla_flags()  # XLA reads its flags when jax creates a backend: before any jax use
    from vsml.comm import LaunchError, first_task, world  # noqa: PLC0415

    try:
        comm = world()
    except LaunchError as err:  # one line from one task, before anything is loaded or written
        if first_task():
            print(f"error: {err}", file=sys.stderr, flush=True)
        return USAGE_ERROR
    if args.print_config:
        return print_config(args, comm)
    from vsml.preemption import StopRequest  # noqa: PLC0415

    # Signals that arrive while jax loads and compiles must not kill the run either.
    stop = StopRequest().install()
    if not comm.is_root:
        stop.announce = lambda text: None  # rank 0 acknowledges a stop signal for every rank
    try:
        try:
            prepared = prepare(args, comm)
        except ValueError as err:  # ConfigError and CheckpointError are ValueErrors
            if comm.is_root:
                print(f"error: {err}", file=sys.stderr)
            return USAGE_ERROR
        try:
            return run(prepared, comm, stop)
        except Exception as err:  # noqa: BLE001 — every failure must end all ranks, not hang them
            return fail(err, comm)
    finally:
        stop.uninstall()  # the caller's handlers again (main() is also called in-process: launch.main)


def fail(err: Exception, comm) -> int:
    """Reports a failure once and makes sure no rank is left waiting in a collective.

    Failures every rank detects together (RunError; experiment reports non-finite
    meta-parameters as one) are one line from rank 0; anything else is this rank's
    traceback, after which MPI_Abort ends the other ranks.
    """
    import traceback  # noqa: PLC0415

    from vsml.experiment import RunError  # noqa: PLC0415

    if isinstance(err, RunError):
        if comm.is_root:
            print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    print(f"rank {comm.rank} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
    if comm.size > 1:
        comm.abort(1)
    return 1


if __name__ == "__main__":
    sys.exit(main())
