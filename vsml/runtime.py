"""How this process runs jax: XLA flags, the compilation cache, chunk budgets.

Nothing here changes what is computed (except turning off a miscompiling XLA
fusion); it changes how long it takes and what the user is told.

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
* :func:`xla_flags` — the one place that decides the ``XLA_FLAGS`` the project
  sets; ``import vsml`` applies them (:func:`apply_xla_flags_at_import`), so
  ``launch.py``, the Python API, ``tests/conftest.py`` and ``bench/`` all run
  with them, provided jax has created no backend yet (XLA reads the variable
  once, when it creates its client; hence an environment variable rather than a
  config key; a backend already there is warned about, once). Two flags, each only where the user's ``XLA_FLAGS`` does not name
  it already:

  - ``--xla_cpu_experimental_ynn_fusion_type=`` (empty: no YNNPACK fusions).
    XLA:CPU's YNNPACK fusion computes wrong ``jit(vmap(f))`` results on jaxlib
    0.10 and later (``tests/test_backend.py``; ES evaluates a population with
    exactly that pattern); turning the fusion off makes 0.10.2 and 0.12.0.1
    exact. XLA aborts on a flag it does not know, so it is set only for jaxlib
    versions that have it: 0.8.1 onwards (checked in the wheels of 0.8.0–0.12.0.1);
    for a jaxlib newer than the newest checked, the library is searched for
    the flag's name.
  - ``--xla_cpu_prefer_vector_width=512`` on CPUs with AVX-512, where XLA:CPU
    still emits 256-bit vector code by default (``bench/RESULTS.md`` has the
    measured gain).
* What a run runs on, and its start-up (:func:`vsml.run_platform.setup`), is in
  ``vsml/run_platform.py``.
* :func:`device_chunk_budget_bytes`: the memory ``training.pairs_per_chunk: auto``
  plans a chunk for, split among the ranks that share the device (the node's
  L3 cache; a GPU shared through ``assign_gpu.py``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import mmap
import os
import platform
import re
import sys
from pathlib import Path

VECTOR_WIDTH_FLAG = "--xla_cpu_prefer_vector_width"
YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# jaxlib versions whose XLA knows YNN_FUSION_FLAG: found by searching the shared libraries
# of the jaxlib wheels 0.8.0 (absent), 0.8.1, 0.8.2, 0.8.3, 0.9.0–0.9.2, 0.10.2, 0.11.0, 0.12.0.1.
YNN_FLAG_FIRST = (0, 8, 1)
YNN_FLAG_NEWEST_CHECKED = (0, 12, 0, 1)
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


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (the machine type where /proc/cpuinfo is not readable)."""
    try:
        with open(cpuinfo) as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version_tuple(version: str) -> tuple[int, ...]:
    """``"0.12.0.1"`` -> ``(0, 12, 0, 1)``; a suffix such as ``rc1`` or ``.dev2026`` is dropped."""
    parts = []
    for part in version.split("."):
        digits = re.match(r"[0-9]*", part).group()
        if not digits:
            break
        parts.append(int(digits))
        if digits != part:
            break
    return tuple(parts)


def installed_jaxlib() -> tuple[str | None, Path | None]:
    """``(version, package directory)`` of the installed jaxlib, found without importing it."""
    try:
        version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return None, None
    spec = importlib.util.find_spec("jaxlib")
    directory = Path(spec.origin).parent if spec is not None and spec.origin else None
    return version, directory


