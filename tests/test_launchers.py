"""slurm/ and ssh/ launchers, run against fake sbatch/srun/ssh/rsync/gpustat/tmux/scp on PATH.

Every fake records its argv (and stdin) under ``calls/`` and prints what the
real tool would; the tests assert on those records. They cover what the real
engines on one machine cannot show (tests/test_engines_slurm.py and
tests/test_engines_ssh.py run real Slurm, sshd, rsync, tmux and MPICH): many nodes
and GPUs, GPU ids picked from gpustat, the exact sbatch scripts and commands, and
usage errors — and they run everywhere, without root.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import HANG_GUARD_S, MPIEXEC, ROOT

SLURM = ROOT / "slurm" / "schedule.sh"
SLURM_JOB = ROOT / "slurm" / "job.sh"
SSH = ROOT / "ssh" / "schedule.sh"
SSH_JOB = ROOT / "ssh" / "job.sh"

# Records argv (NUL-separated) and stdin of every call as calls/<n>-<tool>.{argv,stdin}.
RECORD = r"""#!/usr/bin/env bash
set -euo pipefail
n=$(ls "$FAKE_CALLS" | grep -c '\.argv$' || true)
base=$FAKE_CALLS/$(printf '%03d' "$n")-$(basename "$0")
printf '%s\0' "$@" > "$base.argv"
if [[ ! -t 0 ]]; then cat > "$base.stdin" || true; fi
"""

FAKES = {
    # sbatch --test-only (schedule.sh asks first) is answered without a record: it submits nothing.
    "sbatch": '#!/usr/bin/env bash\nif [[ $1 == --test-only ]]; then cat >/dev/null; echo "sbatch: Job 1 to start" >&2; exit 0; fi\n'
    + RECORD.split("\n", 1)[1]
    + 'echo "Submitted batch job $((100 + $(ls "$FAKE_CALLS" | grep -c sbatch.argv)))"\n',
    # rsync -az ... --exclude X ... SRC/ HOST:DIR/: copies SRC into the fake home's DIR, without the excluded.
    "rsync": RECORD
    + r"""args=("$@"); excludes=()
