"""The interface every inner-loop learner implements (DESIGN §3)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple


class Learner(NamedTuple):
    """A learning algorithm as two pure functions.

    ``init(key) -> meta_params``: a pytree of jnp arrays.
    ``run(meta_params, key, inputs, labels) -> logits`` with inputs
    ``[T, B, *input_shape]``, one-hot labels ``[T, B, C]`` and logits
    ``[T, B, C]``; at step t the learner predicts ``inputs[t]`` before it sees
    ``labels[t]``.
    """

    init: Callable[[Any], Any]
    run: Callable[[Any, Any, Any, Any], Any]
