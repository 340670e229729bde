"""Meta-gradients (optimizer.type: metagrad): the mean gradient over the same episodes ES sees,
rank-count independence, non-finite handling; every learner takes one ES and one meta-gradient step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsml import data
from vsml.comm import SingleProcessComm
from vsml.config import build_config
from vsml.learners import build_learner
from vsml.meta import OUTER_LOOPS, OptimizerSettings, backprop, build_outer_loop, es, objective, sliced, slicing
from vsml.settings import data_settings


def keyed_loss(params, key, data):
    """A loss whose minimiser depends on the episode key: ``‖x − u(key)‖²`` with ``u ~ N(0, I)``."""
    target = jax.random.normal(key, params["x"].shape)
    return jnp.sum((params["x"] - target) ** 2)


class RankComm(SingleProcessComm):
    """A stand-in for rank ``rank`` of ``size`` (collectives are not used by ``partial_sums``)."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size


def _outer_loop(population=8, comm=None, lr=0.1, clip=0.0, fitness=keyed_loss, **kwargs):
    params = {"x": jnp.full((5,), 0.5)}
    outer_loop = backprop.MetaGradient(
        fitness,
        params,
        backprop.BackpropConfig(population, **kwargs),
        sliced.make_optimizer(lr, {}, clip),
        comm or SingleProcessComm(),
    )
    return outer_loop, outer_loop.init(params, seed=11)


def test_gradient_is_the_mean_over_the_episodes_es_would_run():
    outer_loop, state = _outer_loop()
    grad_sum, finite, losses = outer_loop.partial_sums(state, {})
    # Independent: the targets of the episode keys key(data, g, i) that ES uses for pair i.
    targets = np.stack(
        [np.asarray(jax.random.normal(slicing.item_key(state.rng["data"], 0, i), (5,))) for i in range(8)]
    )
    x = np.full(5, 0.5)
    np.testing.assert_allclose(grad_sum / 8, np.mean(2 * (x - targets), 0), rtol=1e-5)
    np.testing.assert_allclose(losses, np.sum((x - targets) ** 2, 1), rtol=1e-5)
    assert finite.all()
    # ES evaluates exactly these episodes: with a tiny σ its fitness equals these losses.
    es_loop = es.EvolutionStrategy(
        keyed_loss, state.params, es.ESConfig(8, 1e-6), sliced.make_optimizer(0.1, {}, 0.0), SingleProcessComm()
    )
    fitness = es_loop.evaluate(es_loop.init(state.params, seed=11), {})
    np.testing.assert_allclose(fitness[:, 0], losses, rtol=1e-4)


@pytest.mark.parametrize("pairs_per_chunk", [None, 3])
def test_partial_sums_do_not_depend_on_rank_count_or_chunking(pairs_per_chunk):
    whole, state = _outer_loop(population=8)
    total, _, losses = whole.partial_sums(state, {})
    parts = [_outer_loop(population=8, comm=RankComm(r, 2), pairs_per_chunk=pairs_per_chunk)[0] for r in range(2)]
    sums = [part.partial_sums(state, {}) for part in parts]
    np.testing.assert_allclose(sums[0][0] + sums[1][0], total, rtol=1e-12)
    np.testing.assert_array_equal(np.concatenate([s[2] for s in sums]), losses)
    assert (total / 8).astype(np.float32).tobytes() == ((sums[0][0] + sums[1][0]) / 8).astype(np.float32).tobytes()


def test_steps_lower_the_loss_and_report_statistics():
    outer_loop, state = _outer_loop(population=16, lr=0.05)
    first = None
    for _ in range(40):
        state, stats = outer_loop.step(state, {})
        first = first if first is not None else stats["meta_loss"]
    assert state.generation == 40
    assert set(stats) >= {"meta_loss", "meta_loss_std", "metagrad/nonfinite", "grad/norm"}
    assert stats["metagrad/nonfinite"] == 0
    # the optimum of the mean loss is x = 0 (targets have mean 0): loss falls from ~6.25 to ~5
    assert stats["meta_loss"] < first - 0.8
    assert np.abs(np.asarray(state.params["x"])).max() < 0.3


