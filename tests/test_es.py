"""ES: the estimate follows the true gradient; shaping; noise and slices independent of the rank count."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vsml.comm import SingleProcessComm
from vsml.meta import es, sliced, slicing

SCALES = jnp.linspace(0.5, 3.0, 12)


def smooth_loss(params, key, data):
    """A smooth non-quadratic test function; ``key`` and ``data`` are unused."""
    x = params["x"]
    return jnp.sum(SCALES * (x - 1.0) ** 2) + jnp.sum(jnp.sin(3.0 * x)) + params["y"] ** 2


def _outer_loop(population, noise_std=0.01, shaping="raw", comm=None, lr=0.025):
    params = {"x": jnp.full((12,), 0.2), "y": jnp.asarray(0.7)}
    outer_loop = es.EvolutionStrategy(
        smooth_loss,
        params,
        es.ESConfig(population, noise_std, shaping),
        sliced.make_optimizer(lr, {}, 0.0),
        comm or SingleProcessComm(),
    )
    return outer_loop, outer_loop.init(params, seed=3)


def _estimate(outer_loop, state, shaping, noise_std=0.01):
    """The single-rank ES gradient, composed of the functions ``EvolutionStrategy.step`` runs."""
    utilities, _ = es.shape_fitness(outer_loop.evaluate(state, {}), shaping)
    weights = es.pair_weights(utilities, noise_std)
    total = es.noise_sum(state.rng["noise"], state.generation, outer_loop.item_indices, weights, outer_loop.dim)
    return es.mean_gradient(total, weights, outer_loop.population_size)


def _cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("shaping", ["raw", "centered_rank"])
def test_es_gradient_points_along_true_gradient(shaping):
    outer_loop, state = _outer_loop(population=4096, shaping=shaping)
    estimate = _estimate(outer_loop, state, shaping)
    true = jax.flatten_util.ravel_pytree(jax.grad(smooth_loss)(state.params, None, None))[0]
    assert _cosine(estimate, np.asarray(true)) > 0.95


def test_raw_estimate_has_the_gradient_scale():
    outer_loop, state = _outer_loop(population=8192)
    estimate = _estimate(outer_loop, state, "raw")
    true = np.asarray(jax.flatten_util.ravel_pytree(jax.grad(smooth_loss)(state.params, None, None))[0])
    np.testing.assert_allclose(np.linalg.norm(estimate), np.linalg.norm(true), rtol=0.1)


def test_step_applies_exactly_the_composed_estimate():
    """``step`` = evaluate, shape, weigh, sum the noise, average, apply (here plain SGD, lr 1)."""
    params = {"x": jnp.full((12,), 0.2), "y": jnp.asarray(0.7)}
    outer_loop = es.EvolutionStrategy(
        smooth_loss, params, es.ESConfig(16, 0.01, "centered_rank"), optax.sgd(1.0), SingleProcessComm()
    )
    state = outer_loop.init(params, seed=3)
    expected = jax.flatten_util.ravel_pytree(params)[0] - _estimate(outer_loop, state, "centered_rank")
    new_state, stats = outer_loop.step(state, {})
    np.testing.assert_allclose(np.asarray(jax.flatten_util.ravel_pytree(new_state.params)[0]), expected, rtol=1e-6)
    assert new_state.generation == 1 and stats["es/nonfinite"] == 0


def test_es_steps_lower_the_loss():
    outer_loop, state = _outer_loop(population=64, noise_std=0.05, lr=0.05)
    before = float(smooth_loss(state.params, None, None))
    for _ in range(60):
        state, stats = outer_loop.step(state, {})
    assert state.generation == 60
    assert float(smooth_loss(state.params, None, None)) < before - 1.0
    assert stats["es/nonfinite"] == 0


def test_pair_noise_depends_only_on_generation_and_pair_index():
    key = slicing.base_keys(0)["noise"]
    whole = np.asarray(es.pair_noise(key, 5, jnp.arange(8), 10))
    part = np.asarray(es.pair_noise(key, 5, jnp.arange(4, 8), 10))
    np.testing.assert_array_equal(whole[4:], part)
    assert not np.allclose(whole, np.asarray(es.pair_noise(key, 6, jnp.arange(8), 10)))
    assert abs(whole.std() - 1.0) < 0.3


def test_pair_slices_partition_the_population():
    slices = [slicing.item_slice(12, rank, 3) for rank in range(3)]
    np.testing.assert_array_equal(np.concatenate(slices), np.arange(12))
    with pytest.raises(ValueError, match="a population of 10 cannot be split evenly among 4 ranks"):
        slicing.item_slice(10, 0, 4)  # in its own terms: the experiment names the config key


def test_raw_shaping_ranks_non_finite_worst():
    fitness = np.array([[1.0, np.nan], [2.0, 3.0], [np.inf, 0.5]])
    utilities, count = es.shape_fitness(fitness, "raw")
    assert count == 2
    np.testing.assert_array_equal(utilities, [[1.0, 3.0], [2.0, 3.0], [3.0, 0.5]])
    zeros, count = es.shape_fitness(np.full((2, 2), np.nan), "raw")
    assert count == 4 and not zeros.any()


def test_centered_rank_is_monotone_centred_and_ranks_non_finite_last():
    fitness = np.array([[0.3, -np.inf], [5.0, np.nan], [0.1, 0.1]])
    utilities, count = es.shape_fitness(fitness, "centered_rank")
    assert count == 2
    assert utilities.min() >= -0.5 and utilities.max() <= 0.5
    assert abs(utilities.sum()) < 1e-12
    # -inf is not a better loss than any real one: non-finite takes the worst ranks
    assert utilities[0, 1] == utilities[1, 1] == utilities.max()
    assert utilities[2, 0] == utilities[2, 1] < utilities[0, 0] < utilities[1, 0]


@given(
    st.lists(st.sampled_from([-1.0, 0.0, 0.5, 2.0, np.inf, np.nan]), min_size=2, max_size=24).filter(
        lambda v: len(v) % 2 == 0
    )
)
def test_centered_rank_is_the_mean_rank_of_ties(values):
    # Independent: a value's 0-based rank is the number of smaller values; ties share the mean
    # of their ranks, (#smaller + (#equal - 1) / 2); non-finite values count as +inf.
    fitness = np.asarray(values).reshape(-1, 2)
    flat = np.where(np.isfinite(fitness), fitness, np.inf).ravel()
    expected = [((flat < v).sum() + ((flat == v).sum() - 1) / 2) / (flat.size - 1) - 0.5 for v in flat]
    utilities, _ = es.shape_fitness(fitness, "centered_rank")
    np.testing.assert_array_equal(utilities.ravel(), expected)


def test_weights_are_antithetic_differences():
    utilities = np.array([[3.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(es.pair_weights(utilities, 0.5), [2.0, 0.0])


def test_clipping_bounds_the_update_norm():
    opt = sliced.make_optimizer(1.0, {"b1": 0.0, "b2": 0.0}, clip_gradnorm=0.5)
    params = {"w": jnp.zeros(3)}
    grad = {"w": jnp.asarray([30.0, 40.0, 0.0])}
    updates, _ = opt.update(grad, opt.init(params), params)
    # clipped to norm 0.5 first; Adam with b1=b2=0 then gives sign-like steps of size ~lr
    np.testing.assert_allclose(np.asarray(updates["w"]), [-1.0, -1.0, 0.0], atol=1e-4)


def test_rank_partial_sums_add_up_to_the_same_gradient_in_any_split():
    """The gradient from per-rank partial sums is bit-identical for every split of the pairs
    (what makes results independent of the rank count) and equals the float64 mean."""
    key, dim, population = slicing.base_keys(3)["noise"], 164, 8
    fitness = np.random.default_rng(0).normal(2.3, 1e-3, size=(population, 2))
    for shaping in ("centered_rank", "raw"):
        weights = es.pair_weights(es.shape_fitness(fitness, shaping)[0], 0.1)
        gradients = []
        for ranks in (1, 2, 4, 8):
            total = sum(
                es.noise_sum(key, 2, slicing.item_slice(population, rank, ranks), weights, dim) for rank in range(ranks)
            )
            gradients.append(es.mean_gradient(total, weights, population))
        for gradient in gradients[1:]:
            np.testing.assert_array_equal(gradient, gradients[0])
        eps = np.asarray(es.pair_noise(key, 2, jnp.arange(population), dim), dtype=np.float64)
        np.testing.assert_allclose(gradients[0], weights @ eps / population, rtol=1e-6, atol=1e-12)
