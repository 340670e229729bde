"""Conv VSML layers: the fast layer equals a plain NumPy loop written from docs/DESIGN.md §4,
the literal JAX layer, and conv+dense episodes behave like a learner should."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsml.learners import vsml, vsml_conv, vsml_layer, vsml_reference
from vsml.settings import model_settings

jax.config.update("jax_default_matmul_precision", "highest")


# --------------------------------------------------------------------------- plain NumPy reference


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _layer_norm(x, scale, offset):
    return (x - x.mean()) / np.sqrt(x.var() + 1e-5) * scale + offset


def _same(size, k, s):
    """TensorFlow SAME: ceil(size / s) outputs, the smaller half of the padding before."""
    out = int(np.ceil(size / s))
    return out, max((out - 1) * s + k - size, 0) // 2


def np_conv_layer(p, h, c, fwd_in, bwd_in, spec, k, s):
    """docs/DESIGN.md §4 conv layer, one (output position, synapse) at a time.

    h, c: [Bt, K, K, Cin, Cout, S]; fwd_in [Bt, H, W, Cin, M]; bwd_in [Bt, H', W', Cout, M].
    Per tick: every synapse (kh, kw, cin, cout) runs its LSTM at every output position
    (i, j) from its shared state, on the forward message of input position
    (i*s + kh - pt, j*s + kw - pl) (zero in the padding) and bwd_in[i, j, cout]; the new
    state is the mean over all output positions. Messages (last tick): forward = mean of
    the heads over the K*K*Cin receptive field; backward = mean of the heads of every
    (i, j, kh, kw, cout) that read an input position (zero if none did).
    """
    p = {key: np.asarray(v, np.float64) for key, v in p.items()}
    h, c = np.asarray(h, np.float64), np.asarray(c, np.float64)
    batch, _, _, cin, cout, size = h.shape
    _, height, width, _, m = fwd_in.shape
    out_h, pt = _same(height, k, s)
    out_w, pl = _same(width, k, s)
    weight = np.concatenate([p["w_fwd_in"], p["w_bwd_in"], p["w_hidden"]])
    fwd_out = bwd_out = None
    for _ in range(spec.num_micro_ticks):
        h, c = h.copy(), c.copy()
        half = size // 2
        h[..., :half] = h[..., :half].mean(0, keepdims=True)
        c[..., :half] = c[..., :half].mean(0, keepdims=True)
        new_h, new_c = np.zeros_like(h), np.zeros_like(c)
        fwd_out = np.zeros((batch, out_h, out_w, cout, m))
        bwd_acc = np.zeros((batch, height, width, cin, m))
        count = np.zeros((batch, height, width, cin, 1))
        for n in range(batch):
            for i in range(out_h):
                for j in range(out_w):
                    for kh in range(k):
                        for kw in range(k):
                            y, x = i * s + kh - pt, j * s + kw - pl
                            inside = 0 <= y < height and 0 <= x < width
                            for ci in range(cin):
                                fwd = fwd_in[n, y, x, ci] if inside else np.zeros(m)
                                for co in range(cout):
                                    z = np.concatenate([fwd, bwd_in[n, i, j, co], h[n, kh, kw, ci, co]]) @ weight
                                    gi, gg, gf, go = np.split(z + p["b_gates"], 4)
                                    cc = _sigmoid(gf + 5) * c[n, kh, kw, ci, co] + _sigmoid(gi - 5) * np.tanh(gg)
                                    hh = _sigmoid(go) * np.tanh(cc)
                                    new_h[n, kh, kw, ci, co] += hh / (out_h * out_w)
                                    new_c[n, kh, kw, ci, co] += cc / (out_h * out_w)
                                    fm = hh @ p["w_fwd_out"] + p["b_fwd_out"]
                                    bm = hh @ p["w_bwd_out"] + p["b_bwd_out"]
                                    if spec.layer_norm:
                                        fm = _layer_norm(fm, p["ln_fwd_scale"], p["ln_fwd_offset"])
                                        bm = _layer_norm(bm, p["ln_bwd_scale"], p["ln_bwd_offset"])
                                    fwd_out[n, i, j, co] += fm / (k * k * cin)
                                    if inside:
                                        bwd_acc[n, y, x, ci] += bm
                                        count[n, y, x, ci] += 1
        h, c = new_h, new_c
        bwd_out = bwd_acc / np.maximum(count, 1)
    return h, c, fwd_out, bwd_out


# --------------------------------------------------------------------------- helpers


def _perturbed_params(spec, seed=0):
    params = vsml.init(jax.random.PRNGKey(seed), spec)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [leaf + 0.3 * jax.random.normal(key, leaf.shape) for leaf, key in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _layer_inputs(seed, batch, k, cin, cout, height, width, stride, spec):
    out_h, out_w = -(-height // stride), -(-width // stride)
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    s, m = spec.slow_size, spec.msg_size
    h = jax.random.normal(keys[0], (batch, k, k, cin, cout, s))
    c = jax.random.normal(keys[1], (batch, k, k, cin, cout, s))
    fwd_in = jax.random.normal(keys[2], (batch, height, width, cin, m))
    bwd_in = jax.random.normal(keys[3], (batch, out_h, out_w, cout, m))
    return h, c, fwd_in, bwd_in


def _image_episode(seed, steps, batch, shape, classes):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    inputs = jax.random.normal(k1, (steps, batch, *shape))
    labels = jax.nn.one_hot(jax.random.randint(k2, (steps, batch), 0, classes), classes)
    return inputs, labels


# One micro tick keeps episode compiles short; the layer tests cover two.
CONV_DENSE = vsml.VSMLSpec(msg_size=4, slow_size=6, num_micro_ticks=1, conv_layers=(vsml.ConvLayer(3, 2, 3),))


# --------------------------------------------------------------------------- one layer


LAYER_CASES = {
    # name: (ticks, stride, batch, kernel, cin, cout, height, width, layer_norm)
    "one_tick_stride1_batch2": (1, 1, 2, 3, 2, 2, 4, 5, False),
    "two_ticks_stride2_batch1_layernorm": (2, 2, 1, 3, 2, 2, 5, 6, True),
    "two_ticks_stride2_batch2_even_kernel": (2, 2, 2, 2, 2, 3, 5, 4, False),
    "one_tick_stride3_batch1": (1, 3, 1, 2, 1, 2, 7, 5, False),  # some inputs are read by nothing
}
_FAST_LAYER = jax.jit(vsml_conv.conv_layer, static_argnums=(4, 5))
_LITERAL_LAYER = jax.jit(vsml_reference.literal_conv_layer, static_argnums=(4, 5))
_RUN = jax.jit(vsml.run, static_argnums=(4,))


@pytest.mark.parametrize("case", LAYER_CASES)
def test_conv_layer_equals_numpy_loop(case):
    ticks, stride, batch, k, cin, cout, height, width, ln = LAYER_CASES[case]
    spec = vsml.VSMLSpec(msg_size=4, slow_size=6, num_micro_ticks=ticks, layer_norm=ln)
    p = _perturbed_params(spec)["forward"][0]
    h, c, fwd_in, bwd_in = _layer_inputs(3, batch, k, cin, cout, height, width, stride, spec)
    layer = vsml.ConvLayer(k, stride, cout)
    want = np_conv_layer(p, h, c, np.asarray(fwd_in, np.float64), np.asarray(bwd_in, np.float64), spec, k, stride)
    # The literal layer is also held to the loop in one case (whole episodes compare it to the fast one).
    for layer_fn in (_FAST_LAYER, _LITERAL_LAYER) if ln else (_FAST_LAYER,):
        (gh, gc), fwd_out, bwd_out = layer_fn(p, (h, c), fwd_in, bwd_in, spec, layer)
        assert fwd_out.shape == bwd_in.shape and bwd_out.shape == fwd_in.shape
        for got, expected in zip((gh, gc, fwd_out, bwd_out), want):
            np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- episodes


def test_conv_dense_run_is_finite_and_runs_on_any_image_and_class_count():
    spec = CONV_DENSE
    params = vsml.init(jax.random.PRNGKey(0), spec)
    for shape, classes in [((7, 6, 1), 3), ((5, 4), 2)]:
        inputs, labels = _image_episode(1, 4, 2, shape, classes)
        logits = _RUN(params, jax.random.PRNGKey(2), inputs, labels, spec)
        assert logits.shape == (4, 2, classes)
        assert np.all(np.isfinite(np.asarray(logits)))


def test_conv_logits_never_see_the_current_label():
    """Online: the prediction at step t depends on labels[:t] only (same shapes as above: no new compile)."""
    params = _perturbed_params(CONV_DENSE)
    inputs, labels = _image_episode(7, 4, 2, (7, 6, 1), 3)
    changed = labels.at[2].set(jnp.roll(labels[2], 1, axis=-1))
    a = _RUN(params, jax.random.PRNGKey(0), inputs, labels, CONV_DENSE)
    b = _RUN(params, jax.random.PRNGKey(0), inputs, changed, CONV_DENSE)
    np.testing.assert_array_equal(np.asarray(a[:3]), np.asarray(b[:3]))
    assert not np.allclose(np.asarray(a[3]), np.asarray(b[3]))


RUN_VARIANTS = {
    "layerwise_backward_separate_layernorm": {
        "layerwise_rnns": True,
        "backward_pass": True,
        "separate_backward_rnn": True,
        "layer_norm": True,
        "feed_label": True,
    },
    "two_conv_hidden_dense_backward_shared": {
        "conv_layers": (vsml.ConvLayer(2, 1, 2), vsml.ConvLayer(3, 2, 2)),
        "hidden_sizes": (3,),
        "backward_pass": True,
    },
}


@pytest.mark.parametrize("variant", RUN_VARIANTS)
def test_fast_conv_run_equals_literal_run(variant):
    spec = dataclasses.replace(CONV_DENSE, **RUN_VARIANTS[variant])
    params = _perturbed_params(spec, seed=4)
    inputs, labels = _image_episode(6, 3, 2, (5, 4, 1), 3)
    key = jax.random.PRNGKey(3)
    fast = vsml.run(params, key, inputs, labels, spec)
    literal = vsml.run_with_options(params, key, inputs, labels, spec, implementation="literal")
    np.testing.assert_allclose(np.asarray(fast), np.asarray(literal), rtol=1e-4, atol=1e-5)


def test_conv_initial_state_is_a_random_weight_init():
    spec = dataclasses.replace(CONV_DENSE, slow_size=16, conv_layers=(vsml.ConvLayer(3, 2, 40),))
    sizes = vsml.layer_geometries(spec, (9, 9, 5), 4)
    assert sizes[0].out_shape == (5, 5, 40) and sizes[1] == vsml_layer.dense_geometry(5 * 5 * 40, 4)
    (h, c), _ = vsml.initial_states(jax.random.PRNGKey(0), spec, sizes, batch=2)
    h, c = np.asarray(h), np.asarray(c)
    assert h.shape == c.shape == (2, 3, 3, 5, 40, 16)
    assert np.all(h == 0) and np.all(c[..., 8:] == 0)
    np.testing.assert_array_equal(c[0], c[1])
    std = 0.88 / np.sqrt(3 * 3 * 5)  # truncated normal times 1/sqrt(fan in), no variance correction
    assert abs(c[..., :8].std() - std) < 0.1 * std


def test_conv_needs_an_image_input():
    params = vsml.init(jax.random.PRNGKey(0), CONV_DENSE)
    inputs, labels = _image_episode(0, 2, 1, (10,), 3)
    with pytest.raises(ValueError, match="image"):
        vsml.run(params, jax.random.PRNGKey(0), inputs, labels, CONV_DENSE)


def test_spec_from_config_reads_conv_layers():
    import yaml

    from vsml.config import DEFAULT_CONFIG_PATH

    model = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())["model"]
    net = model["vsml_rnn"]
    net["layer_specs"] = [
        {"type": "conv", "kernel_size": 3, "stride": 2, "out_channels": 8},
        {"type": "conv", "kernel_size": 2, "out_channels": 4},
        {"type": "dense", "size": 16},
        {"type": "dense"},
    ]
    spec = vsml.spec_from_config(model_settings(model))
    assert spec.conv_layers == (vsml.ConvLayer(3, 2, 8), vsml.ConvLayer(2, 1, 4))
    assert spec.hidden_sizes == (16,) and spec.num_layers == 4
    bad = [
        (
            [{"type": "dense", "size": 4}, {"type": "conv", "kernel_size": 3, "out_channels": 2}, {"type": "dense"}],
            r"layer_specs\[1\].*after a dense layer",
        ),
        ([{"type": "conv", "kernel_size": 3, "out_channels": 2}], r"layer_specs\[0\].*last layer"),
        ([{"type": "conv", "kernel_size": 0, "out_channels": 2}, {"type": "dense"}], r"layer_specs\[0\]\.kernel_size"),
        (
            [{"type": "conv", "kernel_size": 3, "stride": 1.5, "out_channels": 2}, {"type": "dense"}],
            r"layer_specs\[0\]\.stride",
        ),
        ([{"type": "conv", "kernel_size": 3}, {"type": "dense"}], r"layer_specs\[0\]\.out_channels"),
        ([{"type": "pool"}, {"type": "dense"}], r"layer_specs\[0\].*'pool'"),
    ]
    for layer_specs, message in bad:
        net["layer_specs"] = layer_specs
        with pytest.raises(ValueError, match=message):
            vsml.spec_from_config(model_settings(model))


@pytest.mark.parametrize("name", ["conv", "deep", "backward_pass"])
def test_paper_variant_configs_build_a_spec(name):
    from vsml import config as config_lib

    config = config_lib.build_config([config_lib.DEFAULT_CONFIG_PATH.parent / f"{name}.yaml"])
    config = config_lib.resolve_for_rank(config, 0)
    spec = vsml.spec_from_config(model_settings(config["model"]))
    expected = {
        "conv": dict(conv_layers=(vsml.ConvLayer(3, 2, 8),)),
        "deep": dict(hidden_sizes=(32,)),
        "backward_pass": dict(backward_pass=True, separate_backward_rnn=True),
    }[name]
    assert spec == dataclasses.replace(vsml.VSMLSpec(), **expected)
