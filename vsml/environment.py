"""The Python this runs in: how to name it in a hint, and a one-line refusal when packages are missing.

Standard library only, so that it works before (and without) anything from
``requirements.txt``. The entry points call :func:`exit_if_missing` before
their first heavy import; ``python3 -m vsml.data`` and ``python3 -m vsml.plot``
reach it through ``vsml/__init__.py``, which runs before their package does.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_REQUIREMENTS = "requirements.txt"
PREPARE_REQUIREMENTS = "requirements-prepare.txt"
CUDA_REQUIREMENTS = "requirements-cuda.txt"
# What an installed package offers instead of each requirements file (pyproject.toml's extras).
EXTRAS = {RUN_REQUIREMENTS: "vsml", PREPARE_REQUIREMENTS: "vsml[prepare]", CUDA_REQUIREMENTS: "vsml[cuda]"}

# Import name -> what pip installs. Every entry point needs the run set; plots need less.
RUN_MODULES = {
    "numpy": "numpy",
    "scipy": "scipy",
    "jax": "jax",
    "chex": "chex",
    "optax": "optax",
    "yaml": "pyyaml",
    "tqdm": "tqdm",
    "filelock": "filelock",
    "mpi4py": "mpi4py",
    "wandb": "wandb",
    "sklearn": "scikit-learn",
    "mlxtend": "mlxtend",
    "matplotlib": "matplotlib",
}
PLOT_MODULES = {"numpy": "numpy", "tqdm": "tqdm", "matplotlib": "matplotlib"}
ENTRY_MODULES = {"vsml.plot": PLOT_MODULES}  # python3 -m <entry>: what it needs (default RUN_MODULES)


def _shorten(path: Path) -> str:
    """``path`` relative to the working directory when inside it, else with ``~`` for the home directory."""
    absolute = Path(os.path.abspath(path))
    cwd = Path(os.getcwd())
    if absolute.is_relative_to(cwd):
        return str(absolute.relative_to(cwd))
    home = Path.home()
    if absolute.is_relative_to(home):
        return "~/" + str(absolute.relative_to(home))
    return str(absolute)


def python_command(executable: str | None = None) -> str:
    """How to type the running interpreter in a fresh shell of the same working directory.

    ``python3`` when that is what ``PATH`` finds (an activated venv, or the
    system Python running the system Python), else its path: ``.venv/bin/python``
    when it lies below the working directory, else absolute (``~`` for home).
    """
    executable = executable or sys.executable
    if not executable:
        return "python3"
    on_path = shutil.which("python3")
    # Compare the directories, not the resolved files: a venv's python links to the system one.
    if on_path and Path(os.path.abspath(on_path)).parent == Path(os.path.abspath(executable)).parent:
        return "python3"
    shortened = _shorten(Path(executable))
    return shortened if os.sep in shortened else f".{os.sep}{shortened}"


def entry_command(argv0: str | None = None) -> str:
    """How to type the command line this process was started with, for hints (resume, install).

    ``.venv/bin/python launch.py`` for a checkout's ``launch.py``, ``python3 -m
    vsml`` for the module, ``vsml`` for the installed console command.
    """
    argv0 = sys.argv[0] if argv0 is None and sys.argv else (argv0 or "")
    name = Path(argv0).name
    if name == "launch.py":
        return f"{python_command()} launch.py"
    if name in ("__main__.py", "-m", "-c", ""):
        return f"{python_command()} -m vsml"
    return name  # the console script installed by pip (``vsml``)


def module_command(module: str) -> str:
    """How to type ``python -m module`` with the running interpreter (``python3 -m vsml.data``)."""
    return f"{python_command()} -m {module}"


def missing_modules(modules: dict[str, str]) -> list[str]:
    """The pip names of ``modules`` (import name -> pip name) that this Python cannot import."""
    return [pip_name for module, pip_name in modules.items() if importlib.util.find_spec(module) is None]


def install_hint(requirements: str = RUN_REQUIREMENTS) -> str:
    """The command that installs ``requirements`` for the interpreter that is running.

    In a checkout, the requirements file; in an installed package (which has no such
    file), the package's extra, e.g. ``pip install 'vsml[prepare]'``.
    """
    from vsml import resources  # noqa: PLC0415 — standard library only, as this module

    if not resources.in_checkout():
        return f"{python_command()} -m pip install '{EXTRAS.get(requirements, 'vsml')}'"
    in_venv = sys.prefix != sys.base_prefix
    if in_venv:
        return f"{python_command()} -m pip install -r {requirements}"
    venv_python = ROOT / ".venv" / "bin" / "python"
    if venv_python.exists():  # the venv exists, but this is another Python
        return (
            f"{_shorten(venv_python.parent / 'pip')} install -r {requirements}, then run with "
            f"{_shorten(venv_python)} instead of {python_command()}"
        )
    return f"python3 -m venv .venv && .venv/bin/pip install -r {requirements}, then run with .venv/bin/python"


def missing_message(what: str, missing: list[str], requirements: str = RUN_REQUIREMENTS) -> str:
    return (
        f"error: {what} needs {', '.join(missing)}, which {python_command()} cannot import; "
        f"install: {install_hint(requirements)}"
    )


def exit_if_missing(what: str, modules: dict[str, str] = RUN_MODULES, requirements: str = RUN_REQUIREMENTS) -> None:
    """Exits with status 1 and one line on stderr when any of ``modules`` is not installed."""
    missing = missing_modules(modules)
    if missing:
        print(missing_message(what, missing, requirements), file=sys.stderr, flush=True)
        raise SystemExit(1)


def check_module_entry_point() -> None:
    """For ``python3 -m vsml.X``: refuse in one line when X's packages are missing.

    Python sets ``sys.argv[0]`` to ``'-m'`` while it imports the packages of
    the module to run, and ``sys.orig_argv`` holds the whole command line.
    """
    if not sys.argv or sys.argv[0] != "-m":
        return
    argv = list(getattr(sys, "orig_argv", []))
    entry = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else "vsml"
    if entry.startswith("vsml"):
        exit_if_missing(f"python3 -m {entry}", ENTRY_MODULES.get(entry, RUN_MODULES))
