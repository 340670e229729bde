"""Initial weights and cell states have the original release's spread: a standard normal truncated
to [-2, 2] times 1/sqrt(fan_in), without variance correction (haiku's ``TruncatedNormal``).

The expected standard deviation is derived here from the truncated-normal formula, not read from
the code, and checked statistically on large draws through the learners' own ``init``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import pytest

from vsml.config import build_config
from vsml.learners import build_learner, vsml, vsml_layer
from vsml.settings import model_settings


def _truncated_std(a: float = 2.0) -> float:
    """Std of a standard normal truncated to [-a, a]: sqrt(1 - 2·a·φ(a) / (Φ(a) − Φ(−a)))."""
    pdf = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(a / math.sqrt(2))
    return math.sqrt(1 - 2 * a * pdf / mass)


TRUNC_STD = _truncated_std()  # ≈ 0.88


def test_the_expected_factor_is_about_088():
    assert 0.875 < TRUNC_STD < 0.885
    # cross-check the formula by sampling with NumPy (rejection sampling)
    x = np.random.default_rng(0).standard_normal(400_000)
    assert abs(x[np.abs(x) <= 2].std() - TRUNC_STD) < 0.005


def _check_spread(w, fan_in: int, what: str):
    w = np.asarray(w, np.float64).ravel()
    scale = 1 / math.sqrt(fan_in)
    # Relative standard error of a sample std is about 1/sqrt(2n); 4% is > 5 SE for n ≥ 8,000.
    assert w.size >= 8000, f"{what}: too few draws ({w.size}) for a statistical check"
    assert abs(w.std() / scale - TRUNC_STD) < 0.04 * TRUNC_STD, (
        f"{what}: std {w.std():.4g} = {w.std() / scale:.3f}/sqrt({fan_in}), expected {TRUNC_STD:.3f}/sqrt(fan_in)"
    )
    assert abs(w.mean()) < 0.05 * scale, what
    assert np.abs(w).max() <= 2 * scale * (1 + 1e-6), f"{what}: not truncated at ±2/sqrt(fan_in)"
    assert np.abs(w).max() > 1.9 * scale, f"{what}: the tails reach ±2/sqrt(fan_in)"


def test_sub_rnn_gates_and_heads():
    spec = vsml.VSMLSpec(slow_size=64, msg_size=32)
    (p,) = vsml.init(jax.random.PRNGKey(0), spec)["forward"]
    gates = np.concatenate([np.ravel(p["w_fwd_in"]), np.ravel(p["w_bwd_in"]), np.ravel(p["w_hidden"])])
    _check_spread(gates, 2 * 32 + 64, "sub-RNN gates (fan in: fwd msg + bwd msg + hidden)")
    heads = np.concatenate([np.ravel(p["w_fwd_out"]), np.ravel(p["w_bwd_out"])])
    # heads are [S, M] = 64 x 32 each: 4,096 draws; add more sets to have enough
    more = vsml.init(
        jax.random.PRNGKey(1), vsml.VSMLSpec(slow_size=64, msg_size=32, layerwise_rnns=True, hidden_sizes=(8,))
    )["forward"]
    heads = np.concatenate([heads, *[np.ravel(q[k]) for q in more for k in ("w_fwd_out", "w_bwd_out")]])
    _check_spread(heads, 64, "sub-RNN message heads (fan in: state)")


@pytest.mark.parametrize("fan_in,fan_out", [(400, 30), (64, 200)])
def test_initial_cell_states_dense(fan_in, fan_out):
    spec = vsml.VSMLSpec(slow_size=16, init_rand_proportion=0.5)
    ((h, c),) = vsml.initial_states(jax.random.PRNGKey(2), spec, [vsml_layer.dense_geometry(fan_in, fan_out)], batch=1)
    assert np.all(np.asarray(h) == 0) and np.all(np.asarray(c)[..., 8:] == 0)
    _check_spread(np.asarray(c)[..., :8], fan_in, f"initial cells of a {fan_in}->{fan_out} layer")


def test_initial_cell_states_conv():
    spec = vsml.VSMLSpec(slow_size=16, init_rand_proportion=0.5, conv_layers=(vsml.ConvLayer(3, 2, 40),))
    sizes = vsml.layer_geometries(spec, (9, 9, 5), 4)
    (_, c), _ = vsml.initial_states(jax.random.PRNGKey(3), spec, sizes, batch=1)
    _check_spread(np.asarray(c)[..., :8], 3 * 3 * 5, "initial cells of a 3x3x5 conv layer")


def _baseline(kind, *overrides):
    cfg = build_config(overrides=[f"model.type={kind}", *overrides])["model"]
    return build_learner(cfg, (28, 28, 1), 10).init(jax.random.PRNGKey(4))


def test_baseline_layers():
    # SGD / MLP layers: haiku Linear's default in the original
    p = _baseline("SGD", "model.sgd.num_layers=2", "model.sgd.hidden_size=64")
    _check_spread(p["layers"][0]["w"], 784, "SGD first layer")
    # MetaRNN: the LSTM reads [x, h] (fan in D + C + C + H) and a dense output head
    p = _baseline("MetaRNN", "model.meta_rnn.slow_size=32")
    n_in = p["lstm"]["w_in"].shape[0]
    gates = np.concatenate([np.ravel(p["lstm"]["w_in"]), np.ravel(p["lstm"]["w_h"])])
    _check_spread(gates, n_in + 32, "MetaRNN LSTM gates")
    # HebbianFW: one weight matrix over [x, error, label]
    p = _baseline("HebbianFW")
    _check_spread(p["w"], p["w"].shape[0], "HebbianFW weights")


def test_init_scale_multiplies_every_vsml_draw():
    """``model.sub_rnn.init_scale`` (default 1.0, the original's) scales gates, heads and initial cells."""
    cfg = build_config(
        overrides=["model.sub_rnn.init_scale=1.1369", "model.sub_rnn.slow_size=64", "model.sub_rnn.msg_size=32"]
    )["model"]
    assert build_config()["model"]["sub_rnn"]["init_scale"] == 1.0
    spec = vsml.spec_from_config(model_settings(cfg))
    (p,) = vsml.init(jax.random.PRNGKey(0), spec)["forward"]
    (p1,) = vsml.init(jax.random.PRNGKey(0), dataclasses.replace(spec, init_scale=1.0))["forward"]
    for name in p:
        if name.startswith("w_"):
            np.testing.assert_allclose(np.asarray(p[name]), 1.1369 * np.asarray(p1[name]), rtol=1e-5)
    gates = np.concatenate([np.ravel(p[k]) for k in ("w_fwd_in", "w_bwd_in", "w_hidden")])
    # 1.1369 x the truncated std: std ~ 1/sqrt(fan in), the project's former initialisation
    _check_spread(gates / 1.1369, 2 * 32 + 64, "gates at init_scale 1.1369, divided back")
    assert abs(gates.std() * math.sqrt(128) - 1.0) < 0.04
    ((_, c),) = vsml.initial_states(
        jax.random.PRNGKey(2), dataclasses.replace(spec, slow_size=16), [vsml_layer.dense_geometry(400, 30)], 1
    )
    assert abs(np.asarray(c)[..., :8].std() * math.sqrt(400) - 1.1369 * TRUNC_STD) < 0.04
