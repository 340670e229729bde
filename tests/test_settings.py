"""One place per setting (docs/DESIGN.md §8, §9): each key is declared once, as a field of a frozen
section; the checks, the typed sections, the key reference and configs/default.yaml agree with it."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vsml.comm import SingleProcessComm
from vsml.config import OPEN_SUBTREES, ConfigError, build_config, load_default, resolve_for_rank
from vsml.run_checks import check_config, check_names, registry_names
from vsml.settings import RunSettings, data_settings, open_keys, reference_markdown, run_settings
from vsml.settings.fields import NON_NEGATIVE_INT, build, leaves, section, setting
from vsml.settings.sections import TrainingSettings

ROOT = Path(__file__).resolve().parent.parent


def settings_for(*overrides: str) -> RunSettings:
    return run_settings(resolve_for_rank(build_config(overrides=list(overrides)), 0))


def test_sections_are_typed_and_frozen():
    settings = settings_for(
        "training.population_size=24",
        "evaluation.datasets=[digits, mnist_offline]",
        "data.preprocess.resize=[14, 14]",
        "optimizer.kwargs.eps=1e-6",
        "model.type=SGD",
        "model.sgd.tanh_bound=10",
    )
    assert settings.training.population_size == 24
    assert settings.evaluation.datasets == ("digits", "mnist_offline")
    assert settings.data.preprocess.resize == (14, 14) and settings.data.preprocess.pad.input is None
    assert settings.data.preprocess.dataset_stats["mnist"] == (0.1307, 0.3081)
    assert settings.optimizer.kwargs == {"b1": 0.9, "b2": 0.999, "eps": 1e-6}
    assert settings.model.type == "SGD" and settings.model.sgd.tanh_bound == 10.0
    assert isinstance(settings.model.sgd.tanh_bound, float)  # a YAML integer for a float key
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.training.population_size = 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.model.type = "VSMLRNN"
    with pytest.raises(TypeError):  # read-only mappings
        settings.optimizer.kwargs["b1"] = 0.5


def test_sections_follow_the_rank_resolution():
    config = build_config(
        overrides=[
            "training.dataset={mpi_split: [digits, mnist_offline]}",
            "data.preprocess.rand_proj={mpi_split: [1, 2]}",
        ]
    )
    ranks = [run_settings(resolve_for_rank(config, rank)) for rank in range(2)]
    assert [s.training.dataset for s in ranks] == ["digits", "mnist_offline"]
    assert [s.data.preprocess.rand_proj for s in ranks] == [1, 2]
    assert [s.data_settings.data.preprocess.rand_proj for s in ranks] == [1, 2]


def test_building_validates_and_names_the_key():
    with pytest.raises(ConfigError, match="training.population_size: must be a positive integer, got 0"):
        settings_for("training.population_size=0")
    with pytest.raises(ConfigError, match=r"data.preprocess.resize: must be null or a list of 2 positive integers"):
        data_settings(resolve_for_rank(build_config(overrides=["data.preprocess.resize=[14]"]), 0))
    with pytest.raises(ConfigError, match="data.preprocess.shuffle: must be true, false or an integer seed >= 0"):
        settings_for("data.preprocess.shuffle=maybe")
    assert settings_for("data.preprocess.shuffle=7").data.preprocess.shuffle == 7  # a seed, as the docs promise
    with pytest.raises(ConfigError, match="omniglot_fewshot_dataset.resize: must be"):
        data_settings(resolve_for_rank(build_config(overrides=["omniglot_fewshot_dataset.resize=[0, 4]"]), 0))
    with pytest.raises(ConfigError, match=r"data.filter_classes: must be null or a list of distinct class indices"):
        settings_for("data.filter_classes=[1, 1]")


# --------------------------------------------------------------------------- default.yaml


def _yaml_leaves(tree: dict, prefix: str = ""):
    """``(dotted key, value)`` of every leaf of a YAML tree; an open sub-tree is one leaf."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in OPEN_SUBTREES:
            yield from _yaml_leaves(value, dotted + ".")
        else:
            yield dotted, value


def _yaml_sections(tree: dict, prefix: str = ""):
    """Dotted keys of every mapping in a YAML tree."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield f"{prefix}{key}"
            yield from _yaml_sections(value, f"{prefix}{key}.")


def test_a_layer_may_add_entries_only_below_keys_declared_as_mappings():
    """The config layers' free-form sub-trees come from the declarations (a ``Mapping`` field)."""
    assert "optimizer.kwargs" in open_keys()  # extra optax.adam arguments (e.g. eps) are allowed
    for dotted in _yaml_sections(load_default()):
        if any(dotted == key or dotted.startswith(key + ".") for key in open_keys()):
            build_config(overrides=[f"{dotted}.brand_new_entry=1"])
        else:
            with pytest.raises(ConfigError, match="unknown config key"):
                build_config(overrides=[f"{dotted}.brand_new_entry=1"])


