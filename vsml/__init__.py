"""VSML: learned learning algorithms (see README.md)."""

__version__ = "0.4.0"

from vsml.environment import check_module_entry_point as _check_module_entry_point

# `python3 -m vsml.data` / `-m vsml.plot` without the packages installed: one line, not a traceback.
_check_module_entry_point()
