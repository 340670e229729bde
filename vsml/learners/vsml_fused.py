"""The dense VSML layer as one fused kernel (Pallas; Triton on a CUDA GPU), docs/DESIGN.md §4.7.

:func:`vsml.learners.vsml_layer.dense_layer` as XLA runs it writes the ``[Bt, A, B, 4S]``
gate pre-activations to memory on every tick, and reads and writes ``h`` and ``c`` per
tick. Here one program owns a chunk of inputs ``a`` of one population member and runs
every output ``b`` and both micro ticks in registers: ``h`` and ``c`` are read and
written once per call (optionally stored in bfloat16; the maths is float32), the gates
never leave the chip, the message projections ``fwd_in @ W_f`` and ``bwd_in @ W_b`` are
formed in the kernel from the ``M``-float messages, and the forward message's mean over
the inputs leaves as per-chunk partial sums (the backward message's mean over the
outputs is complete in the program). The population member is the grid axis ``vmap``
adds; the outputs are a loop inside the program, so the backward sum needs no atomics
and the result does not depend on scheduling.

The same kernel runs on a CPU in Pallas interpret mode (tests). :func:`fused_dense_layer`
takes the layer's shapes when :func:`supports` them (what the Triton lowering needs:
``S`` a power of two ≥ 16 for ``tl.dot``, no layer norm, a small batch); otherwise the
caller keeps the XLA path. Gradients (``meta.trainer: backprop``) are the XLA path's,
through a custom VJP: the two functions are equal, the backward pass needs no kernel.
"""

from __future__ import annotations

import functools
import importlib.util

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from vsml.learners.vsml_layer import FORGET_BIAS, INPUT_BIAS, dense_layer, message_head

DENSE_STEPS = ("auto", "xla", "fused")  # model.vsml_rnn.dense_step
MAX_BATCH = 8  # examples per program: each is an unrolled copy of the cell's code
CHUNK = 64  # inputs a per program (a power of two; the last chunk is masked)
NUM_WARPS = 4


def supports(spec, num_inputs: int, batch: int) -> bool:
    """Whether the kernel covers a dense layer of ``spec`` with this fan-in and batch size."""
    s = spec.slow_size
    return (
        not spec.layer_norm
        and s >= 16
        and s & (s - 1) == 0
        and 1 <= batch <= MAX_BATCH
        and num_inputs >= 1
        and spec.state_dtype in ("float32", "bfloat16")
    )


def kernel_available() -> bool:
    """Whether this jax has Pallas's Triton module (masked loads and stores, the GPU lowering)."""
    try:
        return importlib.util.find_spec("jax.experimental.pallas.triton") is not None
    except ImportError:
        return False


def on_cuda() -> bool:
    """Whether the default backend is a CUDA GPU (where the kernel lowers through Triton)."""
    if jax.default_backend() != "gpu":
        return False
    return "rocm" not in str(getattr(jax.devices()[0].client, "platform_version", "")).lower()


def select_dense_layer(spec):
    """The dense layer function of ``spec.dense_step`` on the default backend (same contract as
    :func:`~vsml.learners.vsml_layer.dense_layer`); shapes the kernel does not cover take XLA's."""
    cuda = on_cuda()
    if spec.dense_step == "xla" or (spec.dense_step == "auto" and not (cuda and kernel_available())):
        return dense_layer

    def layer(p, state, fwd_in, bwd_in, layer_spec):
        batch, num_inputs = state[0].shape[:2]
        if not supports(layer_spec, num_inputs, batch):
            return dense_layer(p, state, fwd_in, bwd_in, layer_spec)
        return fused_dense_layer(p, state, fwd_in, bwd_in, layer_spec, not cuda)

    return layer


def chunk_size(num_inputs: int) -> int:
    """Inputs per program: ``CHUNK``, or the next power of two ≥ 16 for a small layer."""
    return min(CHUNK, max(16, 1 << (num_inputs - 1).bit_length()))


def _dot(x, w):
    # float32 on the FP32 units (Triton's default for float32 is TF32, whose rounding the
    # tests' equality with the XLA path would not survive).
    return jnp.dot(x, w, precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32)


