"""Pin each MPI rank to one GPU, then become the wrapped command.

Usage::

    GPU_COUNT=4 mpirun -n 16 python3 assign_gpu.py python3 launch.py --config_files ...
    CUDA_VISIBLE_DEVICES=2,3 mpirun -n 4 python3 assign_gpu.py python3 launch.py ...
    srun python3 assign_gpu.py python3 launch.py ...

Node-local rank, from the first of these variables that is set (non-empty):

1. ``OMPI_COMM_WORLD_LOCAL_RANK`` -- Open MPI ``mpirun`` (documented under
   "Environment variables set for MPI applications"; in 5.x, with PRRTE and
   OpenPMIx, the openpmix ``pmdl_ompi`` plugin's ``setup_fork`` exports it,
   with OMPI_COMM_WORLD_RANK/_SIZE/_LOCAL_SIZE and OMPI_COMM_WORLD_NODE_RANK).
2. ``MPI_LOCALRANKID`` -- MPICH's Hydra ``mpiexec`` (and Intel MPI). Checked by
   running ``.venv/bin/mpiexec -n 2 env`` (Hydra 5.0.2), which exports exactly
   MPI_LOCALRANKID, MPI_LOCALNRANKS, PMI_RANK, PMI_SIZE, PMI_FD, PMI_HOSTNAME
   (no PMI_LOCAL_RANK).
3. ``PMIX_LOCAL_RANK`` -- read only if present (some site launchers and
   wrappers set it). Neither OpenPMIx nor Open MPI 5 exports it:
   ``PMIx_server_setup_fork`` sets PMIX_RANK (the *global* rank),
   PMIX_NAMESPACE, PMIX_SERVER_URI*, PMIX_SECURITY_MODE, PMIX_GDS_MODULE,
   PMIX_HOSTNAME, PMIX_VERSION, ...; ``PMIX_LOCAL_RANK`` is the name of a PMIx
   attribute key (``"pmix.lrank"``), which Open MPI 5 exports as
   OMPI_COMM_WORLD_LOCAL_RANK.
4. ``SLURM_LOCALID`` -- Slurm ``srun`` (``setup_env`` in src/common/env.c).

SLURM_LOCALID comes last on purpose: inside an ``sbatch`` script it is 0 for
the batch step and is inherited by every rank that ``mpirun``/``mpiexec``
starts there, so an MPI launcher's own variable must win. With none of them
set (a plain single process) the local rank is 0 and a warning goes to stderr.

GPUs: ``GPU_COUNT=n`` means devices ``0..n-1``; otherwise the comma-separated
ids or UUIDs in ``CUDA_VISIBLE_DEVICES``. GPU_COUNT wins when both are set. The
rank gets ``gpus[local_rank % len(gpus)]``, so several ranks may share a GPU.

The wrapped command runs with ``CUDA_VISIBLE_DEVICES`` set to that single
device, so JAX (and any CUDA program) sees exactly one GPU, as device 0. When
the launcher says how many ranks run on the node, the ranks given this rank's
GPU are counted (k) and passed on as ``VSML_RANKS_PER_DEVICE=k``; the program's
``training.pairs_per_chunk: auto`` then sizes its chunks for a k-th of the GPU.
When k > 1 (or this rank's local rank alone shows that its GPU is shared), each
JAX process would otherwise grab 75% of the GPU's memory and the second one on
the same GPU would fail, so ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` and
``XLA_PYTHON_CLIENT_MEM_FRACTION=0.9/k`` (a fair share, rounded down) are set
too. A variable the user set is never overridden. All of them are ignored by
CPU-only JAX. Nothing else is changed.

The command replaces this process (``os.execvp``): no Python wrapper or child
process is left, so signals such as Slurm's SIGTERM reach it directly.

Exit status (only when the command never starts): 2 for a usage or
configuration error (one line on stderr), 127 when the command is not found,
126 when it cannot be executed.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence

# (launcher, local-rank variable, local-size variable or None), in precedence order.
LAUNCHERS: tuple[tuple[str, str, str | None], ...] = (
    ("Open MPI", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("MPICH/Hydra", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("PMIx", "PMIX_LOCAL_RANK", "PMIX_LOCAL_SIZE"),
    ("Slurm", "SLURM_LOCALID", None),  # size: SLURM_STEP_TASKS_PER_NODE[SLURM_NODEID]
)

RANKS_PER_DEVICE_VAR = "VSML_RANKS_PER_DEVICE"  # read by vsml/runtime.py
MEM_FRACTION_VAR = "XLA_PYTHON_CLIENT_MEM_FRACTION"
SHARED_MEMORY = 0.9  # of a shared GPU's memory, split among its ranks (the rest: CUDA context, fragmentation)

EXAMPLE = "GPU_COUNT=4 mpirun -n 16 python3 assign_gpu.py python3 launch.py ..."
USAGE = f"usage: assign_gpu.py COMMAND [ARG ...]   e.g. {EXAMPLE}"

EXIT_USAGE = 2
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127

_UINT = re.compile(r"[0-9]+")


class AssignGpuError(Exception):
    """A usage or configuration error: one line for stderr, and an exit status."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


