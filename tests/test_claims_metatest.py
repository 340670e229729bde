"""bench/claims.py's meta-test: the tabular sets' streams, the hand-designed rules on the same episodes,
--algorithm's verdict and its pipeline at --quick."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import claims, claims_algorithm, claims_matrix, claims_metatest, online_baselines  # noqa: E402


def _train_rows(y: np.ndarray) -> np.ndarray:
    """The npz loader's training split, written out here: within each class, every 5th example is test."""
    keep = np.ones(len(y), bool)
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        keep[members[4::5]] = False
    return keep


@pytest.mark.parametrize("name", list(claims_matrix.TABULAR_TEST_SETS))
def test_tabular_streams_are_the_scikit_learn_rows_standardised_per_feature(tmp_path, name):
    args = claims.parse_args(["--out", str(tmp_path), "--quick"])
    online_baselines.write_npz(name, tmp_path / claims_matrix.TABULAR_TEST_SETS[name][0].removeprefix("npz:"))
    _, task = claims_metatest.load_set(args, name, any_size=True)
    inputs, labels = claims_metatest.episode_streams(task, count=4)(seed=3)  # [E, T, D], [E, T]

    x, y, _ = online_baselines.dataset_arrays(name)
    rows = _train_rows(y)
    standardised = (x[rows] - x[rows].mean(0)) / x[rows].std(0)  # the training split's own statistics
    assert inputs.shape == (4, claims_matrix.SCALES["quick"]["test_length"], x.shape[1])
    assert task.spec.num_classes == len(np.unique(y))  # the set's own class count, no padding
    for example, label in zip(inputs.reshape(-1, x.shape[1]), labels.reshape(-1)):
        distance = np.abs(standardised - example).max(axis=1)
        match = distance.argmin()
        assert distance[match] < 1e-4 and y[rows][match] == label  # a training row, with its own label
    again, _ = claims_metatest.episode_streams(task, count=4)(seed=3)
    other, _ = claims_metatest.episode_streams(task, count=4)(seed=4)
    np.testing.assert_array_equal(inputs, again)  # one seed, one draw
    assert not np.array_equal(inputs, other)


def test_rules_see_the_episodes_the_learners_see(tmp_path):
    """The NumPy rules' episodes (drawn once) are the jax learners' (their labels, step by step)."""
    import jax

    from vsml.learners import build_learner

    args = claims.parse_args(["--out", str(tmp_path), "--quick"])
    online_baselines.write_npz("iris", tmp_path / "data" / "iris.npz")
    model = {"model.type": "SGD", "model.sgd.optimizer": "sgd", "model.sgd.lr": 0.1}
    settings, task = claims_metatest.load_set(args, "iris", model)
    learner = build_learner(settings.model, task.spec.input_shape, task.spec.num_classes)
    _, learner_labels = claims_metatest.episode_runner(learner, task, 3)(learner.init(jax.random.PRNGKey(0)), 7)
    _, labels = claims_metatest.episode_streams(task, 3)(7)
    np.testing.assert_array_equal(learner_labels, labels)


def test_episode_draws_are_the_matrix_episodes_or_one_per_seed(tmp_path):
    matrix = claims.parse_args(["--out", str(tmp_path)])
    given = claims.parse_args(["--out", str(tmp_path), "--algorithm", "pretrained:vsml-digits"])
    assert [claims_metatest.episode_seed(matrix, 22, s) for s in (0, 1, 2)] == [22, 22, 22]
    assert [claims_metatest.episode_seed(given, 22, s) for s in (0, 1, 2)] == [22, 23, 24]  # seed 0: the matrix's


def test_numpy_rule_accuracy_marks_the_right_predictions():
    # Nearest class mean on a 1-D stream: class 0 at 0, class 1 at 10.
    inputs = np.array([[[0.0], [10.0], [1.0], [9.0]]])
    labels = np.array([[0, 1, 0, 1]])
    # step 0: no label yet -> 0 (right); step 1: only class 0 seen -> 0 (wrong); then nearest mean (right).
    accuracy = claims_metatest.numpy_rule_accuracy("nearest_class_mean", None, inputs, labels, 2)
    np.testing.assert_array_equal(accuracy, [[1, 0, 1, 1]])


def _row(name: str, figures: dict[str, tuple[float, float]]) -> dict:
    """A report row with medians (episode mean, last quarter) per set."""
    return {
        "learner": name,
        "results": {t: {"episode_mean": {"median": m}, "last_quarter": {"median": q}} for t, (m, q) in figures.items()},
    }


