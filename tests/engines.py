"""Real engines for the launcher tests: a one-node Slurm cluster and ssh "hosts" on loopback.

These are the real daemons from Debian's packages (slurmctld, slurmd, munged, sshd),
configured in a temporary folder and torn down afterwards; nothing outside that folder
is changed except that munged is started when it is not running yet (and stopped again).

* :class:`SlurmCluster`: one cluster, one node (this machine, on 127.0.0.1) with
  the machine's CPUs; clients find it through ``SLURM_CONF``.
* :class:`SshHosts`: an sshd per loopback address (127.0.0.2, 127.0.0.3, ...), each in
  a mount namespace of its own in which ``~/.ssh`` and the code directory are folders
  of that host only, so two addresses behave as two machines with the same user and
  paths (as a lab's GPU boxes do). :meth:`SshHosts.client` runs a command as the
  user's own machine: its own ``~/.ssh`` (the test key, the hosts' keys), nothing else.

Where an engine is missing the tests skip with the install command in the reason; with
``VSML_REAL_ENGINES=1`` (set by ``.ci/run``) they fail instead, so CI never skips them.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REQUIRE_VAR = "VSML_REAL_ENGINES"
SLURM_PACKAGES = "slurmctld slurmd slurm-client munge"
SSH_PACKAGES = "openssh-server openssh-client tmux rsync"
SBIN = ("/usr/sbin", "/sbin")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
TERMINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
}


def find_tool(name: str) -> str | None:
    """``name`` on PATH or in the sbin folders (daemons live there; a user's PATH may lack them)."""
    return shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def require(tools: tuple[str, ...], packages: str) -> None:
    """Skips (fails under ``VSML_REAL_ENGINES=1``) unless this is root with every tool installed."""
    missing = [tool for tool in tools if find_tool(tool) is None]
    problems = []
    if missing:
        problems.append(f"{', '.join(missing)} not installed (as root: apt-get install -y {packages})")
    if os.geteuid() != 0:
        problems.append("needs root (it starts system daemons)")
    if not problems:
        return
    reason = "real-engine test: " + "; ".join(problems)
    if os.environ.get(REQUIRE_VAR) == "1":
        pytest.fail(f"{reason} — {REQUIRE_VAR}=1 says they must run here")
    pytest.skip(reason)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _stop_pid_file(path: Path, timeout: float = 30) -> None:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class SlurmCluster:
    """slurmctld + slurmd on this machine, configured under ``root``; use as a context manager."""

    def __init__(self, root: Path, kill_wait_s: int = 30):
        self.root = root
        self.kill_wait_s = kill_wait_s  # Slurm's default: SIGTERM, then SIGKILL 30 s later
        self.conf = root / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self.cpus = max(2, os.cpu_count() or 1)
        self._started_munge = False

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, scancel, and so slurm/schedule.sh) needs to reach this cluster."""
        path = os.environ["PATH"]
        for folder in SBIN:
            if folder not in path.split(os.pathsep):
                path += os.pathsep + folder
        return {"SLURM_CONF": str(self.conf), "PATH": path}

    def _write_conf(self) -> None:
        for folder in ("state", "spool", "log"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        r = self.root
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=vsmltest",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    f"StateSaveLocation={r}/state",
                    f"SlurmdSpoolDir={r}/spool",
                    f"SlurmctldPidFile={r}/slurmctld.pid",
                    f"SlurmdPidFile={r}/slurmd.pid",
                    f"SlurmctldLogFile={r}/log/slurmctld.log",
                    f"SlurmdLogFile={r}/log/slurmd.log",
                    # No cgroups: processes are tracked by their parent links (works in containers too).
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    # Slurm's own default: srun starts no PMI unless asked (slurm/job.sh asks for pmi2).
                    "MpiDefault=none",
                    "SchedulerType=sched/backfill",
                    "ReturnToService=2",
                    "JobRequeue=1",
                    f"KillWait={self.kill_wait_s}",
                    # Job ids new to this machine: MPICH names its shared-memory segment after the
                    # job, and a segment a killed job left in /dev/shm breaks the MPI_Init of a later
                    # job with the same id (each test cluster would otherwise count from 1 again).
                    f"FirstJobId={random.SystemRandom().randrange(10**6, 6 * 10**7)}",
                    "MinJobAge=600",  # finished jobs stay visible to scontrol for the test's questions
                    "SlurmdParameters=config_overrides",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN",
                    "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _ensure_munge(self) -> None:
        if MUNGE_SOCKET.exists() and subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
            return
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run([find_tool("mungekey") or "mungekey", "--create"], check=True)
            shutil.chown(key, "munge", "munge")
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", find_tool("munged")], check=True)
        self._started_munge = True
        wait_until(lambda: subprocess.run(["munge", "-n"], capture_output=True).returncode == 0, 30, what="munged")

    def start(self) -> SlurmCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_conf()
        self._ensure_munge()
        env = {**os.environ, **self.env}
        subprocess.run([find_tool("slurmctld"), "-f", str(self.conf)], check=True, env=env)
        subprocess.run([find_tool("slurmd"), "-f", str(self.conf)], check=True, env=env)
        wait_until(self._node_ready, 60, interval=0.5, what=f"slurmd on {self.node} (logs: {self.root}/log)")
        return self

    def _node_ready(self) -> bool:
        result = self.run("sinfo", "-h", "-o", "%T")
        return result.returncode == 0 and result.stdout.strip().rstrip("*") == "idle"

    def stop(self) -> None:
        self.run("scancel", "--full", "--user=root")
        for daemon in ("slurmd", "slurmctld"):
            _stop_pid_file(self.root / f"{daemon}.pid")
        if self._started_munge:
            _stop_pid_file(Path("/run/munge/munged.pid"))

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        return subprocess.run(
            list(args), capture_output=True, text=True, env={**os.environ, **self.env}, timeout=60, **kwargs
        )

    def job_fields(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, ExitCode, Requeue, ...); empty once forgotten."""
        result = self.run("scontrol", "-o", "show", "job", job_id)
        if result.returncode != 0:
            return {}
        line = result.stdout.splitlines()[0]
        return dict(re.findall(r"(\w+)=(\S*)", line))

    def state(self, job_id: str) -> str:
        return self.job_fields(job_id).get("JobState", "UNKNOWN")

    def wait_state(self, job_id: str, states: set[str], timeout: float) -> str:
        return wait_until(
            lambda: (s := self.state(job_id)) in states and s, timeout, interval=0.5, what=f"job {job_id} in {states}"
        )

    def wait_done(self, job_id: str, timeout: float) -> str:
        """Waits until the job has ended; returns its final state (COMPLETED, FAILED, ...)."""
        return self.wait_state(job_id, TERMINAL_STATES, timeout)

    def wait_idle(self, timeout: float) -> None:
        """Waits until no job is queued or running and every job step's processes are gone.

        Slurm reports a cancelled job ended before its ranks have exited (they write a
        checkpoint; KillWait allows 30 s).
        """
        idle = lambda: (  # noqa: E731
            not self.run("squeue", "-h").stdout.strip()
            and subprocess.run(["pgrep", "-x", "slurmstepd"], capture_output=True).returncode != 0
        )
        wait_until(idle, timeout, interval=0.5, what="the cluster to be idle")

    def log(self) -> str:
        return "".join(p.read_text(errors="replace")[-4000:] for p in sorted((self.root / "log").glob("*.log")))


