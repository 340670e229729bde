"""The original release's (louiskirsch/vsml-neurips2021) command lines, sweep files and wandb restores.

The commands and sweep files below are copied verbatim from the original
release's README and configs/array/; they are the independent reference here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

import launch
from tests.conftest import HANG_GUARD_S, ROOT, TINY
from vsml import checkpoint
from vsml.config import build_config, load_default, to_yaml
from vsml.learners import build_learner
from vsml.meta import MetaState
from vsml.run_checks import resolve_restore
from vsml.runlog import RunLog
from vsml.sweeps import sweep_tasks

# The original README's Section 4.2 / 4.4 commands, as printed there.
ORIGINAL_COMMANDS = [
    "slurm/schedule.py --array=1-11 --nodes=128 --time 04:00:00 -- python3 launch.py --array configs/array/datasets.yaml",
    "slurm/schedule.py --array=1-11 --nodes=32 --time 04:00:00 -- python3 launch.py --array configs/array/datasets.yaml --config_files configs/{metarnn,pad}.yaml --tags metarnn",
    "slurm/schedule.py --array=1-11 --nodes=32 --time 04:00:00 -- python3 launch.py --array configs/array/datasets.yaml --config_files configs/{fwmemory,pad}.yaml --tags fwmemory",
    "slurm/schedule.py --array=1-4 --nodes=2 --time 00:15:00 -- python3 launch.py --array configs/array/sgd.yaml --config_files configs/sgd.yaml --tags sgd",
    "slurm/schedule.py --array=1-11 --nodes=32 --time 04:00:00 -- python3 launch.py --array configs/array/datasets.yaml --config_files configs/{hebbian,pad}.yaml --tags hebbian",
    "slurm/schedule.py --nodes=128 --time 04:00:00 -- python3 launch.py --config_files configs/rand_proj.yaml",
    "python3 launch.py --config_files configs/{rand_proj,backprop}.yaml",
]
# What each command's run must be: (model.type, tags in config.yaml, SLURM_ARRAY_TASK_ID or None).
# datasets.yaml tags its tasks as the original did: datasets, mnist-family, then the task's own.
FAMILY = ["datasets", "mnist-family"]
EXPECTED = [
    ("VSMLRNN", [*FAMILY, "no-fashion-mnist"], "8"),
    ("MetaRNN", [*FAMILY, "all", "metarnn"], "6"),
    ("FWMemory", [*FAMILY, "mnist", "fwmemory"], "1"),
    ("SGD", ["sgd"], "2"),
    ("HebbianFW", [*FAMILY, "no-kmnist", "hebbian"], "11"),
    ("VSMLRNN", [], None),
    ("VSMLRNN", [], None),
]
# Appended to every command: offline data, tiny sizes, no wandb.
OFFLINE = [
    *TINY,
    "training.iterations=1",
    "training.population_size=2",
    "evaluation.count=1",
    "model.meta_rnn.slow_size=8",
    "model.fw_memory.slow_size=8",
    "model.fw_memory.memory_size=4",
    "model.sgd.hidden_size=16",
    "training.pairs_per_chunk=null",
]

# configs/array/sgd.yaml and configs/array/conv.yaml of the original release, verbatim.
ORIGINAL_SGD_SWEEP = """\
grid:
  - - config:
        model:
          sgd:
            num_layers: 1
    - config:
        model:
          sgd:
            num_layers: 2
  - - config:
        model:
          sgd:
            optimizer: 'sgd'
            lr: 0.01
    - config:
        model:
          sgd:
            optimizer: 'adam'
            lr: 0.001
"""
ORIGINAL_CONV_SWEEP = """\
grid:
  - - config:
        model:
          vsml_rnn:
            backward_pass: True
            layerwise_rnns: False
            feed_label: True
          sub_rnn:
            layer_norm: True
      tags:
        - conv
  - - config:
        model:
          vsml_rnn:
            layer_specs:
              - type: conv
                kernel_size: 3
                stride: 2
                out_channels: 8
              - type: dense
      tags:
        - 1-conv
    - config:
        model:
          vsml_rnn:
            layer_specs:
              - type: conv
                kernel_size: 3
                stride: 2
                out_channels: 8
              - type: conv
                kernel_size: 3
                stride: 2
                out_channels: 8
              - type: conv
                kernel_size: 3
                stride: 2
                out_channels: 8
              - type: dense
      tags:
        - 3-conv
