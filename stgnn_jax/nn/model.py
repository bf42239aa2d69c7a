"""The STGNN: a graph encoder per visit and a recurrent classifier over each subject's visits."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from stgnn_jax.config import ModelConfig
from stgnn_jax.nn.activations import activation
from stgnn_jax.nn.conv import CONV_TYPES
from stgnn_jax.nn.dropout import HashDropout
from stgnn_jax.nn.graphs import BatchArray, DenseGraphs, dense_graphs_from_jraph
from stgnn_jax.nn.norm import GraphNorm
from stgnn_jax.nn.pooling import TopKPool, readout
from stgnn_jax.nn.temporal import TemporalClassifier

TIME_HIDDEN_DIM = 16
TIME_EMBEDDING_DIM = 32


class InputStandardization(nn.Module):
  """`(x - mean) * scale` per (region, feature) entry, with statistics fixed from training scans.

  Connection-profile features are FC values whose spread differs from entry to entry, and a
  conversion signal can be a small shift of a few entries; standardising each entry over the
  training scans (as a linear model's `StandardScaler` does) puts every entry on the same
  footing. The statistics are parameters so that a checkpoint carries them, but they are
  constants here (`stop_gradient`) and left out of the optimiser
  (`train.optimizer.create_optimizer`); `train.state.input_statistics` computes them.
  Initialised to the identity (mean 0, scale 1).

  Params `mean`, `scale` `[N, F]`.
  """

  @nn.compact
  def __call__(self, nodes: BatchArray, node_mask: BatchArray) -> jax.Array:
    """`nodes [G, N, F]`, `node_mask [G, N]` -> `[G, N, F]`, padding slots 0."""
    shape = nodes.shape[-2:]
    mean = jax.lax.stop_gradient(self.param("mean", nn.initializers.zeros_init(), shape))
    scale = jax.lax.stop_gradient(self.param("scale", nn.initializers.ones_init(), shape))
    return jnp.where(node_mask[..., None], (nodes - mean) * scale, 0)


class GraphEncoder(nn.Module):
  """Embeds each graph of a batch: `[graphs, N, input_dim]` -> `[graphs, 2 * output_dim]`.

  Each block is conv -> GraphNorm -> activation -> dropout -> TopK (reference order); the readout
  concatenates the mean and the max over the kept nodes. With `use_time_features`, a scalar time
  per graph goes through Linear(1, 16) -> ReLU -> Dropout -> Linear(16, 32), is concatenated to the
  readout and fused back to `2 * output_dim` by Linear -> ReLU -> Dropout.

  Submodule names mirror the reference's state-dict prefixes (`convs_0` for `convs.0.`, ...).
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, graphs: DenseGraphs, time: BatchArray | None = None, *,
               deterministic: bool = True, return_inputs: bool = False
               ) -> jax.Array | tuple[jax.Array, BatchArray | None]:
    """`graphs` (nodes `[G, N, input_dim]`, or None for one-hot) -> `[G, embedding_dim]`; with
    `return_inputs`, also the standardised node features `[G, N, F]` (before input dropout),
    for the linear path."""
    cfg = self.config
    width = graphs.max_nodes if graphs.nodes is None else graphs.nodes.shape[-1]
    if width != cfg.node_feature_dim:
      raise ValueError(
          f"the graphs carry {width}-dimensional node features (one-hot features have one per "
          f"node slot) but the model expects {cfg.node_feature_dim} (ModelConfig.input_dim "
          f"{cfg.input_dim}, node_features {cfg.node_features!r}).")
    if cfg.explicit_node_features:
      if graphs.nodes is None:
        raise ValueError(f"node_features={cfg.node_features!r} but the graphs carry no node "
                         "features; pack them with features= (data.connection_features).")
      graphs = dataclasses.replace(graphs, nodes=InputStandardization(name="input_standardization")(
          graphs.nodes, graphs.node_mask))
    inputs = graphs.nodes
    if cfg.input_dropout:
      if graphs.nodes is None:
        raise ValueError("input_dropout needs explicit node features (connection_profile).")
      graphs = dataclasses.replace(graphs, nodes=HashDropout(cfg.input_dropout)(
          graphs.nodes, deterministic=deterministic))
    act = activation(cfg.gnn_activation)
    conv_type = CONV_TYPES[cfg.layer_type]
    for i, (_, out_dim) in enumerate(cfg.layer_dims()):
      x = conv_type(out_dim, name=f"convs_{i}")(graphs)
      dropout = HashDropout(cfg.gnn_dropout)
      if cfg.graph_norm:
        seed = None if deterministic or cfg.gnn_dropout == 0 else dropout.draw_seed()
        # GraphNorm -> activation -> dropout in one fused call; padding slots stay exactly 0.
        x = GraphNorm(name=f"gns_{i}")(x, graphs.node_mask, activation=act,
                                              dropout_rate=cfg.gnn_dropout, dropout_seed=seed)
      else:
        x = jnp.where(graphs.node_mask[..., None],
                      dropout(act(x), deterministic=deterministic), 0)
      graphs = dataclasses.replace(graphs, nodes=x)
      if cfg.use_topk_pooling:
        graphs, _, _ = TopKPool(cfg.effective_topk_ratio, name=f"topk_pools_{i}")(graphs)
    if cfg.readout == "concat":
      # Regions are aligned across subjects by the atlas, so their order carries meaning.
      nodes = nn.Dense(cfg.readout_node_dim, name="readout_projection")(graphs.nodes)
      nodes = jnp.where(graphs.node_mask[..., None], nodes, 0)
      embedding = nodes.reshape(nodes.shape[0], -1)
    else:
      embedding = readout(graphs)

    if cfg.use_time_features:
      if time is None:
        raise ValueError(
            "use_time_features=True but no time feature was given; pass `time` with one value "
            "per graph.")
      t = nn.Dense(TIME_HIDDEN_DIM, name="time_projection_0")(time[:, None].astype(embedding.dtype))
      t = HashDropout(cfg.gnn_dropout)(nn.relu(t), deterministic=deterministic)
      t = nn.Dense(TIME_EMBEDDING_DIM, name="time_projection_3")(t)
      fused = nn.Dense(cfg.embedding_dim, name="fusion_layer_0")(
          jnp.concatenate([embedding, t], axis=-1))
      embedding = HashDropout(cfg.gnn_dropout)(nn.relu(fused), deterministic=deterministic)
    if return_inputs:
      return embedding, inputs
    return embedding


