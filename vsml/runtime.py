"""How this process runs jax: the persistent compilation cache and CPU code generation.

Nothing here changes what is computed; it changes how long it takes.

* ``runtime.compilation_cache`` (config): compiled XLA programs are kept on disk
  (:func:`enable_compilation_cache`), so a resumed run, a chained Slurm job or a
  second run with the same shapes loads them instead of compiling again. ``auto``
  uses ``~/.cache/vsml/jax`` (``$XDG_CACHE_HOME`` respected) on a GPU/TPU and
  stays off on a CPU, where compiling takes seconds and XLA:CPU logs a
  target-feature warning for every program it loads from a cache; ``off``
  disables it; any other value is the cache directory, used on any backend.
  Writes and reads are serialised by a file lock and the cache is bounded
  (oldest entries evicted), so many ranks and runs can share one directory on a
  node. Do not share one directory between machines with different CPU types:
  a program compiled for one CPU may use instructions another lacks.
* :func:`cpu_xla_flags`: on CPUs with AVX-512, XLA:CPU still emits 256-bit
  vector code by default; ``launch.py`` asks for 512-bit vectors unless
  ``XLA_FLAGS`` already says otherwise (``bench/RESULTS.md`` has the measured
  gain). It must run before jax creates its CPU client, hence an environment
  variable rather than a config key.
"""

from __future__ import annotations

import os
from pathlib import Path

VECTOR_WIDTH_FLAG = "--xla_cpu_prefer_vector_width"
CACHE_MAX_BYTES = 4 * 2**30  # bounded so ~/.cache does not grow without limit; oldest entries go first
CACHE_CHOICES = ("auto", "off")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The instruction-set flags of this CPU (empty where /proc/cpuinfo is not readable)."""
    try:
        with open(cpuinfo) as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_xla_flags(xla_flags: str, flags: set[str]) -> str:
    """``XLA_FLAGS`` with 512-bit CPU vectors requested when the CPU has AVX-512 and the user set no width."""
    if "avx512f" not in flags or VECTOR_WIDTH_FLAG in xla_flags:
        return xla_flags
    return f"{xla_flags} {VECTOR_WIDTH_FLAG}=512".strip()


def apply_cpu_defaults(environ=os.environ) -> None:
    """Sets ``XLA_FLAGS`` for this CPU in ``environ``; call before jax creates a backend."""
    environ["XLA_FLAGS"] = cpu_xla_flags(environ.get("XLA_FLAGS", ""), cpu_flags())


CPU_CHUNK_BUDGET_FALLBACK = 16 * 2**20  # where the L3 size is unknown


def l3_cache_bytes(sysfs: str = "/sys/devices/system/cpu/cpu0/cache") -> int | None:
    """Size of the L3 cache shared by CPU 0 (None where sysfs does not say)."""
    for index in sorted(Path(sysfs).glob("index*")):
        try:
            if (index / "level").read_text().strip() != "3":
                continue
            size = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
        digits = size.rstrip("KMG")
        if digits.isdigit():
            return int(digits) * scale
    return None


def chunk_budget_bytes(backend: str, device_bytes_limit: int | None = None, l3_bytes: int | None = None) -> int | None:
    """Working memory one chunk of pairs may use under ``training.pairs_per_chunk: auto``.

    CPU: half the L3 cache — ``bench/RESULTS.md`` measures the fast path fastest when a
    chunk's LSTM gates stay in cache (chunks of 2 paper-sized pairs on a 32 MiB L3).
    GPU/TPU: half the memory the allocator may use, so a large slice never runs out of
    memory while the device still gets wide batches. None: no bound known (whole slice).
    """
    if backend == "cpu":
        return (l3_bytes or CPU_CHUNK_BUDGET_FALLBACK) // 2
    return None if device_bytes_limit is None else device_bytes_limit // 2


def device_chunk_budget_bytes() -> int | None:
    """:func:`chunk_budget_bytes` for this process's default jax device."""
    import jax  # noqa: PLC0415

    backend = jax.default_backend()
    if backend == "cpu":
        return chunk_budget_bytes(backend, l3_bytes=l3_cache_bytes())
    stats = jax.devices()[0].memory_stats() or {}
    return chunk_budget_bytes(backend, device_bytes_limit=stats.get("bytes_limit"))


def default_cache_dir(environ=os.environ) -> Path:
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vsml" / "jax"


def compilation_cache_dir(setting: str, backend: str, environ=os.environ) -> Path | None:
    """The cache directory ``runtime.compilation_cache`` asks for on ``backend`` (None: off)."""
    if setting == "off":
        return None
    if setting == "auto":
        return None if backend == "cpu" else default_cache_dir(environ)
    return Path(setting).expanduser()


def enable_compilation_cache(directory: Path) -> None:
    """Points jax's persistent compilation cache at ``directory`` (created if needed)."""
    import jax  # noqa: PLC0415 — keeps this module importable before jax is configured

    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # Cache every program that took over a second (the default); a size bound turns on
    # jax's file lock, which makes concurrent ranks safe.
    jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)


def setup(rank_config: dict) -> Path | None:
    """Applies the ``runtime`` section of a rank's config; returns the cache directory in use."""
    import jax  # noqa: PLC0415

    directory = compilation_cache_dir(rank_config["runtime"]["compilation_cache"], jax.default_backend())
    if directory is not None:
        enable_compilation_cache(directory)
    return directory
