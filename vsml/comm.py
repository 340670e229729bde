"""Inter-process communication: the only module that imports mpi4py.

Every other module talks to a :class:`Comm`. Under ``mpiexec`` it wraps
``MPI.COMM_WORLD``; as a plain ``python3 launch.py`` process (or when mpi4py
cannot load an MPI library) it is a single-rank stand-in with the same API, so
the same code runs unchanged on a laptop and on a cluster.

Collectives take and return NumPy arrays (host memory): ES exchanges only
fitness values (2P floats) and partial noise sums (D floats) per generation.
"""

from __future__ import annotations

import abc
import os
import warnings
from typing import Any

import numpy as np

# Variables that MPI launchers export to the processes they start. When one of
# them is set but mpi4py cannot be loaded, running as one process would silently
# duplicate the work on every rank, so that case is an error, not a warning.
_LAUNCHER_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


class LaunchError(RuntimeError):
    """The processes were started in a way that cannot form the intended MPI world.

    Raised before any work, so a misconfigured launch costs seconds, not an allocation.
    """


class Comm(abc.ABC):
    """A communicator over ``size`` processes; this process is ``rank``.

    Rank 0 (``is_root``) alone logs and writes files. ``local_size`` is the number
    of ranks on this rank's node (those sharing its memory, caches and, without
    ``assign_gpu.py``, its first GPU).
    """

    rank: int = 0
    size: int = 1
    local_size: int = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @abc.abstractmethod
    def allgather(self, local: np.ndarray) -> np.ndarray:
        """Concatenates every rank's ``local`` along axis 0, in rank order."""

    @abc.abstractmethod
    def allreduce_sum(self, local: np.ndarray) -> np.ndarray:
        """Elementwise sum of ``local`` over ranks (same shape and dtype)."""

    @abc.abstractmethod
    def gather_objects(self, obj: Any) -> list | None:
        """Rank 0 receives ``[obj_rank0, obj_rank1, ...]``; other ranks ``None``."""

    @abc.abstractmethod
    def bcast_object(self, obj: Any) -> Any:
        """Every rank receives rank 0's ``obj``."""

    @abc.abstractmethod
    def barrier(self) -> None:
        """Waits until every rank arrives."""

    @abc.abstractmethod
    def abort(self, code: int) -> None:
        """Ends every rank now (a failing rank calls this so no other rank hangs)."""

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one rank."""
        return bool(self.allreduce_sum(np.asarray([int(flag)], dtype=np.int64))[0] > 0)


class SingleProcessComm(Comm):
    """The one-rank communicator: every collective is the identity."""

    def allgather(self, local: np.ndarray) -> np.ndarray:
        return np.asarray(local).copy()

    def allreduce_sum(self, local: np.ndarray) -> np.ndarray:
        return np.asarray(local).copy()

    def gather_objects(self, obj: Any) -> list:
        return [obj]

    def bcast_object(self, obj: Any) -> Any:
        return obj

    def barrier(self) -> None:
        return None

    def abort(self, code: int) -> None:
        raise SystemExit(code)


class MPIComm(Comm):
    """``MPI.COMM_WORLD`` behind the :class:`Comm` API."""

    def __init__(self, mpi_module: Any):
        self._mpi = mpi_module
        self._comm = mpi_module.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        # Ranks that can share memory are on one node (a collective: every rank constructs this at start).
        node = self._comm.Split_type(mpi_module.COMM_TYPE_SHARED)
        self.local_size = node.Get_size()
        node.Free()

    def allgather(self, local: np.ndarray) -> np.ndarray:
        local = np.ascontiguousarray(local)
        out = np.empty((self.size,) + local.shape, dtype=local.dtype)
        self._comm.Allgather(local, out)
        return out.reshape((self.size * local.shape[0],) + local.shape[1:]) if local.ndim else out

    def allreduce_sum(self, local: np.ndarray) -> np.ndarray:
        local = np.ascontiguousarray(local)
        out = np.empty_like(local)
        self._comm.Allreduce(local, out, op=self._mpi.SUM)
        return out

    def gather_objects(self, obj: Any) -> list | None:
        return self._comm.gather(obj, root=0)

    def bcast_object(self, obj: Any) -> Any:
        return self._comm.bcast(obj, root=0)

    def barrier(self) -> None:
        self._comm.Barrier()

    def abort(self, code: int) -> None:
        self._comm.Abort(code)


def launched_by_mpi(environ: dict | None = None) -> bool:
    """True when an MPI launcher started this process with more than one rank."""
    environ = os.environ if environ is None else environ
    for var in _LAUNCHER_SIZE_VARS:
        try:
            if int(environ.get(var, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def world(environ: dict | None = None) -> Comm:
    """The communicator of this process.

    Imports mpi4py (which initialises MPI; a process started without
    ``mpiexec`` becomes a one-rank world). If mpi4py or its MPI library cannot
    be loaded, falls back to :class:`SingleProcessComm` with a warning — unless
    a launcher started several ranks, where running them as independent
    single processes would waste the allocation, so that raises
    :class:`LaunchError` instead; so does srun starting several tasks that each
    see a one-rank world (srun's MPI plugin does not match the MPI library).
    """
    try:
        from mpi4py import MPI  # noqa: PLC0415 — importing initialises MPI; only here
    except (ImportError, RuntimeError, OSError) as err:
        if launched_by_mpi(environ):
            raise LaunchError(
                f"started by an MPI launcher but mpi4py cannot load MPI ({err}); "
                "reinstall with `pip install -r requirements.txt` and launch with the venv's mpiexec"
            ) from err
        warnings.warn(f"mpi4py unavailable ({err}); running as a single process", stacklevel=2)
        return SingleProcessComm()
    comm = MPIComm(MPI)
    if comm.size == 1:
        step_tasks = _srun_step_tasks(environ)
        if step_tasks > 1:
            raise LaunchError(
                f"srun started {step_tasks} tasks but MPI sees each as a world of its own, so every task would "
                "run the whole job alone; give srun the PMI the venv's MPICH speaks: --mpi=pmi2 "
                "(slurm/job.sh passes it unless VSML_SRUN_ARGS names another --mpi)"
            )
        return SingleProcessComm()
    return comm


def first_task(environ: dict | None = None) -> bool:
    """True in the one process of a launch that reports launch errors (task 0, or not under srun)."""
    environ = os.environ if environ is None else environ
    return environ.get("SLURM_PROCID", "0") == "0"


def _srun_step_tasks(environ: dict | None = None) -> int:
    """The number of tasks srun started in this job step (1 outside srun).

    srun sets SLURM_STEP_NUM_TASKS for every task it starts. When its MPI plugin
    does not match the MPI library (srun's default ``--mpi=none`` with MPICH),
    each task initialises MPI as a singleton: that is the one case where this
    is > 1 while the world has size 1.
    """
    environ = os.environ if environ is None else environ
    try:
        return int(environ.get("SLURM_STEP_NUM_TASKS", "1"))
    except ValueError:
        return 1
