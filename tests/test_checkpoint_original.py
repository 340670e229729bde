"""The original release's model.chkp: read without running code from it, and the same outputs.

The files under tests/data/original/ were written by the original release's own code
(tests/data/original/README.md says how): its ``Experiment.checkpoint`` pickle after two ES
updates, and its model's logits on fixed inputs. They are the independent expectation here.
"""

from __future__ import annotations

import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import launch
from tests.conftest import ROOT, TINY, checkpoint_arrays
from vsml import checkpoint, checkpoint_original, convert_original
from vsml.checkpoint_base import key_name
from vsml.comm import SingleProcessComm
from vsml.config import build_config
from vsml.learners import build_learner
from vsml.learners import vsml as vsml_learner
from vsml.meta.sliced import make_optimizer
from vsml.run_checks import resolve_restore
from vsml.settings import run_settings

DATA = ROOT / "tests" / "data" / "original"
HIDDEN = "model.vsml_rnn.layer_specs=[{type: dense, size: 3}, {type: dense}]"
# This project's keys for each case's overrides of the original's configs/default.yaml (see the generator).
CASE_CONFIG = {
    "vsml": ["model.sub_rnn.msg_size=4", "model.sub_rnn.slow_size=4", HIDDEN],
    "vsml_options": [
        "model.sub_rnn.msg_size=4",
        "model.sub_rnn.slow_size=4",
        "model.sub_rnn.init_rand_proportion=0.0",
        "model.sub_rnn.layer_norm=true",
        HIDDEN,
        "model.vsml_rnn.backward_pass=true",
        "model.vsml_rnn.separate_backward_rnn=true",
        "model.vsml_rnn.layerwise_rnns=true",
        "model.vsml_rnn.feed_label=true",
    ],
}


def _case(name):
    config = build_config(overrides=CASE_CONFIG[name])
    settings = run_settings(config)
    spec = vsml_learner.spec_from_config(settings.model)
    template = vsml_learner.init(jax.random.PRNGKey(0), spec)
    opt = settings.optimizer
    opt_template = make_optimizer(opt.lr, opt.kwargs, opt.clip_gradnorm).init(template)
    with np.load(DATA / name / "outputs.npz") as data:
        outputs = {key: data[key] for key in data.files}
    return config, spec, template, opt_template, outputs


def test_case_configs_are_the_generators():
    """The two sides describe the same models (the generator's overrides, in this project's keys)."""
    for name in CASE_CONFIG:
        overrides = json.loads(str(np.load(DATA / name / "outputs.npz")["overrides"]))
        model = build_config(overrides=CASE_CONFIG[name])["model"]
        for key, value in overrides.items():
            _, section, field = key.split(".")
            if field == "layer_specs":
                assert [spec.get("out_size") for spec in value] == [s.get("size") for s in model[section][field]]
            else:
                assert model[section][field] == value, key


def test_original_vsml_gives_the_originals_logits_from_the_same_initial_cells():
    """The paper's VSML model (two dense layers here) with random initial cells: the original drew them
    with haiku's RNG, so the episode starts from the cells it recorded; the rest is this project's code."""
    _, spec, template, _, outputs = _case("vsml")
    params = checkpoint.restore(DATA / "vsml" / "model.chkp", template)["params"]
    inputs, labels = jnp.asarray(outputs["inputs"]), jnp.asarray(outputs["labels"])
    states, bwd_ins = vsml_learner.initial_carry(jax.random.PRNGKey(0), spec, inputs.shape[-1:], labels.shape[-1], 1)
    states = tuple((hidden, jnp.asarray(outputs[f"initial_cell_{i}"])[None]) for i, (hidden, _) in enumerate(states))
    step = vsml_learner.make_time_step(jax.tree_util.tree_map(jnp.asarray, params), spec)
    _, logits = jax.lax.scan(step, (states, bwd_ins), (inputs, labels))
    assert np.abs(outputs["logits"]).max() > 1e-3  # not a trivially zero output
    np.testing.assert_allclose(logits, outputs["logits"], rtol=2e-5, atol=1e-6)


