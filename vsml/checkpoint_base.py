"""What both checkpoint formats share: the error they raise, and how a pytree path is named.

:mod:`vsml.checkpoint` (this project's .npz) and :mod:`vsml.checkpoint_original` (the
original release's ``model.chkp``) both import it, so neither imports the other at
module level and the restore of either format is one call, :func:`vsml.checkpoint.restore`.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit this config."""


def key_name(entry) -> str:
    """One step of a pytree path as text: a dict key, a sequence index or an attribute name."""
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)
