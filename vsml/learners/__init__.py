"""Inner-loop learning algorithms, each an ``init`` / ``run`` pair (DESIGN §3).

``build_learner(model_cfg, input_shape, num_classes)`` picks one by
``model.type``. VSML runs on any input and output size and ignores the sizes;
the fixed-size baselines build their parameters for them (default: the padded
paper sizes 28×28×1 and 62 classes, see :mod:`vsml.learners.common`).
"""

from __future__ import annotations

from vsml.learners import common, fw_memory, fwp, hebbian, meta_rnn, nodepert, sgd, vsml
from vsml.learners.api import Learner


def _fixed_size(module):
    """Builder of a baseline whose parameter shapes depend on the data sizes."""

    def build(model_cfg, input_shape=None, num_classes=None):
        spec = module.spec_from_config(model_cfg, input_shape, num_classes)
        common.feature_size(spec.input_shape, getattr(spec, "use_conv", False))  # refuse bad sizes now
        return module.learner(spec)

    return build


# Fixed learning rules whose meta-parameters are only initial weights: they can be
# evaluated without meta-training.
HAND_DESIGNED = ("SGD", "NodePert")

BUILDERS = {
    "VSMLRNN": lambda model_cfg, input_shape=None, num_classes=None: vsml.learner(vsml.spec_from_config(model_cfg)),
    "MetaRNN": _fixed_size(meta_rnn),
    "HebbianFW": _fixed_size(hebbian),
    "FWP": _fixed_size(fwp),
    "FWMemory": _fixed_size(fw_memory),
    "SGD": _fixed_size(sgd),
    "NodePert": _fixed_size(nodepert),
}


def build_learner(model_cfg: dict, input_shape=None, num_classes=None) -> Learner:
    """The learner named by ``model_cfg['type']``, configured by its section.

    Args:
      input_shape: per-example input shape (e.g. ``(8, 8, 1)``) and
      num_classes: class count the fixed-size learners are built for; ``None``
        means the padded paper sizes ``(28, 28, 1)`` / 62.
    """
    kind = model_cfg["type"]
    if kind not in BUILDERS:
        raise ValueError(f"model.type: '{kind}' is not available; valid: {', '.join(BUILDERS)}")
    return BUILDERS[kind](model_cfg, input_shape, num_classes)
