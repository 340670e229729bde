"""The pre-trained learning algorithms shipped with the package (docs/python-api.md, "Pre-trained algorithms").

Each ``NAME.npz`` is an ordinary checkpoint of this project (meta-parameters
and the full configuration that made them); ``NAME.yaml`` beside it says how it
was made (command, commit, machine), where its training data comes from and on
what terms, and what it scored on held-out and unseen data. Load one with
``vsml.api.pretrained(NAME)`` or ``checkpoint.restore.path: pretrained:NAME``;
list them with ``vsml.api.pretrained_names()``.
"""