def _index(value: int) -> jax.Array:
    # a static index as an array: the masked load's interpret-mode rule needs a shape
    return jnp.asarray(value, jnp.int32)


def _sigmoid(x):
    return 1.0 / (1.0 + jnp.exp(-x))


def _kernel(
    fwd_ref,  # [Bt, A, M] float32
    bwd_ref,  # [Bt, B, M] float32
    w_fwd_ref,  # [4, M, S]: w_fwd_in split by gate (i, g, f, o)
    w_bwd_ref,  # [4, M, S]
    bias_ref,  # [4, S]
    w_h_ref,  # [4, S, S]
    h_ref,  # [Bt, A, B, S] state dtype
    c_ref,
    h_out,
    c_out,
    fwd_part_out,  # [chunks, Bt, B, S] float32: sum over this chunk's inputs of the new h
    bwd_sum_out,  # [Bt, A, S] float32: sum over the outputs of the new h
    *,
    num_ticks: int,
    chunk: int,
):
    from jax.experimental.pallas import triton as pl_triton  # noqa: PLC0415 — only where a kernel is traced

    batch, num_inputs, num_outputs, size = h_ref.shape
    msg = fwd_ref.shape[-1]
    dtype = h_ref.dtype
    j = pl.program_id(0)
    start = j * chunk
    rows = start + jax.lax.broadcasted_iota(jnp.int32, (chunk, size), 0)
    valid = rows < num_inputs  # [chunk, S]: the last chunk runs past A
    valid_rows = start + jax.lax.broadcasted_iota(jnp.int32, (chunk,), 0) < num_inputs
    cols = jax.lax.broadcasted_iota(jnp.int32, (chunk, size), 1)
    shared = cols < size // 2  # merge_batch: the first half of h and c is the batch mean
    a_slice = pl.ds(start, chunk)
    w_h = [w_h_ref[g].astype(dtype).astype(jnp.float32) for g in range(4)]  # as the XLA path rounds it

    # fwd_in @ W_f per gate, as M rank-one updates (M is too small for tl.dot): [Bt][4] of [chunk, S]
    per_input = []
    for e in range(batch):
        x = [
            pl_triton.load(fwd_ref.at[_index(e), a_slice, _index(m)], mask=valid_rows, other=0)[:, None]
            for m in range(msg)
        ]
        per_input.append(
            [
                sum((x[m] * w_fwd_ref[g, m][None, :] for m in range(1, msg)), x[0] * w_fwd_ref[g, 0][None, :])
                for g in range(4)
            ]
        )

    def rounded(values):  # stored in the state dtype between ticks, as the XLA path does
        return [v.astype(dtype).astype(jnp.float32) for v in values]

    def merge(values):
        if batch == 1:
            return values
        mean = sum(values[1:], values[0]) / batch
        return [jnp.where(shared, mean, v) for v in values]

    def output_unit(b, bwd_sums):
        index = (a_slice, b, slice(None))
        h = [
            pl_triton.load(h_ref.at[(_index(e), *index)], mask=valid, other=0).astype(jnp.float32) for e in range(batch)
        ]
        c = [
            pl_triton.load(c_ref.at[(_index(e), *index)], mask=valid, other=0).astype(jnp.float32) for e in range(batch)
        ]
        per_output = []
        for e in range(batch):
            gates = []
            for g in range(4):
                acc = jnp.zeros((1, size), jnp.float32)
                for m in range(msg):
                    acc = acc + bwd_ref[e, b, m] * w_bwd_ref[g, m][None, :]
                gates.append(acc + bias_ref[g][None, :])
            per_output.append(gates)
        for _ in range(num_ticks):
            h, c = rounded(merge(h)), rounded(merge(c))
            new_h, new_c = [], []
            for e in range(batch):
                i, g, f, o = (_dot(h[e], w_h[k]) + per_input[e][k] + per_output[e][k] for k in range(4))
                cell = _sigmoid(f + FORGET_BIAS) * c[e] + _sigmoid(i + INPUT_BIAS) * jnp.tanh(g)
                new_h.append(_sigmoid(o) * jnp.tanh(cell))
                new_c.append(cell)
            h, c = rounded(new_h), rounded(new_c)
        out = []
        for e in range(batch):
            pl_triton.store(h_out.at[(_index(e), *index)], h[e].astype(dtype), mask=valid)
            pl_triton.store(c_out.at[(_index(e), *index)], c[e].astype(dtype), mask=valid)
            kept = jnp.where(valid, h[e], 0.0)
            fwd_part_out[j, e, b, :] = jnp.sum(kept, axis=0)
            out.append(bwd_sums[e] + kept)
        return tuple(out)

    zeros = tuple(jnp.zeros((chunk, size), jnp.float32) for _ in range(batch))
    bwd_sums = jax.lax.fori_loop(0, num_outputs, output_unit, zeros)
    for e in range(batch):
        pl_triton.store(bwd_sum_out.at[_index(e), a_slice, :], bwd_sums[e], mask=valid)


