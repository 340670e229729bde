"""ssh/schedule.sh against real sshd, ssh, rsync, tmux and MPICH's launcher, on loopback.

Each "host" is an sshd on its own loopback address whose sessions see their own
``~/.ssh`` and code folder (tests/engines.py), so 127.0.0.2 and 127.0.0.3 behave as
two machines of one lab. The test runs the launcher as a user does, from the
checkout, then the attach, follow and fetch lines it prints, as printed.
tests/test_launchers.py keeps the fakes for what loopback cannot show (gpustat and
GPU ids, the exact commands of a dry run).

Skipped, with the install command as the reason, where the tools are missing or this
is not root; ``.ci/run`` installs them and sets VSML_REAL_ENGINES=1 (then a skip is a failure).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
import uuid
from pathlib import Path

import pytest

from tests import engines
from tests.conftest import ROOT, TINY, checkpoint_arrays, launch

HOST_A, HOST_B = "127.0.0.2", "127.0.0.3"
QUICK = ["python3", "launch.py", "--config_files", "configs/quickstart.yaml", "--config", *TINY]


@pytest.fixture(scope="module")
def hosts():
    engines.require(("sshd", "ssh", "ssh-keygen", "rsync", "tmux", "unshare"), engines.SSH_PACKAGES)
    # A short root: tmux's socket path must stay under ~100 characters.
    root = Path(tempfile.mkdtemp(prefix="vsml-ssh-"))
    try:
        with engines.SshHosts(root, (HOST_A, HOST_B)) as started:
            yield started
    finally:
        # In the background: deleting the installed venv's ~20,000 files takes a minute on a busy machine.
        subprocess.Popen(["rm", "-rf", str(root)], start_new_session=True)


def _client_env() -> dict[str, str]:
    """The user's shell: this test's interpreter first on PATH (``python3`` in the printed lines)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VSML_", "SLURM_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _schedule(hosts, *args: str, timeout: float = 900):
    command = shlex.join(["bash", "ssh/schedule.sh", *args])
    return hosts.client(command, env=_client_env(), timeout=timeout, cwd=ROOT)


def _quick_start(hosts, *host_args: str) -> tuple[str, subprocess.CompletedProcess]:
    """The quick start (4 generations) through the launcher on CPUs: (its run folder, the launch)."""
    run = f"runs/engines-{uuid.uuid4().hex[:8]}"
    command = ["--cpu", "--remote-dir", str(hosts.code_dir), "--run_dir", run, "--", *QUICK, "training.iterations=4"]
    result = _schedule(hosts, *host_args, *command)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run, result


def _give_venv(hosts, address: str) -> None:
    """The host's code folder gets a .venv: this test's own (a symlink; --install makes a real one)."""
    venv = hosts.code(address) / ".venv"
    if not venv.exists():
        venv.symlink_to(sys.prefix)


def _copy_code(hosts, address: str) -> None:
    ignore = shutil.ignore_patterns(".git", ".venv", "runs", "wandb", "__pycache__", ".pytest_cache", ".ruff_cache")
    shutil.copytree(ROOT, hosts.code(address), ignore=ignore, dirs_exist_ok=True)


def _wait_for_job(log: Path, timeout: float = 600) -> str:
    engines.wait_until(
        lambda: log.exists() and "finished with status" in log.read_text(), timeout, interval=0.5, what=str(log)
    )
    return log.read_text()


def _printed(result, name: str) -> str:
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(f"{name}:")]
    return line.split(":", 1)[1].split("    (")[0].strip()


def _assert_same_checkpoint(a: Path, b: Path) -> None:
    for prefix in ("params/", "opt_state/"):
        left, right = checkpoint_arrays(a, prefix), checkpoint_arrays(b, prefix)
        assert left.keys() == right.keys() and left
        for name in left:
            assert (left[name] == right[name]).all(), name


def _attach_and_detach(hosts, attach: str, expect: str, timeout: float = 120) -> str:
    """Runs the printed attach line in a terminal, waits for ``expect`` on screen, detaches (Ctrl-b d)."""
    argv = hosts._namespace(
        [(hosts.root / "client-ssh", hosts.home_ssh)], f"exec bash -c {shlex.quote(attach)}"
    )  # the user's machine, as SshHosts.client, but on a terminal
    pid, fd = pty.fork()
    if pid == 0:  # a terminal of 50 x 200 (a new pty has none: tmux would draw nothing)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        os.execvpe(argv[0], argv, {**_client_env(), "TERM": "xterm"})
    screen, deadline, detached_at = b"", time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                screen += chunk
            # tmux's detach keys once the text is on screen, again every 3 s until the attach ends
            # (keys that arrive while the client is still redrawing can be lost: seen once here).
            if expect.encode() in screen and (detached_at is None or time.monotonic() - detached_at > 3):
                os.write(fd, b"\x02d")
                detached_at = time.monotonic()
        # The terminal closed (or the deadline passed): give the attach 10 s to exit, then end it
        # rather than wait on it.
        ended, status, exit_by = 0, 0, max(deadline, time.monotonic()) + 10
        while not ended and time.monotonic() < exit_by:
            ended, status = os.waitpid(pid, os.WNOHANG)
            time.sleep(0 if ended else 0.1)
        if not ended:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    detached = detached_at is not None
    assert detached and os.waitstatus_to_exitcode(status) == 0, screen[-2000:]
    return screen.decode(errors="replace")


