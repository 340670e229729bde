"""VSML learner: the fast path equals a plain per-synapse NumPy loop and the literal JAX version."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsml.learners import vsml, vsml_layer
from vsml.settings import model_settings

jax.config.update("jax_default_matmul_precision", "highest")


# --------------------------------------------------------------------------- plain NumPy reference


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _layer_norm(x, scale, offset):
    return (x - x.mean()) / np.sqrt(x.var() + 1e-5) * scale + offset


def np_layer(p, h, c, fwd_in, bwd_in, spec):
    """docs/DESIGN.md §4 for one layer, one synapse at a time; returns h, c, fwd_out [Bt,B,M], bwd_out [Bt,A,M]."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    batch, n_in, n_out, size = h.shape
    weight = np.concatenate([p["w_fwd_in"], p["w_bwd_in"], p["w_hidden"]])
    fwd_msg = bwd_msg = None
    for _ in range(spec.num_micro_ticks):
        h, c = h.copy(), c.copy()
        half = size // 2
        h[..., :half] = h[..., :half].mean(0, keepdims=True)
        c[..., :half] = c[..., :half].mean(0, keepdims=True)
        fwd_msg = np.zeros((batch, n_in, n_out, spec.msg_size))
        bwd_msg = np.zeros((batch, n_in, n_out, spec.msg_size))
        for n in range(batch):
            for a in range(n_in):
                for b in range(n_out):
                    z = np.concatenate([fwd_in[n, a], bwd_in[n, b], h[n, a, b]]) @ weight + p["b_gates"]
                    i, g, f, o = np.split(z, 4)
                    c[n, a, b] = _sigmoid(f + 5) * c[n, a, b] + _sigmoid(i - 5) * np.tanh(g)
                    h[n, a, b] = _sigmoid(o) * np.tanh(c[n, a, b])
                    fm = h[n, a, b] @ p["w_fwd_out"] + p["b_fwd_out"]
                    bm = h[n, a, b] @ p["w_bwd_out"] + p["b_bwd_out"]
                    if spec.layer_norm:
                        fm = _layer_norm(fm, p["ln_fwd_scale"], p["ln_fwd_offset"])
                        bm = _layer_norm(bm, p["ln_bwd_scale"], p["ln_bwd_offset"])
                    fwd_msg[n, a, b], bwd_msg[n, a, b] = fm, bm
    return h, c, fwd_msg.mean(axis=1), bwd_msg.mean(axis=2)


def np_run(params, key, inputs, labels, spec):
    """A whole episode following docs/DESIGN.md §4 steps 1-6 literally."""
    inputs = np.asarray(inputs, np.float64).reshape(inputs.shape[0], inputs.shape[1], -1)
    labels = np.asarray(labels, np.float64)
    steps, batch, _ = inputs.shape
    geometries = vsml.layer_geometries(spec, inputs.shape[-1:], labels.shape[-1])
    sizes = [g.synapses for g in geometries]
    states = [
        (np.asarray(h, np.float64), np.asarray(c, np.float64))
        for h, c in vsml.initial_states(key, spec, geometries, batch)
    ]
    m = spec.msg_size
    bwd_ins = [np.zeros((batch, b, m)) for _, b in sizes]

    def pset(group, i):
        return params[group][i if spec.layerwise_rnns else 0]

    all_logits = []
    for t in range(steps):
        fwd = np.zeros((batch, sizes[0][0], m))
        fwd[..., 0] = inputs[t]
        fwd_ins, next_bwd = [], list(bwd_ins)
        for i in range(len(sizes)):
            fwd_ins.append(fwd)
            h, c, fwd, bwd_out = np_layer(pset("forward", i), *states[i], fwd, bwd_ins[i], spec)
            states[i] = (h, c)
            if i > 0:
                next_bwd[i - 1] = bwd_out
        logits = np.tanh(fwd[..., spec.output_idx] / spec.tanh_bound) * spec.tanh_bound
        all_logits.append(logits)
        soft = np.exp(logits - logits.max(-1, keepdims=True))
        error = soft / soft.sum(-1, keepdims=True) - labels[t]
        msg = np.zeros((batch, labels.shape[-1], m))
        msg[..., 0] = error
        if spec.feed_label:
            msg[..., 1] = labels[t]
        if spec.backward_pass:
            group = "backward" if spec.separate_backward_rnn else "forward"
            bwd = msg
            for i in reversed(range(len(sizes))):
                h, c, _, bwd_out = np_layer(pset(group, i), *states[i], fwd_ins[i], bwd, spec)
                states[i] = (h, c)
                if i > 0:
                    next_bwd[i - 1] = bwd_out
                bwd = bwd_out
            next_bwd[-1] = np.zeros_like(msg)
        else:
            next_bwd[-1] = msg
        bwd_ins = next_bwd
    return np.stack(all_logits)


