"""Reads the original release's checkpoints (``model.chkp``) into this project's meta-parameters.

The original release (louiskirsch/vsml-neurips2021, ``Experiment.checkpoint``) pickles
``{'params': <haiku parameters>, 'opt_state': <optax Adam state>}``. This module never runs code
from such a file: a :class:`pickle.Unpickler` whose ``find_class`` hands out only the few
constructors those files use (:data:`ALLOWED`, each replaced by a plain-data equivalent here), so
anything else — e.g. a pickle that reduces to ``os.system`` — is refused in one line before it is
called. The haiku names are then mapped onto this project's parameter pytree
(docs/DESIGN.md §11.3) — VSML and the MetaRNN baseline; the other baselines' layouts differ —
and the Adam moments onto this project's Adam state.

Conversion to this project's ``.npz`` format::

    python -m vsml.convert_original model.chkp --config_files configs/x.yaml --out converted.npz
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from vsml.checkpoint_base import CheckpointError, key_name
from vsml.settings import MetaRNNSettings, ModelSettings, PreprocessSettings, SubRNNSettings, VSMLRNNSettings, key_of


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


# --------------------------------------------------------------------------- parameter mappings

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


def _leaf(params: Mapping, module: str, name: str, source: str) -> np.ndarray:
    try:
        return params[module][name]
    except KeyError:
        raise CheckpointError(
            f"'{source}' has no '{module}' '{name}': not a complete {model_name(params)} checkpoint of the original"
        ) from None


def _fit(mapped, template, source: str):
    """``mapped`` in ``template``'s dtypes, after checking that every leaf has the template's shape."""
    for (path, value), like in zip(
        jax.tree_util.tree_flatten_with_path(mapped)[0], jax.tree_util.tree_leaves(template), strict=True
    ):
        if np.shape(value) != np.shape(like):
            name = "/".join(key_name(entry) for entry in path)
            raise CheckpointError(
                f"'{source}': '{name}' has shape {np.shape(value)}, this config needs {np.shape(like)}; "
                f"set the model's sizes (for MetaRNN also the dataset and {key_of(PreprocessSettings, 'pad')}) "
                "as in the original run"
            )
    return jax.tree_util.tree_map(lambda value, like: np.asarray(value, dtype=np.asarray(like).dtype), mapped, template)


_SUB_RNN = re.compile(r"^vsmlrnn/~/sub_rnn(?:_(\d+))?/~/")


def _sub_rnn_set(params: Mapping, prefix: str, source: str) -> dict:
    """One set: ``custom_lstm/linear`` ([f, b, h] → gates i, g, f, o), ``linear`` / ``linear_1`` heads."""

    def leaf(module: str, name: str) -> np.ndarray:
        return _leaf(params, prefix + module, name, source)

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


def vsml_params(params: Mapping, template: Mapping, source: str, moments: bool = False) -> dict:
    """The original's VSML parameters in the structure (and dtypes) of ``template`` (``vsml.init``'s).

    Sets are taken in haiku's creation order (``sub_rnn``, ``sub_rnn_1``, ...): forward sets (one,
    or one per layer), then the backward sets of ``separate_backward_rnn``. A mismatch with the
    config is one line with the fix. ``moments``: unused (the mapping is the same for Adam moments).
    """
    del moments
    prefixes = {}
    for module in params:
        match = _SUB_RNN.match(module)
        if match:
            prefixes[int(match.group(1) or 0)] = module[: match.end()]
    sets = [_sub_rnn_set(params, prefixes[i], source) for i in sorted(prefixes)]
    n_fwd, n_bwd = len(template["forward"]), len(template.get("backward", ()))
    if not sets:
        raise CheckpointError(f"'{source}' has no VSML sub-RNN parameters (haiku modules vsmlrnn/~/sub_rnn...)")
    first, wanted = sets[0], template["forward"][0]
    slow, msg = first["w_hidden"].shape[0], first["w_fwd_out"].shape[1]
    if (wanted["w_hidden"].shape[0], wanted["w_fwd_out"].shape[1]) != (slow, msg):
        msg_key, slow_key = key_of(SubRNNSettings, "msg_size"), key_of(SubRNNSettings, "slow_size")
        raise CheckpointError(
            f"'{source}' was trained with {msg_key}={msg}, slow_size={slow}; "
            f"this config has msg_size={wanted['w_fwd_out'].shape[1]}, slow_size={wanted['w_hidden'].shape[0]}: "
            f"set {msg_key}: {msg} and {slow_key}: {slow}"
        )
    if ("ln_fwd_scale" in first) != ("ln_fwd_scale" in wanted):
        raise CheckpointError(
            f"'{source}' was trained with {key_of(SubRNNSettings, 'layer_norm')}: {'ln_fwd_scale' in first}; set it so"
        )
    if len(sets) != n_fwd + n_bwd:
        raise CheckpointError(
            f"'{source}' holds {len(sets)} sub-RNN parameter set(s), this config uses {n_fwd} forward + {n_bwd} "
            f"backward: set {key_of(VSMLRNNSettings, 'layerwise_rnns')}, backward_pass, separate_backward_rnn and layer_specs "
            "as in the original run"
        )
    mapped = {"forward": sets[:n_fwd]}
    if n_bwd:
        mapped["backward"] = sets[n_fwd:]
    return _fit(mapped, template, source)


def meta_rnn_params(params: Mapping, template: Mapping, source: str, moments: bool = False) -> dict:
    """The original's MetaRNN (``hk.LSTM`` + ``hk.Linear``, no conv stem) in ``meta_rnn.init``'s structure.

    haiku's LSTM reads ``[x, h]`` and adds a constant +1 to the forget gate; here that +1 is the
    forget slice of the learned bias, so it is added to the bias (not to its Adam ``moments``).
    """
    if "stem" in template or any(module.startswith("meta_rnn/~/sequential") for module in params):
        raise CheckpointError(
            f"'{source}': MetaRNN with use_conv is not read (its conv stem's layout differs); "
            f"set {key_of(MetaRNNSettings, 'use_conv')}: false for a checkpoint without one"
        )
    lstm_w, lstm_b = (
        _leaf(params, "meta_rnn/~/lstm/linear", "w", source),
        _leaf(params, "meta_rnn/~/lstm/linear", "b", source),
    )
    hidden = lstm_w.shape[1] // 4
    if template["lstm"]["w_h"].shape[0] != hidden:
        raise CheckpointError(
            f"'{source}' was trained with {key_of(MetaRNNSettings, 'slow_size')}={hidden}; "
            f"set {key_of(MetaRNNSettings, 'slow_size')}: {hidden}"
        )
    n_in = lstm_w.shape[0] - hidden
    bias = np.array(lstm_b, copy=True)
    if not moments:
        bias[2 * hidden : 3 * hidden] += 1.0
    mapped = {
        "lstm": {"w_in": lstm_w[:n_in], "w_h": lstm_w[n_in:], "b": bias},
        "out": {
            "w": _leaf(params, "meta_rnn/~/linear", "w", source),
            "b": _leaf(params, "meta_rnn/~/linear", "b", source),
        },
    }
    return _fit(mapped, template, source)


# model name -> (what its parameter template has at the top, the mapping)
MAPPINGS = {"VSMLRNN": ("forward", vsml_params), "MetaRNN": ("lstm", meta_rnn_params)}


# --------------------------------------------------------------------------- Adam


def _is_adam(node) -> bool:
    return isinstance(node, (_AdamState, optax.ScaleByAdamState))


def _original_adam(opt_state):
    found = [node for node in (opt_state if isinstance(opt_state, tuple) else ()) if _is_adam(node)]
    return found[0] if len(found) == 1 else None


def adam_state(adam, params: Mapping, mapping, params_template, opt_state_template, source: str):
    """``opt_state_template`` with its Adam moments and step count from the original's Adam state.

    Both implementations run ``optax.scale_by_adam`` on the same ES gradient estimate
    (docs/DESIGN.md §6.2) over parameters that map element by element, so moments and count carry
    over 1:1. None when the file holds no Adam state or there is no template.
    """
    if adam is None or opt_state_template is None:
        return None
    moments = {}
    for name in ("mu", "nu"):
        tree = getattr(adam, name)
        if not _is_haiku_params(tree) or set(tree) != set(params):
            raise CheckpointError(f"'{source}': the Adam state's {name} does not match the parameters")
        moments[name] = mapping(tree, params_template, source, moments=True)
    count = np.asarray(adam.count)

    def fill(node):
        if isinstance(node, optax.ScaleByAdamState):
            return node._replace(count=count.astype(np.asarray(node.count).dtype), **moments)
        return node

    return jax.tree_util.tree_map(fill, opt_state_template, is_leaf=_is_adam)


def restore(path, params_template, opt_state_template=None) -> dict:
    """A model.chkp in :func:`vsml.checkpoint.restore`'s layout, plus ``adam_continues``.

    ``step`` is the Adam step count (the original's completed generations); ``config``
    is None and ``wall_time`` 0: the file has neither.
    """
    source = str(path)
    content = load(path)
    params, name = content["params"], model_name(content["params"])
    if name not in MAPPINGS:
        raise CheckpointError(
            f"'{source}' holds the original's {name}; of the original release's checkpoints this project reads "
            f"those of {' and '.join(MAPPINGS)} (the other baselines' layouts differ from this project's)"
        )
    top, mapping = MAPPINGS[name]
    if not (isinstance(params_template, Mapping) and top in params_template):
        raise CheckpointError(f"'{source}' holds the original's {name}; set {key_of(ModelSettings, 'type')}: {name}")
    mapped = mapping(params, params_template, source)
    adam = _original_adam(content["opt_state"])
    opt_state = adam_state(adam, params, mapping, params_template, opt_state_template, source)
    return {
        "params": mapped,
        "opt_state": opt_state,
        "step": 0 if adam is None else int(np.asarray(adam.count)),
        "wall_time": 0.0,
        "config": None,
        "adam_continues": opt_state is not None,
    }


def check(path, params_template=None, model_type: str | None = None) -> None:
    """Reads a model.chkp as :func:`restore` would, before a run starts: CheckpointError (one line) if it cannot.

    With ``params_template`` the parameters are mapped onto it; without (a fixed-size
    learner, whose sizes come from its data), the original's model must be ``model_type``.
    """
    if params_template is not None:
        restore(path, params_template)
        return
    name = model_name(load(path)["params"])
    if model_type is not None and name != model_type:
        raise CheckpointError(f"'{path}' holds the original's {name}; set {key_of(ModelSettings, 'type')}: {name}")