"""
CONV = {"type": "conv", "kernel_size": 3, "stride": 2, "out_channels": 8}


def _words(command: str) -> list[str]:
    """The command's words after bash's brace expansion (``configs/{a,b}.yaml``)."""
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], capture_output=True, text=True, check=True)
    return out.stdout.split("\0")[:-1]


def _launch_args(command: str) -> list[str]:
    words = _words(command)
    return words[words.index("launch.py") + 1 :]


# ---------------------------------------------------------------- sweep files


def test_original_sgd_sweep_loads_unchanged_first_axis_fastest(tmp_path):
    path = tmp_path / "sgd.yaml"
    path.write_text(ORIGINAL_SGD_SWEEP)
    runs = []
    for task in range(1, 5):
        sgd = build_config(["configs/sgd.yaml"], array_file=path, task=task)["model"]["sgd"]
        runs.append((sgd["num_layers"], sgd["optimizer"], sgd["lr"]))
    assert runs == [(1, "sgd", 0.01), (2, "sgd", 0.01), (1, "adam", 0.001), (2, "adam", 0.001)]
    # our copy (header comments added) has the same tasks
    ours = yaml.safe_load((ROOT / "configs/array/sgd.yaml").read_text())
    assert sweep_tasks(ours) == sweep_tasks(yaml.safe_load(ORIGINAL_SGD_SWEEP))


def test_original_conv_sweep_loads_unchanged_with_its_tags(tmp_path):
    path = tmp_path / "conv.yaml"
    path.write_text(ORIGINAL_CONV_SWEEP)
    tasks = sweep_tasks(yaml.safe_load(ORIGINAL_CONV_SWEEP))
    assert [task.tags for task in tasks] == [("conv", "1-conv"), ("conv", "3-conv")]
    for task, convs in ((1, 1), (2, 3)):
        config = build_config(["configs/test.yaml"], array_file=path, task=task, tags=["cli"])
        vsml_rnn = config["model"]["vsml_rnn"]
        assert vsml_rnn["layer_specs"] == [CONV] * convs + [{"type": "dense"}]
        assert vsml_rnn["backward_pass"] and vsml_rnn["feed_label"] and not vsml_rnn["layerwise_rnns"]
        assert config["model"]["sub_rnn"]["layer_norm"] is True
        assert config["logging"]["tags"] == ["conv", f"{convs}-conv", "cli"]
    ours = yaml.safe_load((ROOT / "configs/array/conv.yaml").read_text())
    assert sweep_tasks(ours) == tasks


def test_tags_and_job_type_reach_wandb_and_config_yaml(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"array": [{"config": {"seed": 3}, "tags": ["from-file"]}]}))
    config = build_config(["configs/test.yaml"], array_file=sweep, task=1, tags=["from-cli"], job_type="eval")
    log = RunLog(tmp_path / "run", config, to_yaml(config), wandb_mode="offline")
    try:
        assert tuple(log._wandb.tags) == ("from-file", "from-cli")
        assert log._wandb.job_type == "eval"
    finally:
        log.close()
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["logging"]["tags"] == ["from-file", "from-cli"] and saved["logging"]["job_type"] == "eval"


# ---------------------------------------------------------------- the README's commands


def _run_original_command(tmp_path, monkeypatch, capsys, number, generations):
    model_type, tags, array_task = EXPECTED[number]
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    if array_task is not None:  # what Slurm sets in array task N
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", array_task)
    run_dir = tmp_path / "run"
    status = launch.main(
        [
            *_launch_args(ORIGINAL_COMMANDS[number]),
            "--run_dir",
            str(run_dir),
            "--config",
            *OFFLINE,
            f"training.iterations={generations}",
        ]
    )
    assert status == 0, capsys.readouterr().err[-3000:]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["type"] == model_type and saved["logging"]["tags"] == tags
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    if generations or saved["call"] == "evaluate":
        assert rows and "eval/digits/accuracy" in rows[0]
    if model_type == "SGD":  # task 2 of array/sgd.yaml: 2 layers, plain SGD at 0.01, evaluated only
        assert saved["call"] == "evaluate"
        assert (
            saved["model"]["sgd"]["num_layers"],
            saved["model"]["sgd"]["optimizer"],
            saved["model"]["sgd"]["lr"],
        ) == (2, "sgd", 0.01)


@pytest.mark.parametrize("number", range(len(ORIGINAL_COMMANDS)), ids=lambda n: f"command{n + 1}")
def test_original_command_starts_through_launch(tmp_path, monkeypatch, capsys, number):
    """Config, checks, data, learner and run directory (no generation: seconds; the SGD one evaluates)."""
    _run_original_command(tmp_path, monkeypatch, capsys, number, generations=0)


@pytest.mark.slow
@pytest.mark.parametrize("number", range(len(ORIGINAL_COMMANDS)), ids=lambda n: f"command{n + 1}")
def test_original_command_trains_a_generation_through_launch(tmp_path, monkeypatch, capsys, number):
    _run_original_command(tmp_path, monkeypatch, capsys, number, generations=1)


def _dry_run(program: list[str], options: list[str], command: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VSML_", "SLURM_", "CHAIN"))}
    result = subprocess.run(
        [*program, "--dry-run", *options, "--", *command],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr
    return re.sub(r"runs/\d{8}-\d{6}-", "runs/<time>-", result.stdout)


@pytest.mark.parametrize("number", range(6), ids=lambda n: f"command{n + 1}")
def test_original_schedule_py_line_gives_schedule_sh_request(number):
    words = _words(ORIGINAL_COMMANDS[number]) + ["--config", *OFFLINE]
    split = words.index("--")
    options, command = words[1:split], words[split + 1 :]
    from_py = _dry_run([str(ROOT / "slurm" / "schedule.py")], options, command)  # run as printed
    from_sh = _dry_run(
        ["bash", str(ROOT / "slurm" / "schedule.sh")],
        [option.replace("--time 04", "--time=04") for option in options],
        command,
    )
    assert from_py == from_sh
    directives = dict(
        line[len("#SBATCH --") :].split("=", 1) for line in from_py.splitlines() if line.startswith("#SBATCH --")
    )
    expected = dict(option[2:].split("=", 1) for option in options if "=" in option)
    expected["time"] = options[options.index("--time") + 1]
    assert {key: directives.get(key) for key in expected} == expected


def test_schedule_py_reads_sbatch_options_as_the_original_passed_them():
    sys.path.insert(0, str(ROOT / "slurm"))
    try:
        import schedule  # noqa: PLC0415 — slurm/schedule.py
    finally:
        sys.path.pop(0)
    words = [
        "--nodes",
        "4",
        "-t",
        "01:00:00",
        "-pgpu",
        "--mem",
        "64G",
        "--exclusive",
        "--qos=debug",
        "--",
        "python3",
        "launch.py",
        "--nodes",
        "9",
    ]
    assert schedule.normalise(words, environ={"CHAIN": "3"}) == [
        "--nodes=4",
        "--time=01:00:00",
        "--partition=gpu",
        "--sbatch-arg=--mem=64G",
        "--sbatch-arg=--exclusive",
        "--sbatch-arg=--qos=debug",
        "--chain=3",
        "--",
        "python3",
        "launch.py",
        "--nodes",
        "9",
    ]


# ---------------------------------------------------------------- restoring from wandb


class _OneRank:
    rank, size, is_root = 0, 1, True

    def bcast_object(self, obj):
        return obj


def _params():
    return {"w": np.arange(6, dtype=np.float32).reshape(2, 3) / 7, "b": np.full(3, -0.5, np.float32)}


def _save(run_dir, params):
    rng = {"noise": np.zeros(2, np.uint32), "data": np.ones(2, np.uint32)}
    state = MetaState(params=params, opt_state={}, generation=5, rng=rng)
    return checkpoint.save(run_dir, state, wall_time=1.0, config_yaml="{}")


def _restore_config(tmp_path, run_path, **restore):
    config = load_default()
    config["checkpoint"]["restore"].update(run_path=run_path, **restore)
    config["logging"]["dir"] = str(tmp_path / "runs")
    return config


def test_run_path_restores_from_an_offline_wandb_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")  # nothing may go to the network
    run_dir = tmp_path / "runs" / "20240101-000000-train-digits"
    config = build_config(["/".join([str(ROOT), "configs/test.yaml"])], overrides=["logging.wandb=offline"])
    log = RunLog(run_dir, config, to_yaml(config), wandb_mode="offline")  # a real offline wandb run
    try:
        log.attach(_save(run_dir, _params()))
        run_id = log._wandb.id
    finally:
        log.close()
    # the wandb run's own folder holds the checkpoint (as an online run would upload it)
    (wandb_run,) = checkpoint.local_wandb_runs(run_id, tmp_path / "runs")
    assert (wandb_run / "files" / checkpoint.LATEST).is_file()

    resolved = resolve_restore(_restore_config(tmp_path, f"someone/vsml/{run_id}"), _OneRank(), tmp_path / "new")
    path = resolved["checkpoint"]["restore"]["path"]
    template = jax.tree_util.tree_map(np.zeros_like, _params())
    restored = checkpoint.restore(path, template)["params"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored, _params())


def test_attaching_a_checkpoint_to_wandb_prints_nothing_and_follows_each_rewrite(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    config = build_config(["/".join([str(ROOT), "configs/test.yaml"])], overrides=["logging.wandb=offline"])
    log = RunLog(run_dir, config, to_yaml(config), wandb_mode="offline")
    registered = []
    save = log._wandb.save
    monkeypatch.setattr(log._wandb, "save", lambda *a, **k: registered.append((a, k)) or save(*a, **k))
    try:
        capfd.readouterr()
        for value in (1.0, 2.0):  # a second checkpoint replaces the first by an atomic rename
            params = jax.tree_util.tree_map(lambda x, v=value: np.full_like(x, v), _params())
            log.attach(_save(run_dir, params))
            out, err = capfd.readouterr()
            assert "wandb" not in out + err, out + err
            attached = Path(log._wandb.dir) / checkpoint.LATEST
            assert attached.samefile(run_dir / checkpoint.LATEST)  # the wandb run sees the current file
            template = jax.tree_util.tree_map(np.zeros_like, _params())
            restored = checkpoint.restore(attached, template)["params"]
            jax.tree_util.tree_map(lambda x, v=value: np.testing.assert_array_equal(x, v), restored)
    finally:
        log.close()
    assert [k["policy"] for _, k in registered] == ["live", "live"]  # uploaded whenever it changes


def test_run_path_picks_the_newest_local_run_and_its_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for stamp, value in (("20240101_000000", 1.0), ("20240301_000000", 3.0), ("20240201_000000", 2.0)):
        files = tmp_path / "wandb" / f"offline-run-{stamp}-abc123" / "files"
        files.mkdir(parents=True)
        _save(files, {"w": np.full(2, value, np.float32)})
        (files / checkpoint.LATEST).rename(files / "best.npz")
    (tmp_path / "wandb" / "offline-run-20250101_000000-xabc123" / "files").mkdir(parents=True)  # another id
    config = _restore_config(tmp_path, "e/p/runs/abc123", file_name="best.npz")
    path = resolve_restore(config, _OneRank(), tmp_path / "new")["checkpoint"]["restore"]["path"]
    assert checkpoint.restore(path, {"w": np.zeros(2, np.float32)})["params"]["w"].tolist() == [3.0, 3.0]


def test_run_path_downloads_through_the_wandb_api_when_no_local_run_has_it(tmp_path, monkeypatch):
    import wandb

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    source = tmp_path / "remote"
    source.mkdir()
    _save(source, _params())
    asked = []

    class FakeFile:
        def __init__(self, name):
            self.name = name

        def download(self, root, replace):
            target = os.path.join(root, self.name)
            with open(source / self.name, "rb") as src, open(target, "wb") as dst:
                dst.write(src.read())
            return open(target, "rb")

    class FakeApi:
        def __init__(self, timeout=None):
            pass

        def run(self, run_path):
            asked.append(run_path)
            return types.SimpleNamespace(file=FakeFile)

    monkeypatch.setattr(wandb, "Api", FakeApi)
    resolved = resolve_restore(_restore_config(tmp_path, "ent/proj/xyz"), _OneRank(), tmp_path / "new")
    path = resolved["checkpoint"]["restore"]["path"]
    assert asked == ["ent/proj/xyz"] and path == str(tmp_path / "new" / "restored" / checkpoint.LATEST)
    jax.tree_util.tree_map(np.testing.assert_array_equal, checkpoint.restore(path, _params())["params"], _params())


@pytest.mark.parametrize(
    "restore, environ, message",
    [
        (
            {"run_path": "ent/proj/nope"},
            {"WANDB_MODE": "offline"},
            "checkpoint.restore.run_path 'ent/proj/nope': no local wandb run directory with id 'nope'",
        ),
        ({"run_path": "just-an-id"}, {}, "must look like ENTITY/PROJECT/RUN_ID"),
        ({"run_path": "ent/proj/abc", "path": "runs/x"}, {}, "not both"),
    ],
)
def test_run_path_that_does_not_resolve_is_one_line(tmp_path, monkeypatch, capsys, restore, environ, message):
    monkeypatch.chdir(tmp_path)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    overrides = [f"checkpoint.restore.{key}={value}" for key, value in restore.items()]
    status = launch.main(
        ["--run_dir", str(tmp_path / "run"), "--config", *TINY, f"logging.dir={tmp_path / 'runs'}", *overrides]
    )
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_run_path_unknown_to_the_wandb_api_is_one_line(tmp_path, monkeypatch, capsys):
    import wandb

    class NoSuchRun:
        def __init__(self, timeout=None):
            pass

        def run(self, run_path):
            raise ValueError(f"Could not find run {run_path}\n(404)")

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(wandb, "Api", NoSuchRun)
    status = launch.main(
        [
            "--run_dir",
            str(tmp_path / "run"),
            "--config",
            *TINY,
            "call=evaluate",
            "checkpoint.restore.run_path=ent/proj/gone",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert "the wandb API could not give its file 'checkpoint.npz'" in err and "Could not find run" in err


def test_evaluate_restores_meta_parameters_from_a_wandb_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = build_config(overrides=[*TINY, "logging.wandb=offline", f"logging.dir={tmp_path / 'runs'}"])
    learner = build_learner(config["model"])
    # meta-parameters no fresh initialisation has: every leaf scaled up
    params = jax.tree_util.tree_map(lambda x: np.asarray(x) * 3 + 0.1, learner.init(jax.random.PRNGKey(0)))
    run_dir = tmp_path / "runs" / "20240101-000000-made"
    log = RunLog(run_dir, config, to_yaml(config), wandb_mode="offline")
    try:
        log.attach(_save(run_dir, params))
        run_id = log._wandb.id
    finally:
        log.close()
    status = launch.main(
        [
            "--run_dir",
            str(tmp_path / "eval"),
            "--config",
            *TINY,
            f"logging.dir={tmp_path / 'runs'}",
            "call=evaluate",
            f"checkpoint.restore.run_path=me/vsml/{run_id}",
        ]
    )
    assert status == 0, capsys.readouterr().err[-2000:]
    (row,) = [json.loads(line) for line in (tmp_path / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert row["step"] == 5  # the step stored in that checkpoint
    saved = yaml.safe_load((tmp_path / "eval" / "config.yaml").read_text())
    assert saved["checkpoint"]["restore"]["path"].endswith(f"-{run_id}/files/checkpoint.npz")


@pytest.mark.slow
def test_train_and_evaluate_start_from_a_wandb_run(tmp_path, monkeypatch, capsys):
    """A trained run's offline wandb run id restores its meta-parameters for call: evaluate and call: train."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    runs = tmp_path / "runs"
    first = runs / "20240101-000000-first"
    common = ["--config", *TINY, f"logging.dir={runs}"]
    assert launch.main(["--run_dir", str(first), *common, "training.iterations=2", "logging.wandb=offline"]) == 0
    trained = dict(np.load(first / "checkpoint.npz"))
    first_config = yaml.safe_load((first / "config.yaml").read_text())
    initial = checkpoint.flatten_tree(
        "params", build_learner(first_config["model"]).init(jax.random.PRNGKey(first_config["seed"]))
    )
    assert any(not np.allclose(initial[name], trained[name]) for name in initial)  # training moved them
    run_id = (first / "wandb-run-id").read_text().strip()  # the run directory names its wandb run
    (wandb_run,) = checkpoint.local_wandb_runs(run_id, runs)
    run_path = f"me/vsml/{run_id}"

    evaluated = tmp_path / "evaluated"
    assert (
        launch.main(["--run_dir", str(evaluated), *common, "call=evaluate", f"checkpoint.restore.run_path={run_path}"])
        == 0
    ), capsys.readouterr().err[-2000:]
    (row,) = [json.loads(line) for line in (evaluated / "metrics.jsonl").read_text().splitlines()]
    assert row["step"] == int(trained["step"]) == 2  # the restored checkpoint's generation

    # a new training run from those meta-parameters; a vanishing learning rate keeps them as restored
    second = tmp_path / "second"
    assert (
        launch.main(
            [
                "--run_dir",
                str(second),
                *common,
                "training.iterations=1",
                "optimizer.lr=1e-30",
                f"checkpoint.restore.run_path={run_path}",
            ]
        )
        == 0
    ), capsys.readouterr().err[-2000:]
    continued = dict(np.load(second / "checkpoint.npz"))
    assert int(continued["step"]) == 1  # a new run, not a resume
    for name in (n for n in trained if n.startswith("params/")):
        np.testing.assert_allclose(continued[name], trained[name], rtol=0, atol=1e-6)
    saved = yaml.safe_load((second / "config.yaml").read_text())
    assert saved["checkpoint"]["restore"]["path"] == str(wandb_run / "files" / "checkpoint.npz")


