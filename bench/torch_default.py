"""A PyTorch + PyG twin of train.py's default recipe: the model of `ModelConfig()` and the
training step of `OptimConfig()`, written from their definitions (README, "The default recipe,
and the reference's").

Test and benchmark code only (tests/stgnn_jax/train/test_default_twin.py checks it against
`train_step`; bench/train_bench.py times it): the packages never import it. Each piece follows the
documented formula, PyG's and torch's own classes wherever they exist:

  - node features: each region's row of the thresholded FC beside its change since the first
    visit (`data.connection_features`; computed on the host, the same arrays for both pipelines),
    standardised per (region, feature) entry, `(x - mean) * scale`, with the fold's statistics
    (buffers: outside the optimiser), then dropout (`input_dropout`);
  - encoder: PyG `SAGEConv` blocks (mean aggregation) -> activation -> dropout, no GraphNorm, no
    TopK, then the concatenation readout: every region's features through one
    `Linear(output_dim, readout_node_dim)`, concatenated in region order;
  - classifier: the reference's packed (Bi)LSTM and head (`TorchTemporalClassifier`);
  - linear path: `W x + b` of each subject's last visit's standardised features (before input
    dropout) flattened, added to the logits; `W, b` are buffers, fitted per fold
    (`train.linear_path`);
  - objective: the logits plus `(-offset / 2, offset / 2)` per subject (the linear path's
    cross-fitting correction of training subjects), the seed's focal loss (`SeedFocalLoss`, the
    fold's α) plus the reference's minority forcing (`minority_forcing`);
  - optimiser: `clip_grad_norm_(clip_norm)`, then `torch.optim.Adam(lr, betas, eps,
    weight_decay)` (an L2 term added to the gradient, not AdamW's decoupled decay) over the
    module's parameters, which leave out the buffers above.

`twin_state_dict` maps a JAX params tree of `STGNN(config)` to the twin's state dict
(`load_state_dict(strict=True)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.torch_reference import (
    ACTIVATIONS,
    SeedFocalLoss,
    TorchTemporalClassifier,
    adam_like,
    make_conv,
    minority_forcing,
)
from stgnn_jax.config import ModelConfig, OptimConfig
from stgnn_jax.torch_interop.layers import conv_params_to_torch
from stgnn_jax.torch_interop.temporal import temporal_params_to_torch


def check_twin_config(config: ModelConfig) -> None:
  """Raises ValueError naming the first setting of `config` the twin does not model: it is the
  default recipe's architecture (explicit node features, no GraphNorm, TopK or time features,
  the concatenation readout, a trained encoder)."""
  problems = [
      (not config.explicit_node_features, "node_features='onehot'"),
      (config.graph_norm, "graph_norm=True"),
      (config.use_topk_pooling, "use_topk_pooling=True"),
      (config.readout != "concat", f"readout={config.readout!r}"),
      (config.use_time_features, "use_time_features=True"),
      (config.freeze_encoder, "freeze_encoder=True"),
      # TorchTemporalClassifier has one dropout rate for between the layers and the head.
      (config.lstm_num_layers > 1 and config.lstm_dropout != config.classifier_dropout,
       "lstm_dropout != classifier_dropout with stacked layers"),
  ]
  for problem, setting in problems:
    if problem:
      raise ValueError(f"the default recipe's twin does not model {setting}")


class TorchProfileEncoder(nn.Module):
  """Standardise -> input dropout -> (conv -> activation -> dropout) per block -> concat readout.

  `forward(x [graphs * N, F], edge_index, num_graphs)` takes graphs of exactly N nodes each, in
  region order (a PyG batch without pooling), and returns the embeddings `[graphs, N * D]` and
  the standardised inputs `[graphs, N * F]` (before input dropout, for the linear path).
  """

  def __init__(self, config: ModelConfig):
    super().__init__()
    check_twin_config(config)
    shape = (config.node_slots, config.node_feature_dim)
    self.register_buffer("input_mean", torch.zeros(shape))
    self.register_buffer("input_scale", torch.ones(shape))
    self.convs = nn.ModuleList(make_conv(config.layer_type, i, o) for i, o in config.layer_dims())
    self.readout_projection = nn.Linear(config.output_dim, config.readout_node_dim)
    self.activation = ACTIVATIONS[config.gnn_activation]
    self.input_dropout = config.input_dropout
    self.dropout = config.gnn_dropout

  def forward(self, x: torch.Tensor, edge_index: torch.Tensor, num_graphs: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    regions = self.input_mean.shape[0]
    x = ((x.view(num_graphs, regions, -1) - self.input_mean) * self.input_scale)
    inputs = x.reshape(num_graphs, -1)
    x = F.dropout(x.reshape(num_graphs * regions, -1), self.input_dropout, self.training)
    for conv in self.convs:
      x = F.dropout(self.activation(conv(x, edge_index)), self.dropout, self.training)
    # Regions are aligned by the atlas: node r of every graph is region r.
    return self.readout_projection(x).view(num_graphs, -1), inputs


class TorchDefaultSTGNN(nn.Module):
  """Encoder over every visit's graph, scatter to `[subjects, visits, N * D]`, the recurrent
  classifier, plus the linear path of each subject's last visit.

  `forward` takes `pyg_batch(adjacency, features=...)`'s tensors (`batch` and `time` unused).
  """

  def __init__(self, config: ModelConfig):
    super().__init__()
    self.encoder = TorchProfileEncoder(config)
    self.classifier = TorchTemporalClassifier(
        config.embedding_dim, config.lstm_hidden_dim, config.lstm_num_layers, config.model_type,
        config.bidirectional, config.classifier_dropout, config.num_classes)
    self.linear_path = config.linear_path
    if config.linear_path:
      inputs = config.node_slots * config.node_feature_dim
      self.register_buffer("linear_path_weight", torch.zeros(config.num_classes, inputs))
      self.register_buffer("linear_path_bias", torch.zeros(config.num_classes))

  def forward(self, x, edge_index, batch, num_graphs, subject, visit, lengths, time=None):
    embedding, inputs = self.encoder(x, edge_index, num_graphs)
    sequences = embedding.new_zeros((len(lengths), int(lengths.max()), embedding.shape[-1]))
    sequences = sequences.index_put((subject, visit), embedding)
    logits = self.classifier(sequences, lengths)
    if not self.linear_path:
      return logits
    last = visit == lengths[subject] - 1
    path = F.linear(inputs[last], self.linear_path_weight, self.linear_path_bias)
    return logits + torch.zeros_like(logits).index_put((subject[last],), path)


class TorchDefaultStep:
  """The default recipe's optimiser step on the twin: `step(inputs, labels, offsets, epoch)`.

  The objective is `train.step`'s: focal loss (α the fold's, γ and smoothing of the epoch's
  stage) of the logits shifted by `(-offset / 2, offset / 2)`, plus the minority forcing of
  0-based `epoch`; then clipping and Adam with L2 over the model's parameters.
  """

  def __init__(self, model: TorchDefaultSTGNN, optim: OptimConfig, focal_alpha: float):
    if optim.loss != "focal":
      raise ValueError(f"the default recipe's twin trains the focal loss, not {optim.loss!r}")
    self.model = model
    self.optim = optim
    self.focal_alpha = focal_alpha
    self.optimizer = adam_like(model.parameters(), optim)

  def __call__(self, inputs: Mapping[str, Any], labels: torch.Tensor, offsets: torch.Tensor,
               epoch: int) -> dict[str, torch.Tensor]:
    """One step; returns the objective's `loss` and the `grad_norm` before clipping."""
    o = self.optim
    logits = self.model(**inputs)
    if self.model.linear_path:
      logits = logits + torch.stack([-offsets, offsets], dim=-1) / 2
    focal = SeedFocalLoss(self.focal_alpha, o.gamma_at(epoch),
                          label_smoothing=o.smoothing_at(epoch))
    loss = (focal(logits, labels)
            + minority_forcing(logits, labels, epoch, o.minority_focus_epochs))
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # torch divides by (norm + 1e-6), optax by the norm: a relative difference of 1e-6 / norm.
    grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.clip_norm)
    self.optimizer.step()
    return {"loss": loss.detach(), "grad_norm": grad_norm}


