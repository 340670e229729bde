"""VSML: learned learning algorithms (see README.md)."""

__version__ = "0.4.0"

from vsml.environment import check_module_entry_point as _check_module_entry_point

# `python3 -m vsml.data` / `-m vsml.plot` without the packages installed: one line, not a traceback.
_check_module_entry_point()

# The project's XLA flags (vsml/runtime.py) before jax creates a backend, so every way in
# (launch.py, the Python API, python3 -m vsml.X) computes with the same numerics.
from vsml.runtime import apply_xla_flags_at_import as _apply_xla_flags_at_import  # noqa: E402

_too_late = _apply_xla_flags_at_import()
if _too_late:
    import warnings as _warnings  # noqa: E402

    _warnings.warn(_too_late, RuntimeWarning, stacklevel=2)
