"""What both checkpoint formats share: the error they raise, and how a pytree's leaves are named
in a file (:func:`flatten_tree`, :func:`unflatten_tree`; the layout is :mod:`vsml.checkpoint`'s).

:mod:`vsml.checkpoint` (this project's .npz) and :mod:`vsml.checkpoint_original` (the
original release's ``model.chkp``) both import it, so neither imports the other at
module level and the restore of either format is one call, :func:`vsml.checkpoint.restore`.
"""

from __future__ import annotations

import jax
import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit this config."""


def key_name(entry) -> str:
    """One step of a pytree path as text: a dict key, a sequence index or an attribute name."""
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


# A state's leaf stored under another name: the generation counter is ``step`` in every file.
_FILE_NAMES = {"generation": "step"}


def _leaf_name(prefix: str | None, path) -> str:
    name = "/".join(key_name(entry) for entry in path)
    return _FILE_NAMES.get(name, name) if prefix is None else "/".join([prefix, name]) if name else prefix


def flatten_tree(prefix: str | None, tree) -> dict[str, np.ndarray]:
    """``{'<prefix>/<path>': array}`` for every leaf of ``tree`` (``prefix`` None: ``'<path>'``,
    the generation counter as ``step``)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_leaf_name(prefix, path): np.asarray(leaf) for path, leaf in leaves}


def unflatten_tree(prefix: str | None, template, arrays, source: str):
    """Fills ``template``'s structure with ``arrays['<prefix>/<path>']``, checking shapes.

    A leaf takes the template leaf's dtype; a Python number in the template (a counter)
    comes back as a Python number of its type.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    values = []
    for path, leaf in leaves:
        name = _leaf_name(prefix, path)
        if name not in arrays:
            raise CheckpointError(
                f"{source} has no '{name}': it was written for a different model, optimiser or outer loop config"
            )
        value = arrays[name]
        if value.shape != np.shape(leaf):
            raise CheckpointError(f"{source}: '{name}' has shape {value.shape}, this config needs {np.shape(leaf)}")
        values.append(
            type(leaf)(value.item()) if isinstance(leaf, int | float) else value.astype(np.asarray(leaf).dtype)
        )
    return jax.tree_util.tree_unflatten(treedef, values)
