"""What the benchmarks run on, and what that hardware can do at most.

``describe()`` names the machine (CPU model, cores, memory, accelerator, jax
version, XLA flags). ``measure_peaks()`` measures, with jax on the default
device, the three rates the analytic floor of a synapse update is made of:
dense float32 matmul FLOP/s, elementwise ``tanh`` evaluations/s and memory
bandwidth (bytes/s of a large read + write). Measured rather than taken from a
data sheet, so the floor is what this software stack can reach here.

``floor_updates_per_s()`` turns them into the analytic ceiling of VSML synapse
updates per second (docs/DESIGN.md §4, fast path): per update of a synapse with state
size S the recurrent projection costs ``2·S·4S`` FLOPs, adding the per-input /
per-output terms ``2·4S``, the LSTM cell about ``10·S`` further FLOPs and
``5·S`` transcendentals (three sigmoids, two tanh); when the states go through
memory on every tick, ``h`` and ``c`` are read and written: ``4·S·4`` bytes.
"""

from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp

from vsml.runtime import cpu_flags, cpu_model


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


def measure_peaks(scale: float = 1.0) -> dict:
    """Measured peak rates on the default device: ``matmul_flops``, ``tanh_per_s``, ``bandwidth_bytes``.

    ``scale`` shrinks the problem sizes (for smoke tests); 1.0 is large enough to
    leave the caches on a CPU and to fill a GPU.
    """
    gpu = jax.default_backend() != "cpu"
    n = int((8192 if gpu else 2048) * scale**0.5) // 64 * 64 or 64
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    flops = 2 * n**3 / _best_time(matmul, a)

    # tanh on an array that stays in cache (L2 on a CPU), repeated: the rate of the function itself.
    elems = int((2**24 if gpu else 2**16) * scale) or 1024
    v = jax.random.normal(jax.random.PRNGKey(1), (elems,))
    rounds = 64
    tanh_loop = jax.jit(lambda x: jax.lax.fori_loop(0, rounds, lambda _, y: jnp.tanh(y) * 1.5, x))
    tanh_rate = elems * rounds / _best_time(tanh_loop, v)

    # Streaming read + write of an array much larger than any cache.
    big = int((2**28 if gpu else 2**26) * scale) or 2**16  # float32 elements: 1 GiB / 256 MiB
    w = jnp.ones((big,), jnp.float32)
    stream = jax.jit(lambda x: x * 1.0001 + 1.0)
    bandwidth = 2 * 4 * big / _best_time(stream, w)
    return {"matmul_flops": flops, "tanh_per_s": tanh_rate, "bandwidth_bytes": bandwidth}


def synapse_update_cost(slow_size: int) -> dict:
    """FLOPs, transcendentals and state bytes of one synapse update (fast path, float32)."""
    s = slow_size
    return {"flops": 2 * s * 4 * s + 2 * 4 * s + 10 * s, "transcendentals": 5 * s, "bytes": 4 * s * 4}


def floor_updates_per_s(peaks: dict, slow_size: int) -> dict:
    """The analytic ceiling of synapse updates/s: compute-bound, memory-bound, and the lower of the two."""
    cost = synapse_update_cost(slow_size)
    compute_s = cost["flops"] / peaks["matmul_flops"] + cost["transcendentals"] / peaks["tanh_per_s"]
    memory_s = cost["bytes"] / peaks["bandwidth_bytes"]
    return {"compute_bound": 1 / compute_s, "memory_bound": 1 / memory_s, "floor": 1 / max(compute_s, memory_s)}


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
