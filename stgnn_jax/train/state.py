"""The `TrainState` and how a fold's state is made: fresh params, the input statistics of the
fold's training scans, a pretrained encoder, the focal α of its class balance.

The focal loss's α lives in the state as a traced scalar, so each fold can take its own
(`focal_alpha="auto"`: `auto_focal_alpha`) without a new compile.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.struct
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib

from stgnn_jax.config import ModelConfig, OptimConfig
from stgnn_jax.errors import CheckpointMismatchError
from stgnn_jax.input_pipeline import SubjectBatch
from stgnn_jax.nn.model import STGNN
from stgnn_jax.train.checkpoints import first_difference
from stgnn_jax.train.optimizer import model_optimizer, set_learning_rate


def auto_class_weights(labels: np.ndarray, num_classes: int = 2) -> tuple[float, ...]:
  """weighted_ce's default class weights from the training labels: the inverse class
  frequency, n / (C n_c) (scikit-learn's "balanced"), so each class weighs as much in all."""
  counts = np.bincount(np.asarray(labels), minlength=num_classes)
  if (counts == 0).any():
    raise ValueError(f"auto_class_weights: class {int(np.argmin(counts))} has no training "
                     "subject; pass class_weights explicitly.")
  return tuple(float(w) for w in counts.sum() / (num_classes * counts))


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
  training scans). An entry that never varies (e.g. the unit diagonal) gets scale 0.

  Two passes over `features`, one subject at a time (a fold's features need not fit in memory:
  `input_pipeline.NodeFeatures` computes them as they are read), summing scan by scan in
  float64: the order in which numpy's `mean` and `std` over the concatenated scans sum them, so
  the statistics are theirs to the bit.
  """
  count, total = 0, np.zeros(np.shape(features[0])[1:])
  for f in features:
    for scan in np.asarray(f, np.float64):
      total += scan
      count += 1
  mean = total / count
  squares = np.zeros_like(total)
  for f in features:
    for scan in np.asarray(f, np.float64):
      deviation = scan - mean
      squares += deviation * deviation
  std = np.sqrt(squares / count)
  scale = np.where(std > 1e-6, 1 / np.maximum(std, 1e-6), 0.0)
  return {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32)}


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


class TrainState(flax.struct.PyTreeNode):
  """Parameters, optimiser state, the loss's traced hyper-parameters and the static recipe.

  `epoch` (0-based) drives the minority-forcing weight. The loss's hyper-parameters that change
  between folds or epochs are traced scalars, so no new value compiles a new step: `focal_alpha`
  (the fold's with "auto"), `class_weights` `[C]` (weighted_ce; the fold's inverse class
  frequency by default), `focal_gamma` and `label_smoothing` (the epoch's stage of a schedule;
  read only when `optim_config` has one, the static constants otherwise). `model_config` and
  `optim_config` are static, so a new configuration compiles a new step.

  A sweep member (`train.sweep`) also carries `loss_index` (its loss, an index into
  `config.LOSSES`) and `focus_epochs` (its `minority_focus_epochs`), and then every setting of its
  loss is read from the state, never from the static `optim_config`: members that differ in any
  of them are one program. Both are None in a single run.
  """

  step: jax.Array
  epoch: jax.Array
  params: Any
  opt_state: optax.OptState
  focal_alpha: jax.Array
  class_weights: jax.Array
  focal_gamma: jax.Array
  label_smoothing: jax.Array
  model_config: ModelConfig = flax.struct.field(pytree_node=False)
  optim_config: OptimConfig = flax.struct.field(pytree_node=False)
  loss_index: jax.Array | None = None
  focus_epochs: jax.Array | None = None

  @classmethod
  def create(cls, params: Any, model_config: ModelConfig, optim_config: OptimConfig, *,
             focal_alpha: float | None = None,
             class_weights: Sequence[float] | np.ndarray | None = None) -> TrainState:
    """A fresh state at epoch 0. `focal_alpha` is required when `optim_config.focal_alpha` is
    "auto" (`auto_focal_alpha`), `class_weights` for loss="weighted_ce" without configured
    weights (`auto_class_weights`)."""
    if focal_alpha is None:
      if optim_config.focal_alpha == "auto":
        raise ValueError("focal_alpha='auto' needs the fold's value: pass "
                         "focal_alpha=auto_focal_alpha(training labels).")
      assert not isinstance(optim_config.focal_alpha, str)  # "auto" is its only string
      focal_alpha = optim_config.focal_alpha
    if class_weights is None:
      class_weights = optim_config.class_weights
      if class_weights is None:
        if optim_config.loss == "weighted_ce":
          raise ValueError("loss='weighted_ce' without class_weights needs the fold's: pass "
                           "class_weights=auto_class_weights(training labels).")
        class_weights = np.ones(model_config.num_classes)
    tx = model_optimizer(optim_config, model_config)
    scalar = functools.partial(jnp.asarray, dtype=jnp.float32)
    return cls(step=jnp.zeros((), jnp.int32), epoch=jnp.zeros((), jnp.int32), params=params,
               opt_state=tx.init(params), focal_alpha=scalar(focal_alpha),
               class_weights=scalar(class_weights), focal_gamma=scalar(optim_config.gamma_at(0)),
               label_smoothing=scalar(optim_config.smoothing_at(0)),
               model_config=model_config, optim_config=optim_config)

  def at_epoch(self, epoch: int) -> TrainState:
    """The state for training epoch `epoch`: its number and its stage of the schedules."""
    cfg = self.optim_config
    return self.replace(epoch=jnp.asarray(epoch, jnp.int32),
                        focal_gamma=jnp.asarray(cfg.gamma_at(epoch), jnp.float32),
                        label_smoothing=jnp.asarray(cfg.smoothing_at(epoch), jnp.float32))

  def with_learning_rate(self, lr: float | jax.Array) -> TrainState:
    return self.replace(opt_state=set_learning_rate(self.opt_state, lr))


@functools.partial(jax.jit, static_argnums=0)
def init_params(model_config: ModelConfig, batch: SubjectBatch, rng: jax.Array) -> Any:
  """Fresh STGNN parameters for the shapes of `batch` (jitted: an eager init takes seconds)."""
  return STGNN(model_config).init(
      rng, batch.graphs, batch.visit_slot, batch.lengths, batch.time,
      max_visits=batch.max_visits)["params"]


def check_encoder_fits(expected: Mapping[str, Any], encoder: Mapping[str, Any]) -> None:
  """Raises CheckpointMismatchError naming the first parameter of `encoder` whose name or shape
  differs from `expected`'s (arrays or `jax.ShapeDtypeStruct`s)."""
  difference = first_difference(dict(expected), dict(encoder))
  if difference is not None:
    key, found_shape, expected_shape = difference
    if found_shape is None:
      problem = f"has no parameter {key!r} (this model's: shape {expected_shape})"
    elif expected_shape is None:
      problem = f"has a parameter {key!r} this model does not have"
    else:
      problem = f"has {key!r} of shape {found_shape}, this model needs {expected_shape}"
    raise CheckpointMismatchError(
        f"the pretrained encoder does not fit this model: it {problem}; check node_features, "
        "layer_type, gnn_hidden_dim, gnn_num_layers, graph_norm, use_topk_pooling, readout and "
        "use_time_features (a reference encoder needs the reference's flags, README).")


def replace_encoder(params: Mapping[str, Any], encoder: Mapping[str, Any]) -> dict[str, Any]:
  """`params` with the encoder taken from `encoder` (e.g. a pretrained one), shapes checked."""
  check_encoder_fits(params["encoder"], encoder)
  return dict(params, encoder=jax.tree.map(jnp.asarray, encoder))
