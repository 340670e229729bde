"""Long episodes under meta-gradients (docs/DESIGN.md §6.3): rematerialisation leaves the gradient as it is,
truncation at >= T is full backpropagation, a truncated gradient equals its analytic value, and a run that
will not fit in memory is refused in one line."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsml import data, experiment, runtime
from vsml.comm import SingleProcessComm
from vsml.config import build_config
from vsml.evaluation import load_task
from vsml.learners import LEARNER_TYPES, BackpropPlan, build_learner
from vsml.learners.scan import episode_scan
from vsml.meta import objective
from vsml.settings import SettingError, data_settings, run_settings

# --------------------------------------------------------------------------- a linear recurrence, analytically

A, T = 0.9, 11


def recurrence_loss(a, xs, plan):
    """``h_{t+1} = a h_t + x_t`` from ``h_0 = 1``; the loss is ``Σ_t h_{t+1}``."""
    _, hs = episode_scan(lambda h, x: (a * h + x, a * h + x), jnp.float32(1.0), xs, plan)
    return jnp.sum(hs)


def analytic_truncated_gradient(a: float, xs: np.ndarray, k: int) -> float:
    """d/da of Σ_t h_{t+1} when the gradient stops at the start of every k-step segment but the first.

    In the segment starting at step s, ``h_{t+1} = a^{t+1-s} h_s + Σ_{j=s..t} a^{t-j} x_j`` with
    ``h_s`` a constant (s > 0) or 1 (s = 0); its derivative in a is taken term by term.
    """
    h = [1.0]
    for x in xs:
        h.append(a * h[-1] + x)
    total = 0.0
    for t in range(len(xs)):
        s = t // k * k
        total += (t + 1 - s) * a ** (t - s) * h[s]
        total += sum((t - j) * a ** (t - j - 1) * xs[j] for j in range(s, t))
    return total


@pytest.mark.parametrize("k", [1, 3, 4, 10])
def test_truncated_gradient_equals_its_analytic_value(k):
    xs = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (T,)), np.float64)
    grad = jax.grad(recurrence_loss)(jnp.float32(A), jnp.asarray(xs, jnp.float32), BackpropPlan(truncation=k))
    np.testing.assert_allclose(float(grad), analytic_truncated_gradient(A, xs, k), rtol=1e-5)


def test_full_gradient_is_the_untruncated_analytic_value():
    xs = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (T,)), np.float64)
    grad = jax.grad(recurrence_loss)(jnp.float32(A), jnp.asarray(xs, jnp.float32), BackpropPlan())
    np.testing.assert_allclose(float(grad), analytic_truncated_gradient(A, xs, T), rtol=1e-5)


def test_bad_plan_is_refused():
    with pytest.raises(ValueError, match="remat_steps and truncation must be >= 0"):
        BackpropPlan(remat_steps=-1)


# --------------------------------------------------------------------------- the learners' episodes

TINY = [
    "model.sub_rnn.msg_size=2",
    "model.sub_rnn.slow_size=4",
    "model.vsml_rnn.num_micro_ticks=1",
    "model.meta_rnn.slow_size=8",
    "model.fwp.fast_size=6",
    "model.fw_memory.slow_size=8",
    "model.fw_memory.memory_size=4",
    "model.sgd.hidden_size=8",
    "model.nodepert.hidden_size=8",
]
STEPS = 12


@pytest.fixture(scope="module")
def digits():
    config = build_config(overrides=TINY)
    spec, arrays = data.load_dataset("digits", "train", data_settings(config))
    return config, spec, arrays


def value_and_grad(model_type, digits, plan):
    """Meta-loss and its gradient (a flat vector) of one STEPS-step digits episode of ``model_type`` under ``plan``."""
    config, spec, arrays = digits
    model = {**config["model"], "type": model_type}
    learner = build_learner(model, spec.input_shape, spec.num_classes, backprop_plan=plan)
    fitness = objective.make_fitness(
        objective.make_episode(learner.run, lambda a, k: data.sample_episode(spec, a, k, STEPS, 2)), "mean"
    )
    params = learner.init(jax.random.PRNGKey(0))
    loss, grad = jax.jit(jax.value_and_grad(fitness))(params, jax.random.PRNGKey(3), arrays)
    return float(loss), np.concatenate([np.ravel(g) for g in jax.tree_util.tree_leaves(grad)])


@pytest.mark.parametrize(
    "model_type",
    ["VSMLRNN"] + [pytest.param(m, marks=pytest.mark.slow) for m in LEARNER_TYPES if m != "VSMLRNN"],
)
def test_remat_gives_the_same_gradient_and_long_truncation_is_full_backprop(model_type, digits):
    loss, grad = value_and_grad(model_type, digits, BackpropPlan())
    assert np.abs(grad).max() > 0
    for remat in (1, 5):  # every step; blocks of 5 with a shorter rest
        remat_loss, remat_grad = value_and_grad(model_type, digits, BackpropPlan(remat_steps=remat))
        assert remat_loss == pytest.approx(loss, rel=1e-6)
        np.testing.assert_allclose(remat_grad, grad, rtol=2e-4, atol=1e-6 * np.abs(grad).max())
    for truncation in (STEPS, STEPS + 5):  # one segment: the same computation
        cut_loss, cut_grad = value_and_grad(model_type, digits, BackpropPlan(truncation=truncation))
        assert cut_loss == loss
        np.testing.assert_array_equal(cut_grad, grad)


def test_truncation_changes_the_gradient_not_the_loss_and_remat_keeps_it(digits):
    loss, grad = value_and_grad("VSMLRNN", digits, BackpropPlan())
    cut_loss, cut_grad = value_and_grad("VSMLRNN", digits, BackpropPlan(truncation=4))
    assert cut_loss == pytest.approx(loss, rel=1e-6)
    assert np.abs(cut_grad - grad).max() > 1e-3 * np.abs(grad).max()  # biased: some credit is dropped
    _, both_grad = value_and_grad("VSMLRNN", digits, BackpropPlan(remat_steps=2, truncation=4))
    np.testing.assert_allclose(both_grad, cut_grad, rtol=2e-4, atol=1e-6 * np.abs(cut_grad).max())


# --------------------------------------------------------------------------- refusal before compiling the step


def test_a_run_that_does_not_fit_is_refused_in_one_line(monkeypatch):
    settings = run_settings(build_config(overrides=["training.episode_length=500"]))
    monkeypatch.setattr(runtime, "device_available_bytes", lambda ranks_on_node=1: 2**30)
    experiment.check_fits(2**29, 2, settings.training, SingleProcessComm())  # exactly fits
    with pytest.raises(SettingError) as refused:
        experiment.check_fits(2**29 + 1, 2, settings.training, SingleProcessComm())
    message = str(refused.value)
    assert "\n" not in message and message.startswith("training.episode_length:")
    assert "optimizer.remat_steps (e.g. 22)" in message and "optimizer.truncation" in message


class TwoRanks(SingleProcessComm):
    """Rank 0 of two; the other rank reports ``other`` bytes available (-1: unknown)."""

    def __init__(self, other):
        self.other = other

    def allgather(self, local):
        return np.concatenate([np.asarray(local), np.asarray([self.other], np.int64)])


def test_the_rank_with_the_least_memory_decides_for_all(monkeypatch):
    training = run_settings(build_config(overrides=[])).training
    monkeypatch.setattr(runtime, "device_available_bytes", lambda ranks_on_node=1: 2**30)
    experiment.check_fits(2**29, 1, training, TwoRanks(-1))  # the other rank does not know: this one decides
    with pytest.raises(SettingError, match="0.2 GiB are available"):
        experiment.check_fits(2**29, 1, training, TwoRanks(2**28))
    monkeypatch.setattr(runtime, "device_available_bytes", lambda ranks_on_node=1: None)
    with pytest.raises(SettingError):  # this rank does not know, the other is too small: both refuse
        experiment.check_fits(2**29, 1, training, TwoRanks(2**28))


def test_make_outer_loop_refuses_before_the_step_is_compiled(monkeypatch):
    overrides = [*TINY, "training.dataset=digits", "training.episode_length=8", "optimizer.type=metagrad"]
    settings = run_settings(build_config(overrides=overrides))
    task = load_task("digits", "train", settings.data_settings, 8, 1)
    learner = build_learner(settings.model, task.spec.input_shape, task.spec.num_classes)
    params = learner.init(jax.random.PRNGKey(0))
    monkeypatch.setattr(runtime, "device_available_bytes", lambda ranks_on_node=1: 1)
    with pytest.raises(SettingError, match="^training.episode_length: .* GiB are available"):
        experiment.make_outer_loop(learner, task, settings, params, SingleProcessComm())


def test_host_available_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n")
    assert runtime.host_available_bytes(str(meminfo)) == 8000000 * 1024
    assert runtime.host_available_bytes(str(tmp_path / "missing")) is None


def test_settings_reach_the_plan():
    settings = run_settings(build_config(overrides=["optimizer.remat_steps=25", "optimizer.truncation=100"]))
    assert experiment.backprop_plan(settings.optimizer) == BackpropPlan(remat_steps=25, truncation=100)
    with pytest.raises(Exception, match="optimizer.truncation"):
        run_settings(build_config(overrides=["optimizer.truncation=-1"]))
