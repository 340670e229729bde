"""What the benchmarks run on, what that hardware can do at most, and the roofline of a synapse update.

``describe()`` names the machine (CPU model, cores, memory, accelerator, jax
version, XLA flags). ``measure_peaks()`` measures, with jax on the default
device and this software stack (not a data sheet), the rates a synapse update
can be bound by:

- ``transcendentals_per_s``: sigmoid and tanh (3 : 2, the LSTM cell's mix) chained per
  element inside one fused computation that reads and writes each element once, so
  the data stay in registers and memory traffic is ~8 bytes per 60 evaluations;
- ``vector_flops``: float32 multiply-adds chained the same way (the vector / CUDA-core
  rate, where ``h·W_h`` runs when it is not a library matmul);
- ``model_matmul_flops``: the fast path's recurrent matmul at the model's shape as XLA
  runs it: a batch of ``[rows, 16] x [16, 64]`` (rows = one member's synapses);
- ``matmul_flops``: a large square float32 matmul (library / tensor cores);
- ``bandwidth_bytes``: a streaming read + write of an array far larger than any cache.

``update_cost()`` is the work of one synapse update (one tick of one synapse of one
population member) from the model's settings (docs/DESIGN.md §4.7): ``8·S²`` FLOPs
of ``h·W_h``, ``14·S`` other FLOPs of the cell and gate sums, the message
projections amortised over the synapses and ticks, ``5·S`` transcendentals, and the
state bytes per dataflow: ``h`` and ``c`` through memory on every tick (``4·S``
values), once per step (``4·S/K``, the fused kernel), or on chip (none).
``xla_layer_traffic()`` reads what XLA's compiled dense layer really moves, from
its cost analysis (bytes accessed between fusions) and memory plan.
``roofline()`` turns all of it into ceilings in synapse updates/s and a measured
rate's fraction of each (``roofline_table()`` prints them).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from vsml.runtime import cpu_flags, cpu_model  # noqa: E402 — needs ROOT on sys.path when run as a script


def memory_gib() -> float:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemTotal"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def describe() -> dict:
    """The machine and software the figures come from."""
    device = jax.devices()[0]
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_vector_isa": "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other",
        "memory_gib": round(memory_gib(), 1),
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def _jaxlib_version() -> str:
    import jaxlib  # noqa: PLC0415

    return jaxlib.__version__


def _best_time(fn, *args, repeats: int = 15) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def _compiled_bytes(fn, *args) -> float:
    return float(jax.jit(fn).lower(*args).compile().cost_analysis().get("bytes accessed", float("nan")))


CHAIN = 12  # rounds of 5 transcendentals per chain below
FMAS = 64  # multiply-adds per chain below
LANES = 4  # independent chains per element, so a CPU's pipelined units are not latency-bound


def _transcendental_chain(x):
    """``x [N] -> [N]``: ``LANES`` independent chains of ``5·CHAIN`` sigmoid/tanh (3 : 2) per element."""
    lanes = [x + 0.25 * k for k in range(LANES)]
    for _ in range(CHAIN):
        lanes = [jax.nn.sigmoid(jnp.tanh(jax.nn.sigmoid(jnp.tanh(jax.nn.sigmoid(v))))) for v in lanes]
    return sum(lanes[1:], lanes[0])


def _fma_chain(x, a, b):
    """``x [N] -> [N]``: ``LANES`` chains of ``FMAS`` multiply-adds per element (``a``, ``b`` traced: nothing folds)."""
    lanes = [x + 0.25 * k for k in range(LANES)]
    for _ in range(FMAS):
        lanes = [v * a + b for v in lanes]
    return sum(lanes[1:], lanes[0])


def measure_peaks(scale: float = 1.0) -> dict:
    """The measured peak rates on the default device (keys: the module docstring).

    ``scale`` shrinks the problem sizes (for smoke tests); 1.0 is large enough to
    leave the caches on a CPU and to fill a GPU. ``*_bytes_per_element`` say what XLA
    planned to move for the in-register chains (8: one read and one write per element).
    """
    gpu = jax.default_backend() != "cpu"
    n = int((8192 if gpu else 2048) * scale**0.5) // 64 * 64 or 64
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    flops = 2 * n**3 / _best_time(matmul, a)

    # The recurrent matmul as the fast path runs it: per member [rows, S] x [S, 4S], S = 16.
    members = max(int((256 if gpu else 4) * scale), 1)
    rows = 7840
    h = jax.random.normal(jax.random.PRNGKey(2), (members, rows, 16), jnp.float32)
    w = jax.random.normal(jax.random.PRNGKey(3), (members, 16, 64), jnp.float32)
    model_matmul = jax.jit(lambda h, w: jnp.einsum("prs,psg->prg", h, w))
    model_flops = 2 * members * rows * 16 * 64 / _best_time(model_matmul, h, w)

    # In-register chains: modest arrays, read and written once, many operations per element.
    elems = int((2**20 if gpu else 2**14) * scale) // 1024 * 1024 or 1024
    v = jax.random.uniform(jax.random.PRNGKey(1), (elems,), jnp.float32)
    trans_rate = elems * LANES * CHAIN * 5 / _best_time(jax.jit(_transcendental_chain), v)
    scalars = (jnp.float32(0.999), jnp.float32(1e-3))
    fma_rate = 2 * FMAS * LANES * elems / _best_time(jax.jit(_fma_chain), v, *scalars)

    # Streaming read + write of an array much larger than any cache.
    big = int((2**28 if gpu else 2**26) * scale) or 2**16  # float32 elements: 1 GiB / 256 MiB
    stream_in = jnp.ones((big,), jnp.float32)
    stream = jax.jit(lambda x: x * 1.0001 + 1.0)
    bandwidth = 2 * 4 * big / _best_time(stream, stream_in)
    return {
        "matmul_flops": flops,
        "model_matmul_flops": model_flops,
        "transcendentals_per_s": trans_rate,
        "vector_flops": fma_rate,
        "bandwidth_bytes": bandwidth,
        "transcendental_chain_bytes_per_element": _compiled_bytes(_transcendental_chain, v) / elems,
        "fma_chain_bytes_per_element": _compiled_bytes(_fma_chain, v, *scalars) / elems,
    }


def update_cost(
    slow_size: int = 16, msg_size: int = 8, ticks: int = 2, num_inputs: int = 784, num_outputs: int = 10
) -> dict:
    """The work of one synapse update of a dense layer (fast path, float32 maths).

    ``recurrent_flops``: ``h·W_h``; ``other_flops``: the two gate sums (``8S``), the cell
    (``6S``: the ±5 biases, ``f·c + i·g``, ``o·tanh c``) and the message projections
    ``f_a·W_fi``, ``b_b·W_bi`` (``2M·4S`` per input and per output, once per step)
    spread over the ``A·B·K`` updates; ``state_values``: the values of ``h`` and ``c``
    read and written per tick (``4S``), to be multiplied by the bytes per value and
    divided by the ticks that share one trip through memory.
    """
    s, m = slow_size, msg_size
    messages = 2 * m * 4 * s * (num_inputs + num_outputs) / (num_inputs * num_outputs * ticks)
    return {
        "recurrent_flops": 8 * s * s,
        "other_flops": 14 * s + messages,
        "flops": 8 * s * s + 14 * s + messages,
        "transcendentals": 5 * s,
        "state_values": 4 * s,
        "ticks": ticks,
    }


def xla_layer_traffic(members: int = 8, batch: int = 1, state_dtype: str = "float32") -> dict:
    """What XLA's compiled dense layer (the paper's 784→10, M 8, S 16, K 2) moves per synapse update.

    Compiles one call of :func:`vsml.learners.vsml_layer.dense_layer` for ``members``
    population members (``vmap``, as a slice runs it) on the default backend and divides
    XLA's cost analysis (``bytes accessed``: every fusion's operands and results, i.e. the
    traffic between fusions; FLOPs; transcendentals) and its memory plan (temporary
    buffers) by the updates of the call. Measured, not modelled: the fusions are XLA's.
    """
    import dataclasses  # noqa: PLC0415

    from vsml.learners import vsml, vsml_layer  # noqa: PLC0415

    spec = dataclasses.replace(vsml.VSMLSpec(), state_dtype=state_dtype)
    num_inputs, num_outputs = 784, 10
    params = vsml.init(jax.random.PRNGKey(0), spec)["forward"][0]
    shape = (members, batch, num_inputs, num_outputs, spec.slow_size)
    args = (
        jax.tree.map(lambda x: jnp.broadcast_to(x, (members, *x.shape)), params),
        (jnp.zeros(shape, state_dtype), jnp.zeros(shape, state_dtype)),
        jnp.zeros((members, batch, num_inputs, spec.msg_size)),
        jnp.zeros((members, batch, num_outputs, spec.msg_size)),
    )
    layer = jax.vmap(lambda p, st, f, b: vsml_layer.dense_layer(p, st, f, b, spec))
    compiled = jax.jit(layer).lower(*args).compile()
    cost = compiled.cost_analysis()
    updates = members * batch * num_inputs * num_outputs * spec.num_micro_ticks
    temp = compiled.memory_analysis().temp_size_in_bytes
    return {
        "members": members,
        "state_dtype": state_dtype,
        "bytes_per_update": float(cost["bytes accessed"]) / updates,
        "flops_per_update": float(cost.get("flops", float("nan"))) / updates,
        "transcendentals_per_update": float(cost.get("transcendentals", float("nan"))) / updates,
        "temp_bytes_per_member": temp / members,
    }


def roofline(peaks: dict, cost: dict, xla_bytes_per_update: float | None, rate: float | None = None) -> list[dict]:
    """Ceilings of synapse updates/s, one per dataflow and unit; ``fraction``: ``rate`` / ceiling.

    Memory rows: the bytes each dataflow moves per update at the measured bandwidth;
    compute rows: the update's work at each measured rate, as if that unit did nothing else.
    """
    values, ticks = cost["state_values"], cost["ticks"]
    bandwidth = peaks["bandwidth_bytes"]
    rows = []
    if xla_bytes_per_update:
        rows.append(
            ("memory: XLA's dense layer as compiled (measured)", "XLA layer mem", xla_bytes_per_update, "B", bandwidth)
        )
    rows += [
        ("memory: h, c every tick (float32)", "h,c per tick", values * 4, "B", bandwidth),
        ("memory: h, c once per step (float32, fused)", "h,c per step", values * 4 / ticks, "B", bandwidth),
        ("memory: h, c once per step (bfloat16, fused)", "bf16 per step", values * 2 / ticks, "B", bandwidth),
        (
            "transcendentals in registers",
            "transc.",
            cost["transcendentals"],
            "evals",
            peaks.get("transcendentals_per_s"),
        ),
        ("float32 vector FMA in registers (all FLOPs)", "FP32 FMA", cost["flops"], "FLOP", peaks.get("vector_flops")),
        (
            "h·W_h as XLA's batched [rows,16]x[16,64]",
            "model matmul",
            cost["recurrent_flops"],
            "FLOP",
            peaks.get("model_matmul_flops"),
        ),
        ("h·W_h at the large-matmul rate", "large matmul", cost["recurrent_flops"], "FLOP", peaks["matmul_flops"]),
    ]
    trans, model_mm, vector = (peaks.get(k) for k in ("transcendentals_per_s", "model_matmul_flops", "vector_flops"))
    if trans and model_mm and vector:
        # A CPU's vector units do all three in turn (a GPU overlaps its special-function and FMA units):
        # the seconds add. Expressed as "updates" at a rate of 1/s per update-second.
        seconds = cost["transcendentals"] / trans + cost["recurrent_flops"] / model_mm + cost["other_flops"] / vector
        rows.append(("all of it in series (a CPU's vector units)", "in series", seconds, "s", 1.0))
    out = []
    for name, short, per_update, unit, unit_rate in rows:
        if not unit_rate:
            continue
        ceiling = unit_rate / per_update
        out.append(
            {
                "ceiling": name,
                "short": short,
                "per_update": per_update,
                "unit": unit,
                "unit_rate": unit_rate,
                "updates_per_s": ceiling,
                "fraction": rate / ceiling if rate else None,
            }
        )
    return out


def roofline_table(rows: list[dict], rate_label: str = "measured") -> str:
    """The roofline as a markdown table (the fraction column when a rate was given)."""
    from bench.throughput import table  # noqa: PLC0415

    with_rate = any(r["fraction"] is not None for r in rows)
    cells = [
        [
            r["ceiling"],
            f"{r['per_update']:.4g} {r['unit']}",
            f"{r['unit_rate']:.3g} {r['unit']}/s" if r["unit"] != "s" else "-",
            f"{r['updates_per_s']:.3g}",
            *([f"{r['fraction']:.0%}" if r["fraction"] is not None else "-"] if with_rate else []),
        ]
        for r in rows
    ]
    columns = ["ceiling", "per update", "measured unit rate", "updates/s", *([f"{rate_label} / ceiling"] * with_rate)]
    return table(cells, columns)


def binding(rows: list[dict], dataflow: str = "XLA layer mem", slack: float = 1.05) -> dict | None:
    """The ceiling a measured rate is closest to without exceeding it (up to ``slack`` for timing
    noise): what binds it. Only the memory row of the rate's own ``dataflow`` (a row's ``short``
    name) counts: the others describe other implementations; if the rate exceeds even that one,
    caches serve the traffic and only the compute rows remain."""
    candidates = [
        r
        for r in rows
        if r["fraction"] is not None and r["fraction"] <= slack and (r["unit"] != "B" or r["short"] == dataflow)
    ]
    return max(candidates, key=lambda r: r["fraction"]) if candidates else None


def cpu_peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    import resource  # noqa: PLC0415

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_peak_bytes() -> int | None:
    """Peak memory in use on an accelerator (None on a CPU, where ``cpu_peak_rss_bytes`` applies)."""
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def summary_line(info: dict) -> str:
    accel = "" if info["backend"] == "cpu" else f", {info['device_count']}x {info['device']}"
    return (
        f"{info['cpu']} ({info['cpu_cores']} cores, {info['cpu_vector_isa']}, {info['memory_gib']} GiB)"
        f"{accel}; jax {info['jax']}, jaxlib {info['jaxlib']}, python {info['python']}"
        + (f"; XLA_FLAGS={info['xla_flags']}" if info["xla_flags"] else "")
    )


def main(argv=None) -> int:
    """``python3 bench/machine.py``: the roofline of this machine, each rate the median of ``--repeats``."""
    import argparse  # noqa: PLC0415
    import json  # noqa: PLC0415
    import statistics  # noqa: PLC0415

    from vsml import runtime  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="measurements of every rate (median, spread)")
    parser.add_argument("--scale", type=float, default=1.0, help="problem sizes (measure_peaks)")
    parser.add_argument("--members", type=int, default=4, help="members of XLA's compiled layer (traffic)")
    parser.add_argument("--rate", type=float, help="a measured synapse updates/s: its fraction of each ceiling")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    runtime.apply_xla_flags()
    runs = [measure_peaks(args.scale) for _ in range(args.repeats)]
    peaks = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    spread = {key: (min(run[key] for run in runs), max(run[key] for run in runs)) for key in runs[0]}
    traffic = {dtype: xla_layer_traffic(args.members, 1, dtype) for dtype in ("float32", "bfloat16")}
    rows = roofline(peaks, update_cost(), traffic["float32"]["bytes_per_update"], args.rate)
    print(summary_line(describe()))
    for key, value in peaks.items():
        low, high = spread[key]
        print(f"{key}: {value:.3g} (range {low:.3g}-{high:.3g} over {args.repeats})")
    for dtype, figures in traffic.items():
        print(
            f"XLA's dense layer, {dtype} states: "
            + ", ".join(f"{k} {v:.4g}" for k, v in figures.items() if k != "state_dtype")
        )
    print(roofline_table(rows))
    if args.rate:
        closest = binding(rows)
        print(f"closest ceiling not exceeded: {closest['ceiling'] if closest else 'none'}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"peaks": peaks, "spread": spread, "traffic": traffic, "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
