"""The installable package: pyproject metadata, its license, shipped files, and an install used from another directory."""

from __future__ import annotations

import email.parser
import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import HANG_GUARD_S, ROOT
from vsml import environment, resources

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(file: str) -> set[str]:
    """The requirement lines of ``file``, following ``-r`` includes; comments dropped."""
    lines = set()
    for line in (ROOT / file).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            lines |= _requirements(line[3:].strip())
        elif line:
            lines.add(line)
    return lines


def test_dependencies_come_from_requirements_txt():
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}


@pytest.mark.parametrize(
    ("extra", "file"),
    [("prepare", "requirements-prepare.txt"), ("dev", "requirements-dev.txt"), ("cuda", "requirements-cuda.txt")],
)
def test_extras_match_the_requirement_files(extra, file):
    # An extra adds to the run's requirements exactly what the file adds to requirements.txt.
    added = _requirements(file) - _requirements("requirements.txt")
    assert set(PYPROJECT["project"]["optional-dependencies"][extra]) == added


def test_every_subpackage_is_packaged():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = (
        {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "vsml").rglob("__init__.py")}
        | {"vsml.configs"}
        | {
            "vsml.configs." + ".".join(d.relative_to(ROOT / "configs").parts)
            for d in (ROOT / "configs").rglob("*")
            if d.is_dir() and any(d.glob("*.yaml"))
        }
    )
    assert found == listed


def test_console_script_runs_the_cli():
    assert PYPROJECT["project"]["scripts"] == {"vsml": "vsml.cli:main"}


def test_config_files_resolve_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = resources.find_config_file("configs/quickstart.yaml")
    assert shipped == ROOT / "configs" / "quickstart.yaml"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quickstart.yaml").write_text("seed: 3\n")
    assert resources.find_config_file("configs/quickstart.yaml") == Path("configs/quickstart.yaml")  # yours first
    assert resources.find_config_file("configs/nothing.yaml") == Path("configs/nothing.yaml")  # left to "not found"


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [("/repo/launch.py", "launch.py"), ("/venv/bin/vsml", "vsml"), ("/usr/lib/python3/vsml/__main__.py", "-m vsml")],
)
def test_hints_name_the_command_that_was_typed(argv0, expected):
    assert environment.entry_command(argv0).endswith(expected)


# The SHA-256 of the Apache License 2.0 as the ASF publishes it (apache.org/licenses/LICENSE-2.0.txt),
# the file jax, optax and chex ship too: LICENSE must be that text, byte for byte.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_the_license_is_apache_2_0_verbatim_and_declared():
    assert hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0_SHA256
    assert PYPROJECT["project"]["license"] == "Apache-2.0"  # an SPDX expression (PEP 639)
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]


@pytest.mark.parametrize("where", ["build-system", "requirements-dev.txt"])
def test_the_build_backend_reads_a_license_expression(where):
    # setuptools reads `license = "SPDX"` and license-files from 77 on (older ones reject the file);
    # the wheel test below builds with the test environment's setuptools, so the dev install needs it too.
    lines = PYPROJECT["build-system"]["requires"] if where == "build-system" else _requirements(where)
    (setuptools,) = [Requirement(line) for line in lines if Requirement(line).name == "setuptools"]
    assert not setuptools.specifier.contains("76.1") and setuptools.specifier.contains("77.0")