def test_one_host_installs_runs_in_tmux_and_the_printed_lines_work(hosts, tmp_path):
    run, result = _quick_start(hosts, "--host", HOST_A, "--install")
    assert (hosts.code(HOST_A) / ".venv" / "bin" / "python").exists()  # --install made a real venv
    assert not (hosts.code(HOST_A) / ".venv").is_symlink()
    log = _wait_for_job(hosts.code(HOST_A) / run / "output.log")
    assert "finished with status 0" in log and "done: 4 generations" in log, log[-3000:]

    attach = _printed(result, "attach")
    assert attach.startswith(f"ssh -t {HOST_A} tmux attach -t ")
    assert "finished with status 0" in _attach_and_detach(hosts, attach, "finished with status 0")

    follow = subprocess.Popen(
        hosts._namespace([(hosts.root / "client-ssh", hosts.home_ssh)], _printed(result, "follow")),
        stdout=subprocess.PIPE,
        env=_client_env(),
    )
    try:
        seen, deadline = b"", time.monotonic() + 120
        while b"finished with status 0" not in seen:
            # tail -f never ends: read what has arrived, so a missing line fails instead of hanging
            ready, _, _ = select.select([follow.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"follow printed no 'finished with status 0' within 120 s: {seen[-2000:]!r}"
            chunk = os.read(follow.stdout.fileno(), 65536)
            assert chunk, seen[-2000:]
            seen += chunk
    finally:
        follow.kill()
        follow.wait()

    try:
        fetched = hosts.client(_printed(result, "fetch"), env=_client_env(), cwd=ROOT, timeout=300)
        assert fetched.returncode == 0, fetched.stderr[-3000:]
        _assert_same_checkpoint(ROOT / run, hosts.code(HOST_A) / run)
        assert list((ROOT / run).glob("*.png")), "vsml.plot wrote no figure"
    finally:
        shutil.rmtree(ROOT / run, ignore_errors=True)


def test_two_hosts_run_one_mpi_job_that_equals_a_local_run(hosts, tmp_path):
    for address in (HOST_A, HOST_B):
        _give_venv(hosts, address)
    run, result = _quick_start(hosts, "--host", HOST_A, "--host", HOST_B)
    assert (hosts.code(HOST_B) / "launch.py").exists()  # synced to each host
    log = _wait_for_job(hosts.code(HOST_A) / run / "output.log")
    assert "finished with status 0" in log and "ranks: 2" in log, log[-3000:]
    assert "-launcher ssh" in log
    assert not (hosts.code(HOST_B) / run / "checkpoint.npz").exists()  # rank 0, on the first host, writes
    local = tmp_path / "local"
    reference = launch(
        "--run_dir", local, "--config_files", "configs/quickstart.yaml", "--config", *TINY, "training.iterations=4"
    )
    assert reference.returncode == 0, reference.stderr[-3000:]
    _assert_same_checkpoint(hosts.code(HOST_A) / run, local)


def _refused(hosts, *args: str) -> str:
    session = f"refused-{uuid.uuid4().hex[:6]}"
    result = _schedule(hosts, *args, "--cpu", "--session", session, "--remote-dir", str(hosts.code_dir), "--", *QUICK)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("run 'bash ssh/schedule.sh --help'"), result.stderr
    assert hosts.on_host(HOST_A, f"tmux has-session -t {session}").returncode != 0  # nothing started
    return lines[0]


def test_an_unreachable_host_is_one_line_before_anything_starts(hosts):
    line = _refused(hosts, "--host", HOST_A, "--host", "127.0.0.9")
    assert "cannot reach 127.0.0.9 over ssh" in line


def test_a_host_without_the_runs_packages_is_one_line(hosts, tmp_path):
    _give_venv(hosts, HOST_A)
    empty = hosts.code(HOST_B) / ".venv"
    if empty.is_symlink():
        empty.unlink()
    subprocess.run(["python3", "-m", "venv", "--without-pip", "--clear", str(empty)], check=True)
    try:
        line = _refused(hosts, "--host", HOST_A, "--host", HOST_B)
        assert f"{HOST_B}:{hosts.code_dir}" in line and "lacks jax" in line and "--install" in line
    finally:
        shutil.rmtree(empty)


def test_a_host_with_another_code_version_is_one_line(hosts):
    for address in (HOST_A, HOST_B):
        _copy_code(hosts, address)
        _give_venv(hosts, address)
    edited = hosts.code(HOST_B) / "vsml" / "__init__.py"
    edited.write_text(edited.read_text() + "\n# edited on this host only\n")
    line = _refused(hosts, "--host", HOST_A, "--host", HOST_B, "--no-sync")
    assert f"{HOST_B}:{hosts.code_dir} holds another code version" in line
    assert re.search(r"drop --no-sync", line)