# --------------------------------------------------------------------------- fixtures

VARIANTS = {
    "default": {},
    "batch_feed_label": {"feed_label": True},
    "two_layers_layernorm": {"hidden_sizes": (3,), "layer_norm": True},
    "backward_separate_layerwise": {
        "hidden_sizes": (3,),
        "backward_pass": True,
        "separate_backward_rnn": True,
        "layerwise_rnns": True,
    },
    "backward_shared_three_ticks": {"backward_pass": True, "num_micro_ticks": 3},
}


def _episode(seed, steps=4, batch=2, shape=(5,), classes=3):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    inputs = jax.random.normal(k1, (steps, batch, *shape))
    labels = jax.nn.one_hot(jax.random.randint(k2, (steps, batch), 0, classes), classes)
    return inputs, labels


def _perturbed_params(spec, seed=0):
    """Init, with biases and layer-norm parameters moved off their trivial values."""
    params = vsml.init(jax.random.PRNGKey(seed), spec)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [leaf + 0.3 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("variant", VARIANTS)
def test_fast_run_equals_numpy_reference(variant):
    spec = dataclasses.replace(vsml.VSMLSpec(msg_size=4, slow_size=6), **VARIANTS[variant])
    params = _perturbed_params(spec)
    inputs, labels = _episode(1)
    key = jax.random.PRNGKey(7)
    fast = vsml.run(params, key, inputs, labels, spec)
    expected = np_run(params, key, inputs, labels, spec)
    np.testing.assert_allclose(np.asarray(fast), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fast_run_equals_literal_jax_reference(variant):
    spec = dataclasses.replace(vsml.VSMLSpec(), **VARIANTS[variant])
    params = _perturbed_params(spec, seed=3)
    inputs, labels = _episode(2, steps=6, batch=3, shape=(4, 4, 1), classes=5)
    key = jax.random.PRNGKey(9)
    fast = vsml.run(params, key, inputs, labels, spec)
    literal = vsml.run_with_options(params, key, inputs, labels, spec, implementation="literal")
    np.testing.assert_allclose(np.asarray(fast), np.asarray(literal), rtol=1e-4, atol=1e-5)


def test_one_tick_of_fast_layer_equals_numpy_loop():
    spec = vsml.VSMLSpec(msg_size=4, slow_size=6, num_micro_ticks=1)
    p = _perturbed_params(spec)["forward"][0]
    keys = jax.random.split(jax.random.PRNGKey(4), 4)
    h, c = (jax.random.normal(k, (2, 5, 3, 6)) for k in keys[:2])
    fwd_in, bwd_in = jax.random.normal(keys[2], (2, 5, 4)), jax.random.normal(keys[3], (2, 3, 4))
    (fh, fc), fwd_out, bwd_out = vsml_layer.dense_layer(p, (h, c), fwd_in, bwd_in, spec)
    eh, ec, efwd, ebwd = np_layer(
        p, np.asarray(h, np.float64), np.asarray(c, np.float64), np.asarray(fwd_in), np.asarray(bwd_in), spec
    )
    for got, want in [(fh, eh), (fc, ec), (fwd_out, efwd), (bwd_out, ebwd)]:
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_same_meta_parameters_run_on_any_input_and_output_size():
    spec = vsml.VSMLSpec()
    params = vsml.init(jax.random.PRNGKey(0), spec)
    shapes = jax.tree_util.tree_map(jnp.shape, params)
    for input_shape, classes in [((8, 8, 1), 10), ((28, 28, 1), 62), ((3,), 2)]:
        inputs, labels = _episode(0, steps=3, batch=1, shape=input_shape, classes=classes)
        logits = vsml.run(params, jax.random.PRNGKey(1), inputs, labels, spec)
        assert logits.shape == (3, 1, classes)
        assert np.all(np.isfinite(np.asarray(logits)))
    assert jax.tree_util.tree_map(jnp.shape, params) == shapes


def test_logits_never_see_the_current_label():
    """Online: the prediction at step t depends on labels[:t] only."""
    spec = vsml.VSMLSpec(feed_label=True)
    params = _perturbed_params(spec)
    inputs, labels = _episode(5, steps=5, batch=1, classes=4)
    changed = labels.at[3].set(jnp.roll(labels[3], 1, axis=-1))
    a = vsml.run(params, jax.random.PRNGKey(0), inputs, labels, spec)
    b = vsml.run(params, jax.random.PRNGKey(0), inputs, changed, spec)
    np.testing.assert_array_equal(np.asarray(a[:4]), np.asarray(b[:4]))
    assert not np.allclose(np.asarray(a[4]), np.asarray(b[4]))


def test_initial_state_is_a_random_weight_init_in_the_first_cell_half():
    spec = vsml.VSMLSpec(slow_size=16, init_rand_proportion=0.5)
    ((h, c),) = vsml.initial_states(jax.random.PRNGKey(0), spec, [vsml_layer.dense_geometry(400, 30)], batch=2)
    h, c = np.asarray(h), np.asarray(c)
    assert np.all(h == 0)
    assert np.all(c[..., 8:] == 0)
    np.testing.assert_array_equal(c[0], c[1])  # the same "weights" for every example
    # a [-2, 2]-truncated standard normal times 1/sqrt(fan in): std ≈ 0.88/sqrt(400)
    # (tests/test_init_scale.py checks the spread precisely)
    assert abs(c[..., :8].std() - 0.88 / np.sqrt(400)) < 0.1 / np.sqrt(400)
    assert np.abs(c[..., :8]).max() <= 2 / np.sqrt(400) + 1e-6


def test_merge_batch_shares_first_half_and_keeps_second():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 2, 8))
    merged = np.asarray(vsml_layer.merge_batch(x))
    np.testing.assert_allclose(
        merged[:, ..., :4], np.broadcast_to(np.asarray(x)[..., :4].mean(0), (3, 2, 2, 4)), rtol=1e-6
    )
    np.testing.assert_array_equal(merged[..., 4:], np.asarray(x)[..., 4:])