class SshHosts:
    """An sshd on each of ``addresses``, each in its own mount namespace; use as a context manager.

    In host ``a``'s namespace, ``~/.ssh`` is ``root/hosts/a/ssh`` and ``code_dir`` (an
    absolute path, given as the launcher's ``--remote-dir``) is ``root/hosts/a/code``.
    Every host and the client trust one user key and one host key; every host may ssh
    to every other (MPICH's launcher starts ranks that way).
    """

    def __init__(self, root: Path, addresses: tuple[str, ...] = ("127.0.0.2",)):
        self.root = root
        self.addresses = addresses
        self.code_dir = root / "remote-code"  # the same path on every host, a different folder behind it
        self.home_ssh = Path.home() / ".ssh"
        # Free ports (a machine's own sshd may hold port 22 on every address); ~/.ssh/config names them.
        self.ports = {address: free_port(address) for address in addresses}
        self._procs: list[subprocess.Popen] = []

    def host_dir(self, address: str) -> Path:
        return self.root / "hosts" / address

    def code(self, address: str) -> Path:
        """Where ``address`` keeps what the launcher copies to its ``code_dir``."""
        return self.host_dir(address) / "code"

    def _keys(self) -> None:
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
        subprocess.run([*keygen, "-f", str(self.root / "user_key")], check=True)
        subprocess.run([*keygen, "-f", str(self.root / "host_key")], check=True)
        user_key = (self.root / "user_key").read_text()
        user_pub = (self.root / "user_key.pub").read_text()
        host_pub = (self.root / "host_key.pub").read_text().strip()
        known = "".join(f"[{a}]:{p} {host_pub}\n" for a, p in self.ports.items())
        for folder in [self.root / "client-ssh", *(self.host_dir(a) / "ssh" for a in self.addresses)]:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "id_ed25519").write_text(user_key)
            (folder / "id_ed25519.pub").write_text(user_pub)
            (folder / "authorized_keys").write_text(user_pub)
            (folder / "known_hosts").write_text(known)
            # BatchMode: a launcher must fail, not wait for a password prompt nobody sees.
            ports = "".join(f"Host {a}\n    Port {p}\n" for a, p in self.ports.items())
            (folder / "config").write_text(ports + "Host *\n    BatchMode yes\n    ConnectTimeout 10\n")
            folder.chmod(0o700)
            for file in folder.iterdir():
                file.chmod(0o600)

    def _host_env(self, host: Path) -> dict[str, str]:
        """What each host's sessions get on top of sshd's defaults."""
        pip = {k: v for k, v in os.environ.items() if k.startswith("PIP_") and not set(v) & set('"\n')}
        return {"TMUX_TMPDIR": str(host / "tmux"), **pip}

    def _namespace(self, binds: list[tuple[Path, Path]], command: str) -> list[str]:
        """argv running ``command`` in a new mount namespace with each ``(source, target)`` bound."""
        mounts = " && ".join(f"mount --bind {shlex.quote(str(s))} {shlex.quote(str(t))}" for s, t in binds)
        return ["unshare", "--mount", "--propagation", "private", "bash", "-c", f"{mounts} && {command}"]

    def start(self) -> SshHosts:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation folder
        self.home_ssh.mkdir(mode=0o700, exist_ok=True)  # a mount point; its contents are never touched
        self.code_dir.mkdir(parents=True, exist_ok=True)
        self._keys()
        for address in self.addresses:
            host = self.host_dir(address)
            self.code(address).mkdir(parents=True, exist_ok=True)
            (host / "tmux").mkdir(mode=0o700, exist_ok=True)
            config = host / "sshd_config"
            config.write_text(
                "\n".join(
                    [
                        f"ListenAddress {address}:{self.ports[address]}",
                        f"HostKey {self.root / 'host_key'}",
                        f"PidFile {host / 'sshd.pid'}",
                        "PermitRootLogin prohibit-password",
                        "PasswordAuthentication no",
                        "KbdInteractiveAuthentication no",
                        "UsePAM no",
                        "StrictModes no",
                        # Each host its own tmux server (tmux's socket lives in /tmp, which hosts share),
                        # and this machine's pip settings: a host is this machine, whose pip may be set up
                        # by environment (a local index, a timeout) that sshd would not pass on.
                        "SetEnv " + " ".join(f'"{k}={v}"' for k, v in self._host_env(host).items()),
                        "",
                    ]
                )
            )
            binds = [(host / "ssh", self.home_ssh), (self.code(address), self.code_dir)]
            command = f"exec {find_tool('sshd')} -D -e -f {shlex.quote(str(config))}"
            log = open(host / "sshd.log", "w")  # noqa: SIM115 — kept open for the daemon's lifetime
            self._procs.append(subprocess.Popen(self._namespace(binds, command), stdout=log, stderr=log))
        for address in self.addresses:
            wait_until(lambda a=address: self._accepts(a), 30, what=f"sshd on {address}")
        return self

    def _accepts(self, address: str) -> bool:
        return self.client(f"ssh {address} true", timeout=30).returncode == 0

    def stop(self) -> None:
        for address in self.addresses:
            # Each host's own tmux server (started by the launcher) ends with the host.
            self.on_host(address, "tmux kill-server 2>/dev/null; true", timeout=30)
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def __enter__(self) -> SshHosts:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def client(self, command: str, env: dict | None = None, timeout: float = 600, cwd=None):
        """Runs a bash ``command`` on the user's machine: this one, with the client's own ``~/.ssh``."""
        argv = self._namespace([(self.root / "client-ssh", self.home_ssh)], f"exec bash -c {shlex.quote(command)}")
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})}
        )

    def on_host(self, address: str, command: str, timeout: float = 600):
        """Runs a shell ``command`` on ``address`` over ssh (from the client)."""
        return self.client(f"ssh {address} {shlex.quote(command)}", timeout=timeout)
