"""Offline datasets, splits, normalisation and on-device episode sampling."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from vsml import data
from vsml.config import load_default
from vsml.data import offline_source as sources
from vsml.settings import data_settings


@pytest.fixture(scope="module")
def config():
    return load_default()


@pytest.mark.parametrize("name,shape,total", [("mnist_offline", (28, 28, 1), 5000), ("digits", (8, 8, 1), 1797)])
def test_offline_splits_are_disjoint_stratified_and_complete(name, shape, total):
    train_x, train_y, classes = sources.load_array_source(name, "train")
    test_x, test_y, _ = sources.load_array_source(name, "test")
    assert classes == 10 and train_x.shape[1:] == shape
    assert len(train_y) + len(test_y) == total
    assert 0.18 < len(test_y) / total < 0.22
    assert set(np.unique(test_y)) == set(range(10))
    # no test image appears in the training split
    train_rows = {row.tobytes() for row in train_x.reshape(len(train_x), -1)}
    overlap = sum(row.tobytes() in train_rows for row in test_x.reshape(len(test_x), -1))
    assert overlap <= 2  # the digits set holds a few exact duplicate images; nothing more
    assert 0.0 <= train_x.min() and train_x.max() <= 1.0


@pytest.mark.parametrize("name", ["mnist_offline", "digits"])
def test_dataset_standard_stats_match_the_data(name, config):
    images, _ = {"mnist_offline": sources._mnist_offline_all, "digits": sources._digits_all}[name]()
    stats = config["data"]["preprocess"]["dataset_stats"][name]
    assert abs(images.mean() - stats["mean"]) < 1e-3
    assert abs(images.std() - stats["std"]) < 1e-3


def test_array_episode_shapes_and_normalisation(config):
    spec, arrays = data.load_dataset("digits", "train", data_settings(config))
    inputs, labels = data.sample_episode(spec, arrays, jax.random.PRNGKey(0), 300, 4)
    assert inputs.shape == (300, 4, 8, 8, 1) and labels.shape == (300, 4, 10)
    np.testing.assert_array_equal(np.asarray(labels).sum(-1), 1)
    assert abs(float(inputs.mean())) < 0.1 and abs(float(inputs.std()) - 1) < 0.1


def test_standard_normalisation_is_per_image(config):
    config["data"]["preprocess"]["normalization_mode"] = "standard"
    spec, arrays = data.load_dataset("mnist_offline", "test", data_settings(config))
    inputs, _ = data.sample_episode(spec, arrays, jax.random.PRNGKey(1), 5, 2)
    flat = np.asarray(inputs).reshape(10, -1)
    np.testing.assert_allclose(flat.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(flat.std(1), 1, atol=1e-4)


def test_identity_keeps_pixels(config):
    config["data"]["preprocess"]["normalization_mode"] = "identity"
    spec, arrays = data.load_dataset("digits", "test", data_settings(config))
    inputs, labels = data.sample_episode(spec, arrays, jax.random.PRNGKey(2), 20, 1)
    pixels = np.asarray(arrays["images"]).reshape(len(arrays["images"]), -1)
    for x, y in zip(np.asarray(inputs)[:, 0].reshape(20, -1), np.asarray(labels)[:, 0].argmax(-1)):
        match = np.flatnonzero((pixels == x).all(1))
        assert len(match) and y in np.asarray(arrays["labels"])[match]


def test_sum_labels_are_the_sign_of_the_input_sum(config):
    config["sum_dataset"]["input_size"] = [3, 2]
    spec, arrays = data.load_dataset("sum", "train", data_settings(config))
    inputs, labels = data.sample_episode(spec, arrays, jax.random.PRNGKey(3), 100, 2)
    assert inputs.shape == (100, 2, 3, 2) and labels.shape == (100, 2, 2)
    expected = (np.asarray(inputs).sum(axis=(2, 3)) >= 0).astype(int)
    np.testing.assert_array_equal(np.asarray(labels).argmax(-1), expected)


def test_random_is_a_small_memorisation_set_per_episode(config):
    spec, arrays = data.load_dataset("random", "train", data_settings(config))
    inputs, labels = data.sample_episode(spec, arrays, jax.random.PRNGKey(4), 200, 1)
    flat = np.asarray(inputs).reshape(200, -1)
    distinct = np.unique(flat, axis=0)
    assert len(distinct) <= 20
    targets = np.asarray(labels).argmax(-1)[:, 0]
    for row in distinct:  # an image always carries the same label
        assert len(set(targets[(flat == row).all(1)])) == 1
    other, _ = data.sample_episode(spec, arrays, jax.random.PRNGKey(5), 200, 1)
    assert not np.allclose(np.asarray(other)[0], np.asarray(inputs)[0])


def test_unknown_names_give_clear_errors(config):
    with pytest.raises(
        ValueError,
        match="unknown dataset 'mnsit' \\(did you mean 'mnist'\\?\\); valid: mnist_offline, digits, wine, breast_cancer, iris, random, sum, mnist, fashion_mnist",
    ):
        data.load_dataset("mnsit", "train", data_settings(config))
    with pytest.raises(ValueError, match="evaluation.datasets: unknown dataset 'cifar'"):
        data.check_dataset_available("cifar", data_settings(config), "evaluation.datasets")
