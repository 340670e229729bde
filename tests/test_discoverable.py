"""What a newcomer finds without reading the code: --help, --print_config, ``python3 -m vsml.data status``."""

from __future__ import annotations

import subprocess
import sys

import yaml

import launch
from tests.conftest import HANG_GUARD_S, ROOT
from vsml.config import build_config, resolve_for_rank
from vsml.config_view import describe_config
from vsml.data import __main__ as data_cli
from vsml.data import offline_source as sources
from vsml.data import tfds_source


def _run(*args, timeout=HANG_GUARD_S):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_help_shows_examples_and_where_the_keys_are_documented():
    result = _run("launch.py", "--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout and "--print_config" in result.stdout
    assert "configs/default.yaml" in result.stdout and "docs/DESIGN.md section 9" in result.stdout
    for line in result.stdout.split("examples:")[1].splitlines():
        if line.strip().startswith("python3 launch.py"):  # every example is a valid command line
            args = line.split("#")[0].split()[2:]
            assert launch.parse_args(args) is not None


def test_print_config_shows_the_resolved_config_without_running_anything(tmp_path):
    result = _run(
        "launch.py", "--config_files", "configs/quickstart.yaml", "--print_config", "--run_dir", tmp_path / "run"
    )
    assert result.returncode == 0, result.stderr
    assert "  population_size: 32\n" in result.stdout
    shown = yaml.safe_load(result.stdout)
    assert shown == resolve_for_rank(build_config(["configs/quickstart.yaml"]), 0)  # the whole config, as YAML
    assert not (tmp_path / "run").exists()


def test_print_config_loads_no_data_and_starts_no_backend():
    code = (
        "import sys, launch; status = launch.main(['--config_files', 'configs/quickstart.yaml', "
        "'--print_config']); assert status == 0; "
        "started = 'jax' in sys.modules and sys.modules['jax']._src.xla_bridge.backends_are_initialized(); "
        "print(started, sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'sklearn', "
        "'mlxtend', 'tensorflow_datasets') or m == 'vsml.experiment'))"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    # Nothing compiled, nothing that reads a dataset imported (validation imports vsml.data's
    # registry for the choice lists, which reads no data).
    assert result.stdout.strip().splitlines()[-1] == "False []"


def test_print_config_lists_every_ranks_split_values():
    config = build_config(
        ["configs/quickstart.yaml"],
        ["training.dataset={mpi_split: [digits, mnist_offline], mpi_repeat: 2}", "seed={mpi_split: [1, 2, 3]}"],
    )
    text = describe_config(config)
    lines = [line for line in text.splitlines() if line.startswith("# rank ")]
    assert len(lines) == 12  # the pattern repeats every lcm(2 * 2, 3) ranks
    for rank, line in enumerate(lines):
        resolved = resolve_for_rank(config, rank)
        assert line == (f"# rank {rank}: seed={resolved['seed']}, training.dataset={resolved['training']['dataset']}")
    assert len([line for line in describe_config(config, ranks=16).splitlines() if line.startswith("# rank ")]) == 16


def test_print_config_refuses_bad_values_in_one_line():
    result = _run("launch.py", "--print_config", "--config", "training.population_size=-1")
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: training.population_size: must be a positive integer, got -1"
    )


def test_data_status_lists_offline_procedural_tfds_and_npz(tmp_path):
    text = data_cli.status_text(tmp_path)
    for name in (*sources.ARRAY_SOURCES, "random", "sum", *tfds_source.TFDS_SOURCES, "omniglot_fewshot", "npz:PATH"):
        assert any(line.split()[:1] == [name] for line in text.splitlines()), name
    digits = next(line for line in text.splitlines() if line.split()[:1] == ["digits"])
    assert digits.split()[1] == "ready" and "8x8x1, 10 classes" in digits
    mnist = next(line for line in text.splitlines() if line.split()[:1] == ["mnist"])
    assert mnist.split()[1] == "missing" and f"TFDS (in {tmp_path})" in text
    for name, shape in sources.SHAPES.items():
        assert sources.load_array_source(name, "test")[0].shape[1:] == shape
