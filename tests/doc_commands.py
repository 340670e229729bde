"""The command blocks of the README and the documentation pages, read from the files themselves.

``tests/test_readme.py`` and ``tests/test_docs.py`` check them the same way: every runnable
``launch.py`` command is accepted as printed (``--print_config``), and the Python examples run as
printed, in a fresh folder that looks like the repository root to them (``launch.py``, ``vsml/``,
``configs/`` and ``.venv`` linked in), so what they write (``digits.npz``, ``runs/``) never lands in
the checkout. The shell is a fresh ``bash`` with the test's environment: a command that needs
anything the page does not say fails there.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import HANG_GUARD_S, MPIEXEC, ROOT

BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
PYTHON_HEREDOC = ".venv/bin/python - <<'EOF'"

# Command lines that name files the reader makes first (A.yaml, runs/mine, mine.npz), a sweep
# file bench/claims.py writes, or elide their arguments (...): not runnable as printed.
PLACEHOLDERS = ("...", "A.yaml", "runs/mine", "mine.npz", "runs/claims")


def bash_blocks(page: Path) -> list[str]:
    """The ```` ```bash ```` blocks of a Markdown file, as written (snippet includes are not expanded)."""
    return BASH_BLOCK.findall(page.read_text())


def python_examples(page: Path) -> list[str]:
    """The page's Python examples: bash blocks that feed a script to ``.venv/bin/python -``."""
    return [block for block in bash_blocks(page) if block.startswith(PYTHON_HEREDOC)]


def command_lines(page: Path) -> list[str]:
    """Every command line of the page's bash blocks (continuation lines joined), without the
    set-up before a last ``&&``; heredoc examples are left out (they are ``python_examples``)."""
    lines = []
    for block in bash_blocks(page):
        if block.startswith(PYTHON_HEREDOC):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split("&& ")[-1].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def command_line(page: Path, marker: str) -> str:
    """The one command line of the page containing ``marker``."""
    lines = [line for block in bash_blocks(page) for line in block.splitlines() if marker in line]
    assert len(lines) == 1, f"{page.name} should hold one command with {marker!r}, found {len(lines)}"
    return lines[0]


def launch_commands(page: Path) -> list[str]:
    """Every command line of the page that runs ``.venv/bin/python launch.py`` (directly or under the
    venv's mpiexec), without its comment, except those with placeholders; each once."""
    commands = []
    for command in command_lines(page):
        if not command.startswith((".venv/bin/python launch.py", ".venv/bin/mpiexec")):
            continue
        if "launch.py" in command and not any(mark in command for mark in PLACEHOLDERS):
            commands.append(shlex.join(shlex.split(command, comments=True)))
    return list(dict.fromkeys(commands))


def in_repository_root(tmp_path: Path) -> Path:
    """A folder that looks like the repository root: the checkout's code and configs, and ``.venv``
    standing for the Python running the tests (the venv itself when there is one; otherwise a
    ``.venv/bin`` whose ``python`` and ``mpiexec`` are this interpreter and the mpiexec beside it)."""
    for name in ("launch.py", "vsml", "configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    if sys.prefix != sys.base_prefix:  # a venv finds its packages only through its own folder
        (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    else:
        bin_dir = tmp_path / ".venv" / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "python").symlink_to(sys.executable)
        (bin_dir / "mpiexec").symlink_to(MPIEXEC if MPIEXEC.exists() else shutil.which("mpiexec") or MPIEXEC)
    return tmp_path


def run_as_printed(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("PYTHONPATH", None)  # the example must find the package as a user's shell does
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S
    )


def check_launch_command(command: str, tmp_path: Path) -> None:
    """The command's config files, keys and values are what this version accepts: the command as
    printed plus ``--print_config`` (which checks the configuration and stops before any data or
    compilation) succeeds, and nothing ran."""
    done = run_as_printed(command + " --print_config", in_repository_root(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert not (tmp_path / "runs").exists()  # nothing ran
