"""Node perturbation (docs/DESIGN.md §5): the mean update follows the true gradient at batch 1 and 16;
the shared-noise / batch-mean-δL bug does not; NP and online SGD learn real digits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vsml import data
from vsml.config import build_config
from vsml.learners import build_learner, mlp, nodepert
from vsml.meta import objective
from vsml.settings import data_settings

SIZES = [6, 10, 4]  # a two-layer tanh MLP
SIGMA, BOUND, DRAWS = 0.01, 100.0, 20000


def problem(batch: int, seed: int = 0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    layers = mlp.init(k1, SIZES)
    x = jax.random.normal(k2, (batch, SIZES[0]))
    y = jax.nn.one_hot(jax.random.randint(k3, (batch,), 0, SIZES[-1]), SIZES[-1])
    return layers, x, y


def true_gradient(layers, x, y):
    """The gradient of the batch-mean clean loss, by autodiff (independent of the NP code)."""
    return jax.jit(jax.grad(lambda ls: jnp.mean(optax.softmax_cross_entropy(mlp.apply(ls, x, BOUND), y))))(layers)


def mean_estimate(estimator, layers, x, y, draws=DRAWS):
    keys = jax.random.split(jax.random.PRNGKey(123), draws)
    samples = jax.jit(jax.vmap(lambda k: estimator(layers, x, y, k, SIGMA, BOUND)[0]))(keys)
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64).mean(0), samples)


def cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def layer_cosines(estimate, true):
    return [
        cosine(np.concatenate([e["w"].ravel(), e["b"]]), np.concatenate([np.ravel(t["w"]), t["b"]]))
        for e, t in zip(estimate, true)
    ]


@pytest.mark.parametrize("batch", [1, 16])
def test_node_perturbation_follows_the_true_gradient(batch):
    layers, x, y = problem(batch)
    estimate = mean_estimate(nodepert.node_perturbation_grad, layers, x, y)
    true = true_gradient(layers, x, y)
    assert min(layer_cosines(estimate, true)) > 0.9
    # the scale is the gradient's too (the update is -lr * estimate, like SGD)
    for e, t in zip(estimate, true):
        np.testing.assert_allclose(np.linalg.norm(e["w"]), np.linalg.norm(t["w"]), rtol=0.25)


@pytest.mark.slow
def test_weight_perturbation_follows_the_true_gradient():
    layers, x, y = problem(batch=4)
    estimate = mean_estimate(nodepert.weight_perturbation_grad, layers, x, y)
    assert min(layer_cosines(estimate, true_gradient(layers, x, y))) > 0.9


def shared_noise_batch_mean(layers, x, y, key, sigma, bound):
    """The public bug, for contrast only: one ξ for the whole batch and the batch-mean δL."""
    inputs, clean = mlp.forward(layers, x, bound)
    keys = jax.random.split(key, len(layers))
    noise = [sigma * jax.random.normal(k, (1, p["b"].shape[0])) for k, p in zip(keys, layers)]
    _, noisy = mlp.forward(layers, x, bound, [jnp.broadcast_to(xi, (x.shape[0], xi.shape[1])) for xi in noise])
    delta = jnp.mean(optax.softmax_cross_entropy(noisy, y)) - jnp.mean(optax.softmax_cross_entropy(clean, y))
    scale = delta / sigma**2
    return [{"w": scale * jnp.mean(h, 0)[:, None] * xi, "b": scale * xi[0]} for h, xi in zip(inputs, noise)], clean


def test_shared_noise_with_batch_mean_loss_is_biased_at_batch_16():
    layers, x, y = problem(batch=16)
    true = true_gradient(layers, x, y)
    buggy = mean_estimate(shared_noise_batch_mean, layers, x, y)
    # It converges to (mean_n g_n) ⊗ (mean_n h_n), not mean_n g_n ⊗ h_n: the weights' direction is off.
    assert min(cosine(b["w"], t["w"]) for b, t in zip(buggy, true)) < 0.6
    # so the check of test_node_perturbation_follows_the_true_gradient[16] would fail for it
    # (at batch 1 the two estimators coincide: only a batch > 1 test catches the bug).
    with pytest.raises(AssertionError):
        assert min(layer_cosines(buggy, true)) > 0.9


def test_nodepert_learner_applies_minus_lr_times_the_estimate():
    """One step of the learner equals a hand-made step with the estimator and the same key."""
    cfg = build_config(
        overrides=[
            "model.type=NodePert",
            "model.nodepert.num_layers=2",
            "model.nodepert.hidden_size=10",
            "model.nodepert.lr=0.5",
        ]
    )["model"]
    learner = build_learner(cfg, (6,), 4)
    params = learner.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 6))
    y = jax.nn.one_hot(jnp.asarray([[0, 1, 2], [3, 0, 1]]), 4)
    key = jax.random.PRNGKey(2)

    @jax.jit
    def by_hand(layers):
        step_keys = jax.random.split(key, 2)
        estimate, first = nodepert.node_perturbation_grad(layers, x[0], y[0], step_keys[0], 0.01, 100.0)
        stepped = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, layers, estimate)
        return first, mlp.apply(stepped, x[1], 100.0)

    logits = jax.jit(learner.run)(params, key, x, y)
    first, second = by_hand(params["layers"])
    np.testing.assert_allclose(logits[0], first, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits[1], second, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- learning on real digits


def online_accuracy(model_type: str, overrides=(), steps=3000, dataset="digits"):
    """Online accuracy ``[steps]`` of one episode on the training split of an offline dataset."""
    config = build_config(overrides=[f"model.type={model_type}", *overrides])
    spec, arrays = data.load_dataset(dataset, "train", data_settings(config))
    learner = build_learner(config["model"], spec.input_shape, spec.num_classes)
    curves = objective.make_curves(
        objective.make_episode(learner.run, lambda a, k: data.sample_episode(spec, a, k, steps, 1))
    )
    _, accuracy = jax.jit(curves)(learner.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), arrays)
    return np.asarray(accuracy)


@pytest.mark.parametrize("model_type,threshold", [("NodePert", 0.6), ("SGD", 0.8)])
def test_online_learners_learn_digits(model_type, threshold):
    """Default NodePert (σ 0.01, η 0.01) and SGD (lr 0.01) on 3000 online digits: chance is 10%."""
    accuracy = online_accuracy(model_type)
    assert accuracy[:200].mean() < 0.5  # it starts near chance ...
    assert accuracy[-1000:].mean() > threshold  # ... and learns within the episode
