"""What a newcomer finds without reading the code: --help, --print_config, ``python3 -m vsml.data status``."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import numpy as np
import yaml

import launch
from tests.conftest import HANG_GUARD_S, ROOT
from vsml import environment, resources, run_platform
from vsml.config import build_config, resolve_for_rank
from vsml.config_view import describe_config
from vsml.data import __main__ as data_cli
from vsml.data import offline_source as sources
from vsml.data import tfds_source


def _run(*args, timeout=HANG_GUARD_S):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_help_shows_examples_and_where_the_keys_are_documented():
    result = _run("launch.py", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: launch.py ")
    assert "examples:" in result.stdout and "--print_config" in result.stdout
    assert "launch.py --list-settings prints every key" in result.stdout
    for line in result.stdout.split("examples:")[1].split("\n\n")[0].splitlines():
        if " launch.py " in line:  # every example is a valid command line, as typed
            args = line.split("#")[0].split(" launch.py ", 1)[1].split()
            assert launch.parse_args(args) is not None


def test_module_help_says_vsml_names_the_typed_command_and_lists_what_ships():
    result = _run("-m", "vsml", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: vsml ")  # not __main__.py
    typed = f"{environment.python_command()} -m vsml"
    examples = result.stdout.split("examples:\n")[1].split("\n\n")[0].splitlines()
    assert examples and all(line.strip().startswith((typed, f"mpiexec -n 4 {typed}")) for line in examples)
    listed = " ".join(result.stdout.split())  # the lists wrap
    for name in resources.pretrained_names():
        assert name in listed.split("pretrained:NAME):")[1]
    for file in (ROOT / "configs").glob("*.yaml"):
        assert f"configs/{file.name}" in listed
    assert f"{typed} --list-settings" in listed and "docs/DESIGN.md" not in listed  # not in an installed package


def test_list_settings_prints_the_key_reference_of_design_section_9():
    result = _run("-m", "vsml", "--list-settings")
    assert result.returncode == 0 and result.stderr == ""
    design = (ROOT / "docs" / "DESIGN.md").read_text()
    rows = result.stdout.splitlines()
    assert len(rows) > 50 and rows[0].startswith("| key |") and any(row.startswith("| `seed` |") for row in rows)
    assert all(row in design for row in rows)  # the same table, every row


def test_an_installed_package_names_extras_where_a_checkout_names_requirement_files(monkeypatch):
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "requirements-prepare.txt" in environment.install_hint(environment.PREPARE_REQUIREMENTS)  # a checkout
    monkeypatch.setattr(resources, "in_checkout", lambda: False)
    hint = environment.install_hint(environment.PREPARE_REQUIREMENTS)
    assert hint == f"{environment.python_command()} -m pip install 'vsml[prepare]'"
    assert "'vsml[cuda]'" in run_platform.missing_gpu_warning("cpu", {"GPU_COUNT": "1"}, plugin_installed=False)
    for requirements, extra in environment.EXTRAS.items():
        assert (ROOT / requirements).is_file() and (extra == "vsml" or extra[5:-1] in extras)


def test_data_status_prints_commands_for_the_running_python(tmp_path):
    result = _run("-m", "vsml.data", "status", "--data_dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"prepare: {environment.python_command()} -m vsml.data prepare mnist" in result.stdout
    assert _run("-m", "vsml.data", "--help").stdout.startswith(f"usage: {environment.python_command()} -m vsml.data")


def test_print_config_shows_the_resolved_config_without_running_anything(tmp_path):
    result = _run(
        "launch.py", "--config_files", "configs/quickstart.yaml", "--print_config", "--run_dir", tmp_path / "run"
    )
    assert result.returncode == 0, result.stderr
    assert "  population_size: 32\n" in result.stdout
    shown = yaml.safe_load(result.stdout)
    assert shown == resolve_for_rank(build_config(["configs/quickstart.yaml"]), 0)  # the whole config, as YAML
    assert not (tmp_path / "run").exists()


def test_print_config_of_an_evaluate_shows_the_checkpoints_model():
    """``call: evaluate`` runs the model saved in the checkpoint; --print_config shows that one, not the defaults."""
    with np.load(resources.pretrained_file("vsml-digits")) as arrays:
        saved = yaml.safe_load(str(arrays["config"]))["model"]  # read here with numpy, not through vsml
    assert saved["vsml_rnn"]["feed_label"] is True and build_config()["model"]["vsml_rnn"]["feed_label"] is False
    result = _run(
        "launch.py", "--print_config", "--config", "call=evaluate", "checkpoint.restore.path=pretrained:vsml-digits"
    )
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)["model"]
    assert shown["type"] == saved["type"] and shown["vsml_rnn"]["feed_label"] is True
    assert shown["sub_rnn"] == {**shown["sub_rnn"], **saved["sub_rnn"]}


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
