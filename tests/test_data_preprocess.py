"""Each preprocessing mode against an independent computation, per-rank resolution, and few-shot episodes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsml import data
from vsml.config import build_config, resolve_for_rank
from vsml.data import offline_source as sources
from vsml.data import preprocess
from vsml.data.fewshot_source import FewShotSampler
from vsml.settings import data_settings


def cfg(*overrides, rank=0):
    return resolve_for_rank(build_config(overrides=["data.preprocess.normalization_mode=identity", *overrides]), rank)


def episode(config, name="digits", length=40, batch=2, key=0):
    spec, arrays = data.load_dataset(name, "train", data_settings(config))
    inputs, labels = data.sample_episode(spec, arrays, jax.random.PRNGKey(key), length, batch)
    return spec, arrays, np.asarray(inputs), np.asarray(labels)


def plain_inputs(key=0, length=40, batch=2):
    """The same episode without preprocessing (same key -> same examples)."""
    return episode(cfg(), length=length, batch=batch, key=key)[2]


def test_rand_proj_is_the_product_with_a_seeded_glorot_matrix():
    spec, arrays, inputs, _ = episode(cfg("data.preprocess.rand_proj=5"))
    limit = np.sqrt(6 / (64 + 64))
    matrix = np.random.default_rng(5).uniform(-limit, limit, (64, 64)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(arrays["projection"]), matrix)
    expected = plain_inputs().reshape(80, 64) @ matrix
    np.testing.assert_allclose(inputs.reshape(80, 64), expected, rtol=1e-4, atol=1e-4)
    assert inputs.shape == (40, 2, 8, 8, 1) and spec.rand_proj


def test_rand_proj_true_is_seeded_by_config_not_rank():
    first = episode(cfg("data.preprocess.rand_proj=true", rank=0))[1]["projection"]
    other_rank = episode(cfg("data.preprocess.rand_proj=true", rank=3))[1]["projection"]
    other_seed = episode(cfg("data.preprocess.rand_proj=true", "seed=7"))[1]["projection"]
    np.testing.assert_array_equal(np.asarray(first), np.asarray(other_rank))
    assert not np.allclose(np.asarray(first), np.asarray(other_seed))
    split = "data.preprocess.rand_proj={mpi_split: [1, 2]}"
    a, b = (episode(cfg(split, rank=r))[1]["projection"] for r in (0, 1))
    assert not np.allclose(np.asarray(a), np.asarray(b))  # asked for explicitly: one matrix per rank


def test_shuffle_is_a_fixed_permutation_of_pixels():
    _, arrays, inputs, _ = episode(cfg("data.preprocess.shuffle=3"))
    perm = np.asarray(arrays["permutation"])
    np.testing.assert_array_equal(np.sort(perm), np.arange(64))
    np.testing.assert_array_equal(perm, np.random.default_rng(3).permutation(64))
    np.testing.assert_array_equal(inputs.reshape(80, 64), plain_inputs().reshape(80, 64)[:, perm])


def test_filter_classes_keeps_and_relabels():
    spec, arrays, inputs, labels = episode(cfg("data.filter_classes=[7, 2, 9]"), length=200)
    assert spec.num_classes == 3 and labels.shape[-1] == 3
    stored = np.asarray(arrays["labels"])
    assert set(np.unique(stored)) == {0, 1, 2}
    images, original = sources.load_array_source("digits", "train")[:2]
    assert len(stored) == int(np.isin(original, [7, 2, 9]).sum())
    for new, old in enumerate([7, 2, 9]):  # the relabelled class holds exactly the old class's images
        np.testing.assert_array_equal(np.asarray(arrays["images"])[stored == new], images[original == old])
    with pytest.raises(ValueError, match="data.filter_classes: class 12 does not exist"):
        episode(cfg("data.filter_classes=[1, 12]"))


def test_pad_input_and_output():
    spec, _, inputs, labels = episode(cfg("data.preprocess.pad.input=[10, 9, 2]", "data.preprocess.pad.output=[62]"))
    assert spec.input_shape == (10, 9, 2) and inputs.shape == (40, 2, 10, 9, 2)
    assert labels.shape == (40, 2, 62) and labels.argmax(-1).max() < 10 and labels[..., 10:].sum() == 0
    np.testing.assert_array_equal(inputs[:, :, :8, :8, :1], plain_inputs())
    assert np.count_nonzero(inputs[:, :, 8:]) == 0 and np.count_nonzero(inputs[..., 1:]) == 0
    with pytest.raises(ValueError, match="data.preprocess.pad.input: \\[4, 4, 1\\] cannot hold"):
        episode(cfg("data.preprocess.pad.input=[4, 4, 1]"))
    with pytest.raises(ValueError, match="data.preprocess.pad.output: \\[5\\] cannot hold"):
        episode(cfg("data.preprocess.pad.output=5"))


def test_resize_at_load_time_and_on_device_for_procedural_data():
    spec, arrays, inputs, _ = episode(cfg("data.preprocess.resize=[4, 4]"))
    assert (
        spec.input_shape == (4, 4, 1) and arrays["images"].shape[1:] == (4, 4, 1) and inputs.shape == (40, 2, 4, 4, 1)
    )
    images = sources.load_array_source("digits", "train")[0]
    # shrinking by 2 keeps the image mean (bilinear, anti-aliased) and a constant stays constant
    np.testing.assert_allclose(np.asarray(arrays["images"]).mean((1, 2, 3)), images.mean((1, 2, 3)), atol=0.03)
    const = preprocess.resize_images(np.full((2, 8, 8, 1), 0.25, np.float32), (4, 4), 1.0)
    np.testing.assert_allclose(const, 0.25, atol=1e-6)
    spec, _, inputs, labels = episode(cfg("data.preprocess.resize=[3, 5]", "sum_dataset.input_size=[6, 6, 1]"), "sum")
    assert spec.input_shape == (3, 5, 1) and inputs.shape == (40, 2, 3, 5, 1) and labels.shape == (40, 2, 2)


def test_preprocessing_combines_per_rank_through_mpi_split():
    split = (
        "training.dataset={mpi_split: [digits, mnist_offline]}",
        "data.preprocess.rand_proj={mpi_split: [false, true]}",
        "data.preprocess.pad.output=[12]",
    )
    specs = []
    for rank in range(2):
        config = cfg(*split, rank=rank)
        spec, arrays = data.load_dataset(config["training"]["dataset"], "train", data_settings(config))
        inputs, labels = data.sample_episode(spec, arrays, jax.random.PRNGKey(0), 3, 1)
        specs.append((spec.name, inputs.shape, labels.shape[-1], "projection" in arrays))
    assert specs == [("digits", (3, 1, 8, 8, 1), 12, False), ("mnist_offline", (3, 1, 28, 28, 1), 12, True)]
    spec = data.load_dataset("digits", "train", data_settings(cfg(*split)))[0]
    hash(spec)  # a DataSpec stays a static jit argument


def test_bad_preprocess_values_name_the_key():
    for override, message in [
        (
            "data.preprocess.resize=[4]",
            "data.preprocess.resize: must be null or a list of 2 positive integers, got [4]",
        ),
        ("data.preprocess.rand_proj=maybe", "data.preprocess.rand_proj: must be true, false or an integer seed"),
        ("data.filter_classes=[1, 1]", "data.filter_classes: must be null or a list of distinct class indices"),
    ]:
        with pytest.raises(ValueError, match=message.replace("[", "\\[").replace("]", "\\]")):
            data.check_dataset_available("digits", data_settings(cfg(override)))
    with pytest.raises(ValueError, match="data.filter_classes: applies to stored datasets, not to 'sum'"):
        data.check_dataset_available("sum", data_settings(cfg("data.filter_classes=[0]")))


# ----------------------------------------------------------------- few-shot


def fewshot_spec(way, test_last, rotate=False, shape=(3, 3, 1)):
    return data.DataSpec(
        name="omniglot_fewshot",
        sampler=FewShotSampler(way=way, rotate=rotate, test_last=test_last),
        input_shape=shape,
        num_classes=way,
        data_classes=way,
    )


def fewshot_arrays(classes=12, per_class=6):
    """Image i is constant, equal to i; by_class[k] lists class k's images."""
    images = jnp.broadcast_to(
        jnp.arange(classes * per_class, dtype=jnp.float32)[:, None, None, None], (classes * per_class, 3, 3, 1)
    )
    return {"images": images, "by_class": jnp.arange(classes * per_class, dtype=jnp.int32).reshape(classes, per_class)}


