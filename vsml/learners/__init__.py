"""Inner-loop learning algorithms, each an ``init`` / ``run`` pair (docs/DESIGN.md §3), and their registry.

Every learner module declares a :class:`~vsml.learners.base.LearnerType`
(``LEARNER_TYPE``: its ``model.type`` name, config section and properties);
:data:`LEARNER_TYPES` collects them, and the rest of the code asks it (never
compares ``model.type`` to a name). To add a learner: write its module with
``spec_from_config``, ``init``, ``run`` and ``LEARNER_TYPE``, add it to the
tuple below, declare its section in :mod:`vsml.settings.model` and give its
defaults in ``configs/default.yaml``.

VSML runs on any input and output size and ignores the sizes; the fixed-size
baselines build their parameters for them (default: the padded paper sizes
28×28×1 and 62 classes, see :mod:`vsml.learners.common`).
"""

from __future__ import annotations

from vsml.learners import fw_memory, fwp, hebbian, meta_rnn, nodepert, sgd, vsml
from vsml.learners.base import Learner, LearnerType
from vsml.learners.scan import FULL_BACKPROP, BackpropPlan
from vsml.settings import ModelSettings, key_of, model_settings

LEARNER_TYPES: dict[str, LearnerType] = {
    module.LEARNER_TYPE.name: module.LEARNER_TYPE for module in (vsml, meta_rnn, hebbian, fwp, fw_memory, sgd, nodepert)
}


def learner_type(name: str) -> LearnerType:
    """The registered learner called ``name`` (a ``model.type`` value)."""
    if name not in LEARNER_TYPES:
        raise ValueError(f"{key_of(ModelSettings, 'type')}: must be one of {', '.join(LEARNER_TYPES)}, got {name!r}")
    return LEARNER_TYPES[name]


def build_learner(model, input_shape=None, num_classes=None, **run_options) -> Learner:
    """The learner named by ``model.type``, configured by its section (``model``: typed settings, or
    the ``model`` mapping of a config, checked first).

    Args:
      input_shape: per-example input shape (e.g. ``(8, 8, 1)``) and
      num_classes: class count the fixed-size learners are built for; ``None``
        means the padded paper sizes ``(28, 28, 1)`` / 62.
      run_options: the learner's ``run_options`` (e.g. VSML's ``unroll``).
    """
    model = model_settings(model)
    return learner_type(model.type).build(model, input_shape, num_classes, **run_options)


__all__ = ["FULL_BACKPROP", "LEARNER_TYPES", "BackpropPlan", "Learner", "LearnerType", "build_learner", "learner_type"]