def test_original_vsml_with_every_option_gives_the_originals_logits_through_the_learner():
    """Layer norm, layer-wise and separate backward sub-RNNs, feed_label, a backward pass; zero
    initial cells on both sides (init_rand_proportion 0), so the learner a run builds is compared whole."""
    config, _, template, _, outputs = _case("vsml_options")
    assert all(not outputs[f"initial_cell_{i}"].any() for i in range(2))
    params = checkpoint.restore(DATA / "vsml_options" / "model.chkp", template)["params"]
    assert len(params["forward"]) == 2 and len(params["backward"]) == 2 and "ln_bwd_scale" in params["forward"][1]
    learner = build_learner(config["model"])
    logits = learner.run(params, jax.random.PRNGKey(0), outputs["inputs"], outputs["labels"])
    np.testing.assert_allclose(logits, outputs["logits"], rtol=2e-5, atol=1e-6)


def test_original_meta_rnn_gives_the_originals_logits():
    """The MetaRNN baseline: haiku's LSTM adds +1 to the forget gate, this project's bias holds it."""
    with np.load(DATA / "meta_rnn" / "outputs.npz") as data:
        outputs = {key: data[key] for key in data.files}
    assert json.loads(str(outputs["overrides"])) == {"model.type": "MetaRNN", "model.meta_rnn.slow_size": 4}
    config = build_config(overrides=["model.type=MetaRNN", "model.meta_rnn.slow_size=4"])
    learner = build_learner(config["model"], outputs["inputs"].shape[2:], outputs["labels"].shape[-1])
    template = learner.init(jax.random.PRNGKey(0))
    opt = run_settings(config).optimizer
    opt_template = make_optimizer(opt.lr, opt.kwargs, opt.clip_gradnorm).init(template)
    restored = checkpoint.restore(DATA / "meta_rnn" / "model.chkp", template, opt_template)
    logits = learner.run(restored["params"], jax.random.PRNGKey(0), outputs["inputs"], outputs["labels"])
    np.testing.assert_allclose(logits, outputs["logits"], rtol=2e-5, atol=1e-6)
    assert restored["adam_continues"] and restored["step"] == 2
    vsml_template = _case("vsml")[2]
    with pytest.raises(checkpoint.CheckpointError, match="holds the original's MetaRNN; set model.type: MetaRNN"):
        checkpoint.restore(DATA / "meta_rnn" / "model.chkp", vsml_template)


def test_adam_state_maps_onto_this_projects_adam():
    """The generator ran two ES updates: Adam's count is 2 and its moments sit where the parameters do."""
    _, _, template, opt_template, _ = _case("vsml_options")
    restored = checkpoint.restore(DATA / "vsml_options" / "model.chkp", template, opt_template)
    assert restored["adam_continues"] and restored["step"] == 2
    (adam,) = [s for s in jax.tree_util.tree_leaves(restored["opt_state"], is_leaf=checkpoint_original._is_adam)]
    assert int(adam.count) == 2
    assert jax.tree_util.tree_structure(adam.mu) == jax.tree_util.tree_structure(template)
    nu = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(adam.nu)])
    mu = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(adam.mu)])
    # After two steps from zero: mu = (1-b1)(b1 g1 + g2), nu = (1-b2)(b2 g1² + g2²); by Cauchy-Schwarz
    # mu² ≤ (1-b1)² (b1²/b2 + 1) nu / (1-b2), elementwise, only if mu and nu come from the same entries.
    b1, b2 = 0.9, 0.999
    assert (nu >= 0).all() and nu.max() > 0
    assert (mu**2 <= (1 - b1) ** 2 * (b1**2 / b2 + 1) / (1 - b2) * nu * (1 + 1e-4) + 1e-30).all()