def _get(environ: Mapping[str, str], name: str) -> str | None:
    """The variable's value stripped of blanks, or None when unset or empty."""
    value = environ.get(name, "").strip()
    return value or None


def _uint(name: str, value: str) -> int:
    if not _UINT.fullmatch(value):
        raise AssignGpuError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def launcher(environ: Mapping[str, str]) -> tuple[str, str, str | None] | None:
    """The first entry of LAUNCHERS whose local-rank variable is set, else None."""
    for entry in LAUNCHERS:
        if _get(environ, entry[1]) is not None:
            return entry
    return None


def local_rank(environ: Mapping[str, str]) -> int:
    """This process's rank on its node; 0 when no launcher variable is set."""
    found = launcher(environ)
    if found is None:
        return 0
    name = found[1]
    return _uint(name, _get(environ, name))  # type: ignore[arg-type]


def _slurm_tasks_on_node(environ: Mapping[str, str]) -> int | None:
    """Tasks of this Slurm step on this node, from e.g. SLURM_STEP_TASKS_PER_NODE=4(x2),3."""
    spec, node = _get(environ, "SLURM_STEP_TASKS_PER_NODE"), _get(environ, "SLURM_NODEID")
    if spec is None or node is None or not _UINT.fullmatch(node):
        return None
    counts: list[int] = []
    for item in spec.split(","):
        match = re.fullmatch(r"\s*([0-9]+)\s*(?:\(x([0-9]+)\))?\s*", item)
        if match is None:
            return None
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    index = int(node)
    return counts[index] if index < len(counts) else None


def local_size(environ: Mapping[str, str]) -> int | None:
    """Number of ranks on this node as the launcher reports it, or None if unknown."""
    found = launcher(environ)
    if found is None:
        return None
    if found[1] == "SLURM_LOCALID":
        return _slurm_tasks_on_node(environ)
    value = _get(environ, found[2]) if found[2] else None
    return int(value) if value is not None and _UINT.fullmatch(value) else None


def gpu_list(environ: Mapping[str, str]) -> list[str]:
    """The GPUs this node offers: 0..GPU_COUNT-1, else the CUDA_VISIBLE_DEVICES entries."""
    count = _get(environ, "GPU_COUNT")
    if count is not None:
        if not _UINT.fullmatch(count) or int(count) <= 0:
            raise AssignGpuError(f"GPU_COUNT must be a positive integer (GPUs per node), got {count!r}; e.g. {EXAMPLE}")
        return [str(i) for i in range(int(count))]
    visible = _get(environ, "CUDA_VISIBLE_DEVICES")
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
    if not devices:
        raise AssignGpuError(
            "no GPUs to assign: set GPU_COUNT (GPUs per node, used as devices 0..N-1) "
            f"or CUDA_VISIBLE_DEVICES (comma-separated GPU ids or UUIDs); e.g. {EXAMPLE}"
        )
    return devices


