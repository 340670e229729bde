"""The interface every inner-loop learner implements, and how a learner type is described (docs/DESIGN.md §3)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

from vsml.settings import model_settings


class Learner(NamedTuple):
    """A learning algorithm as pure functions.

    ``init(key) -> meta_params``: a pytree of jnp arrays.
    ``run(meta_params, key, inputs, labels) -> logits`` with inputs
    ``[T, B, *input_shape]``, one-hot labels ``[T, B, C]`` and logits
    ``[T, B, C]``; at step t the learner predicts ``inputs[t]`` before it sees
    ``labels[t]``.

    An episode can also be stepped a truncation at a time (carry in, carry out):
    ``start(meta_params, key, inputs, labels) -> carry`` is the learner's state before
    step 0 of the episode ``inputs [T, ...]`` (read for its shapes and length only), and
    ``advance(meta_params, carry, inputs, labels) -> (carry, logits)`` runs the steps of
    a truncation ``[K, B, ...]`` from ``carry``. ``run`` is ``advance`` over the whole
    episode from ``start``, so the truncations of an episode, in order, give its logits.
    """

    init: Callable[[Any], Any]
    run: Callable[[Any, Any, Any, Any], Any]
    start: Callable[[Any, Any, Any, Any], Any] | None = None
    advance: Callable[[Any, Any, Any, Any], Any] | None = None


def run_episode(start: Callable, advance: Callable, params, key, inputs, labels, spec, **run_options):
    """A learner's ``run``: ``advance`` over the whole episode from ``start``; the logits ``[T, B, C]``."""
    carry = start(params, key, inputs, labels, spec)
    return advance(params, carry, inputs, labels, spec, **run_options)[1]


@dataclasses.dataclass(frozen=True)
class LearnerType:
    """A learner as the registry (:mod:`vsml.learners`) knows it: name, config and properties.

    Each learner module declares one (``LEARNER_TYPE``) next to its code.

    Attributes:
      name: its ``model.type``.
      section: the section under ``model`` holding its options (``model.<section>``);
        ``extra_sections`` lists any further ones it reads.
      spec_from_config: ``(model, input_shape, num_classes) -> spec`` from the typed
        ``model`` settings (:class:`vsml.settings.ModelSettings`), a frozen
        (hashable) description; refuses bad values with the config key in the message.
      init: ``init(key, spec) -> meta_params``.
      run: ``run(meta_params, key, inputs, labels, spec, **run_options) -> logits``.
      start: ``start(meta_params, key, inputs, labels, spec) -> carry`` (:class:`Learner`).
      advance: ``advance(meta_params, carry, inputs, labels, spec, **run_options) -> (carry, logits)``;
        ``run`` is :func:`run_episode` of the two.
      any_size: runs on any input size and class count with the same meta-parameters
        (the sizes are then ignored); otherwise its parameter shapes are built for
        one ``(input_shape, num_classes)``.
      hand_designed: a fixed learning rule whose meta-parameters are only initial
        weights, so it can be evaluated without meta-training.
      run_options: keyword options of ``run`` beyond the spec (e.g. ``unroll``) that
        change speed, never results.
    """

    name: str
    section: str
    spec_from_config: Callable[..., Any]
    init: Callable[..., Any]
    run: Callable[..., Any]
    start: Callable[..., Any]
    advance: Callable[..., Any]
    any_size: bool = False
    hand_designed: bool = False
    run_options: tuple[str, ...] = ()
    extra_sections: tuple[str, ...] = ()

    def bind(self, spec, **run_options) -> Learner:
        """The :class:`Learner` of ``spec`` (with ``run_options`` fixed)."""
        unknown = sorted(set(run_options) - set(self.run_options))
        if unknown:
            raise ValueError(f"{self.name} has no run option(s) {unknown}; it has {list(self.run_options) or 'none'}")
        init, run, start, advance = self.init, self.run, self.start, self.advance
        return Learner(
            init=lambda key: init(key, spec),
            run=lambda params, key, inputs, labels: run(params, key, inputs, labels, spec, **run_options),
            start=lambda params, key, inputs, labels: start(params, key, inputs, labels, spec),
            advance=lambda params, carry, inputs, labels: advance(params, carry, inputs, labels, spec, **run_options),
        )

    def build(self, model, input_shape=None, num_classes=None, **run_options) -> Learner:
        """The learner configured by the ``model`` settings (typed, or a mapping read from YAML), for these sizes."""
        return self.bind(self.spec_from_config(model_settings(model), input_shape, num_classes), **run_options)
