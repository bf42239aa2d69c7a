"""The jitted steps: `train_step(state, batch, rng) -> (state, metrics)` and `eval_step`.

The objective is the focal loss over real subjects plus the reference's minority-forcing
cross-entropy (`loss_terms`); the steps are pure, the loop around them (`train.loop`) does the
I/O. With a frozen encoder, `encode_graphs` embeds an epoch's scans once and the steps train the
classifier on `EmbeddedBatch`es.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax
import optax.contrib

from focal_jax import cross_entropy, focal_loss
from stgnn_jax.config import LOSSES, ModelConfig
from stgnn_jax.input_pipeline import EmbeddedBatch, SubjectBatch
from stgnn_jax.nn.graphs import DenseGraphs
from stgnn_jax.nn.model import STGNN
from stgnn_jax.train.optimizer import model_optimizer
from stgnn_jax.train.state import TrainState


def minority_weight(epoch: jax.Array, focus_epochs: int | jax.Array) -> jax.Array:
  """0.1 (M - epoch) / M for 0-based epochs below M = minority_focus_epochs, else 0 (M may be
  a traced value: a sweep member's)."""
  if isinstance(focus_epochs, int):
    if focus_epochs == 0:
      return jnp.zeros(())
    return 0.1 * jnp.maximum(focus_epochs - epoch, 0) / focus_epochs
  weight = 0.1 * jnp.maximum(focus_epochs - epoch, 0) / jnp.maximum(focus_epochs, 1)
  return jnp.where(focus_epochs > 0, weight, 0.0)


def criterion(logits: jax.Array, batch: SubjectBatch | EmbeddedBatch, state: TrainState, *,
              reduction: Literal["mean", "sum", "none"] = "mean") -> jax.Array:
  """The configured loss (`OptimConfig.loss`) over the batch's real subjects.

  "focal": `focal_jax.focal_loss` with the state's α; "ce" and "weighted_ce":
  `focal_jax.cross_entropy` (PyTorch's `CrossEntropyLoss`), the latter with the state's class
  weights. γ and the label smoothing are the static constants, or the state's traced values of
  the epoch's stage when the configuration has a schedule.
  """
  cfg = state.optim_config
  if state.loss_index is not None:  # a sweep member: its loss and every setting are traced
    focal = focal_loss(logits, batch.labels, state.focal_alpha, state.focal_gamma,
                       state.label_smoothing, reduction=reduction, where=batch.subject_mask)
    weighted = state.loss_index == LOSSES.index("weighted_ce")
    ce = cross_entropy(logits, batch.labels, jnp.where(weighted, state.class_weights, 1.0),
                       state.label_smoothing, reduction=reduction, where=batch.subject_mask)
    return jnp.where(state.loss_index == LOSSES.index("focal"), focal, ce)
  smoothing = state.label_smoothing if cfg.smoothing_schedule else cfg.label_smoothing
  if cfg.loss == "focal":
    gamma = state.focal_gamma if cfg.gamma_schedule else cfg.focal_gamma
    return focal_loss(logits, batch.labels, state.focal_alpha, gamma, smoothing,
                      reduction=reduction, where=batch.subject_mask)
  weights = state.class_weights if cfg.loss == "weighted_ce" else None
  return cross_entropy(logits, batch.labels, weights, smoothing, reduction=reduction,
                       where=batch.subject_mask)


def loss_terms(logits: jax.Array, batch: SubjectBatch | EmbeddedBatch,
               state: TrainState) -> dict[str, jax.Array]:
  """The configured loss (`criterion`) plus the reference's minority-forcing cross-entropy.

  The forcing term is the mean cross-entropy of the batch's real converters against class 1,
  weighted by `minority_weight(state.epoch)`; a batch without converters adds 0.
  """
  main = criterion(logits, batch, state)
  converters = batch.subject_mask & (batch.labels == 1)
  log_p1 = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)[:, 1]
  forcing_ce = -jnp.sum(jnp.where(converters, log_p1, 0.0)) / jnp.maximum(converters.sum(), 1)
  weight = minority_weight(state.epoch, state.optim_config.minority_focus_epochs
                           if state.focus_epochs is None else state.focus_epochs)
  return {"loss": main + weight * forcing_ce, "criterion": main, "forcing_ce": forcing_ce}


@functools.partial(jax.jit, static_argnames=("model_config", "deterministic"))
def encode_graphs(params: Any, graphs: DenseGraphs, time: jax.Array, rng: jax.Array, *,
                  model_config: ModelConfig, deterministic: bool = False) -> jax.Array:
  """Training-mode graph embeddings `[G, 2 * output_dim]` (encoder dropout drawn from `rng`), or
  eval-mode ones with `deterministic`.

  With a frozen encoder this is the whole encoder work of an epoch: embed every training scan
  once (in chunks of one shape), then step on `EmbeddedBatch`es of the result.
  """
  embeddings = STGNN(model_config).apply(
      {"params": params}, graphs, time, deterministic=deterministic, rngs={"dropout": rng},
      method=STGNN.encode)
  assert isinstance(embeddings, jax.Array)  # apply without `mutable` returns the output alone
  return embeddings


@jax.jit
def train_step(state: TrainState, batch: SubjectBatch | EmbeddedBatch,
               rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step on `batch`; `rng` drives dropout.

  `batch` is a `SubjectBatch` (graphs through the whole model) or, with a frozen encoder, an
  `EmbeddedBatch` of precomputed embeddings (the classifier only; the same objective, since a
  frozen encoder gets no gradient either way).

  Returns the new state and metrics: `loss` (the optimised objective), `criterion` (the
  configured loss alone), `forcing_ce`,
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
      if batch.offset is not None:
        # A training subject's linear path enters the loss at its cross-fitted value.
        logits = logits + jnp.stack([-batch.offset, batch.offset], axis=-1) / 2
    terms = loss_terms(logits, batch, state)
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
def eval_step(state: TrainState, batch: SubjectBatch | EmbeddedBatch) -> dict[str, jax.Array]:
  """Eval-mode logits `[subjects, classes]` and the per-subject loss (`criterion`, 0 on
  padding); an `EmbeddedBatch` (eval-mode embeddings of a frozen encoder) runs the classifier
  only."""
  model = STGNN(state.model_config)
  if isinstance(batch, EmbeddedBatch):
    logits = model.apply({"params": state.params}, batch.embeddings, batch.visit_index,
                         batch.lengths, deterministic=True, method=STGNN.classify_embedded)
  else:
    logits = model.apply(
        {"params": state.params}, batch.graphs, batch.visit_slot, batch.lengths, batch.time,
        max_visits=batch.max_visits, deterministic=True)
  assert isinstance(logits, jax.Array)  # apply without `mutable` returns the output alone
  return {"logits": logits, "loss": criterion(logits, batch, state, reduction="none")}
