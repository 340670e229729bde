"""The TFDS path end to end, offline: a tiny MNIST built locally through TFDS's real MNIST
builder (its download replaced by files written here), then loading, preprocessing,
episodes, a launch.py meta-training run, MPI ranks on different data, and the offline errors."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import threading

import jax
import numpy as np
import pytest

from tests.conftest import HANG_GUARD_S, MPIEXEC, ROOT, TINY, launch
from vsml import data
from vsml.config import build_config, resolve_for_rank
from vsml.data import tfds_source
from vsml.settings import data_settings, run_settings

TRAIN, TEST = 60, 20

# Runs in a subprocess so that TensorFlow (needed by TFDS to encode images) never
# enters the test process. The MNIST builder reads `num_examples` records from the
# files its download manager returns, so both are patched to tiny local files.
BUILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from unittest import mock
    import numpy as np
    import tensorflow_datasets as tfds
    from tensorflow_datasets.image_classification import mnist
    from vsml.data import tfds_source

    out, train, test = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    mnist._TRAIN_EXAMPLES, mnist._TEST_EXAMPLES = train, test
    raw = out / "raw"
    raw.mkdir(parents=True)
    files = {}
    for split, count in (("train", train), ("test", test)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        images = ((labels[:, None] * 25 + np.arange(784)[None, :] * (1 + (split == "test"))) % 256).astype(np.uint8)
        (raw / f"{split}-images").write_bytes(b"\\0" * 16 + images.tobytes())
        (raw / f"{split}-labels").write_bytes(b"\\0" * 8 + labels.tobytes())
        files[f"{split}_data"], files[f"{split}_labels"] = str(raw / f"{split}-images"), str(raw / f"{split}-labels")
    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract", return_value=files):
        print(tfds_source.prepare("mnist", out / "tfds", download=True))
""")


def expected_split(split: str, count: int):
    """The images and labels BUILD writes, computed independently: ``[N, 28, 28, 1]`` uint8, ``[N]``."""
    labels = np.arange(count) % 10
    images = (labels[:, None] * 25 + np.arange(784)[None, :] * (1 + (split == "test"))) % 256
    return images.reshape(count, 28, 28, 1).astype(np.uint8), labels


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A data directory holding a prepared tiny 'mnist' (60 train / 20 test examples)."""
    root = tmp_path_factory.mktemp("tfds")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", BUILD, str(root), str(TRAIN), str(TEST)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "tfds"


def config_for(directory, *overrides):
    return resolve_for_rank(build_config(overrides=[f"data.dir={directory}", *overrides]), 0)


def test_prepared_tfds_mnist_loads_as_uint8_and_samples_scaled_episodes(tfds_dir):
    cfg = config_for(tfds_dir, "data.preprocess.normalization_mode=identity")
    data.check_dataset_available("mnist", data_settings(cfg))
    spec, arrays = data.load_dataset("mnist", "test", data_settings(cfg))
    assert spec.input_shape == (28, 28, 1) and spec.num_classes == 10 and spec.kind == "array"
    images, labels = expected_split("test", TEST)
    stored, stored_labels = np.asarray(arrays["images"]), np.asarray(arrays["labels"])
    assert stored.dtype == np.uint8 and stored.shape == images.shape
    np.testing.assert_array_equal(np.sort(stored_labels), np.sort(labels))
    np.testing.assert_array_equal(stored, images[stored_labels])  # here an image is a function of its label
    inputs, onehot = data.sample_episode(spec, arrays, jax.random.PRNGKey(0), 30, 2)
    assert inputs.shape == (30, 2, 28, 28, 1) and inputs.dtype == np.float32
    flat = np.asarray(inputs).reshape(60, 784)
    for x, y in zip(flat, np.asarray(onehot).reshape(60, 10).argmax(-1)):
        np.testing.assert_allclose(x, images[y].reshape(784) / 255.0, atol=1e-6)  # class y has one image here


def test_prepare_twice_is_a_no_op_and_the_lock_serialises(tfds_dir, monkeypatch):
    def no_tfds(*args, **kwargs):
        raise AssertionError("a prepared dataset must not touch TFDS again")

    with monkeypatch.context() as patched:
        patched.setattr(tfds_source, "_builder", no_tfds)
        assert tfds_source.prepare("mnist", tfds_dir, download=False).is_dir()
    lock = tfds_source._lock_path("mnist", tfds_dir)
    # The holder keeps the lock until told to let go: no sleeps, so no timing to lose on a busy machine.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import fcntl, sys
        with open({str(lock)!r}, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX); print("held", flush=True); sys.stdin.readline()
    """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    acquired = threading.Event()

    def wait_for_lock():
        with tfds_source.file_lock(lock):
            acquired.set()

    waiter = threading.Thread(target=wait_for_lock, daemon=True)
    waiter.start()
    assert not acquired.wait(0.5)  # still held by the other process
    holder.communicate("release\n", timeout=HANG_GUARD_S)
    assert acquired.wait(HANG_GUARD_S)
    waiter.join(HANG_GUARD_S)
    with open(lock, "a") as handle:  # free again afterwards
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_unprepared_offline_dataset_is_refused_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds_source, "downloadable", lambda name, timeout=3.0: False)
    with pytest.raises(data.DatasetUnavailable) as err:
        data.check_dataset_available("fashion_mnist", data_settings(config_for(tmp_path)), "evaluation.datasets")
    message = str(err.value)
    assert message.startswith("evaluation.datasets: 'fashion_mnist' is a TFDS dataset")
    assert str(tmp_path) in message and "python3 -m vsml.data prepare fashion_mnist" in message
    assert "\n" not in message
    monkeypatch.setattr(tfds_source, "downloadable", lambda name, timeout=3.0: True)
    # would be downloaded at load time
    data.check_dataset_available("fashion_mnist", data_settings(config_for(tmp_path)))


