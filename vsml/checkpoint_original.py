"""Reads the original release's checkpoints (``model.chkp``) into this project's meta-parameters.

The original release (louiskirsch/vsml-neurips2021, ``Experiment.checkpoint``) pickles
``{'params': <haiku parameters>, 'opt_state': <optax Adam state>}``. This module never runs code
from such a file: a :class:`pickle.Unpickler` whose ``find_class`` hands out only the few
constructors those files use (:data:`ALLOWED`, each replaced by a plain-data equivalent here), so
anything else — e.g. a pickle that reduces to ``os.system`` — is refused in one line before it is
called. The haiku names of the VSML model are then mapped onto this project's parameter pytree
(docs/DESIGN.md §11.3), and the Adam moments onto this project's Adam state.

Conversion to this project's ``.npz`` format::

    python -m vsml.checkpoint_original model.chkp --config_files configs/x.yaml --out converted.npz
"""

from __future__ import annotations

import argparse
import io
import pickle
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from vsml import checkpoint
from vsml.checkpoint import CheckpointError


class _AdamState(NamedTuple):
    """optax's ``ScaleByAdamState`` as plain data (count, first and second moments)."""

    count: Any
    mu: Any
    nu: Any


class _EmptyState(NamedTuple):
    """optax's ``EmptyState`` (``scale``, ``clip_by_global_norm``) as plain data."""


# numpy's array constructor used by ``ndarray.__reduce__`` (numpy.core / numpy._core by version).
_NDARRAY_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]


def _reconstruct_jax_array(fun, args, array_state, aval_state):
    """What ``jax._src.array._reconstruct_array`` does, as a numpy array (no device, no jax)."""
    del aval_state  # weak_type: irrelevant once the values are copied into float32 parameters
    if fun is not _NDARRAY_RECONSTRUCT:
        raise pickle.UnpicklingError(f"a jax array built by {fun!r} instead of numpy's array constructor")
    array = fun(*args)
    array.__setstate__(array_state)
    return array


# (module, name) -> what the unpickler hands out: exactly the globals a model.chkp of the original
# written with jax 0.4.30, dm-haiku 0.0.12, optax 0.2.3 and numpy 1.26 refers to (tests/data/original),
# plus numpy 2's name of the same array constructor.
ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _NDARRAY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NDARRAY_RECONSTRUCT,
    ("jax._src.array", "_reconstruct_array"): _reconstruct_jax_array,
    ("optax._src.transform", "ScaleByAdamState"): _AdamState,
    ("optax._src.base", "EmptyState"): _EmptyState,
}


class RefusedClass(pickle.UnpicklingError):
    """The file asked for a class or function outside :data:`ALLOWED`."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedClass(f"{module}.{name}") from None


def load(path) -> dict:
    """``{'params': {module: {name: array}}, 'opt_state': tuple | None}`` of a model.chkp, code-free.

    Raises CheckpointError (one line naming the file) for a refused class, a truncated or foreign
    file, or a pickle that does not hold haiku parameters.
    """
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read '{source}' ({err.strerror})") from None
    try:
        content = _RestrictedUnpickler(io.BytesIO(data)).load()
    except RefusedClass as err:
        raise CheckpointError(
            f"refusing '{source}': it asks for {err}, which no checkpoint of the original release needs "
            "(only numpy arrays and optax Adam state are loaded; nothing in the file was run)"
        ) from None
    except Exception as err:  # truncated, garbage or malformed: every unpickling error means "not readable"
        raise CheckpointError(
            f"cannot read '{source}' as a checkpoint of the original release ({type(err).__name__}: {err})"
        ) from None
    params = content.get("params") if isinstance(content, dict) else None
    if not _is_haiku_params(params):
        raise CheckpointError(
            f"'{source}' is not a checkpoint of the original release: expected "
            "{'params': {module: {name: array}}, 'opt_state': ...}"
        )
    return {"params": params, "opt_state": content.get("opt_state")}


def _is_haiku_params(params) -> bool:
    return (
        isinstance(params, dict)
        and bool(params)
        and all(
            isinstance(module, str)
            and isinstance(leaves, dict)
            and all(isinstance(v, np.ndarray) and v.dtype.kind in "fiu" for v in leaves.values())
            for module, leaves in params.items()
        )
    )


# --------------------------------------------------------------------------- VSML

_SUB_RNN = re.compile(r"^vsmlrnn/~/sub_rnn(?:_(\d+))?/~/")


# The original's model classes by the haiku name of their top module.
ORIGINAL_MODELS = {
    "vsmlrnn": "VSMLRNN",
    "meta_rnn": "MetaRNN",
    "hebbian_fw": "HebbianFW",
    "fw_memory": "FWMemory",
    "fwp": "FWP",
}


def model_name(params: Mapping) -> str:
    """The original's model class, from its haiku module names (``vsmlrnn/...`` → VSMLRNN)."""
    return ", ".join(ORIGINAL_MODELS.get(top, top) for top in sorted({module.split("/")[0] for module in params}))


