"""The README's examples run as printed: each is read from README.md itself, not copied here.

How they are read and run (in a fresh folder that looks like the repository root) is
``tests/doc_commands.py``, shared with the documentation pages' ``tests/test_docs.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests import doc_commands
from tests.conftest import ROOT
from tests.doc_commands import in_repository_root, run_as_printed

README = ROOT / "README.md"
PRETRAINED_EVALUATE = "checkpoint.restore.path=pretrained:"


def python_examples() -> list[str]:
    return doc_commands.python_examples(README)


def launch_commands() -> list[str]:
    return doc_commands.launch_commands(README)


def command_line(marker: str) -> str:
    return doc_commands.command_line(README, marker)


@pytest.mark.parametrize("command", launch_commands())
def test_launch_command_is_a_valid_run_as_printed(command, tmp_path):
    """Accepted as printed (``--print_config``); the runs themselves are the quick-start, launcher and API tests."""
    doc_commands.check_launch_command(command, tmp_path)


def test_the_readme_has_the_examples_this_file_runs():
    examples = python_examples()
    assert len(examples) == 2, [example.splitlines()[1:3] for example in examples]
    assert any("api.train(" in example for example in examples)
    assert any("api.pretrained(" in example for example in examples)
    assert command_line(PRETRAINED_EVALUATE).startswith(".venv/bin/python launch.py ")
    assert ".venv/bin/python launch.py --config_files configs/quickstart.yaml" in launch_commands()
    assert any(command.startswith(".venv/bin/mpiexec -n ") for command in launch_commands()), launch_commands()


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


@pytest.mark.slow  # 20 generations of the paper's model and two meta-tests: ~1-2 min
def test_api_example_runs_as_printed_and_learns(tmp_path):
    """The README's API example continues a shipped algorithm on the reader's data and shows it learning:
    an online accuracy far above chance (0.1 for 10 classes) on an episode of the reader's own examples
    and on held-out episodes, and a meta-loss below chance's ln 10."""
    (example,) = [block for block in python_examples() if "api.train(" in block]
    root = in_repository_root(tmp_path)
    done = run_as_printed(example, root)
    assert done.returncode == 0, done.stderr[-3000:]
    run_line, logits_line, curves_line = done.stdout.strip().splitlines()[-3:]
    run_dir, generation, meta_loss = run_line.split()
    assert Path(run_dir).parent == Path("runs") and (root / run_dir / "metrics.jsonl").is_file()
    assert generation == "20" and 0 < float(meta_loss) < math.log(10) - 0.5
    assert logits_line.startswith("(100, 10) ") and float(logits_line.split()[-1]) > 0.4
    assert curves_line.startswith("(8, 100) ") and float(curves_line.split()[-1]) > 0.4
