"""The communicator: one API whether or not the process runs under mpiexec."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import HANG_GUARD_S, MPIEXEC, ROOT
from vsml import comm


def test_single_process_collectives_are_identities():
    single = comm.SingleProcessComm()
    x = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(single.allgather(x), x)
    np.testing.assert_array_equal(single.allreduce_sum(x), x)
    assert single.gather_objects({"a": 1}) == [{"a": 1}]
    assert single.bcast_object("x") == "x" and single.is_root


def test_without_mpi4py_falls_back_with_a_warning(monkeypatch):
    real_import = builtins.__import__

    def no_mpi(name, *args, **kwargs):
        if name.startswith("mpi4py"):
            raise ImportError("libmpi.so: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mpi)
    with pytest.warns(UserWarning, match="single process"):
        world = comm.world(environ={})
    assert isinstance(world, comm.SingleProcessComm)
    with pytest.raises(RuntimeError, match="mpi4py cannot load MPI"):
        comm.world(environ={"PMI_SIZE": "4"})


@pytest.mark.mpi
def test_collectives_under_mpiexec():
    script = textwrap.dedent("""
        import json, numpy as np
        from vsml.comm import world
        c = world()
        gathered = c.allgather(np.full((2, 3), c.rank, dtype=np.float32))
        total = c.allreduce_sum(np.arange(4, dtype=np.float64) * (c.rank + 1))
        objects = c.gather_objects({"rank": c.rank})
        shared = c.bcast_object("from-root" if c.is_root else None)
        row = {"rank": c.rank, "size": c.size, "gathered": gathered.tolist(),
               "total": total.tolist(), "objects": objects, "shared": shared}
        rows = c.gather_objects(row)  # one printer: lines from several ranks can interleave
        if c.is_root:
            print(json.dumps(rows))
    """)
    result = subprocess.run(
        [str(MPIEXEC), "-n", "2", sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    outputs = sorted(json.loads(result.stdout.strip().splitlines()[-1]), key=lambda o: o["rank"])
    for out in outputs:
        assert out["size"] == 2 and out["shared"] == "from-root"
        assert out["gathered"] == [[0.0] * 3] * 2 + [[1.0] * 3] * 2
        assert out["total"] == [0.0, 3.0, 6.0, 9.0]
    assert outputs[0]["objects"] == [{"rank": 0}, {"rank": 1}] and outputs[1]["objects"] is None
