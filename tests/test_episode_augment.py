"""``data.episode_augment``: transforms drawn per training episode from its key, checked as properties
(a linear map shared by the whole episode, a permutation, a bijection of classes) against the same
episode without them; the same key gives the same transforms on any rank count."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from tests.conftest import TINY, checkpoint_arrays, launch
from vsml import data
from vsml.config import build_config, resolve_for_rank
from vsml.settings import data_settings

ALL_ON = ["data.episode_augment.rand_proj=true", "data.episode_augment.shuffle=true"]
ALL_ON += ["data.episode_augment.permute_labels=true"]
# `sum` inputs are i.i.d. N(0, 1), so a [T * B, 64] episode determines a linear map on it exactly
GAUSSIAN = ["sum_dataset.input_size=[8, 8, 1]", "data.preprocess.normalization_mode=identity"]


def episode(*overrides, name="sum", key=0, training=True, length=100, batch=2):
    """``(spec, inputs [T * B, D], class indices [T * B])`` of one episode of ``name``."""
    config = resolve_for_rank(build_config(overrides=list(overrides)), 0)
    spec, arrays = data.load_dataset(name, "train", data_settings(config), training)
    inputs, labels = data.sample_episode(spec, arrays, jax.random.PRNGKey(key), length, batch)
    return spec, np.asarray(inputs).reshape(length * batch, -1), np.asarray(labels).argmax(-1).reshape(-1)


def fitted_map(plain: np.ndarray, transformed: np.ndarray) -> np.ndarray:
    """The ``[D, D]`` matrix M with ``transformed = plain @ M`` (least squares), after checking it fits."""
    matrix, *_ = np.linalg.lstsq(plain.astype(np.float64), transformed.astype(np.float64), rcond=None)
    np.testing.assert_allclose(plain @ matrix, transformed, atol=1e-4)  # one linear map for every step
    return matrix


def test_projection_is_one_glorot_matrix_per_episode_and_new_each_episode():
    limit = np.sqrt(6 / (2 * 64))
    maps = []
    for key in (0, 1):
        spec, plain, _ = episode(*GAUSSIAN, key=key)
        spec_on, projected, _ = episode(*GAUSSIAN, "data.episode_augment.rand_proj=true", key=key)
        assert spec.episode_augment is None and spec_on.episode_augment.rand_proj
        maps.append(fitted_map(plain, projected))
    for matrix in maps:
        assert np.abs(matrix).max() <= limit + 1e-4
        assert np.std(matrix) == pytest.approx(limit / np.sqrt(3), rel=0.05)  # U(-limit, limit)
    assert np.abs(maps[0] - maps[1]).mean() > limit / 2  # independent draws, not the same matrix
    again = episode(*GAUSSIAN, "data.episode_augment.rand_proj=true", key=1)[1]
    np.testing.assert_array_equal(again, episode(*GAUSSIAN, "data.episode_augment.rand_proj=true", key=1)[1])


def test_shuffle_permutes_the_pixels_anew_each_episode():
    perms = []
    for key in (0, 1):
        plain = episode(*GAUSSIAN, key=key)[1]
        shuffled = episode(*GAUSSIAN, "data.episode_augment.shuffle=true", key=key)[1]
        # column j of the shuffled input is exactly one column of the plain input
        matches = [np.flatnonzero((plain == shuffled[:, [j]]).all(0)) for j in range(64)]
        assert all(len(m) == 1 for m in matches)
        perm = np.array([m[0] for m in matches])
        np.testing.assert_array_equal(np.sort(perm), np.arange(64))
        perms.append(perm)
    assert (perms[0] != perms[1]).any() and (perms[0] != np.arange(64)).any()


def test_permute_labels_is_a_bijection_of_the_classes_within_an_episode():
    mappings = []
    for key in range(4):
        _, plain_inputs, plain = episode("data.preprocess.pad.output=12", name="digits", key=key)
        spec, inputs, permuted = episode(
            "data.preprocess.pad.output=12", "data.episode_augment.permute_labels=true", name="digits", key=key
        )
        np.testing.assert_array_equal(inputs, plain_inputs)  # the examples are untouched
        mapping = {}
        for c, new in zip(plain, permuted):
            assert mapping.setdefault(int(c), int(new)) == new  # one class maps one way all episode long
        assert len(set(mapping.values())) == len(mapping)  # distinct classes stay distinct
        assert set(mapping.values()) <= set(range(10))  # among the data's classes, never the padding
        mappings.append(mapping)
    assert any(m != {c: c for c in m} for m in mappings) and len({tuple(sorted(m.items())) for m in mappings}) > 1


def test_meta_test_episodes_and_settings_off_are_untouched():
    spec_off, plain, plain_labels = episode(*GAUSSIAN, key=3)
    spec_eval, evaluated, evaluated_labels = episode(*GAUSSIAN, *ALL_ON, key=3, training=False)
    assert spec_off.episode_augment is None and spec_eval.episode_augment is None
    np.testing.assert_array_equal(evaluated, plain)
    np.testing.assert_array_equal(evaluated_labels, plain_labels)


def test_each_transform_has_its_own_key():
    """Turning one transform on does not change another's draw (adding label permutation keeps the projection)."""
    proj = episode(*GAUSSIAN, "data.episode_augment.rand_proj=true", key=5)[1]
    both = episode(*GAUSSIAN, "data.episode_augment.rand_proj=true", "data.episode_augment.permute_labels=true", key=5)
    np.testing.assert_array_equal(both[1], proj)


def _meta_losses(run_dir):
    return [json.loads(line)["meta_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.mpi
@pytest.mark.slow
def test_two_ranks_give_the_same_meta_parameters_as_one_with_augmentation(tmp_path):
    args = ["--config", *TINY, "training.iterations=2", "evaluation.frequency=50"]
    for name, extra, ranks in (("one", ALL_ON, None), ("two", ALL_ON, 2), ("off", [], None)):
        result = launch(*args, *extra, "--run_dir", tmp_path / name, ranks=ranks)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    one, two = checkpoint_arrays(tmp_path / "one"), checkpoint_arrays(tmp_path / "two")
    assert one.keys() == two.keys() and one
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)
    assert _meta_losses(tmp_path / "one") == _meta_losses(tmp_path / "two")
    # the training episodes were transformed: the same run without augmentation has other meta-losses
    assert _meta_losses(tmp_path / "off") != _meta_losses(tmp_path / "one")
