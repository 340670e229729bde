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