class STGNN(nn.Module):
  """Graph encoder over every visit of a batch of subjects, then the temporal classifier.

  All graphs of the batch (every real visit of every subject, plus padding graphs) go through the
  encoder in one call; their embeddings are scattered to `[subjects, max_visits, 2 * output_dim]`
  and classified with packed-sequence semantics (`lengths`).

  With `linear_path`, a linear function of the last visit's node features (standardised, before
  input dropout; `LinearPath`) is added to the logits: a logistic regression on the last scan's
  connection values (and, with profile_change, on their change since the first visit), fitted
  per fold (`train.linear_path`), beside whatever the graph path learns.
  """

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.encoder = GraphEncoder(cfg)
    self.classifier = TemporalClassifier(
        model_type=cfg.model_type,
        hidden_dim=cfg.lstm_hidden_dim,
        num_layers=cfg.lstm_num_layers,
        bidirectional=cfg.bidirectional,
        rnn_dropout=cfg.lstm_dropout,
        head_dropout=cfg.classifier_dropout,
        num_classes=cfg.num_classes)
    if cfg.linear_path:
      self.linear_path = LinearPath(cfg.num_classes)

  def __call__(self, graphs: DenseGraphs | jraph.GraphsTuple, visit_slot: jax.Array,
               lengths: jax.Array, time: jax.Array | None = None, *, max_visits: int,
               deterministic: bool = True) -> jax.Array:
    """Logits `[subjects, num_classes]`.

    Args:
      graphs: `G` graphs, as `DenseGraphs` or a `jraph.GraphsTuple` (converted here with
        `ModelConfig.node_slots` node slots; padding graphs are harmless).
      visit_slot: `[G]` int, `subject * max_visits + visit` for each graph (visit 0 = oldest kept
        visit), or `subjects * max_visits` (any value past the end, never negative) for padding
        graphs.
      lengths: `[subjects]` int, number of real visits per subject (0 for padding subjects).
      time: `[G]` float time feature per graph, needed when `use_time_features`.
      max_visits: static number of visit slots per subject.
      deterministic: disables dropout; otherwise an rng named "dropout" is required.
    """
    if not self.config.linear_path:
      embeddings = self.encode(graphs, time, deterministic=deterministic)
      sequences = scatter_visits(embeddings, visit_slot, lengths.shape[0], max_visits)
      return self.classifier(sequences, lengths, deterministic=deterministic)
    if isinstance(graphs, jraph.GraphsTuple):
      graphs = dense_graphs_from_jraph(graphs, self.config.node_slots)
    embeddings, inputs = self.encoder(graphs, time, deterministic=deterministic,
                                      return_inputs=True)
    # ModelConfig allows linear_path with explicit node features only, which the encoder has
    # standardised into a jax.Array.
    assert isinstance(inputs, jax.Array)
    sequences = scatter_visits(embeddings, visit_slot, lengths.shape[0], max_visits)
    logits = self.classifier(sequences, lengths, deterministic=deterministic)
    return logits + self.linear_path(inputs, visit_slot, lengths, max_visits)

  def encode(self, graphs: DenseGraphs | jraph.GraphsTuple, time: jax.Array | None = None, *,
             deterministic: bool = True) -> jax.Array:
    """Graph embeddings `[G, 2 * output_dim]`; constants when `freeze_encoder`."""
    if isinstance(graphs, jraph.GraphsTuple):
      graphs = dense_graphs_from_jraph(graphs, self.config.node_slots)
    embeddings = self.encoder(graphs, time, deterministic=deterministic)
    if self.config.freeze_encoder:
      # The reference computes embeddings under torch.no_grad() inside its data loader, so its
      # encoder never learns in the main training; this reproduces that on request.
      embeddings = jax.lax.stop_gradient(embeddings)
    return embeddings

  def classify_embedded(self, embeddings: jax.Array, visit_index: jax.Array, lengths: jax.Array,
                        *, deterministic: bool = True) -> jax.Array:
    """Logits `[subjects, num_classes]` from precomputed visit embeddings.

    Args:
      embeddings: `[rows, 2 * output_dim]`, e.g. `encode` of every scan of an epoch.
      visit_index: `[subjects, max_visits]` int, the row of each visit (any valid row at
        padding visits).
      lengths: `[subjects]` int, real visits per subject.
      deterministic: disables the classifier's dropout.
    """
    real = jnp.arange(visit_index.shape[1]) < lengths[:, None]
    sequences = jnp.where(real[..., None], embeddings[visit_index], 0)
    return self.classifier(sequences, lengths, deterministic=deterministic)


