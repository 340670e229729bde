"""The fused dense VSML step (Pallas) equals XLA's dense layer and the literal per-synapse layer.

On a CPU the kernel runs in Pallas interpret mode (the same kernel code, executed as XLA
ops); a last test lowers it for a CUDA target through Triton, so a GPU session starts from
a kernel that lowers.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsml.learners import vsml, vsml_fused, vsml_layer
from vsml.learners.vsml_reference import literal_dense_layer

jax.config.update("jax_default_matmul_precision", "highest")

PAPER = vsml.VSMLSpec()  # M 8, S 16, 2 micro ticks
TOLERANCE = 1e-6  # max |difference| / max |reference|, float32


def _relative(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def _params(spec, seed=0):
    """One sub-RNN parameter set, biases moved off zero (so every term of the gates counts)."""
    p = vsml.init(jax.random.PRNGKey(seed), spec)["forward"][0]
    keys = dict(zip(sorted(p), jax.random.split(jax.random.PRNGKey(seed + 1), len(p))))
    return {name: value + 0.3 * jax.random.normal(keys[name], value.shape) for name, value in p.items()}


def _layer_inputs(batch, num_inputs, num_outputs, spec, seed=4):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    shape = (batch, num_inputs, num_outputs, spec.slow_size)
    h, c = (jax.random.normal(k, shape).astype(spec.state_dtype) for k in keys[:2])
    fwd_in = jax.random.normal(keys[2], (batch, num_inputs, spec.msg_size))
    bwd_in = jax.random.normal(keys[3], (batch, num_outputs, spec.msg_size))
    return (h, c), fwd_in, bwd_in


def _fused(p, state, fwd_in, bwd_in, spec):
    return vsml_fused.fused_dense_layer(p, state, fwd_in, bwd_in, spec, True)


# Interpret mode compiles the kernel as XLA ops: 5-20 s a case on 2 cores, so the default run keeps
# one case of each kind and the rest run with the slow tests.
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "batch, num_inputs, num_outputs",
    [(1, 784, 10), pytest.param(2, 784, 10, marks=SLOW), pytest.param(3, 20, 5, marks=SLOW), (1, 16, 1)],
    ids=["paper", "paper-batch2", "small-batch3", "one-chunk"],
)
def test_fused_layer_equals_xla_and_literal_layers(batch, num_inputs, num_outputs):
    p = _params(PAPER)
    state, fwd_in, bwd_in = _layer_inputs(batch, num_inputs, num_outputs, PAPER)
    fused = _fused(p, state, fwd_in, bwd_in, PAPER)
    for reference in (vsml_layer.dense_layer, literal_dense_layer):
        want = reference(p, state, fwd_in, bwd_in, PAPER)
        for name, got, expected in zip(("h", "c", "fwd_out", "bwd_out"), jax.tree.leaves(fused), jax.tree.leaves(want)):
            assert got.shape == expected.shape and got.dtype == expected.dtype, name
            assert _relative(got, expected) <= TOLERANCE, (reference.__name__, name, _relative(got, expected))


@SLOW
def test_fused_layer_with_bfloat16_states_rounds_as_the_xla_path():
    """bfloat16 storage, float32 maths: the same roundings as XLA's path, up to sums in another order."""
    spec = dataclasses.replace(PAPER, state_dtype="bfloat16")
    p = _params(spec)
    state, fwd_in, bwd_in = _layer_inputs(2, 40, 3, spec)
    fused = jax.tree.leaves(_fused(p, state, fwd_in, bwd_in, spec))
    want = jax.tree.leaves(vsml_layer.dense_layer(p, state, fwd_in, bwd_in, spec))
    assert [x.dtype for x in fused] == [x.dtype for x in want]
    # a float32 sum in another order may land on the other side of a bfloat16 rounding: one step of 2^-8
    for got, expected in zip(fused, want):
        assert _relative(got, expected) <= 2**-7
    # and nearly every state element rounds the same way
    assert np.mean(np.asarray(fused[0]) == np.asarray(want[0])) > 0.99


def _episode(seed, steps, batch, shape, classes):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    inputs = jax.random.normal(k1, (steps, batch, *shape))
    labels = jax.nn.one_hot(jax.random.randint(k2, (steps, batch), 0, classes), classes)
    return inputs, labels


EPISODES = {
    # name: (spec changes, (steps, batch, input shape, classes))
    "paper": ({}, (3, 1, (28, 28), 10)),
    "paper-feed-label-batch2": ({"feed_label": True}, (3, 2, (28, 28), 10)),
    "two-layers-backward-batch2": (
        {"hidden_sizes": (12,), "backward_pass": True, "feed_label": True},
        (4, 2, (20,), 5),
    ),
    "two-layers-layerwise": ({"hidden_sizes": (24,), "layerwise_rnns": True}, (4, 1, (20,), 5)),
}


@pytest.mark.parametrize("name", [n if n == "paper" else pytest.param(n, marks=SLOW) for n in EPISODES])
def test_fused_episode_equals_xla_and_literal_episodes(name):
    changes, (steps, batch, shape, classes) = EPISODES[name]
    spec = dataclasses.replace(PAPER, **changes)
    params = jax.tree.map(lambda x: x + 0.1, vsml.init(jax.random.PRNGKey(3), spec))
    inputs, labels = _episode(5, steps, batch, shape, classes)
    key = jax.random.PRNGKey(9)
    fused = vsml.run(params, key, inputs, labels, dataclasses.replace(spec, dense_step="fused"))
    xla = vsml.run(params, key, inputs, labels, dataclasses.replace(spec, dense_step="xla"))
    literal = vsml.run_with_options(params, key, inputs, labels, spec, implementation="literal")
    assert _relative(fused, xla) <= TOLERANCE
    assert _relative(fused, literal) <= TOLERANCE