@pytest.fixture(scope="module")
def distributions(tmp_path_factory) -> dict[str, Path]:
    """The wheel and the sdist built from a copy of the checkout, once for this file's tests."""
    root = tmp_path_factory.mktemp("build")
    source = root / "source"  # a copy, so the build leaves no build/ or egg-info in the checkout
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "wandb", "build", "*.egg-info")
    )
    # The test venv's setuptools builds both (no build isolation: nothing is downloaded).
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", root, source]
    sdist = [sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(root)!r})"]
    for command in (build, sdist):
        built = subprocess.run(
            list(map(str, command)), cwd=source, timeout=HANG_GUARD_S, capture_output=True, text=True
        )
        hint = "the build needs setuptools>=77 here: pip install -r requirements-dev.txt\n"
        assert built.returncode == 0, hint + built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = root.glob("vsml-*.whl")
    (sdist_file,) = root.glob("vsml-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist_file}


def _fresh_venv_with_the_wheel(wheel: Path, tmp_path) -> Path:
    """A new venv holding only ``wheel``; its dependencies come from the test venv (no network)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=HANG_GUARD_S)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The test venv's packages (jax, numpy, ...) behind the new venv's own, as an offline install would give.
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        timeout=HANG_GUARD_S,
        capture_output=True,
    )
    return venv


@pytest.mark.slow
def test_wheel_and_sdist_carry_the_license(distributions):
    license_text = (ROOT / "LICENSE").read_bytes()
    with zipfile.ZipFile(distributions["wheel"]) as wheel:
        (dist_info,) = {name.split("/")[0] for name in wheel.namelist() if ".dist-info/" in name}
        assert wheel.read(f"{dist_info}/licenses/LICENSE") == license_text
        headers = email.parser.HeaderParser().parsestr(wheel.read(f"{dist_info}/METADATA").decode())
    assert headers["License-Expression"] == "Apache-2.0"
    assert headers.get_all("License-File") == ["LICENSE"]
    with tarfile.open(distributions["sdist"]) as sdist:
        top = distributions["sdist"].name.removesuffix(".tar.gz")
        assert sdist.extractfile(f"{top}/LICENSE").read() == license_text


@pytest.mark.slow
def test_installed_package_works_from_another_directory(distributions, tmp_path):
    venv = _fresh_venv_with_the_wheel(distributions["wheel"], tmp_path)
    elsewhere = tmp_path / "elsewhere" / "vsml"  # a folder named like the package must not shadow it
    elsewhere.mkdir(parents=True)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    code = (
        "import numpy as np, vsml, vsml.api as a; names = a.pretrained_names(); print(names); "
        f"assert vsml.__file__.startswith({str(venv)!r}), vsml.__file__; "
        "alg = a.pretrained(names[0]); x = np.random.default_rng(0).normal(size=(20, 8, 8)).astype('float32'); "
        "y = np.arange(20) % 10; print(alg.run(x, y).shape)"
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        cwd=elsewhere.parent,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    names, shape = result.stdout.strip().splitlines()[-2:]
    assert eval(names) == resources.pretrained_names() and len(eval(names)) >= 1  # noqa: S307 — our own output
    assert shape == "(20, 10)"
    # The console script and python -m vsml find the shipped configs outside the repository.
    for command in ([str(venv / "bin" / "vsml")], [str(venv / "bin" / "python"), "-m", "vsml"]):
        shown = subprocess.run(
            [*command, "--config_files", "configs/quickstart.yaml", "--print_config"],
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=HANG_GUARD_S,
            env=env,
        )
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"^  population_size: 32$", shown.stdout, re.MULTILINE)


@pytest.mark.slow
def test_installed_package_speaks_as_an_installed_package(tmp_path):
    """usage: vsml, the extras instead of requirement files, commands of the running Python, --list-settings."""
    venv = _fresh_venv_with_the_wheel(tmp_path)
    python = str(venv / "bin" / "python")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}

    def run(*args):
        result = subprocess.run(
            [*args], cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S, env=env, check=False
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    for command in ([str(venv / "bin" / "vsml")], [python, "-m", "vsml"]):
        shown = run(*command, "--help")
        assert shown.startswith("usage: vsml ") and "pretrained:NAME): vsml-digits" in " ".join(shown.split())
        assert "configs/quickstart.yaml" in shown and "--list-settings" in shown and "DESIGN" not in shown
        assert "| `training.population_size` |" in run(*command, "--list-settings")
    hint = run(python, "-c", "from vsml import environment as e; print(e.install_hint(e.PREPARE_REQUIREMENTS))")
    assert hint.strip().endswith("-m pip install 'vsml[prepare]'")
    status = run(python, "-m", "vsml.data", "status", "--data_dir", str(tmp_path / "tfds"))
    assert "prepare: venv/bin/python -m vsml.data prepare mnist" in status  # typed from this folder
