"""The optimiser and the jitted train step: focal loss + minority forcing, Adam with L2, clipping.

`train_step(state, batch, rng) -> (state, metrics)` is pure; the loop around it (`experiment`)
does the I/O. The reference's recipe, every piece from optax:

- gradients clipped to global norm 1.0 (`torch.nn.utils.clip_grad_norm_` before the step),
- weight decay 1e-4 added to the gradient before Adam (`torch.optim.Adam(weight_decay=...)`, an L2
  term, not AdamW's decoupled decay),
- Adam(b1 0.9, b2 0.999, eps 1e-8) scaled by the learning rate, which lives in the optimiser state
  (`optax.inject_hyperparams`) so the plateau scheduler can change it without recompiling,
- `ReduceLROnPlateau(mode="max", factor=0.5, patience=10, min_lr=1e-6)` on validation balanced
  accuracy, as `optax.contrib.reduce_on_plateau` stepped once per epoch (`plateau_scheduler`);
  `plateau_metric` can watch the validation AUC or loss instead.

The focal loss's α lives in the `TrainState` as a traced scalar, so each fold can take its own
(`focal_alpha="auto"`: from the fold's class balance, `auto_focal_alpha`) without a new compile.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib

from focal_jax import focal_loss
from stgnn_jax.batching import EmbeddedBatch, SubjectBatch
from stgnn_jax.config import PLATEAU_METRICS, ModelConfig
from stgnn_jax.graphs import DenseGraphs
from stgnn_jax.model import STGNN


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Optimisation hyper-parameters; names and defaults are the reference's flags and constants.

  `focal_alpha` is a number in [0, 1] or "auto" (`auto_focal_alpha` of each fold's training
  labels). `plateau_metric` is the validation metric the learning-rate plateau watches:
  "balanced_acc" (the reference), "auc" or "loss".
  """

  lr: float = 1e-3
  focal_alpha: float | str = 0.90
  focal_gamma: float = 3.0
  label_smoothing: float = 0.05
  minority_focus_epochs: int = 20
  weight_decay: float = 1e-4
  clip_norm: float = 1.0
  adam_b1: float = 0.9
  adam_b2: float = 0.999
  adam_eps: float = 1e-8
  plateau_factor: float = 0.5
  plateau_patience: int = 10
  min_lr: float = 1e-6
  plateau_metric: str = "balanced_acc"

  def __post_init__(self):
    alpha_ok = self.focal_alpha == "auto" or (
        not isinstance(self.focal_alpha, str) and 0 <= self.focal_alpha <= 1)
    checks = [
        ("lr", self.lr > 0, "must be positive"),
        ("focal_alpha", alpha_ok, "must lie in [0, 1] or be 'auto'"),
        ("plateau_metric", self.plateau_metric in PLATEAU_METRICS,
         f"must be one of {', '.join(PLATEAU_METRICS)}"),
        ("focal_gamma", self.focal_gamma >= 0, "must be >= 0"),
        ("label_smoothing", 0 <= self.label_smoothing <= 1, "must lie in [0, 1]"),
        ("minority_focus_epochs", self.minority_focus_epochs >= 0, "must be >= 0"),
        ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
        ("clip_norm", self.clip_norm > 0, "must be positive"),
        ("plateau_factor", 0 < self.plateau_factor < 1, "must lie in (0, 1)"),
        ("plateau_patience", self.plateau_patience >= 0, "must be >= 0"),
        ("min_lr", 0 <= self.min_lr <= self.lr, "must lie in [0, lr]"),
    ]
    for name, ok, problem in checks:
      if not ok:
        raise ValueError(f"{name}={getattr(self, name)!r} {problem}.")


def auto_focal_alpha(labels: np.ndarray) -> float:
  """α for the converters (class 1) from the training labels: the share of the stable class.

  The two seeds disagree: one sets α to the positives' share, the other gives the minority class
  a high α. This takes the second: with 25% converters α = 0.75, so α_t·n balances the two
  classes (0.75 · 25 = 0.25 · 75), and a minority converter class is weighted up.
  """
  labels = np.asarray(labels)
  if labels.size == 0:
    raise ValueError("auto_focal_alpha: no training labels.")
  return float(np.mean(labels == 0))


