"""Supervised encoder pretraining on single scans (the reference's separate script), leak-free.

The reference pretrains the graph encoder with a small head, Linear(512, 128) -> ReLU ->
Dropout(0.3) -> Linear(128, 2), on single scans labelled with their subject's label: cross-entropy,
Adam lr 1e-3 with weight decay 1e-5 (L2), clipping 1.0, plateau on validation accuracy (factor
0.5, patience 5, min lr 1e-5), batch 32, an 80/20 split of the scans. It splits scans of ALL
subjects, so test subjects leak into the encoder; here only the fold's training subjects are used.

`load_encoder` gives a fold its encoder: from `--pretrained` (a stgnn-jax checkpoint or a reference
`.pth`) or pretrained on the fold's training subjects (`--pretrain_encoder`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from stgnn_jax.config import ModelConfig, OptimConfig, RunConfig
from stgnn_jax.errors import InputError
from stgnn_jax.input_pipeline import SubjectBatch, Subjects, iterate_batches
from stgnn_jax.nn.model import GraphEncoder
from stgnn_jax.train.checkpoints import load_checkpoint, save_checkpoint
from stgnn_jax.train.optimizer import (
    create_optimizer,
    plateau_scheduler,
    plateau_step,
    set_learning_rate,
)
from stgnn_jax.train.state import (
    check_encoder_fits,
    init_params,
    input_statistics,
    replace_encoder,
    with_input_statistics,
)

logger = logging.getLogger(__name__)

# The reference's pretraining optimiser: its own learning rate, L2, patience and floor; the
# rest (the plateau on balanced accuracy) as in its main training.
PRETRAIN_OPTIM = OptimConfig.reference(lr=1e-3, weight_decay=1e-5, plateau_patience=5,
                                       min_lr=1e-5)
PRETRAIN_BATCH = 32
HEAD_HIDDEN = 128
HEAD_DROPOUT = 0.3


class EncoderClassifier(nn.Module):
  """GraphEncoder + the pretraining head: one logit row per graph."""

  config: ModelConfig

  @nn.compact
  def __call__(self, batch: SubjectBatch, *, deterministic: bool) -> jax.Array:
    embedding = GraphEncoder(self.config, name="encoder")(
        batch.graphs, batch.time, deterministic=deterministic)
    h = nn.relu(nn.Dense(HEAD_HIDDEN, name="head_0")(embedding))
    h = nn.Dropout(HEAD_DROPOUT)(h, deterministic=deterministic)
    return nn.Dense(2, name="head_3")(h)


def _scan_batches(adjacency, labels, time, features, order):
  # Each scan is packed as a one-visit "subject", so graph g of a batch is scan g.
  return iterate_batches(adjacency, labels, time, batch_size=PRETRAIN_BATCH, max_visits=1,
                         graph_multiple=PRETRAIN_BATCH, order=order, features=features)


def pretrain_encoder(model_config: ModelConfig, adjacency: Sequence[np.ndarray],
                     labels: np.ndarray, time: np.ndarray | None, subject_indices: np.ndarray,
                     *, epochs: int, seed: int, key: jax.Array,
                     features: Sequence[np.ndarray] | None = None) -> Any:
  """Pretrains a `GraphEncoder` on the scans of `subject_indices`; returns its params.

  `features`: per subject `[visits, N, F]` node features (None: one-hot).

  The encoder with the best validation accuracy (over the 20% held-out scans) is returned.
  """
  from sklearn.model_selection import train_test_split

  scans = [a[None] for i in subject_indices for a in adjacency[i]]
  scan_features = (None if features is None else
                   [f[None] for i in subject_indices for f in features[i]])
  scan_labels = np.array([labels[i] for i in subject_indices for _ in adjacency[i]], np.int32)
  scan_time = (None if time is None else
               np.array([time[i] for i in subject_indices for _ in adjacency[i]], np.float32))
  train, val = train_test_split(np.arange(len(scans)), test_size=0.2, stratify=scan_labels,
                                random_state=seed)
  model = EncoderClassifier(model_config)
  first = next(_scan_batches(scans, scan_labels, scan_time, scan_features, train))
  params = model.init(jax.random.fold_in(key, 0), first, deterministic=True)["params"]
  fixed_inputs = model_config.explicit_node_features
  if fixed_inputs:
    assert scan_features is not None  # explicit node features come with the subjects' features
    params = with_input_statistics(params, input_statistics([scan_features[i] for i in train]))
  tx = create_optimizer(PRETRAIN_OPTIM, fixed_inputs=fixed_inputs)
  opt_state = tx.init(params)
  plateau_state = plateau_scheduler(PRETRAIN_OPTIM).init(jnp.zeros(()))

  @jax.jit
  def step(params, opt_state, batch, rng):
    def loss_fn(p):
      logits = model.apply({"params": p}, batch, deterministic=False, rngs={"dropout": rng})
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch.labels)
      return jnp.sum(jnp.where(batch.subject_mask, ce, 0)) / batch.subject_mask.sum()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def correct(params, batch):
    logits = model.apply({"params": params}, batch, deterministic=True)
    return jnp.sum((logits.argmax(-1) == batch.labels) & batch.subject_mask)

  best_acc, best = -1.0, params["encoder"]
  for epoch in range(epochs):
    order = np.random.default_rng([seed, 7, epoch]).permutation(train)
    for b, batch in enumerate(_scan_batches(scans, scan_labels, scan_time, scan_features, order)):
      rng = jax.random.fold_in(jax.random.fold_in(key, epoch + 1), b)
      params, opt_state, _ = step(params, opt_state, batch, rng)
    hits = sum(int(correct(params, batch))
               for batch in _scan_batches(scans, scan_labels, scan_time, scan_features, val))
    acc = hits / len(val)
    plateau_state = plateau_step(PRETRAIN_OPTIM, plateau_state, -acc)
    opt_state = set_learning_rate(opt_state, PRETRAIN_OPTIM.lr * plateau_state.scale)
    if acc > best_acc:
      best_acc, best = acc, params["encoder"]
  logger.info("encoder pretraining: %d training / %d validation scans, best validation "
              "accuracy %.3f", len(train), len(val), best_acc)
  return best


def load_encoder(params: Any, model_config: ModelConfig, run: RunConfig, subjects: Subjects,
                 train_idx: np.ndarray, fold_dir: str, key: jax.Array) -> Any:
  """Applies --pretrained (a file) or --pretrain_encoder (on this fold's training subjects)."""
  if run.pretrained:
    encoder = read_pretrained_encoder(run.pretrained, model_config,
                                      trust_checkpoint=run.trust_checkpoint)
    logger.info("loaded the pretrained encoder %s", run.pretrained)
    return replace_encoder(params, encoder)
  if run.pretrain_encoder:
    path = os.path.join(fold_dir, "pretrained_encoder.msgpack")
    if os.path.exists(path):
      encoder = load_checkpoint(path)[0]["encoder"]
    else:
      encoder = pretrain_encoder(
          model_config, subjects.adjacency, subjects.labels, subjects.time, train_idx,
          epochs=run.pretrain_epochs, seed=run.seed, key=jax.random.fold_in(key, 2),
          features=subjects.features)
      save_checkpoint(path, {"encoder": encoder}, model_config, kind="pretrained_encoder")
    return replace_encoder(params, encoder)
  return params


# The ModelConfig fields that shape or drive the graph encoder.
ENCODER_FIELDS = ("input_dim", "node_features", "layer_type", "gnn_hidden_dim", "output_dim",
                  "gnn_num_layers", "gnn_activation", "gnn_dropout", "input_dropout",
                  "graph_norm", "use_topk_pooling", "topk_ratio", "readout", "readout_node_dim",
                  "use_time_features")


def read_pretrained_encoder(path: str, model_config: ModelConfig, *,
                            trust_checkpoint: bool = False):
  """Encoder params from a stgnn-jax checkpoint or a reference PyTorch `.pth` file.

  A stgnn-jax checkpoint stores the `ModelConfig` it was trained with: a difference in an
  encoder setting (e.g. the activation) is warned about, and the encoder is used with this run's.
  """
  if path.endswith((".pth", ".pt")):
    from stgnn_jax.torch_interop.convert import params_from_torch

    return params_from_torch(path, model_config, trust_checkpoint=trust_checkpoint)["encoder"]
  params, stored, _ = load_checkpoint(path)
  if "encoder" not in params:
    raise InputError(f"--pretrained {path}: holds no encoder parameters.")
  differ = [f"{name}={getattr(stored, name)!r} (this run: {getattr(model_config, name)!r})"
            for name in ENCODER_FIELDS if getattr(stored, name) != getattr(model_config, name)]
  if differ:
    warnings.warn(f"--pretrained {path}: its encoder was trained with " + ", ".join(differ)
                  + "; it is used with this run's settings.", stacklevel=2)
  return params["encoder"]


def check_pretrained_encoder(run: RunConfig, model_config: ModelConfig,
                             batch: SubjectBatch) -> None:
  """Reads --pretrained and checks that it fits the model of `batch`'s shapes, before any
  training (the folds load it again)."""
  assert run.pretrained is not None, "check_pretrained_encoder needs --pretrained"
  expected = jax.eval_shape(init_params, model_config, batch, jax.random.key(0))["encoder"]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the folds' reads warn about config differences
    encoder = read_pretrained_encoder(run.pretrained, model_config,
                                      trust_checkpoint=run.trust_checkpoint)
  check_encoder_fits(expected, encoder)