def _sub_rnn_sets(params: Mapping, source: str) -> list[dict]:
    """The sub-RNN parameter sets in the order haiku created them (sub_rnn, sub_rnn_1, ...)."""
    prefixes = {}
    for module in params:
        match = _SUB_RNN.match(module)
        if match:
            prefixes[int(match.group(1) or 0)] = module[: match.end()]
    return [_sub_rnn_set(params, prefixes[i], source) for i in sorted(prefixes)]


def _sub_rnn_set(params: Mapping, prefix: str, source: str) -> dict:
    """One set: ``custom_lstm/linear`` ([f, b, h] → gates i, g, f, o), ``linear`` / ``linear_1`` heads."""

    def leaf(module: str, name: str) -> np.ndarray:
        try:
            return params[prefix + module][name]
        except KeyError:
            raise CheckpointError(
                f"'{source}' has no '{prefix}{module}' '{name}': not a complete VSML checkpoint of the original release"
            ) from None

    gate_w, fwd_w = leaf("custom_lstm/linear", "w"), leaf("linear", "w")
    slow, msg = gate_w.shape[1] // 4, fwd_w.shape[1]
    if gate_w.shape != (2 * msg + slow, 4 * slow):
        raise CheckpointError(f"'{source}': '{prefix}custom_lstm/linear' w has shape {gate_w.shape}, not [2M+S, 4S]")
    mapped = {
        "w_fwd_in": gate_w[:msg],
        "w_bwd_in": gate_w[msg : 2 * msg],
        "w_hidden": gate_w[2 * msg :],
        "b_gates": leaf("custom_lstm/linear", "b"),
        "w_fwd_out": fwd_w,
        "b_fwd_out": leaf("linear", "b"),
        "w_bwd_out": leaf("linear_1", "w"),
        "b_bwd_out": leaf("linear_1", "b"),
    }
    if prefix + "layer_norm" in params:
        mapped.update(
            ln_fwd_scale=leaf("layer_norm", "scale"),
            ln_fwd_offset=leaf("layer_norm", "offset"),
            ln_bwd_scale=leaf("layer_norm_1", "scale"),
            ln_bwd_offset=leaf("layer_norm_1", "offset"),
        )
    return mapped


def vsml_params(params: Mapping, template: Mapping, source: str) -> dict:
    """The original's VSML parameters in the structure (and dtypes) of ``template`` (``vsml.init``'s).

    Sets are assigned in haiku's creation order: forward sets (one, or one per layer), then the
    backward sets of ``separate_backward_rnn``. Any mismatch with the config: one line with the fix.
    """
    sets = _sub_rnn_sets(params, source)
    n_fwd, n_bwd = len(template["forward"]), len(template.get("backward", ()))
    if not sets:
        raise CheckpointError(f"'{source}' has no VSML sub-RNN parameters (haiku modules vsmlrnn/~/sub_rnn...)")
    first, wanted = sets[0], template["forward"][0]
    slow, msg = first["w_hidden"].shape[0], first["w_fwd_out"].shape[1]
    if (wanted["w_hidden"].shape[0], wanted["w_fwd_out"].shape[1]) != (slow, msg):
        raise CheckpointError(
            f"'{source}' was trained with model.sub_rnn.msg_size={msg}, slow_size={slow}; "
            f"this config has msg_size={wanted['w_fwd_out'].shape[1]}, slow_size={wanted['w_hidden'].shape[0]}: "
            f"set model.sub_rnn.msg_size: {msg} and model.sub_rnn.slow_size: {slow}"
        )
    if ("ln_fwd_scale" in first) != ("ln_fwd_scale" in wanted):
        raise CheckpointError(
            f"'{source}' was trained with model.sub_rnn.layer_norm: {'ln_fwd_scale' in first}; set it so"
        )
    if len(sets) != n_fwd + n_bwd:
        raise CheckpointError(
            f"'{source}' holds {len(sets)} sub-RNN parameter set(s), this config uses {n_fwd} forward + {n_bwd} "
            "backward: set model.vsml_rnn.layerwise_rnns, backward_pass, separate_backward_rnn and layer_specs "
            "as in the original run"
        )
    mapped = {"forward": sets[:n_fwd]}
    if n_bwd:
        mapped["backward"] = sets[n_fwd:]
    return jax.tree_util.tree_map(lambda value, like: np.asarray(value, dtype=np.asarray(like).dtype), mapped, template)


# --------------------------------------------------------------------------- Adam


def _is_adam(node) -> bool:
    return isinstance(node, (_AdamState, optax.ScaleByAdamState))


