"""The learner registry: every learner is built and run through it alone, its properties hold,
and no code outside vsml/learners/ dispatches on learner names."""

from __future__ import annotations

import ast
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.test_learners import BATCH, CLASSES, INPUT_SHAPE, STEPS, episode, model_config
from vsml.config import load_default
from vsml.learners import LEARNER_TYPES, learner_type
from vsml.settings import model_settings

ROOT = Path(__file__).resolve().parent.parent
TINY_VSML = ["model.sub_rnn.slow_size=4", "model.sub_rnn.msg_size=3", "model.vsml_rnn.num_micro_ticks=1"]


def registered(name: str):
    kind = learner_type(name)
    return kind, kind.build(model_config(name, *TINY_VSML), INPUT_SHAPE, CLASSES)


@pytest.mark.parametrize("name", list(LEARNER_TYPES))
def test_every_registered_learner_builds_and_runs_from_the_registry(name):
    kind, learner = registered(name)
    params = learner.init(jax.random.PRNGKey(0))
    logits = np.asarray(jax.jit(learner.run)(params, jax.random.PRNGKey(1), *episode()))
    assert logits.shape == (STEPS, BATCH, CLASSES) and np.all(np.isfinite(logits))
    # The declared size property: the same meta-parameters on other data sizes.
    other = episode(shape=(5,), classes=CLASSES + 2)
    if kind.any_size:
        assert np.asarray(learner.run(params, jax.random.PRNGKey(1), *other)).shape == (STEPS, BATCH, CLASSES + 2)
    else:
        with pytest.raises(ValueError, match="built for inputs of shape"):
            learner.run(params, jax.random.PRNGKey(1), *other)


def test_every_registered_section_is_in_the_default_config():
    model_defaults = load_default()["model"]
    for kind in LEARNER_TYPES.values():
        for section in (kind.section, *kind.extra_sections):
            assert isinstance(model_defaults.get(section), dict), (kind.name, section)


def test_run_options_change_speed_not_results_and_unknown_ones_are_refused():
    kind = learner_type("VSMLRNN")
    spec = kind.spec_from_config(model_settings(model_config("VSMLRNN", *TINY_VSML)))
    plain = kind.bind(spec)
    params = plain.init(jax.random.PRNGKey(0))
    inputs, labels = episode()
    expected = np.asarray(plain.run(params, jax.random.PRNGKey(1), inputs, labels))
    for options in ({"unroll": 3}, {"implementation": "literal"}):
        got = kind.bind(spec, **options).run(params, jax.random.PRNGKey(1), inputs, labels)
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5, err_msg=str(options))
    with pytest.raises(ValueError, match=r"VSMLRNN has no run option\(s\) \['unrol'\]; it has \['unroll'"):
        kind.bind(spec, unrol=2)
    # SGD's only run option is the meta-gradient's backprop plan (every learner's episode scan takes it).
    with pytest.raises(ValueError, match=r"SGD has no run option\(s\) \['unroll'\]; it has \['backprop_plan'\]"):
        learner_type("SGD").build(model_config("SGD"), INPUT_SHAPE, CLASSES, unroll=2)


def _compared_names(path: Path) -> set[str]:
    """String literals that take part in a comparison (``==``, ``!=``, ``in`` ...) in ``path``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                names |= {
                    leaf.value
                    for leaf in ast.walk(operand)
                    if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str)
                }
    return names


def test_no_code_outside_the_learners_compares_learner_names():
    """Dispatch goes through the registry: nothing outside vsml/learners/ compares a name to a learner's."""
    sources = [*(ROOT / "vsml").rglob("*.py"), *(ROOT / "bench").rglob("*.py"), ROOT / "launch.py"]
    offenders = {
        str(path.relative_to(ROOT)): sorted(_compared_names(path) & set(LEARNER_TYPES))
        for path in sources
        if "learners" not in path.parts
    }
    assert not {path: names for path, names in offenders.items() if names}


def test_no_learner_module_imports_vsml_but_vsmls_own_and_the_registry():
    allowed = {"vsml.py", "vsml_reference.py", "__init__.py"}
    for path in (ROOT / "vsml" / "learners").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "vsml.learners"
            for alias in node.names
        }
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        if path.name not in allowed:
            assert "vsml" not in imported and "vsml.learners.vsml" not in imported, path.name
