"""What a run runs on, said before anything is compiled, and a run's jax start-up.

* :func:`setup` prints the first line of a run (:func:`platform_line`: backend,
  device kind, devices per rank, jax version) and, when an NVIDIA GPU is
  visible but jax runs on the CPU, one warning naming the GPU install
  (:func:`missing_gpu_warning`); then it applies ``runtime.compilation_cache``
  (:mod:`vsml.runtime`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from vsml.runtime import compilation_cache_dir, cpu_model, enable_compilation_cache, installed_jaxlib

CUDA_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin")


def platform_line(
    backend: str,
    device_kind: str,
    devices: int,
    jax_version: str,
    jaxlib_version: str | None,
    cpu_cores: int | None = None,
) -> str:
    """The first line of a run: backend, device kind, devices per rank, jax version."""
    kind = f"{cpu_model()}, {cpu_cores} cores" if backend == "cpu" and cpu_cores else device_kind
    use = ""
    if backend != "cpu" and devices > 1:
        use = " (this rank uses the first; pin one per rank with assign_gpu.py)"
    return (
        f"runs on: {backend} ({kind}) | devices per rank: {devices}{use} | "
        f"jax {jax_version}, jaxlib {jaxlib_version or '?'}"
    )


def visible_nvidia_gpu(environ=os.environ, nvidia_smi: str | None = None) -> str | None:
    """Why this machine looks like it has an NVIDIA GPU for this process, or None.

    ``GPU_COUNT`` / ``CUDA_VISIBLE_DEVICES`` naming a device (not empty, not -1), or
    ``nvidia-smi -L`` on PATH listing a GPU.
    """
    count = environ.get("GPU_COUNT", "").strip()
    if count.isdigit() and int(count) > 0:
        return f"GPU_COUNT={count}"
    visible = environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible and not visible.startswith("-"):
        return f"CUDA_VISIBLE_DEVICES={visible}"
    command = nvidia_smi or shutil.which("nvidia-smi", path=environ.get("PATH"))
    if command is None:
        return None
    try:
        listed = subprocess.run([command, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = [line for line in listed.stdout.splitlines() if line.startswith("GPU ")]
    if listed.returncode != 0 or not gpus:
        return None
    return f"nvidia-smi lists {len(gpus)} GPU{'s' if len(gpus) > 1 else ''}"


def cuda_plugin_installed() -> bool:
    return any(importlib.util.find_spec(name) is not None for name in CUDA_PLUGINS)


def missing_gpu_warning(backend: str, environ=os.environ, plugin_installed: bool | None = None) -> str | None:
    """One warning line when an NVIDIA GPU is visible but jax runs on the CPU; None otherwise.

    Silent when ``JAX_PLATFORMS`` asks for the CPU on purpose.
    """
    if backend != "cpu" or environ.get("JAX_PLATFORMS", "").strip().lower() in ("cpu",):
        return None
    reason = visible_nvidia_gpu(environ)
    if reason is None:
        return None
    if cuda_plugin_installed() if plugin_installed is None else plugin_installed:
        cause = (
            "jax's CUDA plugin is installed but found no usable GPU (see jax's message above; "
            "driver and CUDA versions must match the plugin: python3 -c 'import jax; print(jax.devices())')"
        )
    else:
        from vsml import environment  # noqa: PLC0415 — standard library only

        install = environment.install_hint(environment.CUDA_REQUIREMENTS)
        cause = f"jax has no GPU backend (the CPU-only jaxlib is installed); for the GPU: {install}"
    return f"warning: an NVIDIA GPU is visible ({reason}) but this run uses the CPU: {cause}"


def announce(environ=os.environ) -> list[str]:
    """The platform line and, where it applies, the missing-GPU warning (initialises jax's backends)."""
    import jax  # noqa: PLC0415

    device = jax.devices()[0]
    backend = jax.default_backend()
    lines = [
        platform_line(
            backend,
            getattr(device, "device_kind", str(device)),
            jax.local_device_count(),
            jax.__version__,
            installed_jaxlib()[0],
            os.cpu_count(),
        )
    ]
    warning = missing_gpu_warning(backend, environ)
    if warning:
        lines.append(warning)
    return lines


def setup(compilation_cache: str, announce_to_console: bool = False) -> Path | None:
    """Applies ``runtime.compilation_cache`` (auto | off | a directory); returns the cache directory in use.

    With ``announce_to_console`` (rank 0) it first prints what the run runs on (and
    warns when an NVIDIA GPU goes unused) — before anything is compiled.
    """
    import jax  # noqa: PLC0415

    if announce_to_console:
        for line in announce():
            print(line, file=sys.stderr if line.startswith("warning") else sys.stdout, flush=True)
    directory = compilation_cache_dir(compilation_cache, jax.default_backend())
    if directory is not None:
        enable_compilation_cache(directory)
    return directory