def library_mentions(directory: Path | None, text: str) -> bool:
    """Whether any shared library in ``directory`` contains ``text`` (how an unchecked jaxlib is probed)."""
    if directory is None:
        return False
    needle = text.encode()
    for library in directory.glob("*.so"):
        try:
            with open(library, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                if data.find(needle) >= 0:
                    return True
        except (OSError, ValueError):
            continue
    return False


def knows_ynn_flag(jaxlib_version: str | None, jaxlib_dir: Path | None = None) -> bool:
    """Whether this jaxlib's XLA accepts ``YNN_FUSION_FLAG`` (XLA aborts on an unknown flag)."""
    if jaxlib_version is None:
        return False
    version = version_tuple(jaxlib_version)
    if version < YNN_FLAG_FIRST:
        return False
    if version <= YNN_FLAG_NEWEST_CHECKED:
        return True
    return library_mentions(jaxlib_dir, YNN_FUSION_FLAG.lstrip("-"))


def xla_flags(user_flags: str, cpu: set[str], ynn_flag_known: bool, wide_vectors: bool = True) -> str:
    """The ``XLA_FLAGS`` a process runs with: the user's, plus the project's flags they do not name.

    ``cpu``: the CPU's instruction-set flags (:func:`cpu_flags`); ``ynn_flag_known``:
    :func:`knows_ynn_flag` of the installed jaxlib; ``wide_vectors=False`` leaves the
    vector width to XLA (``bench/`` compares both).
    """
    added = []
    if ynn_flag_known and YNN_FUSION_FLAG not in user_flags:
        added.append(f"{YNN_FUSION_FLAG}=")  # empty list of fusion types: YNNPACK fusion off
    if wide_vectors and "avx512f" in cpu and VECTOR_WIDTH_FLAG not in user_flags:
        added.append(f"{VECTOR_WIDTH_FLAG}=512")
    return " ".join([user_flags.strip(), *added]).strip()


def project_xla_flags(user_flags: str = "", wide_vectors: bool = True) -> str:
    """:func:`xla_flags` for this machine and the installed jaxlib."""
    version, directory = installed_jaxlib()
    return xla_flags(user_flags, cpu_flags(), knows_ynn_flag(version, directory), wide_vectors)


def apply_xla_flags(environ=os.environ) -> str:
    """Sets ``XLA_FLAGS`` in ``environ`` to :func:`project_xla_flags`; call before jax creates a backend.

    Idempotent (a child process that calls it again adds nothing). Returns the value set.
    """
    environ["XLA_FLAGS"] = project_xla_flags(environ.get("XLA_FLAGS", ""))
    return environ["XLA_FLAGS"]


def jax_backend_exists() -> bool:
    """Whether this process's jax has created a backend already (then XLA has read its flags)."""
    bridge = sys.modules.get("jax._src.xla_bridge")  # never imports jax: only looks whether it ran
    if bridge is None:
        return False
    initialized = getattr(bridge, "backends_are_initialized", None)
    return bool(initialized()) if initialized else bool(getattr(bridge, "_backends", None))


def apply_xla_flags_at_import(environ=os.environ) -> str | None:
    """``import vsml``: the project's XLA flags for this process, so the API computes what launch.py does.

    Applied (:func:`apply_xla_flags`) when no jax backend exists yet. When one
    does and the flags would change something, nothing is set — ``XLA_FLAGS``
    would then claim flags this process does not run with — and the returned
    line (warned once by ``vsml/__init__.py``) says so and how to fix it.
    """
    given = environ.get("XLA_FLAGS", "").strip()
    wanted = project_xla_flags(given)
    if wanted == given:
        return None
    if not jax_backend_exists():
        environ["XLA_FLAGS"] = wanted
        return None
    missing = wanted[len(given) :].strip()
    return (
        f"jax started computing before vsml was imported, so this process runs without the project's XLA flags "
        f"({missing}, vsml/runtime.py) and its numbers may differ from launch.py's: import vsml before using "
        f"jax, or start Python with XLA_FLAGS='{wanted}'"
    )


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


RANKS_PER_DEVICE_VAR = "VSML_RANKS_PER_DEVICE"  # set by assign_gpu.py: ranks given this rank's GPU
MEM_FRACTION_VAR = "XLA_PYTHON_CLIENT_MEM_FRACTION"
JAX_DEFAULT_MEM_FRACTION = 0.75  # jax's allocator limit without XLA_PYTHON_CLIENT_MEM_FRACTION


def chunk_budget_bytes(
    backend: str,
    device_bytes_limit: int | None = None,
    l3_bytes: int | None = None,
    ranks_sharing: int = 1,
    device_total_bytes: int | None = None,
) -> int | None:
    """Working memory one chunk of pairs may use under ``training.pairs_per_chunk: auto``.

    CPU: half the L3 cache, split among the ``ranks_sharing`` ranks that share it —
    ``bench/RESULTS.md`` measures the fast path fastest when a chunk's LSTM gates
    stay in cache (chunks of 2 paper-sized pairs on a 32 MiB L3).
    GPU/TPU: half of this rank's share of the device: the allocator's limit
    (``device_bytes_limit``), and no more than a ``ranks_sharing``-th of the device's
    memory (``device_total_bytes``) — so k ranks on one GPU never plan for more than
    the GPU holds, whatever memory fraction each allocator was given. None: no bound
    known (whole slice).
    """
    ranks_sharing = max(int(ranks_sharing), 1)
    if backend == "cpu":
        return (l3_bytes or CPU_CHUNK_BUDGET_FALLBACK) // 2 // ranks_sharing
    if device_bytes_limit is None:
        return None
    share = device_bytes_limit
    if device_total_bytes is not None:
        share = min(share, device_total_bytes // ranks_sharing)
    elif ranks_sharing > 1:
        share //= ranks_sharing
    return share // 2


def ranks_sharing_device(backend: str, ranks_on_node: int, environ=os.environ) -> int:
    """How many ranks share this rank's device (and so its chunk budget).

    CPU: every rank on the node (they share the L3 cache; ``Comm.local_size``).
    GPU: ``VSML_RANKS_PER_DEVICE`` from ``assign_gpu.py``; without it every rank on the
    node uses the first visible GPU, so all of them.
    """
    if backend != "cpu":
        value = environ.get(RANKS_PER_DEVICE_VAR, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(int(ranks_on_node), 1)


def device_total_bytes(bytes_limit: int | None, environ=os.environ) -> int | None:
    """The device's memory, from the allocator limit and the fraction jax gave it (None if unknown)."""
    if bytes_limit is None:
        return None
    try:
        fraction = float(environ.get(MEM_FRACTION_VAR, "") or JAX_DEFAULT_MEM_FRACTION)
    except ValueError:
        return None
    return int(bytes_limit / fraction) if 0 < fraction <= 1 else None


def device_chunk_budget_bytes(ranks_on_node: int = 1, environ=os.environ) -> int | None:
    """:func:`chunk_budget_bytes` for this process's default jax device; see :func:`ranks_sharing_device`."""
    import jax  # noqa: PLC0415

    backend = jax.default_backend()
    ranks = ranks_sharing_device(backend, ranks_on_node, environ)
    if backend == "cpu":
        return chunk_budget_bytes(backend, l3_bytes=l3_cache_bytes(), ranks_sharing=ranks)
    stats = jax.devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    return chunk_budget_bytes(
        backend, device_bytes_limit=limit, ranks_sharing=ranks, device_total_bytes=device_total_bytes(limit, environ)
    )


def host_available_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    """``MemAvailable`` of the host (None where the kernel does not say)."""
    try:
        with open(meminfo) as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def device_available_bytes(ranks_on_node: int = 1, environ=os.environ) -> int | None:
    """Memory one rank may fill on its device: the host's available memory on a CPU, the
    allocator's limit on a GPU/TPU; split among the ranks sharing it (None: unknown)."""
    import jax  # noqa: PLC0415

    backend = jax.default_backend()
    ranks = ranks_sharing_device(backend, ranks_on_node, environ)
    if backend == "cpu":
        available = host_available_bytes()
        return None if available is None else available // ranks
    limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
    total = device_total_bytes(limit, environ)
    if limit is None:
        return None
    return min(limit, total // ranks) if total is not None else limit // ranks


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
