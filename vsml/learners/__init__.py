"""Inner-loop learning algorithms, each an ``init`` / ``run`` pair (DESIGN §3).

``build_learner(model_cfg)`` picks one by ``model.type``.
"""

from __future__ import annotations

from vsml.learners import vsml
from vsml.learners.api import Learner

BUILDERS = {
    "VSMLRNN": lambda model_cfg: vsml.learner(vsml.spec_from_config(model_cfg)),
}


def build_learner(model_cfg: dict) -> Learner:
    """The learner named by ``model_cfg['type']``, configured by its section."""
    kind = model_cfg["type"]
    if kind not in BUILDERS:
        raise ValueError(f"model.type: '{kind}' is not available; valid: {', '.join(BUILDERS)}")
    return BUILDERS[kind](model_cfg)
