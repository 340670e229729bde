"""Persistent ES (vsml/meta/pes.py, docs/DESIGN.md §6.6) against an analytic gradient.

The problem: a scalar linear recurrence ``s_{t+1} = a s_t + theta`` from ``s_0 = 0``, with
per-step loss ``s_{t+1}^2``, an episode of ``T`` steps split into truncations of ``K``. Then
``s_t = theta c_t`` with ``c_t = sum_{j<t} a^j`` and the episode meta-loss (mean over steps)
``L = theta^2 sum_t c_t^2 / T`` has the gradient ``2 theta sum_t c_t^2 / T``. The loss is
quadratic in every truncation's parameters, so Gaussian smoothing leaves that gradient unchanged:
PES must match it on average; truncated ES (no accumulator) sees only the last truncation's
perturbation and misses how the earlier ones moved ``s`` (biased low for ``a > 0``).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.conftest import TINY, launch
from vsml.comm import SingleProcessComm
from vsml.config_tree import ConfigError
from vsml.learners import build_learner
from vsml.meta import pes
from vsml.meta.objective import Truncations
from vsml.run_checks import check_truncated_loop
from vsml.settings import run_settings

DECAY, THETA, LENGTH, STEPS = 0.8, 0.7, 8, 2  # a, theta, T, K


def recurrence_truncations() -> Truncations:
    """``begin``/``unroll`` of the recurrence (inputs and labels are placeholders ``[T, 1, 1]``)."""

    def begin(params, key, data):
        del key
        placeholder = jnp.zeros((LENGTH, 1, 1)) + 0.0 * data["unused"]
        return jnp.zeros((1,)), placeholder, placeholder

    def unroll(params, carry, inputs, labels, first, length):
        del inputs, labels, first

        def step(s, _):
            s = DECAY * s + params["theta"]
            return s, s**2

        carry, losses = jax.lax.scan(step, carry, None, length=length)
        return carry, losses  # [K, B=1]

    return Truncations(begin, unroll, LENGTH, {"unused": jnp.zeros(())})


def analytic_gradient() -> float:
    c = np.array([sum(DECAY**j for j in range(t)) for t in range(1, LENGTH + 1)])
    return 2.0 * THETA * float((c**2).sum()) / LENGTH


def warmed_particles(noise: str, particles: int, seed: int = 0):
    """A PES loop (learning rate 0: theta stays put) after one full episode, so every particle is
    in a whole episode, evenly spread over its truncations."""
    config = pes.PESConfig(population_size=particles, noise_std=0.1, truncation_steps=STEPS, noise=noise)
    loop = pes.PersistentES(
        recurrence_truncations(), {"theta": jnp.asarray(THETA)}, config, optax.sgd(0.0), SingleProcessComm()
    )
    data = loop.truncations.data
    state = loop.init({"theta": jnp.asarray(THETA)}, seed)
    for _ in range(LENGTH // STEPS):
        state, _ = loop.step(state, data)
    return loop, state, data


def episode_gradient_samples(loop, state, data) -> tuple[float, float, list[float]]:
    """The whole-episode gradient from one generation, its standard error, and the variance of a
    particle's term at each truncation of the episode.

    A particle at truncation j estimates d L_j / d theta; the episode's gradient is the sum over j
    of the per-truncation means (particles are independent, so their variances add).
    """
    weights, _, _, used, _ = loop.truncate(state, data)
    terms = weights * used[:, 0]
    positions = np.asarray(state.positions)
    groups = [terms[positions == j * STEPS] for j in range(LENGTH // STEPS)]
    assert all(len(g) == len(groups[0]) for g in groups)
    mean = sum(g.mean() for g in groups)
    error = np.sqrt(sum(g.var(ddof=1) / len(g) for g in groups))
    return float(mean), float(error), [float(g.var(ddof=1)) for g in groups]


def test_pes_gradient_is_the_mean_of_weight_times_accumulated_noise():
    weights = np.array([0.5, -2.0, 1.0])
    accumulated = np.array([[1.0, 0.0], [0.5, 1.0], [-1.0, 2.0]], np.float32)
    expected = np.array([(0.5 - 1.0 - 1.0) / 3, (0.0 - 2.0 + 2.0) / 3])
    np.testing.assert_allclose(pes.pes_gradient(weights, accumulated), expected, rtol=1e-6)


def test_positions_are_staggered_and_episodes_restart():
    np.testing.assert_array_equal(pes.initial_positions(6, 8, 2), [0, 2, 4, 6, 0, 2])
    positions, episodes, ended = pes.next_positions(np.array([0, 6]), np.array([3, 3]), 2, 8)
    np.testing.assert_array_equal(positions, [2, 0])
    np.testing.assert_array_equal(episodes, [3, 4])
    np.testing.assert_array_equal(ended, [False, True])


def test_pes_is_unbiased_and_truncated_es_is_not():
    expected = analytic_gradient()
    loop, state, data = warmed_particles("persistent", particles=8192)
    estimate, error, variances = episode_gradient_samples(loop, state, data)
    assert abs(estimate - expected) < 4 * error, (estimate, expected, error)
    # the loop's own estimate is the mean over particles: 1/(T/K) of the episode's gradient
    gradient = loop.estimate(state, data).gradient
    np.testing.assert_allclose(gradient[0] * (LENGTH // STEPS), estimate, rtol=1e-4)

    loop, state, data = warmed_particles("truncated", particles=8192)
    truncated, truncated_error, truncated_variances = episode_gradient_samples(loop, state, data)
    assert abs(truncated - expected) > 8 * truncated_error, (truncated, expected, truncated_error)
    assert truncated < expected  # it misses the earlier truncations' share
    # Variance as Vicol et al. describe it: the same as truncated ES at an episode's first truncation
    # (xi is that truncation's noise alone), then growing with every truncation xi has summed, above
    # truncated ES's (the price of unbiasedness).
    assert variances[0] == pytest.approx(truncated_variances[0], rel=1e-5)
    assert all(a < b for a, b in zip(variances, variances[1:], strict=False)), variances
    assert all(p > 1.5 * t for p, t in zip(variances[1:], truncated_variances[1:], strict=True)), (
        variances,
        truncated_variances,
    )


def test_noise_reuse_es_is_unbiased():
    """Li et al. 2023: one perturbation per episode, reused by all its truncations, is unbiased too.

    (Its variance is not asserted: on this recurrence it is not below PES's at every truncation, e.g.
    40 against 33 at the third; the paper's variance advantage depends on the problem.)
    """
    expected = analytic_gradient()
    loop, state, data = warmed_particles("reuse", particles=8192)
    estimate, error, _ = episode_gradient_samples(loop, state, data)
    assert abs(estimate - expected) < 4 * error, (estimate, expected, error)
    assert not np.asarray(state.accumulated).any()  # nothing is summed


@pytest.mark.parametrize("bad", [3, 0])
def test_truncation_must_divide_the_episode(bad):
    config = pes.PESConfig(population_size=2, noise_std=0.1, truncation_steps=bad)
    with pytest.raises(ValueError, match="must divide the episode of 8 steps"):
        pes.PersistentES(
            recurrence_truncations(), {"theta": jnp.asarray(0.0)}, config, optax.sgd(0.0), SingleProcessComm()
        )


# --------------------------------------------------------------------------- through launch.py

PES_RUN = ["--config_files", "configs/pes.yaml", "--config", *TINY, "optimizer.pes_truncation_steps=4"]


def _ok(result):
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def _checkpoint(run_dir) -> dict:
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as data:
        return {name: data[name] for name in data.files if name not in ("wall_time", "config")}


def test_resume_in_the_middle_of_an_episode_equals_an_uninterrupted_run(tmp_path):
    # 12-step episodes in truncations of 4: after 4 generations every particle is inside an episode
    # (particles start staggered at steps 0, 4, 8, 0), so the resumed run needs the carries,
    # positions, episode counters and accumulated noise of the checkpoint.
    whole, part = tmp_path / "whole", tmp_path / "part"
    _ok(launch("--run_dir", whole, *PES_RUN, "training.iterations=7"))
    _ok(launch("--run_dir", part, *PES_RUN, "training.iterations=4"))
    middle = _checkpoint(part)
    assert (middle["positions"] > 0).any() and (middle["fresh"] == 0).any() and np.abs(middle["accumulated"]).max() > 0
    _ok(launch("--resume", part, "--config", "training.iterations=7"))
    a, b = _checkpoint(whole), _checkpoint(part)
    assert a.keys() == b.keys() and {"params", "opt_state", "carries", "accumulated"} <= {k.split("/")[0] for k in a}
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    rows = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 7 and all(np.isfinite(row["meta_loss"]) for row in rows)


@pytest.mark.mpi
@pytest.mark.slow
def test_two_ranks_give_the_same_state_as_one(tmp_path):
    _ok(launch("--run_dir", tmp_path / "one", *PES_RUN, "training.iterations=4"))
    _ok(launch("--run_dir", tmp_path / "two", *PES_RUN, "training.iterations=4", ranks=2))
    one, two = _checkpoint(tmp_path / "one"), _checkpoint(tmp_path / "two")
    assert one.keys() == two.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"optimizer": {"pes_truncation_steps": 5}}, "optimizer.pes_truncation_steps: 5 must divide"),
        ({"training": {"loss_type": "last"}}, "training.loss_type"),
    ],
)
def test_pes_settings_it_cannot_run_are_refused_in_one_line(overrides, named):
    config = {"training": {"episode_length": 12}, "optimizer": {"type": "pes", "pes_truncation_steps": 4}}
    for section, values in overrides.items():
        config[section] = {**config[section], **values}
    settings = run_settings(config)
    with pytest.raises(ConfigError, match=named) as raised:
        check_truncated_loop(settings, build_learner(settings.model))
    assert "\n" not in str(raised.value)


def test_chunking_changes_nothing():
    def run(chunk):
        config = pes.PESConfig(population_size=6, noise_std=0.1, truncation_steps=STEPS, pairs_per_chunk=chunk)
        params = {"theta": jnp.asarray(THETA)}
        loop = pes.PersistentES(recurrence_truncations(), params, config, optax.adam(0.01), SingleProcessComm())
        state = loop.init(params, 1)
        for _ in range(5):
            state, _ = loop.step(state, loop.truncations.data)
        return jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.asarray, state))

    for whole, chunked in zip(run(None), run(2), strict=True):
        np.testing.assert_array_equal(whole, chunked)