def test_nonfinite_episodes_are_dropped_and_counted():
    def sometimes_nan(params, key, data):
        loss = keyed_loss(params, key, data)
        return jnp.where(jax.random.uniform(key) < 0.5, jnp.nan, loss)

    outer_loop, state = _outer_loop(population=16, fitness=sometimes_nan)
    _, finite, _ = outer_loop.partial_sums(state, {})
    new_state, stats = outer_loop.step(state, {})
    assert 0 < stats["metagrad/nonfinite"] == 16 - finite.sum() < 16
    assert np.all(np.isfinite(np.asarray(new_state.params["x"])))
    assert np.isfinite(stats["meta_loss"])


# --------------------------------------------------------------------------- every learner


TINY = [
    "model.sub_rnn.msg_size=4",
    "model.sub_rnn.slow_size=4",
    "model.meta_rnn.slow_size=8",
    "model.fwp.fast_size=6",
    "model.fw_memory.slow_size=8",
    "model.fw_memory.memory_size=4",
    "model.sgd.hidden_size=8",
    "model.nodepert.hidden_size=8",
]
# One in the default run (each compiles an ES and a meta-gradient step: 10-20 s on busy cores), all with -m slow.
MODEL_TYPES = ["SGD"] + [
    pytest.param(kind, marks=pytest.mark.slow)
    for kind in ("VSMLRNN", "MetaRNN", "HebbianFW", "FWP", "FWMemory", "NodePert")
]


@pytest.fixture(scope="module")
def digits():
    config = build_config(overrides=TINY)
    return config, data.load_dataset("digits", "train", data_settings(config))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_learner_takes_a_step_of_every_outer_loop(model_type, digits):
    config, (spec, arrays) = digits
    model = {**config["model"], "type": model_type}
    learner = build_learner(model, spec.input_shape, spec.num_classes)
    fitness = objective.make_fitness(
        objective.make_episode(learner.run, lambda a, k: data.sample_episode(spec, a, k, 6, 2)), "mean"
    )
    sample = lambda a, k: data.sample_episode(spec, a, k, 6, 2)  # noqa: E731
    truncations = objective.Truncations(*objective.make_truncations(learner.start, learner.advance, sample), 6, arrays)
    params = learner.init(jax.random.PRNGKey(0))
    for kind in OUTER_LOOPS:  # each loop obtained through the registry only, as a run does
        settings = OptimizerSettings(
            type=kind, noise_std=0.05, lr=0.01, kwargs={}, clip_gradnorm=1.0, pes_truncation_steps=3
        )
        outer_loop = build_outer_loop(settings, 2, None, fitness, params, SingleProcessComm(), truncations=truncations)
        state, stats = outer_loop.step(outer_loop.init(params, seed=0), arrays)
        nonfinite = {
            "es": "es/nonfinite",
            "metagrad": "metagrad/nonfinite",
            "pes": "es/nonfinite",
            "nres": "es/nonfinite",
        }[kind]
        assert state.generation == 1 and stats[nonfinite] == 0
        assert not {key for key in stats if key.endswith("/nonfinite")} - {nonfinite}
        assert 1.5 < stats["meta_loss"] < 3.5  # ~ ln 10 = 2.3 for an untrained learner
        moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), state.params, params)
        assert max(jax.tree_util.tree_leaves(moved)) > 0


def test_sgd_is_the_old_name_of_metagrad():
    """``optimizer.type: sgd`` (configs of before the rename, the original release's) builds the same loop."""
    params = {"x": jnp.full((5,), 0.5)}
    steps = {}
    for name in ("metagrad", "sgd"):
        settings = OptimizerSettings(type=name, noise_std=0.05, lr=0.1, kwargs={}, clip_gradnorm=0.0)
        outer_loop = build_outer_loop(settings, 4, None, keyed_loss, params, SingleProcessComm())
        assert isinstance(outer_loop, backprop.MetaGradient)
        steps[name], _ = outer_loop.step(outer_loop.init(params, seed=3), {})
    np.testing.assert_array_equal(np.asarray(steps["sgd"].params["x"]), np.asarray(steps["metagrad"].params["x"]))