def test_launch_offline_with_an_unprepared_dataset_exits_fast_with_one_line(tmp_path):
    result = launch("--config", "training.dataset=mnist", timeout=HANG_GUARD_S, env={"TFDS_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert "loading data" not in result.stdout  # refused before any data loading or compiling
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "'mnist' is a TFDS dataset" in lines[0] and str(tmp_path) in lines[0]
    assert "python3 -m vsml.data prepare mnist" in lines[0] and "data.dir" in lines[0]


def test_prepare_cli_offline_names_the_dataset(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-m", "vsml.data", "prepare", "kmnist", "--data_dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 2 and "'kmnist' is a TFDS dataset" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "vsml.data", "prepare", "mnsit"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 2 and "unknown dataset(s) mnsit (did you mean 'mnist'?)" in result.stderr


def test_es_generation_on_tfds_mnist_with_preprocessing(tfds_dir):
    """Loading, preprocessing and on-device episodes feed one jitted VSML ES generation."""
    from vsml import evaluation, experiment  # noqa: PLC0415
    from vsml.comm import world  # noqa: PLC0415
    from vsml.learners import build_learner  # noqa: PLC0415

    cfg = config_for(
        tfds_dir,
        "training.population_size=2",
        "model.sub_rnn.msg_size=4",
        "model.sub_rnn.slow_size=4",
        "data.preprocess.resize=[5, 5]",
        "data.preprocess.shuffle=true",
        "data.preprocess.rand_proj=true",
        "data.preprocess.pad.output=12",
        "data.filter_classes=[1, 2, 3]",
    )
    task = evaluation.load_task("mnist", "train", data_settings(cfg), 6, 1)
    assert task.spec.input_shape == (5, 5, 1) and task.spec.num_classes == 12 and task.spec.data_classes == 3
    learner = build_learner(cfg["model"], task.spec.input_shape, task.spec.num_classes)
    params = learner.init(jax.random.PRNGKey(0))
    outer_loop = experiment.make_outer_loop(learner, task, run_settings(cfg), params, world())
    state, stats = outer_loop.step(outer_loop.init(params, 0), task.arrays)
    assert state.generation == 1 and np.isfinite(stats["meta_loss"])
    moved = jax.tree_util.tree_map(
        lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), params, state.params
    )
    assert max(jax.tree_util.tree_leaves(moved)) > 0


@pytest.mark.slow
def test_meta_training_runs_on_tfds_mnist_with_preprocessing(tfds_dir, tmp_path):
    run = tmp_path / "run"
    result = launch(
        "--run_dir",
        run,
        "--config",
        *TINY,
        "training.dataset=mnist",
        "evaluation.datasets=[mnist]",
        "training.iterations=1",
        f"data.dir={tfds_dir}",
        "data.preprocess.resize=[6, 6]",
        "data.preprocess.rand_proj=true",
        "data.preprocess.pad.output=12",
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and np.isfinite(rows[0]["meta_loss"]) and 0 <= rows[0]["eval/mnist/accuracy"] <= 1


RANK_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from vsml import data
    from vsml.comm import world
    from vsml.config import build_config, resolve_for_rank
    from vsml.settings import data_settings

    comm = world()
    cfg = resolve_for_rank(build_config(overrides=sys.argv[1:]), comm.rank)
    name = cfg["training"]["dataset"]
    spec, arrays = data.load_dataset(name, "train", data_settings(cfg))
    inputs, labels = data.sample_episode(spec, arrays, jax.random.PRNGKey(0), 5, 1)
    proj = np.asarray(arrays["projection"]) if "projection" in arrays else None
    row = {"rank": comm.rank, "size": comm.size, "dataset": name, "shape": list(inputs.shape),
           "classes": labels.shape[-1], "rand_proj": cfg["data"]["preprocess"]["rand_proj"],
           "proj_sum": None if proj is None else float(proj.astype(np.float64).sum())}
    rows = comm.gather_objects(row)  # one printer: lines from several ranks can interleave
    if comm.is_root:
        print(json.dumps(rows), flush=True)
""")


def test_mpi_split_over_datasets_and_rand_proj_gives_each_rank_its_data(tfds_dir):
    overrides = [
        f"data.dir={tfds_dir}",
        "training.dataset={mpi_split: [mnist, digits]}",
        "data.preprocess.rand_proj={mpi_split: [false, 7]}",
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [str(MPIEXEC), "-n", "2", sys.executable, "-c", RANK_SCRIPT, *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = {row["rank"]: row for row in json.loads(result.stdout.strip().splitlines()[-1])}
    assert set(ranks) == {0, 1} and ranks[0]["size"] == 2
    assert ranks[0] == {**ranks[0], "dataset": "mnist", "shape": [5, 1, 28, 28, 1], "classes": 10, "proj_sum": None}
    assert ranks[1]["dataset"] == "digits" and ranks[1]["shape"] == [5, 1, 8, 8, 1] and ranks[1]["rand_proj"] == 7
    expected = np.random.default_rng(7).uniform(-np.sqrt(6 / 128), np.sqrt(6 / 128), (64, 64)).astype(np.float32)
    assert ranks[1]["proj_sum"] == pytest.approx(float(expected.astype(np.float64).sum()), abs=1e-4)