def _has_pallas_call(fn, *args) -> bool:
    return "pallas_call" in str(jax.make_jaxpr(fn)(*args))


def test_shapes_the_kernel_does_not_cover_take_the_xla_path():
    """S below 16 (tl.dot's minimum), layer norm or a large batch: XLA's layer, exactly."""
    for changes, batch in (({"slow_size": 8}, 1), ({"layer_norm": True}, 1), ({}, vsml_fused.MAX_BATCH + 1)):
        spec = dataclasses.replace(PAPER, dense_step="fused", **changes)
        p = _params(spec)
        state, fwd_in, bwd_in = _layer_inputs(batch, 20, 3, spec)
        selected = vsml_fused.select_dense_layer(spec)
        layer = lambda p, state, fwd_in, bwd_in, selected=selected, spec=spec: selected(p, state, fwd_in, bwd_in, spec)  # noqa: E731
        assert not vsml_fused.supports(spec, 20, batch)
        assert not _has_pallas_call(layer, p, state, fwd_in, bwd_in)
        got = jax.jit(layer)(p, state, fwd_in, bwd_in)
        want = jax.jit(vsml_layer.dense_layer, static_argnums=4)(p, state, fwd_in, bwd_in, spec)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_auto_and_xla_keep_the_xla_layer_off_a_gpu():
    if vsml_fused.on_cuda():
        pytest.skip("on a CUDA GPU, auto selects the kernel")
    for step in ("auto", "xla"):
        assert vsml_fused.select_dense_layer(dataclasses.replace(PAPER, dense_step=step)) is vsml_layer.dense_layer


def test_population_axis_and_gradients_match_the_xla_path():
    """vmap over members adds the kernel's grid axis; the meta-gradient is the XLA layer's (custom VJP)."""
    p = _params(PAPER)
    state, fwd_in, bwd_in = _layer_inputs(1, 40, 3, PAPER)
    members = jax.tree.map(lambda x: jnp.stack([x, 1.1 * x, -x]), (p, state, fwd_in, bwd_in))

    def member_loss(layer, p, state, fwd_in, bwd_in):
        (h, c), fwd_out, bwd_out = layer(p, state, fwd_in, bwd_in, PAPER)
        return jnp.sum(h * c) + jnp.sum(fwd_out**2) + jnp.sum(jnp.sin(bwd_out))

    fused_values = jax.vmap(functools.partial(member_loss, _fused))(*members)
    xla_values = jax.vmap(functools.partial(member_loss, vsml_layer.dense_layer))(*members)
    assert _relative(fused_values, xla_values) <= TOLERANCE
    fused_grad = jax.grad(functools.partial(member_loss, _fused))(p, state, fwd_in, bwd_in)
    xla_grad = jax.grad(functools.partial(member_loss, vsml_layer.dense_layer))(p, state, fwd_in, bwd_in)
    for a, b in zip(jax.tree.leaves(fused_grad), jax.tree.leaves(xla_grad)):
        assert _relative(a, b) <= 1e-5


@pytest.mark.parametrize("state_dtype, batch", [("float32", 1), ("bfloat16", 2)])
def test_kernel_lowers_for_cuda_through_triton_at_the_papers_shapes(state_dtype, batch):
    """A population of the paper's model, one time step's layer, lowered for CUDA on this machine.

    This is Pallas's Triton lowering (the kernel as Triton IR inside the ``__gpu$xla.gpu.triton``
    custom call XLA:GPU compiles); PTX is made by XLA:GPU on the GPU itself.
    """
    spec = dataclasses.replace(PAPER, state_dtype=state_dtype)
    members = 4
    p = jax.tree.map(lambda x: jax.ShapeDtypeStruct((members, *x.shape), x.dtype), _params(spec))
    states = jax.ShapeDtypeStruct((members, batch, 784, 10, spec.slow_size), jnp.dtype(state_dtype))
    fwd_in = jax.ShapeDtypeStruct((members, batch, 784, spec.msg_size), jnp.float32)
    bwd_in = jax.ShapeDtypeStruct((members, batch, 10, spec.msg_size), jnp.float32)

    def population(p, h, c, fwd_in, bwd_in):
        layer = functools.partial(vsml_fused.fused_dense_layer, spec=spec, interpret=False)
        return jax.vmap(lambda p, h, c, f, b: layer(p, (h, c), f, b))(p, h, c, fwd_in, bwd_in)

    exported = jax.export.export(
        jax.jit(population),
        platforms=["cuda"],
        # Triton kernels carry no serialisation-compatibility guarantee; this export is never stored
        disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
    )(p, states, states, fwd_in, bwd_in)
    module = exported.mlir_module()
    assert module.count("__gpu$xla.gpu.triton") == 1
    chunks = -(-784 // vsml_fused.chunk_size(784))
    assert f"grid_x = {chunks} : i32, grid_y = {members} : i32" in module  # input chunks x members
