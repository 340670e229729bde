"""A user's own data as ``npz:PATH``: splits, statistics from the training split, and bad files refused in one line."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler

import launch
from tests.conftest import TINY
from vsml import data
from vsml.config import load_default
from vsml.settings import data_settings


@pytest.fixture(scope="module")
def config():
    return load_default()


def _preprocess(config, **keys):
    """``config`` with ``data.preprocess`` keys replaced."""
    return {**config, "data": {**config["data"], "preprocess": {**config["data"]["preprocess"], **keys}}}


@pytest.fixture(scope="module")
def digits():
    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)  # [1797, 8, 8] in 0..16, [1797]


def test_given_test_split_and_statistics_of_the_training_split(tmp_path, config, digits):
    x, y = digits
    x_test = x[:300] * 3.0 + 5.0  # a test split with other statistics must not change the normalisation
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y[:300])
    train_spec, train_arrays = data.load_dataset(f"npz:{path}", "train", data_settings(config))
    test_spec, test_arrays = data.load_dataset(f"npz:{path}", "test", data_settings(config))
    assert train_spec.input_shape == (8, 8, 1) and train_spec.num_classes == 10  # [N, H, W] gains a channel
    for spec in (train_spec, test_spec):
        assert spec.mean == pytest.approx(float(x.astype(np.float64).mean()), rel=1e-6)
        assert spec.std == pytest.approx(float(x.astype(np.float64).std()), rel=1e-6)
    np.testing.assert_array_equal(np.asarray(train_arrays["images"])[..., 0], x)
    np.testing.assert_array_equal(np.asarray(test_arrays["images"])[..., 0], x_test)
    np.testing.assert_array_equal(np.asarray(test_arrays["labels"]), y[:300])
    inputs, labels = data.sample_episode(train_spec, train_arrays, jax.random.PRNGKey(0), 400, 4)
    assert inputs.shape == (400, 4, 8, 8, 1) and labels.shape == (400, 4, 10)
    assert abs(float(inputs.mean())) < 0.1 and abs(float(inputs.std()) - 1) < 0.1
    test_inputs, _ = data.sample_episode(test_spec, test_arrays, jax.random.PRNGKey(0), 400, 4)
    expected = (x_test.mean() - x.mean()) / x.std()  # the training split's statistics applied to the test split
    assert float(test_inputs.mean()) == pytest.approx(expected, abs=0.3)


def test_held_out_split_is_every_fifth_example_of_each_class(tmp_path, config):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=200)
    x = np.stack([np.arange(200, dtype=np.float32), rng.normal(size=200).astype(np.float32)], axis=1)  # [N, D]
    path = tmp_path / "vectors.npz"
    np.savez(path, x=x, y=y)
    settings = data_settings(_preprocess(config, npz_stats="global"))  # the stored values are the example ids
    train_spec, train = data.load_dataset(f"npz:{path}", "train", settings)
    _, test = data.load_dataset(f"npz:{path}", "test", settings)
    train_ids, test_ids = np.asarray(train["images"])[:, 0], np.asarray(test["images"])[:, 0]
    assert train_spec.input_shape == (2,) and train_spec.num_classes == 3
    assert sorted(np.concatenate([train_ids, test_ids]).tolist()) == list(range(200))  # disjoint and complete
    for cls in range(3):
        members = np.flatnonzero(y == cls)  # in file order; every 5th (positions 4, 9, ...) is held out
        assert set(test_ids[np.asarray(test["labels"]) == cls].astype(int)) == set(members[4::5])
    kept = x[train_ids.astype(int)].astype(np.float64)
    assert train_spec.mean == pytest.approx(kept.mean(), rel=1e-6)
    assert train_spec.std == pytest.approx(kept.std(), rel=1e-6)


def _mixed_scales(rng, count):
    """``[count, 4]`` features on scales 1e-3 .. 1e4 (one of them constant) and labels from two of them."""
    x = rng.normal(size=(count, 4)) * np.array([1e-3, 1.0, 1e4, 0.0]) + np.array([5.0, -2.0, 3e4, 7.0])
    return x, (x[:, 0] > 5.0).astype(int) + (x[:, 2] > 3e4).astype(int)


def test_vectors_are_standardised_per_feature_with_the_training_split_statistics(tmp_path, config):
    rng = np.random.default_rng(2)
    (x, y), (x_test, y_test) = _mixed_scales(rng, 300), _mixed_scales(rng, 80)
    x_test = x_test * 2.0 + 1.0  # other statistics: they must not change the normalisation
    path = tmp_path / "table.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)
    scaler = StandardScaler().fit(x)  # the independent reference: sklearn, on the training split only
    for subset, expected in (("train", scaler.transform(x)), ("test", scaler.transform(x_test))):
        spec, arrays = data.load_dataset(f"npz:{path}", subset, data_settings(config))  # npz_stats: auto
        assert (spec.mean, spec.std) == (0.0, 1.0) and spec.input_shape == (4,)
        np.testing.assert_allclose(np.asarray(arrays["images"]), expected, rtol=1e-5, atol=1e-5)
        inputs, _ = data.sample_episode(spec, arrays, jax.random.PRNGKey(0), 50, 3)  # what the learner sees
        gap = np.abs(np.asarray(inputs).reshape(-1, 1, 4) - expected[None]) / (1 + np.abs(expected[None]))
        assert gap.max(-1).min(-1).max() < 1e-5  # every input is one standardised example, not rescaled again
    assert np.all(scaler.transform(x)[:, 3] == 0)  # the constant feature: centred, not divided by 0
    explicit = data_settings(_preprocess(config, npz_stats="per_feature"))
    np.testing.assert_array_equal(
        np.asarray(data.load_dataset(f"npz:{path}", "test", explicit)[1]["images"]),
        np.asarray(data.load_dataset(f"npz:{path}", "test", data_settings(config))[1]["images"]),
    )


def test_global_statistics_and_other_modes_leave_vectors_as_stored(tmp_path, config):
    x, y = _mixed_scales(np.random.default_rng(3), 200)
    path = tmp_path / "table.npz"
    np.savez(path, x=x, y=y)
    for keys, stats in (
        (dict(npz_stats="global"), (x[_train_rows(y)].mean(), x[_train_rows(y)].std())),
        (dict(normalization_mode="identity"), (0.0, 1.0)),  # 'identity' stays identity: no statistics at all
        (dict(normalization_mode="standard", npz_stats="per_feature"), None),  # per example, not per feature
    ):
        spec, arrays = data.load_dataset(f"npz:{path}", "train", data_settings(_preprocess(config, **keys)))
        np.testing.assert_allclose(np.asarray(arrays["images"]), x[_train_rows(y)].astype(np.float32))
        if stats is not None and keys.get("npz_stats") == "global":
            assert (spec.mean, spec.std) == pytest.approx(stats, rel=1e-6)


def _train_rows(y):
    """The rows of the training split without x_test: all but every 5th example of each class."""
    held_out = np.concatenate([np.flatnonzero(y == c)[4::5] for c in np.unique(y)])
    return np.setdiff1d(np.arange(len(y)), held_out)


def test_images_keep_one_global_mean_and_std_unless_per_feature_is_asked(tmp_path, config, digits):
    x, y = digits
    path = tmp_path / "images.npz"
    np.savez(path, x=x, y=y, x_test=x[:100], y_test=y[:100])
    spec, arrays = data.load_dataset(f"npz:{path}", "train", data_settings(config))  # auto: images are global
    assert spec.mean == pytest.approx(x.astype(np.float64).mean(), rel=1e-6)
    np.testing.assert_array_equal(np.asarray(arrays["images"])[..., 0], x)
    settings = data_settings(_preprocess(config, npz_stats="per_feature"))
    spec, arrays = data.load_dataset(f"npz:{path}", "test", settings)
    flat = x.reshape(len(x), -1)
    expected = StandardScaler().fit(flat).transform(flat[:100]).reshape(100, 8, 8)  # border pixels are constant
    assert (spec.mean, spec.std) == (0.0, 1.0)
    np.testing.assert_allclose(np.asarray(arrays["images"])[..., 0], expected, rtol=1e-5, atol=1e-5)


def test_uint8_pixels_are_read_as_fractions(tmp_path, config):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(50, 4, 4, 3), dtype=np.uint8)
    path = tmp_path / "pixels.npz"
    np.savez(path, x=x, y=np.arange(50) % 2, x_test=x[:10], y_test=np.arange(10) % 2)
    spec, arrays = data.load_dataset(f"npz:{path}", "train", data_settings(config))
    assert arrays["images"].dtype == np.uint8 and spec.input_shape == (4, 4, 3)
    assert spec.mean == pytest.approx(x.mean() / 255, rel=1e-6)
    assert spec.std == pytest.approx(x.std() / 255, rel=1e-6)


def _bad(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


X, Y = np.zeros((10, 4, 4)) + np.arange(10)[:, None, None], np.arange(10) % 2

BAD_FILES = {
    "no y": (dict(x=X), "has no array 'y'"),
    "no x": (dict(y=Y), "has no array 'x'"),
    "length mismatch": (dict(x=X, y=Y[:7]), "x has 10 examples but y has 7 labels"),
    "float labels": (dict(x=X, y=Y + 0.5), "y has dtype float64; labels must be integers"),
    "negative labels": (dict(x=X, y=Y - 1), "y holds negative labels"),
    "one class": (dict(x=X, y=np.zeros(10, dtype=int)), "the training split has 1 class"),
    "one-hot labels": (dict(x=X, y=np.eye(2, dtype=int)[Y]), "one-hot? store the class indices"),
    "x_test alone": (dict(x=X, y=Y, x_test=X), "has 'x_test' but no 'y_test'"),
    "test shape mismatch": (dict(x=X, y=Y, x_test=X[:, :2], y_test=Y), "x_test has examples of shape [2, 4, 1]"),
    "five axes": (dict(x=X[:, None, :, :, None], y=Y), "give [N, H, W, C], [N, H, W] or [N, D]"),
    "nan inputs": (dict(x=np.where(X > 8, np.nan, X), y=Y), "x holds 16 NaN or infinite values"),
    "strings": (dict(x=np.array(["a"] * 10), y=Y), "x has dtype <U1; inputs must be integers or floats"),
    "constant": (dict(x=np.ones((10, 3)), y=Y), "every value of the training inputs is 1"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_are_refused_in_one_line_before_anything_runs(tmp_path, case, capsys):
    arrays, problem = BAD_FILES[case]
    path = _bad(tmp_path, **arrays)
    status = launch.main(["--run_dir", str(tmp_path / "run"), "--config", *TINY, f"training.dataset=npz:{path}"])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert "\n" not in err, err
    assert err.startswith(f"error: training.dataset: npz file '{path}': ") and problem in err, err
    assert not (tmp_path / "run").exists()  # refused before the run started


def test_unreadable_and_missing_files_name_the_key(tmp_path, capsys):
    text = tmp_path / "notes.npz"
    text.write_text("not a zip")
    status = launch.main(
        ["--run_dir", str(tmp_path / "run"), "--config", *TINY, f"evaluation.datasets=[digits, 'npz:{text}']"]
    )
    err = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in err
    assert err.startswith(f"error: evaluation.datasets: npz file '{text}': cannot be read as a NumPy .npz file")
    status = launch.main(
        ["--run_dir", str(tmp_path / "run"), "--config", *TINY, f"training.dataset=npz:{tmp_path / 'absent.npz'}"]
    )
    err = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in err and f"npz file '{tmp_path / 'absent.npz'}' not found" in err


def test_resize_of_vectors_is_refused(tmp_path, config):
    path = _bad(tmp_path, x=np.random.default_rng(0).normal(size=(20, 6)), y=np.arange(20) % 2)
    resized = {**config, "data": {**config["data"], "preprocess": {**config["data"]["preprocess"], "resize": [4, 4]}}}
    with pytest.raises(ValueError, match=r"data.preprocess.resize: needs image inputs .* vectors of shape \[6\]"):
        data.check_dataset_available(f"npz:{path}", data_settings(resized), "training.dataset")


def test_a_changed_file_is_read_again(tmp_path, config):
    path = tmp_path / "changing.npz"
    np.savez(path, x=X, y=Y)
    assert data.load_dataset(f"npz:{path}", "train", data_settings(config))[0].num_classes == 2
    np.savez(path, x=np.concatenate([X, X]), y=np.arange(20) % 3)
    assert data.load_dataset(f"npz:{path}", "train", data_settings(config))[0].num_classes == 3
