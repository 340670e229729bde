"""Baseline learners (docs/DESIGN.md §5) against independent references: shapes, the online property,
SGD vs a plain optax loop, Hebbian/Oja and delta-rule updates vs NumPy, registry and config errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vsml.config import build_config
from vsml.learners import build_learner, fw_memory, fwp, hebbian

jax.config.update("jax_default_matmul_precision", "highest")

INPUT_SHAPE, CLASSES, STEPS, BATCH = (4, 4, 1), 3, 7, 2
# Small sizes so every learner compiles in about a second.
TINY_MODEL = [
    "model.meta_rnn.slow_size=8",
    "model.fwp.fast_size=6",
    "model.fw_memory.slow_size=8",
    "model.fw_memory.memory_size=4",
    "model.sgd.hidden_size=8",
    "model.sgd.num_layers=2",
    "model.nodepert.hidden_size=8",
    "model.nodepert.num_layers=2",
]
BASELINES = ["MetaRNN", "HebbianFW", "FWP", "FWMemory", "SGD", "NodePert"]
CONV_SECTIONS = {"MetaRNN": "meta_rnn", "HebbianFW": "hebbian_fw", "FWMemory": "fw_memory", "SGD": "sgd"}


def model_config(kind: str, *overrides: str) -> dict:
    return build_config(overrides=[*TINY_MODEL, f"model.type={kind}", *overrides])["model"]


def episode(seed=0, steps=STEPS, batch=BATCH, shape=INPUT_SHAPE, classes=CLASSES):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    inputs = jax.random.normal(k1, (steps, batch, *shape))
    labels = jax.nn.one_hot(jax.random.randint(k2, (steps, batch), 0, classes), classes)
    return inputs, labels


def _np(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# --------------------------------------------------------------------------- every learner


# The conv variants (but SGD's) only with -m slow, to keep the default run short.
CASES = [pytest.param(kind, (), id=kind) for kind in BASELINES] + [
    pytest.param(
        kind, (f"model.{sec}.use_conv=true",), id=f"{kind}-conv", marks=() if kind == "SGD" else pytest.mark.slow
    )
    for kind, sec in CONV_SECTIONS.items()
]


@pytest.mark.parametrize("kind,overrides", CASES)
def test_shapes_and_online_property(kind, overrides):
    """logits[:t+1] never depend on labels[t:] (the label of step t is seen only after predicting it)."""
    learner = build_learner(model_config(kind, *overrides), INPUT_SHAPE, CLASSES)
    params = learner.init(jax.random.PRNGKey(1))
    inputs, labels = episode()
    run = jax.jit(learner.run)
    logits = np.asarray(run(params, jax.random.PRNGKey(2), inputs, labels))
    assert logits.shape == (STEPS, BATCH, CLASSES) and np.all(np.isfinite(logits))
    t = 3
    changed = labels.at[t:].set(jnp.roll(labels[t:], 1, axis=-1))  # every later label different
    other = np.asarray(run(params, jax.random.PRNGKey(2), inputs, changed))
    np.testing.assert_array_equal(other[: t + 1], logits[: t + 1])
    # ... and the learner does learn from labels: later predictions react to them.
    assert np.abs(other[t + 1 :] - logits[t + 1 :]).max() > 1e-6


def test_fixed_size_learners_refuse_other_sizes_and_default_to_padded_sizes():
    learner = build_learner(model_config("SGD"))  # no sizes: the padded paper sizes
    params = learner.init(jax.random.PRNGKey(0))
    assert params["layers"][0]["w"].shape == (28 * 28, 8) and params["layers"][-1]["w"].shape == (8, 62)
    with pytest.raises(ValueError, match=r"built for inputs of shape \(28, 28, 1\) and 62 classes.*pad.yaml"):
        learner.run(params, jax.random.PRNGKey(0), *episode())


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match="model.type: must be one of VSMLRNN, MetaRNN"):
        build_learner(model_config("Nope"))
    with pytest.raises(ValueError, match="model.sgd.optimizer: 'adamm' is not an optax optimiser"):
        build_learner(model_config("SGD", "model.sgd.optimizer=adamm"))
    with pytest.raises(ValueError, match="use_conv needs image inputs"):
        build_learner(model_config("MetaRNN", "model.meta_rnn.use_conv=true"), (16,), 3)


# --------------------------------------------------------------------------- SGD vs a plain optax loop


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.5), ("adam", 0.05)])
def test_sgd_learner_matches_a_plain_optax_training_loop(optimizer, lr):
    learner = build_learner(
        model_config("SGD", f"model.sgd.optimizer={optimizer}", f"model.sgd.lr={lr}", "model.sgd.tanh_bound=5"),
        INPUT_SHAPE,
        CLASSES,
    )
    params = learner.init(jax.random.PRNGKey(3))
    inputs, labels = episode(seed=4, steps=12, batch=3)
    logits = np.asarray(jax.jit(learner.run)(params, jax.random.PRNGKey(0), inputs, labels))

    # Independent loop: the network written out by hand, one optax step per time step.
    w1, b1 = params["layers"][0]["w"], params["layers"][0]["b"]
    w2, b2 = params["layers"][1]["w"], params["layers"][1]["b"]
    net = (w1, b1, w2, b2)

    def forward(net, x):
        w1, b1, w2, b2 = net
        return 5.0 * jnp.tanh((jnp.tanh(x.reshape(x.shape[0], -1) @ w1 + b1) @ w2 + b2) / 5.0)

    def loss(net, x, y):
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(forward(net, x)), -1))

    opt = getattr(optax, optimizer)(lr)

    @jax.jit
    def train_step(net, state, x, y):
        updates, state = opt.update(jax.grad(loss)(net, x, y), state, net)
        return optax.apply_updates(net, updates), state, forward(net, x)

    state = opt.init(net)
    expected = []
    for t in range(inputs.shape[0]):
        net, state, before = train_step(net, state, inputs[t], labels[t])
        expected.append(np.asarray(before))
    np.testing.assert_allclose(logits, np.stack(expected), rtol=2e-5, atol=2e-5)
    assert not np.allclose(logits[0], logits[-1])  # it did train


# --------------------------------------------------------------------------- HebbianFW


def test_hebb_and_oja_updates_by_hand():
    fast = jnp.asarray([[1.0, 0.0], [0.0, 2.0]])
    pre, post = jnp.asarray([[1.0, 2.0]]), jnp.asarray([[0.25, 0.75]])
    # Hebb: (1 - 0.5) F + 0.5 * pre ⊗ post
    np.testing.assert_allclose(
        hebbian.hebb_update(fast, pre, post, 0.5), [[0.5 + 0.125, 0.375], [0.25, 1.0 + 0.75]], rtol=1e-6
    )
    # Oja: F + 0.5 (pre ⊗ post - F * post²), post² = [1/16, 9/16]
    np.testing.assert_allclose(
        hebbian.oja_update(fast, pre, post, 0.5),
        [[1 + 0.5 * (0.25 - 1 / 16), 0.5 * 0.75], [0.5 * 0.5, 2 + 0.5 * (1.5 - 2 * 9 / 16)]],
        rtol=1e-6,
    )
    # a batch of two: the batch mean of the outer products
    pre2, post2 = jnp.asarray([[1.0, 0.0], [0.0, 1.0]]), jnp.asarray([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(hebbian.hebb_update(jnp.zeros((2, 2)), pre2, post2, 1.0), 0.5 * np.eye(2))


def np_hebbian(p, inputs, labels, use_oja, bound):
    """The two-pass HebbianFW step of the module docstring, written in NumPy."""
    p = _np(p)
    x_all = np.asarray(inputs, np.float64).reshape(inputs.shape[0], inputs.shape[1], -1)
    y_all = np.asarray(labels, np.float64)
    eta = 1 / (1 + np.exp(-p["eta_logit"]))
    fast = np.zeros_like(p["w"])
    out = []
    for x, y in zip(x_all, y_all):
        weight = p["w"] + p["plasticity"] * fast
        z = np.concatenate([x, 0 * y, 0 * y], -1) @ weight + p["b"]
        logits = bound * np.tanh(z / bound)
        out.append(logits)
        pre = np.concatenate([x, _softmax(logits) - y, y], -1)
        post = _softmax(pre @ weight + p["b"])
        if use_oja:
            fast = fast + eta * sum(np.outer(a, b) - fast * b**2 for a, b in zip(pre, post)) / len(x)
        else:
            fast = (1 - eta) * fast + eta * sum(np.outer(a, b) for a, b in zip(pre, post)) / len(x)
    return np.stack(out)


@pytest.mark.parametrize("use_oja", [False, True])
def test_hebbian_episode_matches_numpy(use_oja):
    learner = build_learner(
        model_config("HebbianFW", f"model.hebbian_fw.use_oja={str(use_oja).lower()}", "model.hebbian_fw.tanh_bound=10"),
        INPUT_SHAPE,
        CLASSES,
    )
    params = learner.init(jax.random.PRNGKey(5))
    key = jax.random.PRNGKey(6)
    # random plasticity and a large η so the fast weights matter
    params = {**params, "plasticity": jax.random.normal(key, params["plasticity"].shape), "eta_logit": jnp.asarray(0.3)}
    inputs, labels = episode(seed=7, batch=3)
    logits = np.asarray(learner.run(params, key, inputs, labels))
    np.testing.assert_allclose(logits, np_hebbian(params, inputs, labels, use_oja, 10.0), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- FWP / FWMemory


def test_delta_rule_by_hand():
    fast = jnp.zeros((1, 2, 2))
    k, v, beta = jnp.asarray([[1.0, 0.0]]), jnp.asarray([[2.0, 3.0]]), jnp.asarray([[0.5]])
    fast = fwp.delta_write(fast, k, v, beta)
    np.testing.assert_allclose(fast[0], [[1.0, 0.0], [1.5, 0.0]])
    fast = fwp.delta_write(fast, k, v, beta)  # stored [1, 1.5] moves half-way to [2, 3]
    np.testing.assert_allclose(fast[0], [[1.5, 0.0], [2.25, 0.0]])
    fast = fwp.delta_write(fast, jnp.asarray([[0.0, 1.0]]), v, jnp.asarray([[1.0]]))  # β = 1: exact store
    np.testing.assert_allclose(fast[0] @ np.array([0.0, 1.0]), [2.0, 3.0])
    np.testing.assert_allclose(fast[0] @ np.array([1.0, 0.0]), [1.5, 2.25])  # orthogonal key untouched


def np_fwp(p, inputs, labels, bound):
    """FWP's read-then-write step of the module docstring, in NumPy, one example at a time."""
    p = _np(p)
    x_all = np.asarray(inputs, np.float64).reshape(inputs.shape[0], inputs.shape[1], -1)
    y_all = np.asarray(labels, np.float64)
    norm = lambda a: a / np.sqrt(a @ a + 1e-6)  # noqa: E731
    lin = lambda name, z: z @ p[name]["w"] + p[name]["b"]  # noqa: E731
    steps, batch, classes = y_all.shape
    out = np.zeros((steps, batch, classes))
    for n in range(batch):
        fast = np.zeros((p["out"]["w"].shape[0],) * 2)
        for t in range(steps):
            x, y = x_all[t, n], y_all[t, n]
            q = norm(lin("query", np.concatenate([x, np.zeros(3 * classes)])))
            logits = bound * np.tanh(lin("out", fast @ q) / bound)
            out[t, n] = logits
            o = _softmax(logits)
            z = np.concatenate([x, o, o - y, y])
            k, v = norm(lin("key", z)), lin("value", z)
            beta = 1 / (1 + np.exp(-lin("beta", z)[0]))
            fast = fast + beta * np.outer(v - fast @ k, k)
    return out