def input_statistics(features: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
  """`model.InputStandardization`'s params from node features `[visits, N, F]` (per subject):
  the mean and 1 / std of each (region, feature) entry over every scan given (the fold's
  training scans). An entry that never varies (e.g. the unit diagonal) gets scale 0."""
  stacked = np.concatenate([np.asarray(f, np.float64) for f in features])
  std = stacked.std(axis=0)
  scale = np.where(std > 1e-6, 1 / np.maximum(std, 1e-6), 0.0)
  return {"mean": stacked.mean(axis=0).astype(np.float32), "scale": scale.astype(np.float32)}


def with_input_statistics(params: Mapping[str, Any], stats: Mapping[str, np.ndarray]
                          ) -> dict[str, Any]:
  """`params` with the encoder's `input_standardization` set to `stats` (shapes checked)."""
  current = params["encoder"]["input_standardization"]
  for name in ("mean", "scale"):
    if np.shape(stats[name]) != np.shape(current[name]):
      raise ValueError(f"input statistics of shape {np.shape(stats[name])} for a model with "
                       f"{np.shape(current[name])} node features.")
  encoder = dict(params["encoder"], input_standardization={
      name: jnp.asarray(stats[name], jnp.float32) for name in ("mean", "scale")})
  return dict(params, encoder=encoder)


def _trainable(params: Mapping[str, Any], freeze_encoder: bool) -> Any:
  """False for the frozen encoder (if `freeze_encoder`) and the fixed input statistics."""
  def trainable(path, _):
    keys = [getattr(k, "key", None) for k in path]
    return "input_standardization" not in keys and not (freeze_encoder and keys[0] == "encoder")
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

  With `freeze_encoder`, parameters under "encoder" are left out of the chain: they never move;
  with `fixed_inputs` (explicit node features), neither do the input statistics.
  """
  return optax.inject_hyperparams(_adam_with_l2, static_args=(
      "weight_decay", "clip_norm", "b1", "b2", "eps", "freeze_encoder", "fixed_inputs"))(
          learning_rate=cfg.lr, weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm,
          b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps, freeze_encoder=freeze_encoder,
          fixed_inputs=fixed_inputs)


def model_optimizer(cfg: OptimConfig, model_config: ModelConfig) -> optax.GradientTransformation:
  """`create_optimizer` for the parameters of `STGNN(model_config)`."""
  return create_optimizer(cfg, freeze_encoder=model_config.freeze_encoder,
                          fixed_inputs=model_config.explicit_node_features)


def plateau_scheduler(cfg: OptimConfig) -> optax.GradientTransformationExtraArgs:
  """Learning-rate scale from a validation metric, stepped once per epoch (`plateau_value`).

  PyTorch reduces after `patience` epochs without improvement on the next bad one
  (`num_bad_epochs > patience`), optax on reaching it, hence `patience + 1`. Improvement means
  beating the best by more than 1e-4: absolute for balanced accuracy and AUC (they move in steps
  of 1/n, far above it), relative for the loss (PyTorch's default `threshold_mode="rel"`).
  """
  relative = cfg.plateau_metric == "loss"
  return optax.contrib.reduce_on_plateau(
      factor=cfg.plateau_factor, patience=cfg.plateau_patience + 1,
      rtol=1e-4 if relative else 0.0, atol=0.0 if relative else 1e-4,
      min_scale=cfg.min_lr / cfg.lr)


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

  Jitted: run eagerly, optax's update dispatches dozens of scalar ops one by one, ≈0.2 s per
  epoch on a CPU (a sixth of the default run).
  """
  _, state = plateau_scheduler(cfg).update(updates=jnp.zeros(()), state=state,
                                           value=jnp.asarray(value, jnp.float32))
  return state


class TrainState(flax.struct.PyTreeNode):
  """Parameters, optimiser state and the step's static recipe.

  `epoch` (0-based) drives the minority-forcing weight; `focal_alpha` is the focal loss's α as a
  traced scalar; `model_config` and `optim_config` are static, so a new configuration compiles a
  new step.
  """

  step: jax.Array
  epoch: jax.Array
  params: Any
  opt_state: optax.OptState
  focal_alpha: jax.Array
  model_config: ModelConfig = flax.struct.field(pytree_node=False)
  optim_config: OptimConfig = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, params: Any, model_config: ModelConfig, optim_config: OptimConfig, *,
             focal_alpha: float | None = None) -> "TrainState":
    """A fresh state; `focal_alpha` is required when `optim_config.focal_alpha` is "auto"."""
    if focal_alpha is None:
      if optim_config.focal_alpha == "auto":
        raise ValueError("focal_alpha='auto' needs the fold's value: pass "
                         "focal_alpha=auto_focal_alpha(training labels).")
      focal_alpha = optim_config.focal_alpha
    tx = model_optimizer(optim_config, model_config)
    return cls(step=jnp.zeros((), jnp.int32), epoch=jnp.zeros((), jnp.int32), params=params,
               opt_state=tx.init(params), focal_alpha=jnp.asarray(focal_alpha, jnp.float32),
               model_config=model_config, optim_config=optim_config)

  @property
  def learning_rate(self) -> jax.Array:
    return self.opt_state.hyperparams["learning_rate"]

  def with_learning_rate(self, lr: float | jax.Array) -> "TrainState":
    return self.replace(opt_state=set_learning_rate(self.opt_state, lr))


def set_learning_rate(opt_state: optax.OptState, lr: float | jax.Array) -> optax.OptState:
  """The state of a `create_optimizer` optimiser with its learning rate set to `lr`."""
  hyperparams = dict(opt_state.hyperparams)
  hyperparams["learning_rate"] = jnp.asarray(lr, hyperparams["learning_rate"].dtype)
  return opt_state._replace(hyperparams=hyperparams)


@functools.partial(jax.jit, static_argnums=0)
def init_params(model_config: ModelConfig, batch: SubjectBatch, rng: jax.Array) -> Any:
  """Fresh STGNN parameters for the shapes of `batch` (jitted: an eager init takes seconds)."""
  return STGNN(model_config).init(
      rng, batch.graphs, batch.visit_slot, batch.lengths, batch.time,
      max_visits=batch.max_visits)["params"]


def minority_weight(epoch: jax.Array, focus_epochs: int) -> jax.Array:
  """0.1 (M - epoch) / M for 0-based epochs below M = minority_focus_epochs, else 0."""
  if focus_epochs == 0:
    return jnp.zeros(())
  return 0.1 * jnp.maximum(focus_epochs - epoch, 0) / focus_epochs


def loss_terms(logits: jax.Array, batch: SubjectBatch, epoch: jax.Array,
               cfg: OptimConfig, focal_alpha: jax.Array) -> dict[str, jax.Array]:
  """Focal loss over real subjects plus the reference's minority-forcing cross-entropy.

  The forcing term is the mean cross-entropy of the batch's real converters against class 1,
  weighted by `minority_weight(epoch)`; a batch without converters adds 0.
  """
  focal = focal_loss(logits, batch.labels, focal_alpha, cfg.focal_gamma, cfg.label_smoothing,
                     where=batch.subject_mask)
  converters = batch.subject_mask & (batch.labels == 1)
  log_p1 = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)[:, 1]
  forcing_ce = -jnp.sum(jnp.where(converters, log_p1, 0.0)) / jnp.maximum(converters.sum(), 1)
  weight = minority_weight(epoch, cfg.minority_focus_epochs)
  return {"loss": focal + weight * forcing_ce, "focal": focal, "forcing_ce": forcing_ce}


