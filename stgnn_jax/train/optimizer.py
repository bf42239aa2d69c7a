"""The reference's optimiser and learning-rate plateau, every piece from optax.

- gradients clipped to global norm 1.0 (`torch.nn.utils.clip_grad_norm_` before the step),
- weight decay added to the gradient before Adam (`torch.optim.Adam(weight_decay=...)`, an L2
  term, not AdamW's decoupled decay),
- Adam(b1 0.9, b2 0.999, eps 1e-8) scaled by the learning rate, which lives in the optimiser state
  (`optax.inject_hyperparams`) so the plateau scheduler can change it without recompiling,
- `ReduceLROnPlateau(mode="max", factor=0.5, patience=10, min_lr=1e-6)` on validation balanced
  accuracy, as `optax.contrib.reduce_on_plateau` stepped once per epoch (`plateau_scheduler`);
  `plateau_metric` can watch the validation AUC or loss instead.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
import optax.contrib

from stgnn_jax.config import ModelConfig, OptimConfig


def _trainable(params: Mapping[str, Any], freeze_encoder: bool) -> Any:
  """False for the frozen encoder (if `freeze_encoder`), the fixed input statistics and the
  linear path (fitted per fold: `train.linear_path`)."""
  def trainable(path, _):
    keys = [getattr(k, "key", None) for k in path]
    return ("input_standardization" not in keys and keys[0] != "linear_path"
            and not (freeze_encoder and keys[0] == "encoder"))
  return jax.tree_util.tree_map_with_path(trainable, params)


def _adam_with_l2(learning_rate, *, weight_decay, clip_norm, b1, b2, eps, freeze_encoder,
                  fixed_inputs):
  chain = optax.chain(
      optax.clip_by_global_norm(clip_norm),
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
      optax.scale_by_learning_rate(learning_rate),
  )
  if freeze_encoder or fixed_inputs:
    # The reference's frozen encoder gets no gradient at all (grad None), so torch's Adam skips
    # it, weight decay included; the input statistics are constants too. Masking keeps their
    # (exactly zero, stop_gradient) gradients as the update.
    return optax.masked(chain, functools.partial(_trainable, freeze_encoder=freeze_encoder))
  return chain


def create_optimizer(cfg: OptimConfig, *, freeze_encoder: bool = False,
                     fixed_inputs: bool = False) -> optax.GradientTransformation:
  """clip_by_global_norm -> add_decayed_weights -> scale_by_adam -> -learning_rate.

  The learning rate and the weight decay are traced values of the state (`hyperparams`), so a
  sweep's members can each have their own in one program (`set_learning_rate`).

  With `freeze_encoder`, parameters under "encoder" are left out of the chain: they never move;
  with `fixed_inputs` (explicit node features), neither do the input statistics, nor the linear
  path (fitted per fold, `train.linear_path`).
  """
  return optax.inject_hyperparams(_adam_with_l2, static_args=(
      "clip_norm", "b1", "b2", "eps", "freeze_encoder", "fixed_inputs"))(
          learning_rate=cfg.lr, weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm,
          b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps, freeze_encoder=freeze_encoder,
          fixed_inputs=fixed_inputs)


def model_optimizer(cfg: OptimConfig, model_config: ModelConfig) -> optax.GradientTransformation:
  """`create_optimizer` for the parameters of `STGNN(model_config)`."""
  return create_optimizer(cfg, freeze_encoder=model_config.freeze_encoder,
                          fixed_inputs=model_config.explicit_node_features)


def plateau_scheduler(cfg: OptimConfig, min_scale: float | jax.Array | None = None
                      ) -> optax.GradientTransformationExtraArgs:
  """Learning-rate scale from a validation metric, stepped once per epoch (`plateau_value`).

  PyTorch reduces after `patience` epochs without improvement on the next bad one
  (`num_bad_epochs > patience`), optax on reaching it, hence `patience + 1`. Improvement means
  beating the best by more than 1e-4: absolute for balanced accuracy and AUC (they move in steps
  of 1/n, far above it), relative for the loss (PyTorch's default `threshold_mode="rel"`).
  The scale stops at `min_lr / lr`; `min_scale` gives it as a (traced) value instead, for a
  sweep's members of different learning rates.
  """
  relative = cfg.plateau_metric == "loss"
  return optax.contrib.reduce_on_plateau(
      factor=cfg.plateau_factor, patience=cfg.plateau_patience + 1,
      rtol=1e-4 if relative else 0.0, atol=0.0 if relative else 1e-4,
      min_scale=cfg.min_lr / cfg.lr if min_scale is None else min_scale)


def plateau_value(cfg: OptimConfig, val: Mapping[str, Any]) -> float:
  """The value `plateau_step` minimises, from a validation result (`metrics`' keys).

  An undefined AUC (one class in the split) counts as 0.5, chance.
  """
  if cfg.plateau_metric == "loss":
    return float(val["loss"])
  if cfg.plateau_metric == "auc":
    return -(0.5 if val["auc"] is None else float(val["auc"]))
  return -float(val["balanced_accuracy"])


@functools.partial(jax.jit, static_argnums=0)
def plateau_step(cfg: OptimConfig, state: Any, value: float | jax.Array) -> Any:
  """The `plateau_scheduler(cfg)` state after one epoch's `value` (`plateau_value`).

  Jitted: run eagerly, optax's update dispatches dozens of scalar ops one by one, every epoch.
  """
  _, state = plateau_scheduler(cfg).update(updates=jnp.zeros(()), state=state,
                                           value=jnp.asarray(value, jnp.float32))
  return state


def set_learning_rate(opt_state: optax.OptState, lr: jax.typing.ArrayLike) -> optax.OptState:
  """The state of a `create_optimizer` optimiser with its learning rate set to `lr`."""
  hyperparams = dict(opt_state.hyperparams)
  hyperparams["learning_rate"] = jnp.asarray(lr, hyperparams["learning_rate"].dtype)
  return opt_state._replace(hyperparams=hyperparams)
