"""Tests for assign_gpu.py: pure functions over fake environments, then the real
script in subprocesses (exec replaces the process, errors, and under mpiexec)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "assign_gpu.py"
_spec = importlib.util.spec_from_file_location("assign_gpu", SCRIPT)
ag = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ag)

LAUNCHER_VARS = [v for entry in ag.LAUNCHERS for v in entry[1:] if v is not None] + [
    "SLURM_STEP_TASKS_PER_NODE",
    "SLURM_NODEID",
]
GPU_VARS = [
    "GPU_COUNT",
    "CUDA_VISIBLE_DEVICES",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "VSML_RANKS_PER_DEVICE",
]
PRINT_CVD = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without launcher/GPU variables (pytest may itself run under srun)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS + GPU_VARS}
    env.update(extra)
    return env


def run_script(*cmd: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *cmd],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---------------------------------------------------------------- local rank


@pytest.mark.parametrize("var", ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMIX_LOCAL_RANK", "SLURM_LOCALID"])
def test_local_rank_from_each_launcher(var):
    assert ag.local_rank({var: "3"}) == 3
    assert ag.launcher({var: "3"})[1] == var


def test_local_rank_defaults_to_zero():
    assert ag.local_rank({}) == 0
    assert ag.launcher({}) is None
    assert ag.local_rank({"SLURM_LOCALID": ""}) == 0  # empty counts as unset


def test_mpi_launcher_beats_inherited_slurm_localid():
    # mpirun inside an sbatch script: every rank inherits SLURM_LOCALID=0.
    assert ag.local_rank({"SLURM_LOCALID": "0", "OMPI_COMM_WORLD_LOCAL_RANK": "2"}) == 2
    assert ag.local_rank({"SLURM_LOCALID": "0", "MPI_LOCALRANKID": "1"}) == 1
    assert ag.local_rank({"SLURM_LOCALID": "0", "PMIX_LOCAL_RANK": "5"}) == 5
    assert ag.local_rank({"MPI_LOCALRANKID": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "4"}) == 4


@pytest.mark.parametrize("bad", ["x", "-1", "1.5", "3_0"])
def test_bad_local_rank_is_an_error(bad):
    with pytest.raises(ag.AssignGpuError, match="MPI_LOCALRANKID"):
        ag.local_rank({"MPI_LOCALRANKID": bad})


def test_local_size():
    assert ag.local_size({"OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "8"}) == 8
    assert ag.local_size({"MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "2"}) == 2
    assert ag.local_size({"MPI_LOCALRANKID": "0"}) is None
    assert ag.local_size({}) is None
    slurm = {"SLURM_LOCALID": "0", "SLURM_STEP_TASKS_PER_NODE": "4(x2),3"}
    assert [ag.local_size({**slurm, "SLURM_NODEID": str(n)}) for n in range(4)] == [4, 4, 3, None]
    assert ag.local_size({**slurm, "SLURM_STEP_TASKS_PER_NODE": "junk", "SLURM_NODEID": "0"}) is None


# ---------------------------------------------------------------- GPU choice


def test_gpu_count_gives_rank_modulo_count():
    got = [ag.gpu_for_rank({"GPU_COUNT": "4", "MPI_LOCALRANKID": str(r)}) for r in range(16)]
    assert got == [str(r % 4) for r in range(16)]


def test_cuda_visible_devices_list_selection():
    env = {"CUDA_VISIBLE_DEVICES": "2,3"}
    got = [ag.gpu_for_rank({**env, "OMPI_COMM_WORLD_LOCAL_RANK": str(r)}) for r in range(4)]
    assert got == ["2", "3", "2", "3"]


def test_cuda_visible_devices_uuids_and_blanks():
    uuids = "GPU-aaaa-1111, GPU-bbbb-2222 ,"
    assert ag.gpu_list({"CUDA_VISIBLE_DEVICES": uuids}) == ["GPU-aaaa-1111", "GPU-bbbb-2222"]
    assert ag.gpu_for_rank({"CUDA_VISIBLE_DEVICES": uuids, "SLURM_LOCALID": "1"}) == "GPU-bbbb-2222"


def test_gpu_count_wins_over_cuda_visible_devices():
    env = {"GPU_COUNT": "2", "CUDA_VISIBLE_DEVICES": "5,6,7", "SLURM_LOCALID": "1"}
    assert ag.gpu_list(env) == ["0", "1"]
    assert ag.gpu_for_rank(env) == "1"


def test_empty_gpu_count_falls_back_to_cuda_visible_devices():
    assert ag.gpu_list({"GPU_COUNT": "", "CUDA_VISIBLE_DEVICES": "7"}) == ["7"]


@pytest.mark.parametrize("env", [{}, {"GPU_COUNT": ""}, {"CUDA_VISIBLE_DEVICES": ""}, {"CUDA_VISIBLE_DEVICES": " , "}])
def test_no_gpus_is_an_error_naming_both_variables(env):
    with pytest.raises(ag.AssignGpuError) as info:
        ag.gpu_list(env)
    message = str(info.value)
    assert "GPU_COUNT" in message and "CUDA_VISIBLE_DEVICES" in message
    assert ag.EXAMPLE in message and "\n" not in message
    assert info.value.status == 2


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5", "4x"])
def test_invalid_gpu_count_is_an_error(bad):
    with pytest.raises(ag.AssignGpuError, match="GPU_COUNT") as info:
        ag.gpu_list({"GPU_COUNT": bad, "CUDA_VISIBLE_DEVICES": "0"})
    assert info.value.status == 2 and "\n" not in str(info.value)


def test_child_environ_pins_one_gpu_and_leaves_input_alone():
    env = {"GPU_COUNT": "4", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "4", "OTHER": "x"}
    child = ag.child_environ(env)
    assert child["CUDA_VISIBLE_DEVICES"] == "1" and child["OTHER"] == "x"
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in child  # one rank per GPU
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert not any(k.startswith("JAX_") for k in child)  # nothing that breaks CPU-only JAX


def test_shared_gpu_disables_jax_preallocation_unless_user_set_it():
    shared = {"GPU_COUNT": "4", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "16"}
    assert ag.child_environ(shared)["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    high = {"GPU_COUNT": "4", "SLURM_LOCALID": "5"}  # size unknown, but rank 5 shares GPU 1
    assert ag.child_environ(high)["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    user = {**shared, "XLA_PYTHON_CLIENT_PREALLOCATE": "true"}
    assert ag.child_environ(user)["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"


def test_import_has_no_side_effects():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(SCRIPT.parent)!r}); "
            "import os; before = dict(os.environ); import assign_gpu; "
            "assert dict(os.environ) == before; print('ok')",
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and out.stdout == "ok\n" and out.stderr == ""


# ---------------------------------------------------------------- subprocess


def test_script_sets_cuda_visible_devices():
    out = run_script(sys.executable, "-c", PRINT_CVD, GPU_COUNT="2", OMPI_COMM_WORLD_LOCAL_RANK="3")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "1\n" and out.stderr == ""


def test_script_picks_from_cuda_visible_devices():
    out = run_script(sys.executable, "-c", PRINT_CVD, CUDA_VISIBLE_DEVICES="2,3", SLURM_LOCALID="2")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "2\n"


def test_script_warns_without_launcher_and_uses_rank_zero():
    out = run_script(sys.executable, "-c", PRINT_CVD, CUDA_VISIBLE_DEVICES="6,7")
    assert out.returncode == 0
    assert out.stdout == "6\n"
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "local rank 0" in lines[0]


def test_exec_replaces_the_process():
    code = "import os; print(os.getpid(), os.getppid(), flush=True)"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), sys.executable, "-c", code],
        env=clean_env(GPU_COUNT="1", MPI_LOCALRANKID="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    pid, ppid = map(int, stdout.split())
    assert pid == proc.pid  # same process: the wrapper exec'd into the command
    assert ppid == os.getpid()  # its parent is us, not a leftover wrapper


def test_sigterm_reaches_wrapped_command():
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('got SIGTERM', flush=True), sys.exit(7)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), sys.executable, "-c", code],
        env=clean_env(GPU_COUNT="1", SLURM_LOCALID="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert stdout == "got SIGTERM\n" and proc.returncode == 7


def _assert_one_error_line(out: subprocess.CompletedProcess, status: int) -> str:
    assert out.returncode == status
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


def test_script_without_gpu_config_exits_2_with_one_line():
    line = _assert_one_error_line(run_script(sys.executable, "-c", PRINT_CVD), 2)
    assert "GPU_COUNT" in line and "CUDA_VISIBLE_DEVICES" in line
    assert "GPU_COUNT=4 mpirun -n 16 python3 assign_gpu.py python3 launch.py" in line


@pytest.mark.parametrize("bad", ["0", "abc", "-1"])
def test_script_with_invalid_gpu_count_exits_2(bad):
    line = _assert_one_error_line(run_script(sys.executable, "-c", PRINT_CVD, GPU_COUNT=bad), 2)
    assert "GPU_COUNT" in line and repr(bad) in line


def test_script_without_command_prints_usage_and_exits_2():
    line = _assert_one_error_line(run_script(GPU_COUNT="1"), 2)
    assert line.startswith("usage:")
    line = _assert_one_error_line(run_script("--", GPU_COUNT="1"), 2)
    assert line.startswith("usage:")


@pytest.mark.parametrize("launcher_env", [{"SLURM_LOCALID": "0"}, {}])
@pytest.mark.parametrize("command", ["no-such-command-assign-gpu-test", "/no/such/dir/cmd"])
def test_script_command_not_found_exits_127(command, launcher_env):
    out = run_script(command, "arg", GPU_COUNT="1", **launcher_env)
    line = _assert_one_error_line(out, 127)  # no rank-0 warning before it either
    assert "not found" in line and command in line


def test_script_command_not_executable_exits_126(tmp_path):
    script = tmp_path / "not_executable.sh"
    script.write_text("echo hi\n")
    script.chmod(0o644)
    line = _assert_one_error_line(run_script(str(script), GPU_COUNT="1", SLURM_LOCALID="0"), 126)
    assert "cannot execute" in line


def test_script_double_dash_separator():
    out = run_script("--", sys.executable, "-c", PRINT_CVD, GPU_COUNT="3", MPI_LOCALRANKID="4")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "1\n"


# ---------------------------------------------------------------- under mpiexec

MPIEXEC = Path(sys.executable).parent / "mpiexec"


def test_under_mpiexec_two_ranks_get_devices_0_and_1(tmp_path):
    # Each rank writes its own file: lines printed by several ranks at once can interleave.
    code = (
        "import os; rank = os.environ['MPI_LOCALRANKID']; "
        f"open(os.path.join({str(tmp_path)!r}, 'rank' + rank), 'w').write(os.environ['CUDA_VISIBLE_DEVICES'])"
    )
    out = subprocess.run(
        [str(MPIEXEC), "-n", "2", sys.executable, str(SCRIPT), sys.executable, "-c", code],
        env=clean_env(GPU_COUNT="2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "rank0").read_text() == "0" and (tmp_path / "rank1").read_text() == "1"
    assert "warning" not in out.stderr


# ---------------------------------------------------------------- main() in-process


def test_main_returns_2_without_command(capsys):
    assert ag.main([]) == 2
    assert capsys.readouterr().err.startswith("usage:")


def test_main_returns_2_without_gpu_config(monkeypatch, capsys):
    for var in GPU_VARS:
        monkeypatch.delenv(var, raising=False)
    assert ag.main(["true"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GPU_COUNT" in err


def test_help_exits_0():
    out = run_script("--help")
    assert out.returncode == 0 and out.stdout.startswith("usage:") and "SLURM_LOCALID" in out.stdout


# ---------------------------------------------------------------- ranks sharing a GPU


@pytest.mark.parametrize(
    "gpus,size,rank,expected",
    [
        (4, 16, 0, 4),
        (4, 16, 15, 4),
        (4, 4, 2, 1),
        (4, 5, 0, 2),
        (4, 5, 1, 1),
        (1, 2, 1, 2),
        (2, 3, 1, 1),
    ],
)
def test_ranks_on_gpu_counts_the_local_ranks_given_the_same_gpu(gpus, size, rank, expected):
    env = {"GPU_COUNT": str(gpus), "MPI_LOCALRANKID": str(rank), "MPI_LOCALNRANKS": str(size)}
    assert ag.ranks_on_gpu(env) == expected
    assert ag.ranks_on_gpu(env) == sum(1 for r in range(size) if r % gpus == rank % gpus)


def test_ranks_on_gpu_without_a_local_size_is_a_lower_bound():
    assert ag.ranks_on_gpu({"GPU_COUNT": "4", "SLURM_LOCALID": "5"}) == 2
    assert ag.ranks_on_gpu({"GPU_COUNT": "4", "SLURM_LOCALID": "1"}) is None


def test_shared_gpu_gets_a_fair_memory_fraction_and_the_rank_count():
    shared = {"GPU_COUNT": "4", "MPI_LOCALRANKID": "3", "MPI_LOCALNRANKS": "16"}
    child = ag.child_environ(shared)
    assert float(child["XLA_PYTHON_CLIENT_MEM_FRACTION"]) * 4 <= 0.9
    assert child["VSML_RANKS_PER_DEVICE"] == "4"
    alone = ag.child_environ({"GPU_COUNT": "4", "MPI_LOCALRANKID": "3", "MPI_LOCALNRANKS": "4"})
    assert alone["VSML_RANKS_PER_DEVICE"] == "1" and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in alone
    user = ag.child_environ({**shared, "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.5", "VSML_RANKS_PER_DEVICE": "8"})
    assert user["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.5" and user["VSML_RANKS_PER_DEVICE"] == "8"


@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 7, 16])
def test_memory_fractions_of_the_ranks_on_a_gpu_add_up_to_at_most_0_9(ranks):
    assert 0 < float(ag.memory_fraction(ranks)) * ranks <= 0.9


def test_under_mpiexec_two_ranks_on_one_gpu_each_get_at_most_half(tmp_path):
    code = (
        "import os; rank = os.environ['MPI_LOCALRANKID']; "
        f"open(os.path.join({str(tmp_path)!r}, 'rank' + rank), 'w').write("
        "os.environ['XLA_PYTHON_CLIENT_MEM_FRACTION'] + ' ' + os.environ['VSML_RANKS_PER_DEVICE'])"
    )
    out = subprocess.run(
        [str(MPIEXEC), "-n", "2", sys.executable, str(SCRIPT), sys.executable, "-c", code],
        env=clean_env(GPU_COUNT="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for rank in (0, 1):
        fraction, ranks = (tmp_path / f"rank{rank}").read_text().split()
        assert float(fraction) <= 0.5 and ranks == "2"