def twin_state_dict(params: Mapping[str, Any], config: ModelConfig) -> dict[str, torch.Tensor]:
  """`STGNN(config)` params (or any tree of that structure, e.g. Adam's moments) -> the
  `TorchDefaultSTGNN(config)` state dict: kernels `[in, out]` become weights `[out, in]`."""
  check_twin_config(config)
  encoder = params["encoder"]
  state = {"encoder.input_mean": encoder["input_standardization"]["mean"],
           "encoder.input_scale": encoder["input_standardization"]["scale"]}
  for i in range(config.gnn_num_layers):
    state.update(conv_params_to_torch(encoder[f"convs_{i}"], f"encoder.convs.{i}.",
                                      config.layer_type))
  projection = encoder["readout_projection"]
  state["encoder.readout_projection.weight"] = np.asarray(projection["kernel"]).T
  state["encoder.readout_projection.bias"] = projection["bias"]
  classifier = temporal_params_to_torch(
      params["classifier"], model_type=config.model_type, num_layers=config.lstm_num_layers,
      bidirectional=config.bidirectional)
  state.update({f"classifier.{key}": value for key, value in classifier.items()})
  if config.linear_path:
    state["linear_path_weight"] = np.asarray(params["linear_path"]["kernel"]).T
    state["linear_path_bias"] = params["linear_path"]["bias"]
  return {key: torch.from_numpy(np.array(value, np.float32, order="C"))
          for key, value in state.items()}