for ((i = 0; i < ${#args[@]}; i++)); do [[ ${args[i]} == --exclude ]] && excludes+=("--exclude=${args[i + 1]}"); done
dest=$FAKE_HOME/${args[-1]#*:}; mkdir -p "$dest"
tar -C "${args[-2]}" "${excludes[@]}" -cf - . | tar -C "$dest" -xf -
""",
    "tmux": RECORD,
    "scp": RECORD,
    "gpustat": RECORD + 'cat "$FAKE_GPUSTAT"\n',
    # ssh [-o OPT ...] HOST COMMAND: runs COMMAND with bash in a fake home directory (the fakes stay on PATH).
    # Its recorded stdin is the command's stdin.
    "ssh": RECORD
    + 'while [[ $1 == -* ]]; do [[ $1 == -o ]] && shift; shift; done; shift; cd "$FAKE_HOME"\n'
    + 'if [[ -f $base.stdin ]]; then exec bash -c "$*" <"$base.stdin"; else exec bash -c "$*"; fi\n',
    # srun COMMAND...: records its environment; with FAKE_SRUN_WAIT set, waits for a signal.
    "srun": RECORD
    + r"""env > "$base.env"
if [[ -n ${FAKE_SRUN_WAIT:-} ]]; then
    trap 'echo USR1 > "$FAKE_CALLS/srun-signal"; exit 0' USR1
    touch "$FAKE_CALLS/srun-started"
    for _ in $(seq 2400); do sleep 0.05; done
    exit 9
fi
""",
}

# Five GPUs: 0 runs a process, 2 has memory in use without a visible process; 1, 3, 4 are free.
GPUSTAT = {
    "hostname": "gpu1",
    "query_time": "2024-01-01T00:00:00",
    "gpus": [
        {
            "index": 0,
            "name": "A100",
            "memory.used": 30000,
            "memory.total": 40000,
            "processes": [{"username": "alice", "command": "python", "gpu_memory_usage": 30000, "pid": 11}],
        },
        {"index": 1, "name": "A100", "memory.used": 3, "memory.total": 40000, "processes": []},
        {"index": 2, "name": "A100", "memory.used": 9000, "memory.total": 40000, "processes": []},
        {"index": 3, "name": "A100", "memory.used": 0, "memory.total": 40000, "processes": []},
        {"index": 4, "name": "A100", "memory.used": 1, "memory.total": 40000, "processes": None},
    ],
}


class Fakes:
    """The fake tools' directory and their recorded calls."""

    def __init__(self, root: Path):
        self.bin, self.calls, self.home = root / "bin", root / "calls", root / "home"
        for folder in (self.bin, self.calls, self.home):
            folder.mkdir()
        for name, text in FAKES.items():
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        # The hosts' code folder has a venv with the run's packages (the host check asks): the tests' own.
        (self.home / "vsml").mkdir()
        (self.home / "vsml" / ".venv").symlink_to(sys.prefix)
        self.gpustat = root / "gpustat.json"
        self.gpustat.write_text(json.dumps(GPUSTAT))
        self.env = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "FAKE_CALLS": str(self.calls),
            "FAKE_HOME": str(self.home),
            "FAKE_GPUSTAT": str(self.gpustat),
        }
        for name in list(self.env):
            if name.startswith(("VSML_", "SLURM_")):
                del self.env[name]

    def run(self, *args, cwd=None, env=None, timeout=HANG_GUARD_S):
        return subprocess.run(
            ["bash", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd or ROOT,
            env={**self.env, **(env or {})},
        )

    def records(self, tool: str | None = None) -> list[list[str]]:
        """argv lists of the recorded calls (of ``tool`` only, if given), in call order."""
        files = sorted(self.calls.glob("*.argv"))
        return [
            f.read_bytes().decode().split("\0")[:-1] for f in files if tool is None or f.name.endswith(f"-{tool}.argv")
        ]

    def ssh_hosts(self) -> list[str]:
        """The destination of each recorded ssh call (the word after its options)."""
        hosts = []
        for argv in self.records("ssh"):
            i = 0
            while argv[i].startswith("-"):
                i += 2 if argv[i] == "-o" else 1
            hosts.append(argv[i])
        return hosts

    def srun_env(self) -> dict[str, str]:
        (path,) = self.calls.glob("*-srun.env")
        return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture
def fakes(tmp_path):
    return Fakes(tmp_path)


def _ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _directives(script: str) -> dict[str, str]:
    """The #SBATCH --name=value lines of a batch script."""
    out = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH --"):
            name, _, value = line[len("#SBATCH --") :].partition("=")
            out[name] = value
    return out


def _job_line(script: str) -> list[str]:
    (line,) = [line for line in script.splitlines() if line.startswith("exec bash ")]
    return shlex.split(line)[2:]  # without "exec bash"


# ---------------------------------------------------------------- Slurm


def test_slurm_submits_nodes_tasks_and_the_pre_timeout_signal(fakes, tmp_path):
    run_dir = tmp_path / "run"
    result = _ok(
        fakes.run(
            SLURM,
            "--nodes=7",
            "--ntasks-per-node=12",
            "--time",
            "04:00:00",
            "--run_dir",
            run_dir,
            "--",
            "python3",
            "launch.py",
            "--config_files",
            "configs/quickstart.yaml",
        )
    )
    (argv,) = fakes.records("sbatch")
    assert argv == [str(run_dir / "sbatch-1.sh")]
    script = Path(argv[0]).read_text()
    sbatch = _directives(script)
    assert sbatch["nodes"] == "7" and sbatch["ntasks-per-node"] == "12" and sbatch["time"] == "04:00:00"
    assert sbatch["signal"] == "B:USR1@300"
    assert sbatch["output"] == f"{run_dir}/slurm-%j.out"
    assert "gres" not in sbatch and "array" not in sbatch and "partition" not in sbatch
    assert _job_line(script) == [
        str(SLURM_JOB),
        "--run-dir",
        str(run_dir),
        "--",
        "python3",
        "launch.py",
        "--config_files",
        "configs/quickstart.yaml",
    ]
    assert "submitted job 101" in result.stdout and f"tail -f {run_dir}/slurm-101.out" in result.stdout


def test_slurm_array_maps_tasks_to_their_own_run_dirs_and_gpus_come_from_the_environment(fakes, tmp_path):
    run_dir = tmp_path / "sweep"
    _ok(
        fakes.run(
            SLURM,
            "--array=1-11",
            "--nodes=32",
            "--",
            "python3",
            "launch.py",
            "--array",
            "configs/array/datasets.yaml",
            "--run_dir",
            run_dir,
            env={"VSML_PARTITION": "gpu", "VSML_GPUS_PER_NODE": "4", "VSML_SIGNAL_SECONDS": "600"},
        )
    )
    (argv,) = fakes.records("sbatch")
    script = Path(argv[0]).read_text()
    sbatch = _directives(script)
    assert sbatch["array"] == "1-11" and sbatch["nodes"] == "32" and sbatch["ntasks-per-node"] == "1"
    assert sbatch["partition"] == "gpu" and sbatch["gres"] == "gpu:4" and sbatch["signal"] == "B:USR1@600"
    assert sbatch["output"] == f"{run_dir}/slurm-%A_%a.out"
    # the command's --run_dir became the sweep directory; job.sh adds task-<id> per task
    assert _job_line(script) == [
        str(SLURM_JOB),
        "--run-dir",
        str(run_dir),
        "--gpus",
        "--",
        "python3",
        "launch.py",
        "--array",
        "configs/array/datasets.yaml",
    ]


def test_slurm_chain_resumes_the_same_run_after_each_job(fakes, tmp_path):
    run_dir = tmp_path / "run"
    result = _ok(
        fakes.run(SLURM, "--chain=3", "--run_dir", run_dir, "--", "python3", "launch.py", "--config_files", "c.yaml")
    )
    calls = fakes.records("sbatch")
    assert [argv[:-1] for argv in calls] == [[], ["--dependency=afterany:101"], ["--dependency=afterany:102"]]
    jobs = [_job_line(Path(argv[-1]).read_text()) for argv in calls]
    assert "--resume" not in jobs[0]
    assert all(job[job.index("--") - 1] == "--resume" for job in jobs[1:])
    assert all(job[job.index("--") :] == ["--", "python3", "launch.py", "--config_files", "c.yaml"] for job in jobs)
    assert "scancel 101 102 103" in result.stdout


def test_slurm_resume_command_runs_unchanged_in_every_job_of_the_chain(fakes, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    command = ["python3", "launch.py", "--resume", str(run_dir), "--config", "training.iterations=20001"]
    _ok(fakes.run(SLURM, "--chain=2", "--", *command))
    for argv in fakes.records("sbatch"):
        script = Path(argv[-1]).read_text()
        assert _job_line(script) == [str(SLURM_JOB), "--", *command]
        assert _directives(script)["output"] == f"{run_dir}/slurm-%j.out"


def test_slurm_dry_run_prints_the_scripts_and_submits_nothing(fakes, tmp_path):
    run_dir = tmp_path / "run"
    result = _ok(
        fakes.run(
            SLURM,
            "--dry-run",
            "--chain",
            "2",
            "--nodes",
            "3",
            "--partition=p",
            "--run_dir",
            run_dir,
            "--",
            "python3",
            "launch.py",
            "--config",
            "seed=1",
        )
    )
    assert fakes.records() == [] and not run_dir.exists()
    assert result.stdout.count("#SBATCH --nodes=3") == 2 and "#SBATCH --partition=p" in result.stdout
    assert "--dependency=afterany:" in result.stdout and "--resume --" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "no command"),
        (["--nodes=0", "--", "python3", "launch.py"], "--nodes"),
        (["--array=1-4", "--", "python3", "launch.py"], "--array FILE"),
        (["--chain=2", "--", "python3", "train.py"], "launch.py"),
        (["--bogus=1", "--", "python3", "launch.py"], "unknown option '--bogus'"),
    ],
)
def test_slurm_bad_usage_exits_2_with_a_clear_message(fakes, args, message):
    result = fakes.run(SLURM, *args)
    assert result.returncode == 2 and message in result.stderr and "--help" in result.stderr
    assert fakes.records() == []


def test_slurm_refuses_a_run_dir_that_already_holds_a_run(fakes, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.npz").write_bytes(b"")
    result = fakes.run(SLURM, "--run_dir", tmp_path / "run", "--", "python3", "launch.py")
    assert result.returncode == 2 and "--resume" in result.stderr and fakes.records() == []


def _srun_argv(fakes):
    """srun's argv after the options job.sh always gives (a dead rank ends the step; PMI-2 unless
    VSML_SRUN_ARGS names another --mpi)."""
    (argv,) = fakes.records("srun")
    assert argv[0] == "--kill-on-bad-exit=1"
    return argv[2:] if argv[1] == "--mpi=pmi2" else argv[1:]


def test_slurm_job_runs_array_task_in_its_task_dir_through_assign_gpu(fakes, tmp_path):
    _ok(
        fakes.run(
            SLURM_JOB,
            "--run-dir",
            tmp_path / "sweep",
            "--gpus",
            "--",
            "python3",
            "launch.py",
            "--array",
            "a.yaml",
            cwd=tmp_path,
            env={"SLURM_ARRAY_TASK_ID": "3", "VSML_SRUN_ARGS": "--mpi=pmix"},
        )
    )
    assert _srun_argv(fakes) == [
        "--mpi=pmix",
        "python3",
        str(ROOT / "assign_gpu.py"),
        "python3",
        "launch.py",
        "--array",
        "a.yaml",
        "--run_dir",
        str(tmp_path / "sweep" / "task-3"),
    ]
    assert fakes.srun_env()["SLURM_ARRAY_TASK_ID"] == "3"


@pytest.mark.parametrize("has_checkpoint", [True, False])
def test_slurm_job_resumes_only_when_a_checkpoint_exists(fakes, tmp_path, has_checkpoint):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if has_checkpoint:
        (run_dir / "checkpoint.npz").write_bytes(b"")
    _ok(
        fakes.run(
            SLURM_JOB,
            "--run-dir",
            run_dir,
            "--resume",
            "--",
            ".venv/bin/python",
            "launch.py",
            "--config_files",
            "c.yaml",
            cwd=tmp_path,
        )
    )
    expected = (
        [".venv/bin/python", "launch.py", "--resume", str(run_dir)]
        if has_checkpoint
        else [".venv/bin/python", "launch.py", "--config_files", "c.yaml", "--run_dir", str(run_dir)]
    )
    assert _srun_argv(fakes) == expected


def test_slurm_job_forwards_the_pre_timeout_signal_to_srun(fakes, tmp_path):
    process = subprocess.Popen(
        ["bash", str(SLURM_JOB), "--", "python3", "launch.py"],
        cwd=tmp_path,
        env={**fakes.env, "FAKE_SRUN_WAIT": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + HANG_GUARD_S
    while not (fakes.calls / "srun-started").exists():
        assert time.monotonic() < deadline and process.poll() is None, "fake srun did not start"
        time.sleep(0.02)
    process.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@300 does
    output, _ = process.communicate(timeout=HANG_GUARD_S)
    assert (fakes.calls / "srun-signal").read_text().strip() == "USR1"
    assert process.returncode == 0, output  # srun's status (the run checkpointed and exited 0)
    assert "forwarding" in output


# ---------------------------------------------------------------- ssh


def _tmux_windows(fakes) -> list[tuple[list[str], list[str]]]:
    """(tmux argv without the command, job.sh argv) of each recorded tmux call."""
    return [(argv[:-1], shlex.split(argv[-1])) for argv in fakes.records("tmux")]


def test_ssh_copies_code_picks_free_gpus_and_starts_mpirun_in_tmux(fakes):
    result = _ok(
        fakes.run(
            SSH,
            "--host",
            "gpu1",
            "--nodes=2",
            "--ntasks-per-node=4",
            "--run_dir",
            "runs/r",
            "--",
            "python3",
            "launch.py",
            "--config_files",
            "c.yaml",
            "--config",
            "note=it's a b",
        )
    )
    (rsync,) = fakes.records("rsync")
    assert rsync[-2:] == [f"{ROOT}/", "gpu1:vsml/"]
    excluded = {rsync[i + 1] for i, word in enumerate(rsync) if word == "--exclude"}
    assert {".venv", "runs", "wandb"} <= excluded
    assert fakes.ssh_hosts() == ["gpu1"] * 5  # reach, mkdir, code and packages check, gpustat, tmux
    assert fakes.records("gpustat") == [["--json"]]
    ((tmux, job),) = _tmux_windows(fakes)
    assert tmux[:2] == ["new-session", "-d"] and tmux[tmux.index("-n") + 1] == "run"
    assert tmux[tmux.index("-c") + 1] == str(fakes.home / "vsml")  # the synced code directory on the host
    assert job == [
        "bash",
        "ssh/job.sh",
        "--ranks",
        "8",
        "--run-dir",
        "runs/r",
        "--gpus",
        "1,3",
        "--",
        "python3",
        "launch.py",
        "--config_files",
        "c.yaml",
        "--config",
        "note=it's a b",
    ]
    assert (fakes.home / "vsml").is_dir()
    session = tmux[tmux.index("-s") + 1]
    assert f"ssh -t gpu1 tmux attach -t {session}" in result.stdout


def test_ssh_array_tasks_get_their_own_window_gpus_task_and_run_dir(fakes):
    _ok(
        fakes.run(
            SSH,
            "--host=gpu1",
            "--array=1-3",
            "--run_dir=runs/s",
            "--",
            "python3",
            "launch.py",
            "--array",
            "configs/array/datasets.yaml",
        )
    )
    windows = _tmux_windows(fakes)
    assert [tmux[0] for tmux, _ in windows] == ["new-session", "new-window", "new-window"]
    assert [tmux[tmux.index("-n") + 1] for tmux, _ in windows] == ["task-1", "task-2", "task-3"]
    for (_, job), task, gpu in zip(windows, "123", "134"):
        assert job[2 : job.index("--")] == [
            "--ranks",
            "1",
            "--task",
            task,
            "--run-dir",
            f"runs/s/task-{task}",
            "--gpus",
            gpu,
        ]


def test_ssh_too_few_free_gpus_is_an_error_before_anything_starts(fakes):
    result = fakes.run(
        SSH, "--host", "gpu1", "--nodes=2", "--array=1-2", "--", "python3", "launch.py", "--array", "a.yaml"
    )
    assert result.returncode == 2
    assert "3 free GPU(s) (1,3,4); 4 needed" in result.stderr and "GPU 0 is busy" in result.stderr
    assert fakes.records("tmux") == []


def test_ssh_explicit_gpus_or_cpu_skip_gpustat(fakes):
    _ok(fakes.run(SSH, "--host", "gpu1", "--gpus=5,6", "--nodes=2", "--", "python3", "launch.py"))
    _ok(fakes.run(SSH, "--host", "gpu1", "--cpu", "--ntasks-per-node=3", "--", "python3", "launch.py"))
    assert fakes.records("gpustat") == []
    (_, gpu_job), (_, cpu_job) = _tmux_windows(fakes)
    assert gpu_job[gpu_job.index("--gpus") + 1] == "5,6"
    assert "--gpus" not in cpu_job and cpu_job[cpu_job.index("--ranks") + 1] == "3"


def test_ssh_several_hosts_get_one_job_with_each_hosts_free_gpus(fakes, tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# the lab\ngpu2   # second box\n\n")
    result = _ok(
        fakes.run(
            SSH,
            "--host",
            "gpu1",
            "--hostfile",
            hostfile,
            "--nodes=2",
            "--run_dir",
            "runs/m",
            "--",
            "python3",
            "launch.py",
        )
    )
    assert [argv[-2:] for argv in fakes.records("rsync")] == [[f"{ROOT}/", "gpu1:vsml/"], [f"{ROOT}/", "gpu2:vsml/"]]
    assert fakes.records("gpustat") == [["--json"], ["--json"]]  # GPUs are picked on each host
    ((tmux, job),) = _tmux_windows(fakes)  # one window, on the first host, runs the whole job
    assert job[2 : job.index("--")] == [
        "--ranks",
        "2",
        "--run-dir",
        "runs/m",
        "--hosts",
        "gpu1,gpu2",
        "--host-gpus",
        "1,3;1,3",
    ]
    assert fakes.ssh_hosts()[-1] == "gpu1" and "gpu1 gpu2" in result.stdout


def test_ssh_job_over_hosts_gives_each_host_its_ranks_and_gpus(tmp_path):
    # --mpirun echo prints the MPI launcher's command line instead of running it.
    result = subprocess.run(
        ["bash", str(SSH_JOB), "--ranks", "2", "--hosts", "a,b", "--host-gpus", "0,1;4,5", "--mpirun", "echo"]
        + ["--venv", "none", "--run-dir", str(tmp_path / "run"), "--", "python3", "launch.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "hostfile").read_text() == "a:2\nb:2\n"
    segment = ["python3", "assign_gpu.py", "python3", "launch.py", "--run_dir", str(tmp_path / "run")]
    expected = ["-launcher", "ssh", "-f", str(tmp_path / "run" / "hostfile")]
    expected += ["-n", "2", "-env", "CUDA_VISIBLE_DEVICES", "0,1", *segment, ":"]
    expected += ["-n", "2", "-env", "CUDA_VISIBLE_DEVICES", "4,5", *segment]
    printed = (tmp_path / "run" / "output.log").read_text().splitlines()[1]
    assert printed.split() == expected


def test_ssh_dry_run_prints_every_remote_command_and_runs_none(fakes):
    result = _ok(
        fakes.run(
            SSH,
            "--host",
            "gpu1",
            "--install",
            "--array=1-2",
            "--dry-run",
            "--",
            "python3",
            "launch.py",
            "--array",
            "a.yaml",
        )
    )
    assert fakes.records() == []
    lines = result.stdout.splitlines()
    assert any(line.startswith("rsync -az ") and line.endswith(" gpu1:vsml/") for line in lines)
    assert "ssh gpu1: gpustat --json" in lines
    assert any("pip install -r requirements.txt" in line for line in lines)
    assert sum("tmux new-" in line for line in lines) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--", "python3", "launch.py"], "--host"),
        (["--host", "h", "--array=1-2", "--", "python3", "launch.py"], "--array FILE"),
        (["--host", "h", "--array=x", "--", "python3", "launch.py", "--array", "a.yaml"], "--array must"),
        (["--host", "h"], "no command"),
        (["--host", "h", "--", "python3", "launch.py", "--resume", "runs/x"], "resuming over ssh"),
        (
            ["--host", "h", "--array=1-2", "--", "python3", "launch.py", "--array", "a.yaml", "--task", "1"],
            "--task but --array=1-2",
        ),
        (["--host", "h", "--", "python3", "launch.py", "--run_dir"], "--run_dir in the command needs a value"),
        (["--host", "h", "--host", "h", "--", "python3", "launch.py"], "host h is given twice"),
        (["--host", "a", "--host", "b", "--mpirun", "mpirun.openmpi", "--", "python3", "launch.py"], "drop --mpirun"),
        (
            ["--host", "a", "--host", "b", "--array=1-2", "--", "python3", "launch.py", "--array", "a.yaml"],
            "one ssh/schedule.sh per host",
        ),
        (["--hostfile", "/no/such/file", "--", "python3", "launch.py"], "no such file"),
    ],
)
def test_ssh_bad_usage_exits_2_with_a_clear_message(fakes, args, message):
    result = fakes.run(SSH, *args)
    assert result.returncode == 2 and message in result.stderr
    assert fakes.records() == []


def test_free_gpus_skips_gpus_with_processes_or_memory_in_use():
    spec = importlib.util.spec_from_file_location("free_gpus", ROOT / "ssh" / "free_gpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    free, busy = module.free_gpus(GPUSTAT, max_memory_mib=500)
    assert free == [1, 3, 4] and sorted(busy) == [0, 2]
    assert module.free_gpus(GPUSTAT, max_memory_mib=10_000)[0] == [1, 2, 3, 4]


def test_ssh_job_runs_ranks_under_mpiexec_pinned_to_the_picked_gpus(tmp_path):
    # Each rank writes its own file: lines that several ranks print at once can interleave.
    probe = (
        "import os, sys; rank = os.environ['MPI_LOCALRANKID']; "
        f"open(os.path.join({str(tmp_path)!r}, 'rank' + rank), 'w').write("
        "repr([rank, os.environ['CUDA_VISIBLE_DEVICES'], sys.argv[1:]])); print('RANK', rank)"
    )
    result = subprocess.run(
        [
            "bash",
            str(SSH_JOB),
            "--ranks",
            "2",
            "--gpus",
            "3,5",
            "--mpirun",
            str(MPIEXEC),
            "--venv",
            "none",
            "--task",
            "2",
            "--run-dir",
            str(tmp_path / "run"),
            "--",
            sys.executable,
            "-c",
            probe,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tail = ["--task", "2", "--run_dir", str(tmp_path / "run")]
    assert (tmp_path / "rank0").read_text() == repr(["0", "3", tail])
    assert (tmp_path / "rank1").read_text() == repr(["1", "5", tail])
    assert "RANK" in (tmp_path / "run" / "output.log").read_text()


def test_ssh_job_exits_with_the_commands_status(tmp_path):
    result = subprocess.run(
        [
            "bash",
            str(SSH_JOB),
            "--ranks",
            "1",
            "--mpirun",
            str(MPIEXEC),
            "--venv",
            "none",
            "--",
            sys.executable,
            "-c",
            "raise SystemExit(3)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 3 and "finished with status 3" in result.stdout


def test_ssh_code_files_leave_out_what_rsync_leaves_out(tmp_path):
    """The manifest a host is checked against holds what rsync copies: in a git worktree ``.git`` is a
    file, not a folder, and ``--exclude .git`` skips it all the same."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("host_info", ROOT / "ssh" / "host_info.py")
    host_info = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(host_info)
    (tmp_path / ".git").write_text("gitdir: /elsewhere/.git/worktrees/x\n")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "metrics.jsonl").write_text("")
    (tmp_path / "vsml").mkdir()
    (tmp_path / "vsml" / "cli.py").write_text("")
    (tmp_path / "launch.py").write_text("")
    assert host_info.code_files(tmp_path) == ["launch.py", "vsml/cli.py"]
