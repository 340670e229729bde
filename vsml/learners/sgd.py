"""SGD: a hand-designed learning algorithm — a tanh MLP trained online by gradient descent (docs/DESIGN.md §5).

At step t the network predicts ``inputs[t]`` (the logits returned), then takes
one optimiser step on the batch-mean cross-entropy of that prediction against
``labels[t]``. The optimiser is ``optax.<model.sgd.optimizer>(learning_rate=lr)``
(any optax optimiser name: ``sgd``, ``adam``, ``rmsprop``, …), its state starts
fresh each episode.

The meta-parameters are the network's *initial* weights (conv stem included
with ``use_conv``): the learning rule itself is fixed, but ES or meta-gradients
(``optimizer.type: metagrad``, differentiating through every inner step) can tune the
initialisation, MAML-style. With batch > 1 the weights are shared by the batch.

Config: ``model.sgd.{num_layers, hidden_size, tanh_bound, optimizer, lr, use_conv}``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from vsml.learners import common, mlp
from vsml.learners.base import LearnerType, run_episode
from vsml.learners.scan import FULL_BACKPROP, BackpropPlan, episode_scan
from vsml.settings import SettingError, SGDSettings


@dataclasses.dataclass(frozen=True)
class SGDSpec(SGDSettings):
    """Every key of ``model.sgd`` (the fields of ``SGDSettings``, declared there once) and the data
    sizes the learner is built for."""

    input_shape: tuple = common.PADDED_INPUT_SHAPE
    num_classes: int = common.PADDED_NUM_CLASSES


def make_inner_optimizer(name: str, lr: float) -> optax.GradientTransformation:
    """``optax.<name>(learning_rate=lr)``; a clear error for names optax does not have."""
    factory = getattr(optax, name, None)
    if not callable(factory):
        raise ValueError(f"'{name}' is not an optax optimiser (e.g. sgd, adam, rmsprop)")
    try:
        return factory(learning_rate=lr)
    except TypeError as err:
        raise ValueError(f"optax.{name} does not take a learning_rate: {err}") from None


def spec_from_config(model, input_shape=None, num_classes=None) -> SGDSpec:
    spec = common.spec_from_section(SGDSpec, model.sgd, input_shape, num_classes)
    try:
        make_inner_optimizer(spec.optimizer, spec.lr)  # fail at build time, not inside jit
    except ValueError as err:
        raise SettingError(model.sgd, "optimizer", str(err)) from None
    return spec


def init(key, spec: SGDSpec):
    """The initial network ``{'layers': [...], 'stem'?: [...]}``."""
    k_stem, k_mlp = jax.random.split(key)
    sizes = mlp.layer_sizes(
        common.feature_size(spec.input_shape, spec.use_conv), spec.num_layers, spec.hidden_size, spec.num_classes
    )
    params = {"layers": mlp.init(k_mlp, sizes)}
    if spec.use_conv:
        params["stem"] = common.stem_init(k_stem, spec.input_shape)
    return params


def predict(net, x: jax.Array, spec: SGDSpec) -> jax.Array:
    """Bounded logits ``[B, C]`` of one batch ``x [B, *input_shape]``."""
    return mlp.apply(net["layers"], common.features(net.get("stem"), x), spec.tanh_bound)


def start(params, key, inputs, labels, spec: SGDSpec):
    """The carry before step 0: the network (the initial weights) and its optimiser's state."""
    del key, inputs, labels  # deterministic
    return params, make_inner_optimizer(spec.optimizer, spec.lr).init(params)


def advance(params, carry, inputs, labels, spec: SGDSpec, backprop_plan: BackpropPlan = FULL_BACKPROP):
    """``(carry, logits [K, B, C])``: at each step predict, then one optimiser step on its loss."""
    del params  # the network is in the carry
    common.check_episode("SGD", spec.input_shape, spec.num_classes, inputs, labels)
    optimizer = make_inner_optimizer(spec.optimizer, spec.lr)

    def loss_fn(net, x, y):
        logits = predict(net, x, spec)
        return jnp.mean(optax.softmax_cross_entropy(logits, y)), logits

    def step(carry, xy):
        net, opt_state = carry
        (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(net, *xy)
        updates, opt_state = optimizer.update(grads, opt_state, net)
        return (optax.apply_updates(net, updates), opt_state), logits

    xs = (inputs.astype(jnp.float32), labels.astype(jnp.float32))
    return episode_scan(step, carry, xs, backprop_plan)


def run(params, key, inputs, labels, spec: SGDSpec, backprop_plan: BackpropPlan = FULL_BACKPROP):
    """Logits ``[T, B, C]``: :func:`advance` over the whole episode from :func:`start`."""
    return run_episode(start, advance, params, key, inputs, labels, spec, backprop_plan=backprop_plan)


LEARNER_TYPE = LearnerType(
    name="SGD",
    section="sgd",
    spec_from_config=spec_from_config,
    init=init,
    run=run,
    start=start,
    advance=advance,
    hand_designed=True,
    run_options=("backprop_plan",),
)