@functools.partial(jax.jit, static_argnames="model_config")
def encode_graphs(params: Any, graphs: DenseGraphs, time: jax.Array, rng: jax.Array, *,
                  model_config: ModelConfig) -> jax.Array:
  """Training-mode graph embeddings `[G, 2 * output_dim]` (encoder dropout drawn from `rng`).

  With a frozen encoder this is the whole encoder work of an epoch: embed every training scan
  once (in chunks of one shape), then step on `EmbeddedBatch`es of the result.
  """
  return STGNN(model_config).apply(
      {"params": params}, graphs, time, deterministic=False, rngs={"dropout": rng},
      method=STGNN.encode)


@jax.jit
def train_step(state: TrainState, batch: SubjectBatch | EmbeddedBatch,
               rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step on `batch`; `rng` drives dropout.

  `batch` is a `SubjectBatch` (graphs through the whole model) or, with a frozen encoder, an
  `EmbeddedBatch` of precomputed embeddings (the classifier only; the same objective, since a
  frozen encoder gets no gradient either way).

  Returns the new state and metrics: `loss` (the optimised objective), `focal`, `forcing_ce`,
  `grad_norm` (before clipping), `correct` and `count` (real subjects).
  """
  model = STGNN(state.model_config)
  if isinstance(batch, EmbeddedBatch) and not state.model_config.freeze_encoder:
    raise ValueError(
        "train_step got an EmbeddedBatch but the encoder is trained (freeze_encoder=False): "
        "precomputed embeddings carry no gradient to the encoder; pass a SubjectBatch.")

  def objective(params):
    if isinstance(batch, EmbeddedBatch):
      logits = model.apply(
          {"params": params}, batch.embeddings, batch.visit_index, batch.lengths,
          deterministic=False, rngs={"dropout": rng}, method=STGNN.classify_embedded)
    else:
      logits = model.apply(
          {"params": params}, batch.graphs, batch.visit_slot, batch.lengths, batch.time,
          max_visits=batch.max_visits, deterministic=False, rngs={"dropout": rng})
    terms = loss_terms(logits, batch, state.epoch, state.optim_config, state.focal_alpha)
    return terms["loss"], (terms, logits)

  grads, (terms, logits) = jax.grad(objective, has_aux=True)(state.params)
  tx = model_optimizer(state.optim_config, state.model_config)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  correct = jnp.sum((jnp.argmax(logits, -1) == batch.labels) & batch.subject_mask)
  metrics = dict(terms, grad_norm=optax.tree.norm(grads), correct=correct,
                 count=batch.subject_mask.sum())
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


@jax.jit
def eval_step(state: TrainState, batch: SubjectBatch) -> dict[str, jax.Array]:
  """Eval-mode logits `[subjects, classes]` and the per-subject focal loss (0 on padding)."""
  logits = STGNN(state.model_config).apply(
      {"params": state.params}, batch.graphs, batch.visit_slot, batch.lengths, batch.time,
      max_visits=batch.max_visits, deterministic=True)
  cfg = state.optim_config
  per_subject = focal_loss(logits, batch.labels, state.focal_alpha, cfg.focal_gamma,
                           cfg.label_smoothing, reduction="none", where=batch.subject_mask)
  return {"logits": logits, "loss": per_subject}


def replace_encoder(params: Mapping[str, Any], encoder: Mapping[str, Any]) -> dict[str, Any]:
  """`params` with the encoder taken from `encoder` (e.g. a pretrained one), shapes checked."""
  expected = jax.tree.map(jnp.shape, params["encoder"])
  found = jax.tree.map(jnp.shape, encoder)
  if expected != found:
    raise ValueError(
        "the pretrained encoder does not fit this model: its parameter shapes differ "
        f"({jax.tree.structure(found)} vs {jax.tree.structure(expected)}); check node_features, "
        "layer_type, gnn_hidden_dim, gnn_num_layers, graph_norm, use_topk_pooling, readout and "
        "use_time_features (a reference encoder needs the reference's flags, README).")
  return dict(params, encoder=jax.tree.map(jnp.asarray, encoder))
