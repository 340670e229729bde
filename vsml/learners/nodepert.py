"""NodePert: the SGD learner's MLP trained inside the episode by node (or weight) perturbation (docs/DESIGN.md §5).

At step t, for the batch ``x [B, D]`` with labels ``y [B, C]``:

* a *clean* pass gives the prediction (the logits returned for step t), the
  layer inputs ``h_{l-1,n}`` and the per-example losses ``L_clean,n``;
* a *noisy* pass adds ``ξ_{l,n} ~ N(0, σ² I)`` — drawn independently for every
  layer l **and every example n** — to every layer's pre-activation (the
  output layer's before the tanh bound) and gives ``L_noisy,n``;
* with ``δL_n = L_noisy,n − L_clean,n`` (per example, never the batch mean):

      ΔW_l = −η · mean_n[(δL_n / σ²) · h_{l-1,n} ⊗ ξ_{l,n}]     (our W is [n_in, n_out])
      Δb_l = −η · mean_n[(δL_n / σ²) · ξ_{l,n}]

  Because ``E[ξ ξᵀ] = σ² I`` and odd moments vanish,
  ``E[δL_n ξ_{l,n}] / σ² = ∂L_n/∂a_{l,n} + O(σ²)``, so the update is an
  estimate of the gradient of the batch-mean clean loss. The pre-synaptic
  activity is the clean one (the noisy one adds only zero-mean terms).
  Sharing one ξ across the batch and using the batch-mean δL — a bug in a
  public implementation — estimates ``(mean_n g_n) ⊗ (mean_n h_n)`` instead of
  ``mean_n g_n ⊗ h_n`` and is biased for batch > 1.

``perturbation: weight`` (WP, for comparison) perturbs every weight and bias
per example instead, ``ψ_{l,n} ~ N(0, σ²)``, and uses
``ΔW_l = −η · mean_n[(δL_n/σ²) ψ_{l,n}]``.

Meta-parameters are the initial weights, as for :mod:`vsml.learners.sgd`; the
noise comes from the learner's inner key (one key per step).

Config: ``model.nodepert.{num_layers, hidden_size, noise_std, lr, tanh_bound, perturbation}``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from vsml.learners import common, mlp
from vsml.learners.base import LearnerType, run_episode
from vsml.learners.scan import FULL_BACKPROP, BackpropPlan, episode_scan
from vsml.settings import NodePertSettings

PERTURBATIONS = ("node", "weight")


@dataclasses.dataclass(frozen=True)
class NodePertSpec(NodePertSettings):
    """Every key of ``model.nodepert`` (the fields of ``NodePertSettings``, declared there once) and the data
    sizes the learner is built for."""

    input_shape: tuple = common.PADDED_INPUT_SHAPE
    num_classes: int = common.PADDED_NUM_CLASSES


def spec_from_config(model, input_shape=None, num_classes=None) -> NodePertSpec:
    return common.spec_from_section(NodePertSpec, model.nodepert, input_shape, num_classes)


def init(key, spec: NodePertSpec):
    """The initial network ``{'layers': [...]}``."""
    sizes = mlp.layer_sizes(
        common.feature_size(spec.input_shape, False), spec.num_layers, spec.hidden_size, spec.num_classes
    )
    return {"layers": mlp.init(key, sizes)}


def _losses(logits, y):
    return optax.softmax_cross_entropy(logits, y)  # [N]


def node_perturbation_grad(layers: list, x, y, key, noise_std: float, tanh_bound: float):
    """The NP gradient estimate for one batch and one noise draw.

    Args:
      layers: MLP layers; ``x [N, D]``; ``y [N, C]`` one-hot.
    Returns:
      ``(estimate, clean_logits)``: ``estimate`` has the structure of ``layers``
      (the update is ``−η · estimate``); ``clean_logits [N, C]``.
    """
    n = x.shape[0]
    inputs, clean_logits = mlp.forward(layers, x, tanh_bound)
    keys = jax.random.split(key, len(layers))
    noise = [noise_std * jax.random.normal(k, (n, p["b"].shape[0])) for k, p in zip(keys, layers)]
    _, noisy_logits = mlp.forward(layers, x, tanh_bound, noise)
    scale = (_losses(noisy_logits, y) - _losses(clean_logits, y)) / noise_std**2  # [N], per example
    estimate = [
        {"w": jnp.einsum("n,ni,no->io", scale, h, xi) / n, "b": jnp.einsum("n,no->o", scale, xi) / n}
        for h, xi in zip(inputs, noise)
    ]
    return estimate, clean_logits


def weight_perturbation_grad(layers: list, x, y, key, noise_std: float, tanh_bound: float):
    """The WP gradient estimate (per-example weight noise); same contract as :func:`node_perturbation_grad`."""
    n = x.shape[0]
    _, clean_logits = mlp.forward(layers, x, tanh_bound)
    leaves, treedef = jax.tree_util.tree_flatten(layers)
    keys = jax.random.split(key, len(leaves))
    psi = treedef.unflatten([noise_std * jax.random.normal(k, (n, *leaf.shape)) for k, leaf in zip(keys, leaves)])

    def noisy_logits(one_psi, one_x):
        perturbed = jax.tree_util.tree_map(jnp.add, layers, one_psi)
        return mlp.apply(perturbed, one_x[None], tanh_bound)[0]

    noisy = jax.vmap(noisy_logits)(psi, x)
    scale = (_losses(noisy, y) - _losses(clean_logits, y)) / noise_std**2
    estimate = jax.tree_util.tree_map(lambda p: jnp.tensordot(scale, p, axes=1) / n, psi)
    return estimate, clean_logits


def start(params, key, inputs, labels, spec: NodePertSpec):
    """The carry before step 0: the MLP (the initial weights), every step's perturbation key ``[T, 2]``
    (drawn for the whole episode, so a truncation uses the keys of its own steps) and the step count."""
    del labels, spec
    return params["layers"], jax.random.split(key, inputs.shape[0]), jnp.zeros((), jnp.int32)


def advance(params, carry, inputs, labels, spec: NodePertSpec, backprop_plan: BackpropPlan = FULL_BACKPROP):
    """``(carry, logits [K, B, C])`` (clean predictions), updating the MLP by perturbation after each step."""
    del params  # the network is in the carry
    common.check_episode("NodePert", spec.input_shape, spec.num_classes, inputs, labels)
    estimator = node_perturbation_grad if spec.perturbation == "node" else weight_perturbation_grad
    layers, episode_keys, done = carry
    steps = inputs.shape[0]
    step_keys = jax.lax.dynamic_slice_in_dim(episode_keys, done, steps)
    feats = common.episode_features(None, inputs)

    def step(layers, xs):
        x, y, step_key = xs
        estimate, logits = estimator(layers, x, y, step_key, spec.noise_std, spec.tanh_bound)
        layers = jax.tree_util.tree_map(lambda p, g: p - spec.lr * g, layers, estimate)
        return layers, logits

    layers, logits = episode_scan(step, layers, (feats, labels.astype(jnp.float32), step_keys), backprop_plan)
    return (layers, episode_keys, done + steps), logits


def run(params, key, inputs, labels, spec: NodePertSpec, backprop_plan: BackpropPlan = FULL_BACKPROP):
    """Logits ``[T, B, C]``: :func:`advance` over the whole episode from :func:`start`."""
    return run_episode(start, advance, params, key, inputs, labels, spec, backprop_plan=backprop_plan)


LEARNER_TYPE = LearnerType(
    name="NodePert",
    section="nodepert",
    spec_from_config=spec_from_config,
    init=init,
    run=run,
    start=start,
    advance=advance,
    hand_designed=True,
    run_options=("backprop_plan",),
)