@pytest.mark.parametrize(
    "entries, args, message",
    [
        (
            [{"config": {"seed": 1}, "tag": ["x"]}],
            ["--task", "1"],
            "has unknown entry key 'tag'; an entry holds only config, tags, config_files",
        ),
        ([{"seed": 1}, {"seed": 2}], ["--task", "1", "--subset", "2"], "--subset index 2 is out of range: array file"),
        ([{"seed": 1}, {"seed": 2}], ["--task", "2", "--subset", "1"], "task 2 is out of range: --subset"),
    ],
)
def test_bad_sweep_input_is_one_line(tmp_path, capsys, entries, args, message):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"array": entries}))
    status = launch.main(["--array", str(sweep), *args, "--run_dir", str(tmp_path / "run"), "--config", *TINY])
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
@pytest.mark.mpi
def test_every_rank_restores_the_same_wandb_run(tmp_path):
    """Rank 0 resolves run_path; the other ranks get its answer (here: two ranks evaluate it)."""
    from tests.conftest import launch as launch_process

    config = build_config(overrides=[*TINY, "logging.wandb=offline"])
    learner = build_learner(config["model"])
    params = jax.tree_util.tree_map(lambda x: np.asarray(x) * 2, learner.init(jax.random.PRNGKey(1)))
    runs = tmp_path / "runs"
    run_dir = runs / "20240101-000000-made"
    log = RunLog(run_dir, config, to_yaml(config), wandb_mode="offline")
    try:
        log.attach(_save(run_dir, params))
        run_id = log._wandb.id
    finally:
        log.close()
    result = launch_process(
        "--run_dir",
        tmp_path / "eval",
        "--config",
        *TINY,
        f"logging.dir={runs}",
        "call=evaluate",
        f"checkpoint.restore.run_path=me/vsml/{run_id}",
        ranks=2,
        env={"WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = [json.loads(line) for line in (tmp_path / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert row["step"] == 5
    # both ranks evaluated the restored parameters: evaluation.count (2) episodes in all, one per rank,
    # gathered on rank 0 (the original ran count episodes on every rank; DESIGN §7.4)
    episodes = {line.split(",")[2] for line in (tmp_path / "eval" / "evaluation.csv").read_text().splitlines()[1:]}
    assert episodes == {"mean", "0", "1"}