def test_param_sets_follow_layerwise_and_separate_backward_options():
    spec = vsml.VSMLSpec(hidden_sizes=(5, 4), layerwise_rnns=True, backward_pass=True, separate_backward_rnn=True)
    params = vsml.init(jax.random.PRNGKey(0), spec)
    assert len(params["forward"]) == 3 and len(params["backward"]) == 3
    shared = vsml.init(jax.random.PRNGKey(0), vsml.VSMLSpec(hidden_sizes=(5,)))
    assert len(shared["forward"]) == 1 and "backward" not in shared


def test_spec_from_config_reads_layer_specs():
    import yaml

    from vsml.config import DEFAULT_CONFIG_PATH

    model = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())["model"]
    assert vsml.spec_from_config(model_settings(model)) == vsml.VSMLSpec()
    model["vsml_rnn"]["layer_specs"] = [{"type": "dense", "size": 32}, {"type": "dense"}]
    assert vsml.spec_from_config(model_settings(model)).hidden_sizes == (32,)
    model["vsml_rnn"]["layer_specs"] = [{"type": "dense"}, {"type": "dense"}]
    with pytest.raises(ValueError, match=r"layer_specs\[0\].*size"):
        vsml.spec_from_config(model_settings(model))


def test_spec_carries_every_key_of_both_vsml_sections():
    """A key declared in ``model.sub_rnn`` or ``model.vsml_rnn`` reaches the learner: the spec has a field
    of that name with the same default, except ``layer_specs``, which becomes ``hidden_sizes`` and
    ``conv_layers`` (a spec must be hashable, to be a jit static)."""
    from vsml.settings import SubRNNSettings, VSMLRNNSettings

    section_fields = {f.name: f for cls in (SubRNNSettings, VSMLRNNSettings) for f in dataclasses.fields(cls)}
    spec_fields = {f.name: f for f in dataclasses.fields(vsml.VSMLSpec)}
    assert set(spec_fields) == set(section_fields) - {"layer_specs"} | {"hidden_sizes", "conv_layers"}
    for name in set(section_fields) - {"layer_specs"}:
        assert spec_fields[name].default == section_fields[name].default, name