def test_fewshot_episode_with_the_query_last():
    spec, arrays = fewshot_spec(5, True), fewshot_arrays()
    sample = jax.jit(lambda key: data.sample_episode(spec, arrays, key, 11, 3))
    for seed in range(4):
        inputs, labels = map(np.asarray, sample(jax.random.PRNGKey(seed)))
        assert inputs.shape == (11, 3, 3, 3, 1) and labels.shape == (11, 3, 5)
        for b in range(3):
            ids, y = inputs[:, b, 0, 0, 0].astype(int), labels[:, b].argmax(-1)
            classes = ids // 6
            assert len(set(ids)) == 11  # every example distinct, query unseen
            assert sorted(np.bincount(y[:-1], minlength=5)) == [2] * 5  # 2 shots of each of 5 classes
            for label in range(5):  # a label means one original class
                assert len(set(classes[y == label])) == 1
            assert len(set(classes)) == 5


def test_fewshot_relabels_per_episode_and_rotates_square_images():
    spec, arrays = fewshot_spec(3, False), fewshot_arrays()
    sample = jax.jit(lambda key: data.sample_episode(spec, arrays, key, 7, 1))
    mapping = set()
    for seed in range(6):
        inputs, labels = sample(jax.random.PRNGKey(seed))
        ids, y = np.asarray(inputs)[:, 0, 0, 0, 0].astype(int), np.asarray(labels)[:, 0].argmax(-1)
        mapping |= {(i // 6, int(label)) for i, label in zip(ids, y)}
        assert len(set(ids)) == 7 and len(set(y)) == 3
    assert len({c for c, _ in mapping}) > 3  # different classes, relabelled 0..2 each episode
    ramp = jnp.arange(9.0).reshape(1, 3, 3, 1)
    arrays = {"images": jnp.concatenate([ramp] * 12), "by_class": jnp.arange(12, dtype=jnp.int32).reshape(6, 2)}
    rotating = fewshot_spec(2, False, rotate=True)
    inputs, _ = jax.jit(lambda key: data.sample_episode(rotating, arrays, key, 4, 8))(jax.random.PRNGKey(1))
    seen = {tuple(np.asarray(x).ravel()) for x in np.asarray(inputs).reshape(32, 3, 3, 1)}
    rotations = {tuple(np.rot90(np.asarray(ramp[0]), k).ravel()) for k in range(4)}
    assert seen <= rotations and len(seen) > 1
    with pytest.raises(ValueError, match="episode length \\(10\\) must be 1 \\+ a multiple of num_classes \\(5\\)"):
        data.sample_episode(fewshot_spec(5, True), fewshot_arrays(), jax.random.PRNGKey(0), 10, 1)


def test_omniglot_fewshot_groups_the_split_by_class(monkeypatch):
    labels = np.repeat(np.arange(7), 4)[::-1].copy()
    images = (np.arange(28)[:, None, None, None] * np.ones((1, 10, 10, 1))).astype(np.uint8)
    monkeypatch.setattr(data.tfds_source, "load", lambda name, subset, config: (images, labels, 1623))
    config = cfg("omniglot_fewshot_dataset.resize=[5, 5]", "omniglot_fewshot_dataset.test_last=true")
    spec, arrays = data.load_dataset("omniglot_fewshot", "test", data_settings(config))
    assert spec.kind == "fewshot" and spec.input_shape == (5, 5, 1) and spec.num_classes == 5 and spec.sampler.test_last
    by_class = np.asarray(arrays["by_class"])
    assert by_class.shape == (7, 4)
    for k in range(7):
        np.testing.assert_array_equal(labels[by_class[k]], k)
    inputs, onehot = jax.eval_shape(lambda key: data.sample_episode(spec, arrays, key, 6, 2), jax.random.PRNGKey(0))
    assert inputs.shape == (6, 2, 5, 5, 1) and onehot.shape == (6, 2, 5)