def gpu_for_rank(environ: Mapping[str, str]) -> str:
    """The one GPU (id or UUID) for this rank: gpus[local_rank % len(gpus)]."""
    gpus = gpu_list(environ)
    return gpus[local_rank(environ) % len(gpus)]


def shares_gpu(environ: Mapping[str, str]) -> bool:
    """Whether some rank on this node is known to share its GPU with another."""
    n_gpus = len(gpu_list(environ))
    size = local_size(environ)
    return local_rank(environ) >= n_gpus or (size is not None and size > n_gpus)


def ranks_on_gpu(environ: Mapping[str, str]) -> int | None:
    """How many local ranks get this rank's GPU (``gpus[r % n]``).

    Exact when the launcher reports the ranks on the node; otherwise the ones up to
    this rank (a lower bound, None for a rank below the GPU count, which cannot know).
    """
    n_gpus, rank, size = len(gpu_list(environ)), local_rank(environ), local_size(environ)
    if size is None:
        return rank // n_gpus + 1 if rank >= n_gpus else None
    gpu = rank % n_gpus
    return max((size - gpu + n_gpus - 1) // n_gpus, 1)


def memory_fraction(ranks: int) -> str:
    """``XLA_PYTHON_CLIENT_MEM_FRACTION`` for one of ``ranks`` ranks on a GPU: 0.9/ranks, rounded down."""
    return f"{math.floor(SHARED_MEMORY * 1000 / ranks) / 1000:.3f}"


def child_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` for the wrapped command, pinned to this rank's GPU."""
    env = dict(environ)
    env["CUDA_VISIBLE_DEVICES"] = gpu_for_rank(environ)
    ranks = ranks_on_gpu(environ)
    if ranks is not None and _get(environ, RANKS_PER_DEVICE_VAR) is None:
        env[RANKS_PER_DEVICE_VAR] = str(ranks)
    if shares_gpu(environ):
        if _get(environ, "XLA_PYTHON_CLIENT_PREALLOCATE") is None:
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        if ranks is not None and ranks > 1 and _get(environ, MEM_FRACTION_VAR) is None:
            env[MEM_FRACTION_VAR] = memory_fraction(ranks)
    return env


def command_exists(command: str, environ: Mapping[str, str]) -> bool:
    """Whether ``execvp`` could find ``command`` (a path, or a name on PATH)."""
    if os.sep in command:
        return os.path.exists(command)
    path = environ.get("PATH", os.defpath)
    return shutil.which(command, mode=os.F_OK, path=path) is not None


def _error(message: str) -> None:
    print(f"assign_gpu: error: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the tool on ``argv`` (the arguments after the script name).

    Returns an exit status only on failure; on success the process becomes the
    wrapped command and this function never returns.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        print(__doc__)
        return 0
    if not args:
        print(USAGE, file=sys.stderr, flush=True)
        return EXIT_USAGE
    try:
        env = child_environ(os.environ)
    except AssignGpuError as err:
        _error(str(err))
        return err.status
    if not command_exists(args[0], env):
        _error(f"command not found: {args[0]!r}")
        return EXIT_NOT_FOUND
    if launcher(os.environ) is None:
        names = ", ".join(entry[1] for entry in LAUNCHERS)
        print(
            f"assign_gpu: warning: none of {names} is set; assuming local rank 0 "
            f"(CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']})",
            file=sys.stderr,
            flush=True,
        )
    os.environ.update(env)  # env only adds to os.environ
    sys.stdout.flush()
    try:
        os.execvp(args[0], args)
    except FileNotFoundError:
        _error(f"command not found: {args[0]!r}")
        return EXIT_NOT_FOUND
    except OSError as err:
        _error(f"cannot execute {args[0]!r}: {err.strerror or err}")
        return EXIT_CANNOT_EXECUTE
    return EXIT_CANNOT_EXECUTE  # not reached: execvp returns only by raising


if __name__ == "__main__":
    sys.exit(main())