@pytest.mark.parametrize(
    "override, fix",
    [
        ("model.sub_rnn.msg_size=8", "set model.sub_rnn.msg_size: 4 and model.sub_rnn.slow_size: 4"),
        ("model.sub_rnn.layer_norm=false", "model.sub_rnn.layer_norm: True"),
        ("model.vsml_rnn.layerwise_rnns=false", "holds 4 sub-RNN parameter set(s), this config uses 1 forward + 1"),
    ],
)
def test_a_config_that_does_not_fit_the_file_is_one_line_with_the_fix(override, fix):
    config = build_config(overrides=[*CASE_CONFIG["vsml_options"], override])
    template = build_learner(config["model"]).init(jax.random.PRNGKey(0))
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.restore(DATA / "vsml_options" / "model.chkp", template)
    assert fix in str(err.value) and "model.chkp" in str(err.value) and "\n" not in str(err.value)


def test_a_file_missing_a_module_names_it(tmp_path):
    """Also: a pickle of plain numpy arrays (no jax, no optax) loads like the original's files."""
    params = checkpoint_original.load(DATA / "vsml" / "model.chkp")["params"]
    del params["vsmlrnn/~/sub_rnn/~/linear_1"]
    partial = tmp_path / "model.chkp"
    partial.write_bytes(pickle.dumps({"params": params, "opt_state": None}))
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.restore(partial, _case("vsml")[2])
    assert "has no 'vsmlrnn/~/sub_rnn/~/linear_1' 'w'" in str(err.value) and str(partial) in str(err.value)


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "model.chkp"
    evil.write_bytes(pickle.dumps({"params": RunsCode(), "opt_state": None}))
    template = build_learner(build_config(overrides=TINY)["model"]).init(jax.random.PRNGKey(0))
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.restore(evil, template)
    message = str(err.value)
    assert "\n" not in message and str(evil) in message and f"{os.system.__module__}.system" in message
    assert not marker.exists()
    # the same refusal for a builtin that would evaluate text
    evil.write_bytes(b"\x80\x04cbuiltins\neval\n(V__import__('os').system('touch " + str(marker).encode() + b"')\ntR.")
    with pytest.raises(checkpoint.CheckpointError, match="builtins.eval"):
        checkpoint.restore(evil, template)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, words",
    [
        (lambda good: good[: len(good) // 2], "cannot read"),
        (lambda good: b"\x80\x04" + bytes(range(256)) * 4, "cannot read"),
        (lambda good: b"not a checkpoint at all", "cannot read checkpoint"),
        (lambda good: pickle.dumps({"weights": [1, 2]}), "is not a checkpoint of the original release"),
    ],
)
def test_truncated_or_foreign_files_are_one_line(tmp_path, content, words):
    good = (DATA / "vsml" / "model.chkp").read_bytes()
    bad = tmp_path / "model.chkp"
    bad.write_bytes(content(good))
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.restore(bad, _case("vsml")[2])
    assert words in str(err.value) and str(bad) in str(err.value) and "\n" not in str(err.value)


def test_a_run_directory_with_model_chkp_needs_file_name(tmp_path):
    (tmp_path / "model.chkp").write_bytes((DATA / "vsml" / "model.chkp").read_bytes())
    template = _case("vsml")[2]
    with pytest.raises(checkpoint.CheckpointError, match="set checkpoint.restore.file_name: model.chkp"):
        checkpoint.restore(tmp_path, template)
    restored = checkpoint.restore(tmp_path, template, file_name="model.chkp")["params"]
    direct = checkpoint.restore(DATA / "vsml" / "model.chkp", template)["params"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored, direct)


def test_run_path_with_file_name_model_chkp_finds_it_in_a_local_wandb_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    files = tmp_path / "wandb" / "offline-run-20210601_120000-abc123" / "files"
    files.mkdir(parents=True)
    (files / "model.chkp").write_bytes((DATA / "vsml" / "model.chkp").read_bytes())
    restore = ["checkpoint.restore.run_path=me/vsml/abc123", "checkpoint.restore.file_name=model.chkp"]
    config = build_config(overrides=[*TINY, *restore])
    path = resolve_restore(config, SingleProcessComm(), tmp_path / "run")["checkpoint"]["restore"]["path"]
    assert path == str((files / "model.chkp").resolve())
    template = _case("vsml")[2]
    restored = checkpoint.restore(path, template)["params"]
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, restored, checkpoint.restore(DATA / "vsml" / "model.chkp", template)["params"]
    )


