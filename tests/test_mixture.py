"""scikit-learn's tables as offline sources, and a mixture of meta-training datasets per episode
(``training.dataset: mixture``): checked against the tables read with scikit-learn and split by hand,
binomial bounds on how often each dataset is drawn, and 1 vs 2 ranks."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import sklearn.datasets
from sklearn.preprocessing import StandardScaler

from tests.conftest import TINY, checkpoint_arrays, launch
from vsml import data
from vsml.config import build_config, resolve_for_rank
from vsml.data import offline_source
from vsml.settings import data_settings

TABLES = {"wine": sklearn.datasets.load_wine, "breast_cancer": sklearn.datasets.load_breast_cancer}
TABLES["iris"] = sklearn.datasets.load_iris
MIX = ["training.dataset=mixture", "data.mixture.datasets=[digits, wine, breast_cancer]"]
IDENTITY = ["data.preprocess.normalization_mode=identity"]


def settings(*overrides):
    return data_settings(resolve_for_rank(build_config(overrides=list(overrides)), 0))


def split_by_hand(name: str, subset: str):
    """``(x, y)`` of ``subset``: within each class, every 5th example (position 4, 9, ...) is the test split."""
    x, y = TABLES[name](return_X_y=True)
    test = np.zeros(len(y), bool)
    for cls in np.unique(y):
        test[np.flatnonzero(y == cls)[4::5]] = True
    chosen = test if subset == "test" else ~test
    return x[chosen], y[chosen]


@pytest.mark.parametrize("name", list(TABLES))
def test_tables_are_split_and_standardised_with_their_training_split(name):
    x_train, _ = split_by_hand(name, "train")
    scaler = StandardScaler().fit(x_train)
    for subset in ("train", "test"):
        x, y = split_by_hand(name, subset)
        spec, arrays = data.load_dataset(name, subset, settings())
        assert spec.input_shape == (x.shape[1],) and spec.num_classes == len(np.unique(y))
        np.testing.assert_allclose(np.asarray(arrays["images"]), scaler.transform(x), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(arrays["labels"]), y)
    _, raw = data.load_dataset(name, "train", settings(*IDENTITY))  # other modes: the table's own values
    np.testing.assert_allclose(np.asarray(raw["images"]), x_train, rtol=1e-6)
    assert name in offline_source.PROVENANCE and "scikit-learn" in offline_source.PROVENANCE[name]["terms"]


def test_tables_know_their_sizes_without_loading_and_refuse_resize():
    assert data.learner_sizes("breast_cancer", settings()) == ((30,), 2)
    with pytest.raises(ValueError, match=r"^data.preprocess.resize: needs image inputs .* set it to null$"):
        data.check_dataset_available("iris", settings("data.preprocess.resize=[8, 8]"), "evaluation.datasets")


def pools(*overrides):
    """Each mixture dataset's training inputs as the episode shows them without projection: [N, 64]
    (stored values, normalised by the dataset's mean and std, zero-padded)."""
    out = {}
    for name in ("digits", "wine", "breast_cancer"):
        spec, arrays = data.load_dataset(name, "train", settings(*overrides))
        flat = np.asarray(arrays["images"], np.float64).reshape(len(arrays["labels"]), -1) * spec.scale
        if spec.normalization_mode == "dataset_standard":
            flat = (flat - spec.mean) / spec.std
        out[name] = (np.pad(flat, ((0, 0), (0, 64 - flat.shape[1]))), np.asarray(arrays["labels"]))
    return out


def mixture_episodes(keys, *overrides, length=3):
    """``(spec, inputs [K, T, 64], class indices [K, T])`` of one episode per key (batch 1)."""
    spec, arrays = data.load_dataset("mixture", "train", settings(*MIX, *overrides))
    draw = jax.jit(jax.vmap(lambda key: data.sample_episode(spec, arrays, key, length, 1)))
    inputs, labels = draw(jax.vmap(jax.random.PRNGKey)(np.asarray(keys)))
    return spec, np.asarray(inputs)[:, :, 0], np.asarray(labels)[:, :, 0].argmax(-1)


def source_of_episode(inputs, labels, pool_table) -> list[str]:
    """The datasets whose training pool holds every (input, label) of the episode (labels None: inputs only)."""
    found = []
    for name, (pool, pool_labels) in pool_table.items():
        rows = [np.flatnonzero(np.abs(pool - x).max(-1) < 1e-4) for x in inputs]
        wanted = [None] * len(inputs) if labels is None else labels
        if all(len(r) and (c is None or (pool_labels[r] == c).any()) for r, c in zip(rows, wanted)):
            found.append(name)
    return found


def test_every_episode_comes_whole_from_one_pool_drawn_with_the_weights():
    weights = np.array([2, 1, 1]) / 4
    count = 1200
    spec, inputs, labels = mixture_episodes(range(count), *IDENTITY, "data.mixture.weights=[2, 1, 1]")
    assert spec.input_shape == (64,) and spec.num_classes == 10 and inputs.shape == (count, 3, 64)
    table = pools(*IDENTITY)
    origins = [source_of_episode(x, y, table) for x, y in zip(inputs, labels)]
    assert all(len(o) == 1 for o in origins)  # one dataset an episode, its examples and labels, zero-padded
    counts = np.array([sum(o == [name] for o in origins) for name in table])
    bound = 4 * np.sqrt(count * weights * (1 - weights))  # 4 standard deviations of a binomial count
    assert np.all(np.abs(counts - count * weights) < bound), counts
    classes = {name: set(labels[[o == [name] for o in origins]].ravel()) for name in table}
    assert classes["wine"] <= {0, 1, 2} and classes["breast_cancer"] <= {0, 1}  # never an unused class


def test_projection_to_the_common_width_is_one_glorot_matrix_per_episode():
    keys = range(16)
    _, plain, _ = mixture_episodes(keys, length=80)
    _, projected, _ = mixture_episodes(keys, "data.episode_augment.rand_proj=true", length=80)
    table = pools()
    for x, z in zip(plain, projected):
        (name,) = source_of_episode(x, None, table)
        dim = {"digits": 64, "wine": 13, "breast_cancer": 30}[name]
        matrix, *_ = np.linalg.lstsq(x[:, :dim].astype(np.float64), z.astype(np.float64), rcond=None)
        # one linear map [D_i, 64] for the whole episode (float32 rounding relative to the inputs' scale)
        np.testing.assert_allclose(x[:, :dim] @ matrix, z, atol=1e-5 * np.abs(z).max())
        if name != "digits":  # digits has constant pixels, so its fitted map is not unique
            assert np.abs(matrix).max() <= np.sqrt(6 / (dim + 64)) + 1e-3


def test_the_same_key_gives_the_same_episode_and_widths_are_checked_before_loading():
    first = mixture_episodes([7, 8], "data.episode_augment.rand_proj=true")[1]
    np.testing.assert_array_equal(first, mixture_episodes([7, 8], "data.episode_augment.rand_proj=true")[1])
    refusals = {
        "data.mixture.width=32": r"^data.mixture.width: 32 cannot hold digits's 64 inputs .* turn that projection on$",
        "data.mixture.weights=[1, 2]": r"^data.mixture.weights: has 2 entries for 3 datasets",
        "data.mixture.datasets=[digits, mixture]": r"^data.mixture.datasets: cannot hold 'mixture' itself",
        "data.mixture.datasets=[]": r"^training.dataset: mixture draws its episodes from data.mixture.datasets",
        "data.preprocess.pad.input=[64]": r"^data.preprocess.pad.input: cannot give a mixture's datasets one shape",
        "data.mixture.datasets=[digits, wnie]": r"^data.mixture.datasets: unknown dataset 'wnie' \(did you mean 'wine'",
    }
    for override, message in refusals.items():
        with pytest.raises(ValueError, match=message):
            data.check_dataset_available("mixture", settings(*MIX, override), "training.dataset", training=True)
    with pytest.raises(ValueError, match=r"^evaluation.datasets: 'mixture' is meta-training data only"):
        data.check_dataset_available("mixture", settings(*MIX), "evaluation.datasets")
    with pytest.raises(ValueError, match=r"^data.mixture.datasets: is set but training.dataset is 'digits'; set"):
        data.check_dataset_available("digits", settings(*MIX), "training.dataset", training=True)
    data.check_dataset_available("digits", settings(*MIX), "evaluation.datasets")  # meta-tests ignore the mixture
    # with the projection on, a narrower common width is fine
    data.check_dataset_available(
        "mixture", settings(*MIX, "data.mixture.width=32", "data.episode_augment.rand_proj=true"), "x", training=True
    )
    assert data.learner_sizes("mixture", settings(*MIX, "data.mixture.width=32")) == ((32,), 10)


@pytest.mark.mpi
@pytest.mark.slow
def test_two_ranks_give_the_same_meta_parameters_as_one_on_a_mixture(tmp_path):
    args = ["--config", *TINY, *MIX, "data.episode_augment.rand_proj=true", "training.iterations=2"]
    args += ["evaluation.frequency=50", "evaluation.datasets=[iris]"]
    for name, ranks in (("one", None), ("two", 2)):
        result = launch(*args, "--run_dir", tmp_path / name, ranks=ranks)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    one, two = checkpoint_arrays(tmp_path / "one"), checkpoint_arrays(tmp_path / "two")
    assert one.keys() == two.keys() and one
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)
