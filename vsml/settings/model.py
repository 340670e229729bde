"""The ``model`` section: which learner, and one section per learner (docs/DESIGN.md §4, §5).

A learner's ``spec_from_config`` reads its typed section(s) from :class:`ModelSettings`;
rules that span several keys of one section (VSML's ``layer_specs`` structure,
``output_idx < msg_size``) stay in the learner and raise
:class:`~vsml.settings.SettingError`, which names the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from vsml.settings.fields import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    UNIT_INTERVAL,
    Rule,
    at_least,
    one_of_names_in,
    section,
    setting,
)


def logit_bound():
    """``tanh_bound``, the same key in every learner's section."""
    return setting(100.0, "logit bound b: logits are tanh(z / b) * b", POSITIVE_NUMBER)


def conv_stem():
    """``use_conv``, the same key in the baselines' sections."""
    return setting(False, "conv stem (needs [H, W, C] inputs)")


_LAYER_LIST = Rule(
    lambda v: isinstance(v, (list, tuple)) and bool(v), "a non-empty list of layers, e.g. [{type: dense}]"
)


@dataclasses.dataclass(frozen=True)
class SubRNNSettings:
    """``model.sub_rnn``: the LSTM every VSML synapse runs (§4.1)."""

    msg_size: int = setting(8, "M (slot 0 error, slot 1 label)", at_least(2, "error and label slots"))
    slow_size: int = setting(16, "S", POSITIVE_INT)
    init_rand_proportion: float = setting(0.5, "share of cell units with a random initial value (§4.3)", UNIT_INTERVAL)
    init_scale: float = setting(
        1.0, "x every truncated-normal draw of VSML; 1.0: the original's std ~0.88/sqrt(fan in) (§4.1)", POSITIVE_NUMBER
    )
    layer_norm: bool = setting(False, "layer norm on both messages (disables the heads-after-mean identity)")


@dataclasses.dataclass(frozen=True)
class VSMLRNNSettings:
    """``model.vsml_rnn``: the VSML network (§4.5)."""

    layer_specs: tuple[Mapping[str, Any], ...] = setting(
        [{"type": "dense"}],
        "conv layers {type: conv, kernel_size, stride (1), out_channels} first, then dense; "
        "hidden dense layers need size, the last has none",
        _LAYER_LIST,
    )
    num_micro_ticks: int = setting(2, "K ticks per layer and step", POSITIVE_INT)
    tanh_bound: float = logit_bound()
    output_idx: int = setting(1, "message slot read as the logit (below msg_size)", NON_NEGATIVE_INT)
    backward_pass: bool = setting(False, "§4.4 step 6")
    separate_backward_rnn: bool = setting(False, "own parameter sets for the backward sweep")
    feed_label: bool = setting(False, "put y_{t-1} in slot 1 of the error message")
    layerwise_rnns: bool = setting(False, "one parameter set per layer")
    state_dtype: str = setting(
        "float32",
        "storage of the LSTM states and their recurrent matmul (bfloat16: dense layers only, §4.5)",
        one_of_names_in("vsml.learners.vsml", "STATE_DTYPES"),
    )
    dense_step: str = setting(
        "xla",
        "a dense layer's step: xla, fused (one Pallas kernel, §4.7; on a CPU in interpret mode, for tests), "
        "or auto: fused on a CUDA GPU for the shapes it covers, xla elsewhere (not yet the default: the kernel "
        "has not run on a GPU; bench/gpu_check.py section (h) checks it)",
        one_of_names_in("vsml.learners.vsml_fused", "DENSE_STEPS"),
    )


@dataclasses.dataclass(frozen=True)
class MetaRNNSettings:
    """``model.meta_rnn``: an LSTM reading inputs, errors and labels (§5)."""

    slow_size: int = setting(128, "LSTM size", POSITIVE_INT)
    num_micro_ticks: int = setting(2, "LSTM steps per input", POSITIVE_INT)
    tanh_bound: float = logit_bound()
    use_conv: bool = conv_stem()


@dataclasses.dataclass(frozen=True)
class HebbianSettings:
    """``model.hebbian_fw``: fast weights learned by a Hebbian rule (§5)."""

    use_oja: bool = setting(False, "Oja's rule instead of Hebb's")
    use_conv: bool = conv_stem()
    tanh_bound: float = logit_bound()


@dataclasses.dataclass(frozen=True)
class SGDSettings:
    """``model.sgd``: an MLP trained by a fixed optax optimiser (§5)."""

    num_layers: int = setting(1, "dense layers of the MLP", POSITIVE_INT)
    hidden_size: int = setting(160, "hidden units", POSITIVE_INT)
    tanh_bound: float = logit_bound()
    optimizer: str = setting("sgd", "inner optimiser: an optax optimiser taking learning_rate (checked when built)")
    lr: float = setting(0.01, "inner learning rate", POSITIVE_NUMBER)
    use_conv: bool = conv_stem()


@dataclasses.dataclass(frozen=True)
class FWPSettings:
    """``model.fwp``: fast weight programmers (§5)."""

    fast_size: int = setting(64, "N of the N x N fast weights", POSITIVE_INT)
    tanh_bound: float = logit_bound()


@dataclasses.dataclass(frozen=True)
class FWMemorySettings:
    """``model.fw_memory``: an LSTM with a fast-weight memory (§5)."""

    slow_size: int = setting(32, "LSTM size", POSITIVE_INT)
    memory_size: int = setting(16, "m of the m x m^2 memory", POSITIVE_INT)
    tanh_bound: float = logit_bound()
    use_conv: bool = conv_stem()


@dataclasses.dataclass(frozen=True)
class NodePertSettings:
    """``model.nodepert``: the sgd MLP trained by node / weight perturbation (§5)."""

    num_layers: int = setting(1, "dense layers of the MLP", POSITIVE_INT)
    hidden_size: int = setting(160, "hidden units", POSITIVE_INT)
    noise_std: float = setting(0.01, "sigma of the per-example perturbation", POSITIVE_NUMBER)
    lr: float = setting(0.01, "eta", POSITIVE_NUMBER)
    tanh_bound: float = logit_bound()
    perturbation: str = setting(
        "node", "node or weight perturbation", one_of_names_in("vsml.learners.nodepert", "PERTURBATIONS")
    )


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """``model``: the learner (``type``, a name of ``learners.LEARNER_TYPES``) and every learner's section;
    only the selected learner's sections are read."""

    type: str = setting("VSMLRNN", "the learner", one_of_names_in("vsml.learners", "LEARNER_TYPES"))
    sub_rnn: SubRNNSettings = section(SubRNNSettings)
    vsml_rnn: VSMLRNNSettings = section(VSMLRNNSettings)
    meta_rnn: MetaRNNSettings = section(MetaRNNSettings)
    hebbian_fw: HebbianSettings = section(HebbianSettings)
    sgd: SGDSettings = section(SGDSettings)
    fwp: FWPSettings = section(FWPSettings)
    fw_memory: FWMemorySettings = section(FWMemorySettings)
    nodepert: NodePertSettings = section(NodePertSettings)