class LinearPath(nn.Module):
  """A linear function of each subject's last visit's node features: `[subjects, classes]`.

  The features are flattened (`N * F` per graph; padding node slots are 0), so this is a
  logistic regression's logit on the last scan's connection profiles. Its parameters (`kernel`
  `[N * F, classes]`, `bias`) are constants here (`stop_gradient`): `train.linear_path` fits them
  per fold as a penalised logistic regression. Zero-initialised (neutral).
  """

  num_classes: int

  @nn.compact
  def __call__(self, nodes: jax.Array, visit_slot: jax.Array, lengths: jax.Array,
               max_visits: int) -> jax.Array:
    flat = nodes.reshape(nodes.shape[0], -1)
    # Constants of the fold, fitted in closed form (train.linear_path), outside the optimiser.
    kernel = jax.lax.stop_gradient(self.param(
        "kernel", nn.initializers.zeros_init(), (flat.shape[-1], self.num_classes)))
    bias = jax.lax.stop_gradient(self.param(
        "bias", nn.initializers.zeros_init(), (self.num_classes,)))
    scores = flat @ kernel + bias
    per_visit = scatter_visits(scores, visit_slot, lengths.shape[0], max_visits)
    last = jnp.maximum(lengths - 1, 0)
    return per_visit[jnp.arange(lengths.shape[0]), last]


def scatter_visits(embeddings: jax.Array, visit_slot: jax.Array, num_subjects: int,
                   max_visits: int) -> jax.Array:
  """`[G, D]` graph embeddings -> `[subjects, max_visits, D]`; slots past the end are dropped."""
  flat = jnp.zeros((num_subjects * max_visits, embeddings.shape[-1]), embeddings.dtype)
  # Negative indices would wrap around, so padding graphs must point past the end.
  flat = flat.at[visit_slot].set(embeddings, mode="drop")
  return flat.reshape(num_subjects, max_visits, embeddings.shape[-1])