def test_fwp_episode_matches_numpy():
    learner = build_learner(model_config("FWP", "model.fwp.tanh_bound=10"), INPUT_SHAPE, CLASSES)
    params = learner.init(jax.random.PRNGKey(8))
    inputs, labels = episode(seed=9)
    logits = np.asarray(learner.run(params, jax.random.PRNGKey(0), inputs, labels))
    np.testing.assert_allclose(logits, np_fwp(params, inputs, labels, 10.0), rtol=1e-4, atol=1e-5)


def test_fw_memory_norm_clip_and_outer_keys():
    memory = jnp.stack([jnp.full((2, 4), 16.0), jnp.full((2, 4), 0.5)])  # norms 64 and 1.41
    clipped = np.asarray(fw_memory.clip_norm(memory, 16.0))
    np.testing.assert_allclose(np.linalg.norm(clipped[0]), 16.0, rtol=1e-6)
    np.testing.assert_allclose(clipped[1], 0.5)  # below the bound: unchanged
    ident = {"w": jnp.eye(2), "b": jnp.zeros(2)}
    key = fw_memory.outer_key(ident, ident, jnp.asarray([[3.0, 4.0]]))
    np.testing.assert_allclose(key[0], np.outer([0.6, 0.8], [0.6, 0.8]).ravel(), rtol=1e-5)