def test_verdict_counts_sets_beaten_against_both_rivals():
    unseen = ["mnist14", "random", "iris", "mnist28"]
    algorithm = _row("alg", {"mnist14": (0.6, 0.7), "random": (0.5, 0.6), "iris": (0.8, 0.9), "mnist28": (0.55, 0.71)})
    sgd = _row("SGD", {"mnist14": (0.5, 0), "random": (0.8, 0), "iris": (0.7, 0), "mnist28": (0.56, 0)})
    adam = _row("Adam", {"mnist14": (0.59, 0), "random": (0.4, 0), "iris": (0.85, 0), "mnist28": (0.5, 0)})
    found = claims_algorithm.verdict(algorithm, {"SGD": sgd, "Adam": adam}, unseen, 100)
    # mnist14: above both; random: below SGD; iris: below Adam; mnist28: below SGD.
    assert [t for t, v in found["per_set"].items() if v["beats"]] == ["mnist14"]
    assert (found["wins"], found["needed"], found["beats_target"]) == (1, 2, False)
    assert found["mnist28_target"] and found["mnist28_last_quarter"] == 0.71

    sgd["results"]["random"]["episode_mean"]["median"] = 0.3  # now random is beaten too: 2 of 4
    found = claims_algorithm.verdict(algorithm, {"SGD": sgd, "Adam": adam}, unseen, 100)
    assert (found["wins"], found["beats_target"]) == (2, True)
    text = claims_algorithm.verdict_markdown(found, "alg")
    assert "**reached** — 2 of 4 (needed 2)" in text and "**reached** — 71.0 %" in text

    # Below 70 % on MNIST, or MNIST not unseen: not reached.
    algorithm["results"]["mnist28"]["last_quarter"]["median"] = 0.69
    assert not claims_algorithm.verdict(algorithm, {"SGD": sgd, "Adam": adam}, unseen, 100)["mnist28_target"]
    algorithm["results"]["mnist28"]["last_quarter"]["median"] = 0.9
    assert not claims_algorithm.verdict(algorithm, {"SGD": sgd, "Adam": adam}, unseen[:3], 100)["mnist28_target"]


def test_unseen_sets_follow_the_meta_training_datasets():
    sets = claims_matrix.test_sets(claims.parse_args(["--out", "x", "--algorithm", "pretrained:vsml-digits"]))
    general = {"training": {"dataset": "mixture"}, "data": {"mixture": {"datasets": ["digits", "wine", "iris"]}}}
    trained_on = claims_algorithm.meta_trained_on(general)
    assert trained_on == ["digits", "wine", "iris"]
    assert set(sets) - set(claims_algorithm.unseen_sets(sets, trained_on)) == {"digits", "iris"}
    mnist = claims_algorithm.meta_trained_on({"training": {"dataset": {"mpi_split": ["mnist_offline"]}}})
    seen = set(sets) - set(claims_algorithm.unseen_sets(sets, mnist, ["random"]))
    assert seen == {"mnist14", "mnist14-5cls", "mnist28", "random"}  # projected / permuted / inverted: unseen


def test_a_bad_algorithm_is_one_line_before_any_work(tmp_path, capsys):
    for spec, words in (("pretrained:nope", "no shipped algorithm 'nope'"), (str(tmp_path), "has no checkpoint.npz")):
        with pytest.raises(SystemExit):
            claims.parse_args(["--out", str(tmp_path / "out"), "--algorithm", spec])
        assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# 1-6 min on 2 shared cores (load 3-13): a shipped algorithm, every set, every rule, two episode draws.
@pytest.mark.slow
def test_algorithm_pipeline_reports_from_its_files(tmp_path):
    out = tmp_path / "metatest"
    command = ["--algorithm", "pretrained:vsml-digits", "--quick", "--out", str(out)]
    assert claims.main(command) == 0
    folder = out / "algorithm" / "vsml-digits"
    draws = [json.loads((folder / f"seed{s}" / "metatest.json").read_text()) for s in (0, 1)]
    sets = [*claims_matrix.META_TEST_SETS, "mnist28", *claims_matrix.TABULAR_TEST_SETS]
    for draw in draws:
        assert set(draw["results"]) == set(sets) and draw["meta_trained_on"] == ["digits"]
    assert draws[0]["results"]["mnist14"]["episode_mean"] != draws[1]["results"]["mnist14"]["episode_mean"]
    text = (folder / "report.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| learner | meta-trained on | digits"))
    table = text.split(header)[1].strip().split("\n\n")[0].splitlines()[1:]  # past the |---| line
    body = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")[2:]] for r in table}
    assert set(body) == {"vsml-digits", *claims_matrix.HAND_DESIGNED, "chance"}
    image_sets = sets[: -len(claims_matrix.TABULAR_TEST_SETS)]
    for column, test_set in enumerate(image_sets):
        per_draw = [np.mean(d["results"][test_set]["episode_mean"]) for d in draws]
        assert body["vsml-digits"][column].startswith(f"{100 * np.median(per_draw):.1f} [")
    assert "**Tabular sets**" in text and "**Verdict for vsml-digits**" in text
    verdict = json.loads((folder / "report.json").read_text())["verdict"]
    assert "digits" not in verdict["unseen"] and len(verdict["unseen"]) == len(sets) - 1
    assert (folder / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
