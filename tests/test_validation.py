"""Bad input is refused up front: one line naming the problem, no traceback, exit status 2."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import launch
from tests.conftest import TINY
from vsml import config as C

BAD_OVERRIDES = [
    ("training.population_size=-4", "training.population_size: must be a positive integer, got -4"),
    ("training.population_size=0", "training.population_size: must be a positive integer"),
    ("training.population_size=2.5", "training.population_size: must be an integer, got 2.5"),
    ("training.episode_length=0", "training.episode_length: must be a positive integer"),
    ("training.batch_size=true", "training.batch_size: must be an integer, got True"),
    ("training.iterations=-1", "training.iterations: must be a non-negative integer"),
    ("training.pairs_per_chunk=0", "training.pairs_per_chunk: must be auto, null or a positive integer, got 0"),
    ("training.pairs_per_chunk=2.0", "training.pairs_per_chunk: must be auto, null or a positive integer, got 2.0"),
    ("training.pairs_per_chunk=many", "training.pairs_per_chunk: must be auto, null or a positive integer, got 'many'"),
    ("runtime.compilation_cache=''", "runtime.compilation_cache: must be a non-empty string, got ''"),
    ("training.loss_type=median", "training.loss_type: must be one of mean, last"),
    ("training.dataset=mnsit", "unknown dataset 'mnsit'"),
    ("training.dataset=5", "training.dataset: must be a string, got 5"),
    ("evaluation.datasets=digits", "evaluation.datasets: must be a list, got 'digits'; write [digits]"),
    ("training.iterations=1e3", "training.iterations: must be an integer, got 1000.0; write 1000"),
    ("training.pairs_per_chunk=2.0", "got 2.0; write 2"),
    ("evaluation.datasets=[digits, nope]", "unknown dataset 'nope'"),
    ("evaluation.count=0", "evaluation.count: must be a positive integer"),
    ("evaluation.subset=validation", "evaluation.subset: must be one of train, test"),
    ("summary.frequency=4", "evaluation.frequency (2) must be a multiple of summary.frequency (4)"),
    ("summary.frequency=0", "summary.frequency: must be a positive integer"),
    ("checkpoint.frequency=-5", "checkpoint.frequency: must be a positive integer"),
    ("checkpoint.keep=0", "checkpoint.keep: must be null or a positive integer"),
    ("optimizer.noise_std=0", "optimizer.noise_std: must be a positive finite number, got 0"),
    ("optimizer.noise_std=-0.1", "optimizer.noise_std: must be a positive finite number"),
    ("optimizer.lr=.inf", "optimizer.lr: must be a positive finite number, got inf"),
    ("optimizer.lr=fast", "optimizer.lr: must be a positive finite number, got 'fast'"),
    ("model.sgd.tanh_bound=-1", "model.sgd.tanh_bound: must be a positive finite number, got -1"),
    ("model.nodepert.perturbation=edge", "model.nodepert.perturbation: must be one of node, weight, got 'edge'"),
    ("model.sgd.num_layers=0", "model.sgd.num_layers: must be a positive integer, got 0"),
    ("model.meta_rnn.slow_size=0", "model.meta_rnn.slow_size: must be a positive integer, got 0"),
    ("model.fwp.fast_size=-3", "model.fwp.fast_size: must be a positive integer, got -3"),
    ("model.vsml_rnn.state_dtype=float16", "model.vsml_rnn.state_dtype: must be one of float32, bfloat16"),
    ("optimizer.kwargs.b1=1.0", "optimizer.kwargs.b1: must be a number in [0, 1)"),
    ("optimizer.clip_gradnorm=-1", "optimizer.clip_gradnorm: must be a non-negative finite number"),
    ("optimizer.fitness_shaping=rank", "optimizer.fitness_shaping: must be one of raw, centered_rank"),
    ("optimizer.type=adam", "optimizer.type: must be one of es, metagrad, pes, nres, sgd, got 'adam'"),
    ("model.type=Nope", "model.type: must be one of VSMLRNN, MetaRNN"),
    ("model.sub_rnn.msg_size=1", "model.sub_rnn.msg_size: must be an integer >= 2"),
    ("model.sub_rnn.slow_size=0", "model.sub_rnn.slow_size: must be a positive integer"),
    ("model.sub_rnn.init_rand_proportion=1.5", "model.sub_rnn.init_rand_proportion: must be a number in [0, 1]"),
    ("model.sub_rnn.init_scale=0", "model.sub_rnn.init_scale: must be a positive finite number, got 0"),
    ("model.sub_rnn.layer_norm=yes please", "model.sub_rnn.layer_norm: must be true or false"),
    ("model.vsml_rnn.num_micro_ticks=0", "model.vsml_rnn.num_micro_ticks: must be a positive integer"),
    ("model.vsml_rnn.output_idx=4", "model.vsml_rnn.output_idx: must be below model.sub_rnn.msg_size (4)"),
    ("model.vsml_rnn.layer_specs=[]", "model.vsml_rnn.layer_specs: must be a non-empty list"),
    ("model.vsml_rnn.layer_specs=[{type: dense}, {type: dense}]", "layer_specs[0]: a hidden layer needs 'size'"),
    ("model.vsml_rnn.layer_specs=[{type: dense, size: -3}, {type: dense}]", "a positive integer, got -3"),
    ("model.vsml_rnn.layer_specs=[{type: dense, size: 10}]", "the last layer's size is the number of classes"),
    ("random_dataset.img_size=[28, 0, 1]", "random_dataset.img_size: must be a list of positive integers"),
    ("sum_dataset.input_size=[-2]", "sum_dataset.input_size: must be a list of positive integers"),
    ("logging.wandb=sometimes", "logging.wandb: must be one of offline, online, disabled"),
    ("data.preprocess.normalization_mode=zscore", "normalization_mode: must be one of dataset_standard"),
    ("data.preprocess.dataset_stats.digits.std=0", "data.preprocess.dataset_stats.digits: must be {mean: number"),
    ("seed=-1", "seed: must be a non-negative integer"),
    ("call=fit", "call: must be one of train, evaluate"),
    ("training.populaton_size=8", "did you mean 'training.population_size'?"),
    ("training=5", "training"),
    ("noequals", "noequals"),
]


@pytest.mark.parametrize("override,message", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_override_is_refused_with_one_clear_line(override, message, capsys, tmp_path):
    # zero iterations and a scratch run directory: a case that wrongly passed would finish at once
    status = launch.main(["--run_dir", str(tmp_path), "--config", *TINY, "training.iterations=0", override])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_files_and_command_lines(tmp_path, capsys):
    malformed = tmp_path / "bad.yaml"
    malformed.write_text("training:\n  population_size: [1, 2\n")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"array": [{"seed": 1}, {"seed": 2}]}))
    cases = [
        (["--config_files", str(tmp_path / "missing.yaml")], "missing.yaml"),
        (["--config_files", str(malformed)], "is not valid YAML (line "),
        (["--array", str(sweep), "--task", "3"], "3"),
        (["--resume", str(tmp_path)], "no config.yaml there"),
        (["--task", "1"], "--task"),
    ]
    for args, message in cases:
        status = launch.main([*args, "--run_dir", str(tmp_path / "run"), "--config", *TINY, "training.iterations=0"])
        err = capsys.readouterr().err
        assert status == 2, args
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)


# --------------------------------------------------------------------------- properties

leaf_keys = st.sampled_from(["seed", "training.iterations", "evaluation.count", "training.batch_size"])
small_ints = st.integers(min_value=0, max_value=1000)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(leaf_keys, small_ints), max_size=8))
def test_later_layers_win_and_dotted_equals_nested(layers):
    overrides = [f"{key}={value}" for key, value in layers]
    built = C.build_config(overrides=overrides)
    expected = {}
    for key, value in layers:
        expected[key] = value
    for key, value in expected.items():
        assert C.get(built, key) == value
    nested = {}
    for key, value in layers:
        section, _, leaf = key.rpartition(".")
        target = nested.setdefault(section, {}) if section else nested
        target[leaf] = value
    assert C.build_config(base=C.build_config(), overrides=()) == C.build_config()
    assert C.apply_layer(C.build_config(), nested, C.load_default(), "test") == built


@settings(max_examples=60, deadline=None)
@given(options=st.lists(small_ints, min_size=1, max_size=5), repeat=st.integers(1, 4), rank=st.integers(0, 63))
def test_mpi_split_picks_by_rank_and_repeat(options, repeat, rank):
    built = C.build_config(overrides=[f"seed={{mpi_split: {options}, mpi_repeat: {repeat}}}"])
    resolved = C.resolve_for_rank(built, rank)
    assert resolved["seed"] == options[(rank // repeat) % len(options)]
    # every rank in one block of `repeat` consecutive ranks sees the same value
    block_start = rank - rank % repeat
    assert all(
        C.resolve_for_rank(built, r)["seed"] == resolved["seed"] for r in range(block_start, block_start + repeat)
    )
    assert C.is_split(built["seed"])  # resolution never mutates the layered config