def _split_gates(w: jax.Array) -> jax.Array:
    """``[K, 4S] -> [4, K, S]`` (gate order i, g, f, o)."""
    k, four_s = w.shape
    return jnp.moveaxis(w.reshape(k, 4, four_s // 4), 1, 0)


def fused_call(p, state, fwd_in, bwd_in, num_ticks: int, interpret: bool):
    """The kernel on one member: ``(h, c)``, the forward partial sums and the backward sums."""
    hidden, cell = state
    batch, num_inputs, num_outputs, size = hidden.shape
    chunk = chunk_size(num_inputs)
    chunks = -(-num_inputs // chunk)
    f32 = jnp.float32
    out_shape = (
        jax.ShapeDtypeStruct(hidden.shape, hidden.dtype),
        jax.ShapeDtypeStruct(cell.shape, cell.dtype),
        jax.ShapeDtypeStruct((chunks, batch, num_outputs, size), f32),
        jax.ShapeDtypeStruct((batch, num_inputs, size), f32),
    )
    params = {} if interpret else {"compiler_params": _triton_params()}
    call = pl.pallas_call(
        functools.partial(_kernel, num_ticks=num_ticks, chunk=chunk),
        out_shape=out_shape,
        grid=(chunks,),
        interpret=interpret,
        name="vsml_dense_step",
        **params,
    )
    return call(
        fwd_in.astype(f32),
        bwd_in.astype(f32),
        _split_gates(p["w_fwd_in"]),
        _split_gates(p["w_bwd_in"]),
        p["b_gates"].reshape(4, size),
        _split_gates(p["w_hidden"]),
        hidden,
        cell,
    )


def _triton_params():
    from jax.experimental.pallas import triton as pl_triton  # noqa: PLC0415

    return pl_triton.CompilerParams(num_warps=NUM_WARPS, num_stages=1)


def _fused_forward(p, state, fwd_in, bwd_in, spec, interpret):
    num_inputs, num_outputs = state[0].shape[1:3]
    hidden, cell, fwd_part, bwd_sum = fused_call(p, state, fwd_in, bwd_in, spec.num_micro_ticks, interpret)
    fwd_out = message_head(p, "fwd", jnp.sum(fwd_part, axis=0) / num_inputs, False)
    bwd_out = message_head(p, "bwd", bwd_sum / num_outputs, False)
    return (hidden, cell), fwd_out, bwd_out


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def fused_dense_layer(p, state, fwd_in, bwd_in, spec, interpret=False):
    """:func:`vsml.learners.vsml_layer.dense_layer` (same contract) as one kernel per member.

    ``interpret``: run the kernel in Pallas interpret mode (any backend; how the tests run it).
    Call only for shapes :func:`supports`.
    """
    return _fused_forward(p, state, fwd_in, bwd_in, spec, interpret)


def _fused_fwd(p, state, fwd_in, bwd_in, spec, interpret):
    return _fused_forward(p, state, fwd_in, bwd_in, spec, interpret), (p, state, fwd_in, bwd_in)


def _fused_bwd(spec, interpret, residuals, cotangent):
    del interpret
    _, pullback = jax.vjp(lambda *args: dense_layer(*args, spec), *residuals)
    return pullback(cotangent)


fused_dense_layer.defvjp(_fused_fwd, _fused_bwd)