def adam_state(opt_state, params: Mapping, params_template, opt_state_template, source: str):
    """``opt_state_template`` with its Adam moments and step count from the original's Adam state.

    Both implementations run ``optax.scale_by_adam`` on the same ES gradient estimate
    (docs/DESIGN.md §6.2) over parameters that map element by element, so moments and count carry
    over 1:1. None when the file holds no Adam state or the template has none.
    """
    found = [node for node in (opt_state if isinstance(opt_state, tuple) else ()) if _is_adam(node)]
    if len(found) != 1 or opt_state_template is None:
        return None
    adam = found[0]
    moments = {}
    for name in ("mu", "nu"):
        tree = getattr(adam, name)
        if not _is_haiku_params(tree) or set(tree) != set(params):
            raise CheckpointError(f"'{source}': the Adam state's {name} does not match the parameters")
        moments[name] = vsml_params(tree, params_template, source)
    count = np.asarray(adam.count)

    def fill(node):
        if isinstance(node, optax.ScaleByAdamState):
            return node._replace(count=count.astype(np.asarray(node.count).dtype), **moments)
        return node

    return jax.tree_util.tree_map(fill, opt_state_template, is_leaf=_is_adam)


def restore(path, params_template, opt_state_template=None) -> dict:
    """A model.chkp in :func:`vsml.checkpoint.restore`'s layout, plus ``adam_continues``.

    ``step`` is the Adam step count (the original's completed generations); ``rng``, ``config``
    are None and ``wall_time`` 0: the file has none of them.
    """
    source = str(path)
    content = load(path)
    params = content["params"]
    if model_name(params) != "VSMLRNN":
        raise CheckpointError(
            f"'{source}' holds the original's {model_name(params)}; of the original release's checkpoints this "
            "project reads those of VSMLRNN (its baselines' layouts differ from this project's)"
        )
    if not (isinstance(params_template, Mapping) and "forward" in params_template):
        raise CheckpointError(f"'{source}' holds the original's VSMLRNN; set model.type: VSMLRNN")
    mapped = vsml_params(params, params_template, source)
    opt_state = adam_state(content["opt_state"], params, params_template, opt_state_template, source)
    return {
        "params": mapped,
        "opt_state": opt_state,
        "step": _adam_count(content["opt_state"]),
        "rng": None,
        "wall_time": 0.0,
        "config": None,
        "adam_continues": opt_state is not None,
    }


def _adam_count(opt_state) -> int:
    """The original's Adam step count: its completed generations (0 without an Adam state)."""
    counts = [
        int(np.asarray(node.count)) for node in (opt_state if isinstance(opt_state, tuple) else ()) if _is_adam(node)
    ]
    return counts[0] if len(counts) == 1 else 0


# --------------------------------------------------------------------------- conversion


def convert(path, config: dict, out) -> Path:
    """Writes ``out`` in this project's checkpoint format from a model.chkp and a config (no data loaded).

    ``step`` is the original's generation count, ``rng`` the config seed's base keys; the file can
    be restored (``checkpoint.restore.path``) or, in a run directory with its config.yaml, resumed.
    """
    from vsml.config import resolve_for_rank, to_yaml  # noqa: PLC0415 — the command line only
    from vsml.learners import build_learner  # noqa: PLC0415
    from vsml.meta.api import base_keys, make_optimizer  # noqa: PLC0415
    from vsml.settings import run_settings  # noqa: PLC0415

    settings = run_settings(resolve_for_rank(config, 0))
    learner = build_learner(settings.model)
    params = learner.init(jax.random.PRNGKey(settings.seed))
    opt = settings.optimizer
    opt_state = make_optimizer(opt.lr, opt.adam_kwargs, opt.clip_gradnorm).init(params)
    restored = restore(path, params, opt_state)
    arrays = checkpoint.state_arrays(
        params=restored["params"],
        opt_state=restored["opt_state"] if restored["adam_continues"] else opt_state,
        step=restored["step"],
        rng=base_keys(settings.seed),
        wall_time=0.0,
        config_yaml=to_yaml(config),
    )
    out = Path(out)
    checkpoint.atomic_write_npz(out, arrays)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vsml.checkpoint_original",
        description="Convert the original release's model.chkp into this project's checkpoint .npz.",
    )
    parser.add_argument("checkpoint", help="a model.chkp written by the original release")
    parser.add_argument("--config_files", nargs="+", default=[], metavar="FILE", help="the run's model config")
    parser.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE", help="overrides, as launch.py")
    parser.add_argument("--out", required=True, help="the .npz to write")
    args = parser.parse_args(argv)
    from vsml.config import ConfigError, build_config  # noqa: PLC0415

    try:
        out = convert(args.checkpoint, build_config(args.config_files, args.config), args.out)
    except (CheckpointError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