def test_conversion_command_writes_this_projects_checkpoint(tmp_path, capsys):
    out = tmp_path / "converted.npz"
    arguments = [str(DATA / "vsml_options" / "model.chkp"), "--config", *CASE_CONFIG["vsml_options"]]
    assert convert_original.main([*arguments, "--out", str(out)]) == 0
    _, _, template, opt_template, _ = _case("vsml_options")
    converted = checkpoint.restore(out, template, opt_template)
    direct = checkpoint.restore(DATA / "vsml_options" / "model.chkp", template, opt_template)
    assert converted["step"] == 2 and "layer_norm: true" in converted["config"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, converted["params"], direct["params"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, converted["opt_state"], direct["opt_state"])
    capsys.readouterr()
    assert convert_original.main([*arguments[:1], "--out", str(tmp_path / "other.npz")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "set model.sub_rnn.msg_size: 4" in err
    assert not (tmp_path / "other.npz").exists()


# VSML's meta-parameters fit any layer sizes: the runs use TINY's single layer (less to compile).
TINY_RUN = [*TINY, "training.iterations=1", "training.pairs_per_chunk=null"]


def test_training_continues_from_model_chkp_with_its_adam(tmp_path, capsys):
    """One generation with test-size settings from the original's file: its parameters move, and its
    Adam goes on from step 2."""
    chkp, run_dir = DATA / "vsml" / "model.chkp", tmp_path / "train"
    config = [*TINY_RUN, f"logging.dir={tmp_path / 'runs'}", f"checkpoint.restore.path={chkp}"]
    assert launch.main(["--run_dir", str(run_dir), "--config", *config]) == 0
    assert "continuing the original release's Adam state (step 2)" in capsys.readouterr().out
    start = checkpoint.restore(chkp, _case("vsml")[2])["params"]
    trained = checkpoint_arrays(run_dir)
    moved = [not np.allclose(trained["params/" + "/".join(path)], leaf) for path, leaf in _paths(start)]
    assert any(moved) and int(checkpoint_arrays(run_dir, "opt_state/")["opt_state/0/count"]) == 3


def test_evaluate_reads_model_chkp_from_a_run_directory(tmp_path):
    run = tmp_path / "original-run"
    run.mkdir()
    (run / "model.chkp").write_bytes((DATA / "vsml" / "model.chkp").read_bytes())
    config = [
        *TINY_RUN,
        "call=evaluate",
        f"checkpoint.restore.path={run}",
        "checkpoint.restore.file_name=model.chkp",
    ]
    assert launch.main(["--run_dir", str(tmp_path / "eval"), "--config", *config]) == 0
    row = json.loads((tmp_path / "eval" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["step"] == 2 and 0.0 <= row["eval/digits/accuracy"] <= 1.0


def _paths(tree):
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [([key_name(entry) for entry in path], leaf) for path, leaf in leaves]


def test_api_load_of_model_chkp_says_how_to_convert_it():
    """vsml.api.load needs a file with its config; a model.chkp has none: one line with the command."""
    from vsml import api

    with pytest.raises(checkpoint.CheckpointError) as err:
        api.load(DATA / "vsml" / "model.chkp")
    assert "python -m vsml.convert_original" in str(err.value) and "\n" not in str(err.value)
