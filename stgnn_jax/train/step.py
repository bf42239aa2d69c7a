"""The jitted steps: `train_step(state, batch, rng) -> (state, metrics)` and `eval_step`.

The objective is the focal loss over real subjects plus the reference's minority-forcing
cross-entropy (`loss_terms`); the steps are pure, the loop around them (`train.loop`) does the
I/O. With a frozen encoder, `encode_graphs` embeds an epoch's scans once and the steps train the
classifier on `EmbeddedBatch`es.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
import optax.contrib

from focal_jax import focal_loss
from stgnn_jax.config import ModelConfig, OptimConfig
from stgnn_jax.input_pipeline import EmbeddedBatch, SubjectBatch
from stgnn_jax.nn.graphs import DenseGraphs
from stgnn_jax.nn.model import STGNN
from stgnn_jax.train.optimizer import model_optimizer
from stgnn_jax.train.state import TrainState


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
