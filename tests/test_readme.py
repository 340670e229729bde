"""The README's examples run as printed: each is read from README.md itself, not copied here.

They run in a fresh folder that looks like the repository root to them (``launch.py``,
``vsml/``, ``configs/`` and ``.venv`` linked in), so what they write (``digits.npz``,
``runs/``) never lands in the checkout. The shell is a fresh ``bash`` with the test's
environment: a command that needs anything the README does not say fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HANG_GUARD_S, MPIEXEC, ROOT

README = ROOT / "README.md"
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
PYTHON_HEREDOC = ".venv/bin/python - <<'EOF'"
PRETRAINED_EVALUATE = "checkpoint.restore.path=pretrained:"


def bash_blocks() -> list[str]:
    return BASH_BLOCK.findall(README.read_text())


def python_examples() -> list[str]:
    """The README's Python examples: bash blocks that feed a script to ``.venv/bin/python -``."""
    return [block for block in bash_blocks() if block.startswith(PYTHON_HEREDOC)]


def command_line(marker: str) -> str:
    """The one README command line containing ``marker``."""
    lines = [line for block in bash_blocks() for line in block.splitlines() if marker in line]
    assert len(lines) == 1, f"README.md should hold one command with {marker!r}, found {len(lines)}"
    return lines[0]


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


# Command lines that name files the reader makes first (A.yaml, runs/mine, mine.npz), a sweep
# file bench/claims.py writes, or elide their arguments (...): not runnable as printed.
PLACEHOLDERS = ("...", "A.yaml", "runs/mine", "mine.npz", "runs/claims")


def launch_commands() -> list[str]:
    """Every README command line that runs ``.venv/bin/python launch.py`` (directly or under the venv's
    mpiexec), without its comment and without the venv set-up before it, except those with placeholders."""
    commands = []
    for block in bash_blocks():
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split("&& ")[-1].strip()
            if not command.startswith((".venv/bin/python launch.py", ".venv/bin/mpiexec")):
                continue
            if "launch.py" in command and not any(mark in command for mark in PLACEHOLDERS):
                commands.append(shlex.join(shlex.split(command, comments=True)))
    return list(dict.fromkeys(commands))  # each once (the quick start's is printed twice)


@pytest.mark.parametrize("command", launch_commands())
def test_launch_command_is_a_valid_run_as_printed(command, tmp_path):
    """Each command's config files, keys and values are what this version accepts: the command as
    printed plus ``--print_config`` (which checks the configuration and stops before any data or
    compilation) succeeds. The runs themselves are the quick-start, launcher and API tests."""
    done = run_as_printed(command + " --print_config", in_repository_root(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_the_readme_has_the_examples_this_file_runs():
    examples = python_examples()
    assert len(examples) == 2, [example.splitlines()[1:3] for example in examples]
    assert any("api.train(" in example for example in examples)
    assert any("api.pretrained(" in example for example in examples)
    assert command_line(PRETRAINED_EVALUATE).startswith(".venv/bin/python launch.py ")
    assert len(launch_commands()) >= 8, launch_commands()


def test_pretrained_example_runs_as_printed(tmp_path):
    (example,) = [block for block in python_examples() if "api.pretrained(" in block]
    done = run_as_printed(example, in_repository_root(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert "vsml-digits" in lines[0]  # the shipped names
    assert lines[-1] == "(40, 3)"  # 40 steps, the 3 classes of the labels it was given


@pytest.mark.slow  # ~20 s; tests/test_pretrained.py launches the same evaluation by name in the default run
def test_pretrained_evaluate_command_runs_as_printed(tmp_path):
    root = in_repository_root(tmp_path)
    done = run_as_printed(command_line(PRETRAINED_EVALUATE), root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "meta-test gen" in done.stdout  # the result line
    (run_dir,) = (root / "runs").iterdir()
    assert (run_dir / "metrics.jsonl").is_file() and (run_dir / "evaluation.csv").is_file()


@pytest.mark.slow  # 20 generations and two meta-tests: ~20-60 s
def test_api_example_runs_as_printed(tmp_path):
    (example,) = [block for block in python_examples() if "api.train(" in block]
    root = in_repository_root(tmp_path)
    done = run_as_printed(example, root)
    assert done.returncode == 0, done.stderr[-3000:]
    run_line, logits_line, curves_line = done.stdout.strip().splitlines()[-3:]
    run_dir, generation, meta_loss = run_line.split()
    assert Path(run_dir).parent == Path("runs") and (root / run_dir / "metrics.jsonl").is_file()
    assert generation == "20" and 0 < float(meta_loss) < 10
    assert logits_line.startswith("(50, 3) ")
    assert curves_line.startswith("(8, 100) ")
    assert 0.0 <= float(curves_line.split()[-1]) <= 1.0
