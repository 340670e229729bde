"""bench/tabular.py's baselines against plain per-step references: online logistic regression (its gradient
from jax.grad of the cross-entropy) and nearest class mean (the means recomputed from scratch each step)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bench import online_baselines, tabular


def _stream(seed: int, episodes: int = 3, length: int = 30, dim: int = 5, classes: int = 4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(episodes, length, dim)), rng.integers(0, classes, size=(episodes, length)), classes


def test_logistic_regression_predicts_then_takes_one_gradient_step():
    inputs, labels, classes = _stream(0)
    lr = 0.3

    def loss(params, x, label):
        return -jax.nn.log_softmax(x @ params["w"] + params["b"])[label]

    grad = jax.jit(jax.grad(loss))
    for e in range(len(inputs)):
        params = {"w": jnp.zeros((inputs.shape[2], classes)), "b": jnp.zeros(classes)}
        expected = []
        for x, label in zip(inputs[e], labels[e]):
            expected.append(int(jnp.argmax(x @ params["w"] + params["b"])))  # predicted before the label
            params = jax.tree.map(lambda p, g: p - lr * g, params, grad(params, jnp.asarray(x), label))
        np.testing.assert_array_equal(online_baselines.logistic_regression(inputs, labels, classes, lr)[e], expected)


def test_nearest_class_mean_uses_the_examples_seen_before_each_step():
    inputs, labels, classes = _stream(1)
    predicted = online_baselines.nearest_class_mean(inputs, labels, classes)
    for e in range(len(inputs)):
        for t in range(inputs.shape[1]):
            seen = {c: inputs[e, :t][labels[e, :t] == c] for c in range(classes) if (labels[e, :t] == c).any()}
            if not seen:
                assert predicted[e, t] == 0
                continue
            distance = {c: float(((inputs[e, t] - x.mean(0)) ** 2).sum()) for c, x in seen.items()}
            assert predicted[e, t] == min(distance, key=distance.get)


def test_accuracies_are_the_episode_mean_and_the_last_quarter():
    labels = np.zeros((2, 8), dtype=int)
    predictions = np.zeros((2, 8), dtype=int)
    predictions[:, :4] = 1  # wrong in the first half only
    assert tabular.accuracies(predictions, labels) == (0.5, 1.0)


def test_logistic_regression_on_a_stream_worked_by_hand():
    # x = 1 every step, 2 classes, lr 1. Step 0: logits 0, 0 -> class 0; label 1: softmax error (0.5, -0.5),
    # so w = b = (-0.5, 0.5). Step 1: logits (-1, 1) -> class 1; label 0: softmax (0.119, 0.881), error
    # (-0.881, 0.881): w = b = (0.381, -0.381). Step 2: logits (0.762, -0.762) -> class 0.
    inputs = np.ones((1, 3, 1))
    labels = np.array([[1, 0, 0]])
    np.testing.assert_array_equal(online_baselines.logistic_regression(inputs, labels, 2, 1.0), [[0, 1, 0]])


def test_nearest_class_mean_on_a_stream_worked_by_hand():
    # Class 0 near 0, class 1 near 10: no label yet -> 0; only class 0 seen -> 0; then the nearer running mean.
    inputs = np.array([[[0.0], [10.0], [1.0], [9.0], [4.0], [6.0]]])
    labels = np.array([[0, 1, 0, 1, 0, 1]])
    # step 4: means 0.5 and 9.5 -> 0; step 5: means (0 + 1 + 4) / 3 = 1.67 and 9.5 -> 6 is nearer 9.5: 1.
    np.testing.assert_array_equal(online_baselines.nearest_class_mean(inputs, labels, 2), [[0, 0, 0, 1, 0, 1]])
