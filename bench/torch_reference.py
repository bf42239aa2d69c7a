"""The reference STGNN in PyTorch + PyTorch Geometric, written from
../shared/reference/original-stgnn.md.

Test and benchmark code only (the parity tests import it from bench/): the packages never
import it. PyG's own layer classes are the ground truth for the layers; the encoder stack, the
time fusion and the temporal classifier follow the reference page's description (module names
give its state-dict keys).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import (
    GATConv,
    GCNConv,
    GraphNorm,
    SAGEConv,
    TopKPooling,
    global_max_pool,
    global_mean_pool,
)

from stgnn_jax.config import ModelConfig, OptimConfig
from stgnn_jax.torch_interop.convert import params_from_torch


class SeedFocalLoss(torch.nn.Module):
  """The seed's FocalLoss (its documentation, FocalLoss.py lines 5-32), for the parity tests
  and the benchmark."""

  def __init__(self, alpha=0.25, gamma=2.0, reduction="mean",
               label_smoothing=0.0):
    super().__init__()
    self.alpha = alpha
    self.gamma = gamma
    self.reduction = reduction
    self.label_smoothing = label_smoothing

  def forward(self, inputs, targets):
    if self.label_smoothing > 0:
      # The seed has .float(); the same in float32, and it keeps the float64
      # reference in float64.
      targets_one_hot = F.one_hot(
          targets, num_classes=inputs.size(1)).to(inputs.dtype)
      targets_one_hot = (targets_one_hot * (1 - self.label_smoothing)
                         + self.label_smoothing / inputs.size(1))
      ce_loss = -torch.sum(targets_one_hot * F.log_softmax(inputs, dim=1),
                           dim=1)
    else:
      ce_loss = F.cross_entropy(inputs, targets, reduction="none")
    pt = torch.exp(-ce_loss)
    alpha_t = torch.where(targets == 1, self.alpha, 1 - self.alpha)
    focal_loss = alpha_t * (1 - pt) ** self.gamma * ce_loss
    if self.reduction == "mean":
      return focal_loss.mean()
    if self.reduction == "sum":
      return focal_loss.sum()
    return focal_loss


def minority_forcing(logits: torch.Tensor, targets: torch.Tensor, epoch: int,
                     focus_epochs: int) -> torch.Tensor:
  """The reference's 0.1 (M - epoch) / M * CE(converters' logits, class 1), 0-based epochs."""
  converters = targets == 1
  if epoch >= focus_epochs or not bool(converters.any()):
    return logits.new_zeros(())
  weight = 0.1 * (focus_epochs - epoch) / focus_epochs
  return weight * F.cross_entropy(logits[converters], targets[converters])


def adam_like(parameters, optim: OptimConfig) -> torch.optim.Adam:
  """torch's Adam with our optimiser's settings: L2 added to the gradient (`weight_decay`, not
  AdamW's decoupled decay), as `train.optimizer` and the reference."""
  return torch.optim.Adam(parameters, lr=optim.lr, betas=(optim.adam_b1, optim.adam_b2),
                          eps=optim.adam_eps, weight_decay=optim.weight_decay)


ACTIVATIONS = {"relu": F.relu, "leaky_relu": F.leaky_relu, "elu": F.elu, "gelu": F.gelu}


def make_conv(layer_type: str, in_dim: int, out_dim: int) -> nn.Module:
  if layer_type == "GraphSAGE":
    return SAGEConv(in_dim, out_dim)
  if layer_type == "GCN":
    return GCNConv(in_dim, out_dim)
  if layer_type == "GAT":
    return GATConv(in_dim, out_dim, heads=1)
  raise ValueError(layer_type)


class TorchGraphEncoder(nn.Module):
  """conv -> GraphNorm -> activation -> dropout -> TopK, per block; mean || max readout."""

  def __init__(self, input_dim=100, hidden_dim=256, output_dim=256, num_layers=2,
               layer_type="GraphSAGE", activation="elu", dropout=0.2, use_topk_pooling=True,
               topk_ratio=0.3, use_time_features=False):
    super().__init__()
    widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
    self.convs = nn.ModuleList(
        make_conv(layer_type, i, o) for i, o in itertools.pairwise(widths))
    self.gns = nn.ModuleList(GraphNorm(o) for o in widths[1:])
    self.use_topk_pooling = use_topk_pooling
    if use_topk_pooling:
      ratio = min(max(topk_ratio, 0.3), 1.0)
      self.topk_pools = nn.ModuleList(TopKPooling(o, ratio=ratio) for o in widths[1:])
    self.activation = ACTIVATIONS[activation]
    self.dropout = dropout
    self.use_time_features = use_time_features
    if use_time_features:
      self.time_projection = nn.Sequential(
          nn.Linear(1, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 32))
      self.fusion_layer = nn.Sequential(
          nn.Linear(2 * output_dim + 32, 2 * output_dim), nn.ReLU(), nn.Dropout(dropout))

  def forward(self, x, edge_index, batch, num_graphs, time=None):
    for i, conv in enumerate(self.convs):
      x = conv(x, edge_index)
      x = self.gns[i](x, batch)
      x = self.activation(x)
      x = F.dropout(x, self.dropout, self.training)
      if self.use_topk_pooling:
        x, edge_index, _, batch, _, _ = self.topk_pools[i](x, edge_index, batch=batch)
    embedding = torch.cat([global_mean_pool(x, batch, num_graphs),
                           global_max_pool(x, batch, num_graphs)], dim=-1)
    if self.use_time_features:
      t = self.time_projection(time[:, None])
      embedding = self.fusion_layer(torch.cat([embedding, t], dim=-1))
    return embedding


class TorchTemporalClassifier(nn.Module):
  """LSTM/GRU/RNN over packed sequences, then Linear -> ReLU -> Dropout -> Linear."""

  def __init__(self, input_dim=512, hidden_dim=64, num_layers=1, model_type="LSTM",
               bidirectional=True, dropout=0.45, num_classes=2):
    super().__init__()
    rnn_type = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}[model_type]
    self.model_type = model_type
    self.bidirectional = bidirectional
    rnn = rnn_type(input_dim, hidden_dim, num_layers, batch_first=True,
                   bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
    setattr(self, model_type.lower(), rnn)
    directions = 2 if bidirectional else 1
    self.classifier = nn.Sequential(
        nn.Linear(hidden_dim * directions, 64), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(64, num_classes))

  def forward(self, sequences, lengths):
    rnn = getattr(self, self.model_type.lower())
    packed = nn.utils.rnn.pack_padded_sequence(
        sequences, lengths.cpu(), batch_first=True, enforce_sorted=False)
    _, hidden = rnn(packed)
    if self.model_type == "LSTM":
      hidden = hidden[0]
    features = torch.cat([hidden[-2], hidden[-1]], -1) if self.bidirectional else hidden[-1]
    return self.classifier(features)


class TorchSTGNN(nn.Module):
  """Encoder over every visit's graph, scatter to [subjects, visits, 512], classifier."""

  def __init__(self, config):
    super().__init__()
    self.encoder = TorchGraphEncoder(
        config.input_dim, config.gnn_hidden_dim, config.output_dim, config.gnn_num_layers,
        config.layer_type, config.gnn_activation, config.gnn_dropout, config.use_topk_pooling,
        config.topk_ratio, config.use_time_features)
    self.classifier = TorchTemporalClassifier(
        config.embedding_dim, config.lstm_hidden_dim, config.lstm_num_layers, config.model_type,
        config.bidirectional, config.classifier_dropout, config.num_classes)

  def forward(self, x, edge_index, batch, num_graphs, subject, visit, lengths, time=None):
    embedding = self.encoder(x, edge_index, batch, num_graphs, time)
    sequences = embedding.new_zeros((len(lengths), int(lengths.max()), embedding.shape[-1]))
    sequences = sequences.index_put((subject, visit), embedding)
    return self.classifier(sequences, lengths)


def pyg_batch(adjacency_per_subject, time=None, features=None):
  """Subjects' bool adjacency stacks -> PyG tensors (x, edge_index, batch, subject, visit...).

  Node features are one-hot region indices, or with `features` (per subject `[visits, N, F]`)
  those; an edge j -> i exists where adjacency[i, j].
  """
  xs, edges, batch, subject, visit, times = [], [], [], [], [], []
  offset, g = 0, 0
  for s, stack in enumerate(adjacency_per_subject):
    for v, adjacency in enumerate(stack):
      n = adjacency.shape[0]
      receivers, senders = np.nonzero(adjacency)
      edges.append(np.stack([senders, receivers]) + offset)
      xs.append(np.eye(n, dtype=np.float32) if features is None
                else np.asarray(features[s][v], np.float32))
      batch.append(np.full(n, g))
      subject.append(s)
      visit.append(v)
      times.append(0.0 if time is None else time[s])
      offset += n
      g += 1
  return dict(
      x=torch.from_numpy(np.concatenate(xs)),
      edge_index=torch.from_numpy(np.concatenate(edges, axis=1)).long(),
      batch=torch.from_numpy(np.concatenate(batch)).long(),
      num_graphs=g,
      subject=torch.tensor(subject),
      visit=torch.tensor(visit),
      lengths=torch.tensor([len(a) for a in adjacency_per_subject]),
      time=torch.tensor(times, dtype=torch.float32))


# --- Shared by the tests: small configs and random params through the converter -----------------

# Small enough to compile in seconds, large enough for every layer to matter.
SMALL = dict(input_dim=24, gnn_hidden_dim=16, output_dim=12, lstm_hidden_dim=8)


def torch_model(config: ModelConfig, seed: int = 0) -> TorchSTGNN:
  torch.manual_seed(seed)
  model = TorchSTGNN(config)
  with torch.no_grad():  # non-trivial GraphNorm/TopK parameters, not just their init values
    for name, p in model.named_parameters():
      if name.endswith(("mean_scale", "gns.0.weight", "gns.1.weight")):
        p.uniform_(0.5, 1.5)
  return model.eval()


def checkpoint_of(model: TorchSTGNN) -> dict:
  return {"encoder": model.encoder.state_dict(), "classifier": model.classifier.state_dict(),
          "epoch": 3, "val_results": {"auc": 0.5}}


def params_for(config: ModelConfig, seed: int = 0) -> dict:
  """Random params via the reference module and the converter (much faster than an eager init)."""
  return params_from_torch(checkpoint_of(torch_model(config, seed)), config)