def _as_declared(value):
    """A YAML value written as a declared default is (lists are tuples; a stats entry is (mean, std))."""
    if isinstance(value, list):
        return tuple(_as_declared(v) for v in value)
    if isinstance(value, dict) and set(value) == {"mean", "std"}:
        return (value["mean"], value["std"])
    if isinstance(value, dict):
        return {k: _as_declared(v) for k, v in value.items()}
    return value


def test_default_yaml_lists_the_declared_keys_with_their_defaults():
    text = (ROOT / "configs" / "default.yaml").read_text()
    in_yaml = dict(_yaml_leaves(yaml.safe_load(text)))
    declared = {leaf.key: leaf.default for leaf in leaves(RunSettings)}
    assert sorted(in_yaml) == sorted(declared)
    differing = {key: (in_yaml[key], declared[key]) for key in declared if _as_declared(in_yaml[key]) != declared[key]}
    assert not differing, differing
    assert run_settings(load_default()) == RunSettings()


# --------------------------------------------------------------------------- DESIGN §9


def _design_section_9() -> str:
    design = (ROOT / "docs" / "DESIGN.md").read_text()
    match = re.search(r"<!-- keys: python -m vsml.settings --markdown -->\n(.*?)<!-- end keys -->", design, re.S)
    assert match, "docs/DESIGN.md §9 lost its generated-table markers"
    return match.group(1)


def test_design_key_reference_is_the_generated_one():
    expected = reference_markdown(names_of=registry_names)
    assert _design_section_9() == expected, "run: python -m vsml.settings --markdown (docs/DESIGN.md §9)"


def test_the_settings_layer_imports_no_component():
    """Checking and building every section imports no registry (the run checks do that, §8)."""
    code = (
        "import sys; from vsml.config import build_config, resolve_for_rank; from vsml.settings import run_settings; "
        "run_settings(resolve_for_rank(build_config(), 0)); "
        "print(sorted(m for m in sys.modules if m.startswith(('vsml.meta', 'vsml.learners', 'vsml.data'))))"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert shown.strip() == "[]"


def test_registry_names_are_checked_before_the_run_in_one_line():
    config = build_config(overrides=["optimizer.type=adam"])
    with pytest.raises(ConfigError, match=r"^optimizer.type: must be one of es, metagrad, pes, nres, sgd, got 'adam'$"):
        check_config(config, SingleProcessComm())
    for name in ("metagrad", "sgd"):  # sgd: the old name, still accepted
        check_names(run_settings(resolve_for_rank(build_config(overrides=[f"optimizer.type={name}"]), 0)))


# --------------------------------------------------------------------------- key names live here only


def _code_strings(path: Path):
    """``(line, text)`` of the string constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_module_outside_the_settings_layer_names_a_config_key():
    dotted = set()
    for leaf in leaves(RunSettings):
        parts = leaf.key.split(".")
        dotted |= {".".join(parts[:end]) for end in range(2, len(parts) + 1)}
    pattern = re.compile(r"(?<![\w.])(" + "|".join(sorted(map(re.escape, dotted), key=len, reverse=True)) + r")(?!\w)")
    offenders = []
    for path in sorted((ROOT / "vsml").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name.startswith("vsml/settings/"):
            continue
        offenders += [f"{name}:{line}: {key}" for line, text in _code_strings(path) for key in pattern.findall(text)]
    assert not offenders, "name the key through vsml.settings (SettingError, key_of):\n" + "\n".join(offenders)


# --------------------------------------------------------------------------- adding a key


def test_a_new_key_is_one_declaration_checked_typed_and_documented():
    """The recipe of docs/DESIGN.md §10: declare the field; everything else follows."""

    warmup = ("warmup", int, setting(0, "generations before the first update", NON_NEGATIVE_INT))
    with_warmup = dataclasses.make_dataclass("WithWarmup", [warmup], bases=(TrainingSettings,), frozen=True)
    training = ("training", with_warmup, section(with_warmup))
    Root = dataclasses.make_dataclass("Root", [training], bases=(RunSettings,), frozen=True)

    config = resolve_for_rank(build_config(), 0)
    typed = build(Root, {**config, "training": {**config["training"], "warmup": 5}})
    assert typed.training.warmup == 5 and typed.training.population_size == 1024
    assert build(Root, config).training.warmup == 0  # the default when the key is not given
    with pytest.raises(ConfigError, match=r"^training.warmup: must be a non-negative integer, got -1$"):
        build(Root, {**config, "training": {**config["training"], "warmup": -1}})
    with pytest.raises(ConfigError, match=r"^training.warmup: must be an integer, got 'soon'$"):
        build(Root, {**config, "training": {**config["training"], "warmup": "soon"}})
    row = next(line for line in reference_markdown(Root).splitlines() if "`training.warmup`" in line)
    assert "generations before the first update" in row and "a non-negative integer" in row
