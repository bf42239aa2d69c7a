"""The model's hyper-parameters, named after the reference's command-line flags."""

from __future__ import annotations

import dataclasses
import warnings

LAYER_TYPES = ("GraphSAGE", "GCN", "GAT")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu")
MODEL_TYPES = ("LSTM", "GRU", "RNN")
# "onehot": region index (the reference); "connection_profile": the region's row of thresholded FC
# values (BrainGB's connection profile), the only way the encoder sees connection strengths.
NODE_FEATURES = ("onehot", "connection_profile", "profile_change")
# "meanmax": mean ‖ max over the kept nodes (the reference); "concat": every region's features in
# atlas order (BrainGB's concatenation readout), so the embedding keeps where a change happened.
READOUTS = ("meanmax", "concat")
# Choices of the training recipe (OptimConfig, RunConfig), here so that train.py's flags offer
# exactly them without importing JAX.
PLATEAU_METRICS = ("balanced_acc", "auc", "loss")
DECISION_THRESHOLDS = ("val", "argmax")
SELECTION_RULES = ("auc", "auc_loss")
# The reference clamps --topk_ratio into this range before building its TopK layers.
TOPK_RATIO_RANGE = (0.3, 1.0)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of the STGNN; field names and defaults are the reference's.

  Attributes:
    input_dim: node feature size; both kinds of node features have one entry per region, so this
      is the atlas size (100 in the reference).
    node_features: "onehot" (the reference: region i's feature is e_i, the encoder sees only
      which edges exist), "connection_profile" (region i's feature is its row of the
      thresholded FC matrix, `data.threshold_fc`: the encoder also sees connection strengths) or
      "profile_change" (that row beside its change since the subject's first input visit,
      `data.connection_features`: a change over visits is an input, not something the recurrent
      classifier must learn to compute). Both explicit kinds are standardised per entry.
    layer_type: graph convolution, one of "GraphSAGE", "GCN", "GAT".
    gnn_hidden_dim: width of the hidden graph layers.
    output_dim: width of the last graph layer; the graph embedding is `2 * output_dim` (mean and
      max readout).
    gnn_num_layers: number of conv -> GraphNorm -> activation -> dropout [-> TopK] blocks.
    gnn_activation: "relu", "leaky_relu", "elu" or "gelu".
    gnn_dropout: dropout after each block's activation (also used in the time projection and
      the fusion layer).
    input_dropout: dropout on the (standardised) node features before the first convolution;
      on connection profiles it drops single FC entries, a noise regulariser akin to a linear
      model's L2 penalty on standardised features. 0 in the reference.
    graph_norm: GraphNorm after each convolution (the reference). GraphNorm rescales every
      feature per graph, which also divides out a change in connection strength.
    use_topk_pooling: TopK pooling after each block.
    topk_ratio: fraction of nodes TopK keeps; like the reference it is clamped to [0.3, 1.0]
      (`effective_topk_ratio`), with a warning when that changes the value. PyTorch Geometric reads
      a ratio of exactly 1.0 as an absolute count (one node per graph); that quirk is kept for
      parity and warned about.
    readout: "meanmax" (the reference: mean ‖ max over the nodes, `2 * output_dim` wide) or
      "concat" (each region's last-layer features projected to `readout_node_dim` and
      concatenated in atlas order, `node_slots * readout_node_dim` wide; needs
      use_topk_pooling=False, since pooling keeps different regions in different graphs).
    readout_node_dim: per-region width of the "concat" readout.
    use_time_features: fuse a per-visit time feature into each graph embedding.
    model_type: temporal classifier, "LSTM", "GRU" or "RNN" (tanh).
    lstm_hidden_dim: hidden size of the recurrent layers.
    lstm_num_layers: number of stacked recurrent layers.
    lstm_bidirectional: bidirectional recurrence. None keeps the reference's behaviour
      (bidirectional LSTM, unidirectional GRU and RNN); True or False applies to all three.
    lstm_dropout: dropout between stacked recurrent layers.
    classifier_dropout: dropout in the classification head.
    num_classes: number of output classes (2: stable, converter).
    freeze_encoder: treat the graph embeddings as constants (`jax.lax.stop_gradient`), as the
      reference's main training does; the default trains the encoder end to end.
    max_nodes: node slots per graph when the model is given `jraph.GraphsTuple`s; None means
      `input_dim` (one node per atlas region).
  """

  input_dim: int = 100
  node_features: str = "onehot"
  layer_type: str = "GraphSAGE"
  gnn_hidden_dim: int = 256
  output_dim: int = 256
  gnn_num_layers: int = 2
  gnn_activation: str = "elu"
  gnn_dropout: float = 0.2
  input_dropout: float = 0.0
  graph_norm: bool = True
  use_topk_pooling: bool = True
  topk_ratio: float = 0.3
  readout: str = "meanmax"
  readout_node_dim: int = 8
  use_time_features: bool = False
  model_type: str = "LSTM"
  lstm_hidden_dim: int = 64
  lstm_num_layers: int = 1
  lstm_bidirectional: bool | None = None
  lstm_dropout: float = 0.45
  classifier_dropout: float = 0.45
  num_classes: int = 2
  freeze_encoder: bool = False
  max_nodes: int | None = None

  def __post_init__(self):
    def fail(field: str, problem: str, fix: str):
      raise ValueError(f"ModelConfig.{field}={getattr(self, field)!r}: {problem}; {fix}.")

    if self.layer_type not in LAYER_TYPES:
      fail("layer_type", "unknown graph layer", f"use one of {', '.join(LAYER_TYPES)}")
    if self.gnn_activation not in ACTIVATIONS:
      fail("gnn_activation", "unknown activation", f"use one of {', '.join(ACTIVATIONS)}")
    if self.node_features not in NODE_FEATURES:
      fail("node_features", "unknown node features", f"use one of {', '.join(NODE_FEATURES)}")
    if self.readout not in READOUTS:
      fail("readout", "unknown readout", f"use one of {', '.join(READOUTS)}")
    if self.readout == "concat" and self.use_topk_pooling:
      fail("readout", "the concat readout needs every region in atlas order",
           "set use_topk_pooling=False with it (--no-use_topk_pooling)")
    if self.model_type not in MODEL_TYPES:
      fail("model_type", "unknown temporal model", f"use one of {', '.join(MODEL_TYPES)}")
    for name in ("input_dim", "gnn_hidden_dim", "output_dim", "gnn_num_layers",
                 "lstm_hidden_dim", "lstm_num_layers", "readout_node_dim"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        fail(name, "must be a positive integer", "pass an int >= 1")
    if not isinstance(self.num_classes, int) or self.num_classes < 2:
      fail("num_classes", "must be an integer >= 2", "pass 2 for stable/converter")
    if self.max_nodes is not None and (not isinstance(self.max_nodes, int) or self.max_nodes < 1):
      fail("max_nodes", "must be None or a positive integer", "pass the largest graph size")
    for name in ("gnn_dropout", "input_dropout", "lstm_dropout", "classifier_dropout"):
      if not 0.0 <= getattr(self, name) < 1.0:
        fail(name, "dropout rate outside [0, 1)", "pass a rate such as 0.2")
    if not 0.0 < self.topk_ratio <= 1.0:
      fail("topk_ratio", "ratio outside (0, 1]", "pass a fraction of nodes to keep, e.g. 0.3")
    if self.use_topk_pooling and self.effective_topk_ratio != self.topk_ratio:
      warnings.warn(
          f"topk_ratio={self.topk_ratio} is clamped to {self.effective_topk_ratio} as in the "
          "reference (TopK keeps between 30% and 100% of the nodes).", stacklevel=3)
    if self.use_topk_pooling and self.effective_topk_ratio >= 1.0:
      warnings.warn(
          "topk_ratio=1.0: PyTorch Geometric's TopKPooling reads a ratio >= 1 as a node count, so "
          "each graph keeps ONE node (kept for parity with the reference). To keep every node, "
          "set use_topk_pooling=False.", stacklevel=3)

  @property
  def effective_topk_ratio(self) -> float:
    low, high = TOPK_RATIO_RANGE
    return min(max(self.topk_ratio, low), high)

  @property
  def bidirectional(self) -> bool:
    if self.lstm_bidirectional is None:
      return self.model_type == "LSTM"
    return self.lstm_bidirectional

  @property
  def num_directions(self) -> int:
    return 2 if self.bidirectional else 1

  @property
  def node_slots(self) -> int:
    return self.input_dim if self.max_nodes is None else self.max_nodes

  @property
  def node_feature_dim(self) -> int:
    """Width of one region's input features: one entry per region, two with their change."""
    return 2 * self.input_dim if self.node_features == "profile_change" else self.input_dim

  @property
  def explicit_node_features(self) -> bool:
    """Whether the graphs carry node features (standardised in the encoder) or are one-hot."""
    return self.node_features != "onehot"

  @property
  def embedding_dim(self) -> int:
    """Width of one visit's graph embedding: mean and max readout of the last layer, or the
    concatenated per-region projections."""
    if self.readout == "concat":
      return self.node_slots * self.readout_node_dim
    return 2 * self.output_dim

  def layer_dims(self) -> list[tuple[int, int]]:
    """(in, out) of each graph convolution: in -> hidden -> ... -> hidden -> out."""
    widths = [self.node_feature_dim] + [self.gnn_hidden_dim] * (self.gnn_num_layers - 1)
    widths.append(self.output_dim)
    return list(zip(widths[:-1], widths[1:]))

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict) -> "ModelConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"ModelConfig: unknown field(s) {unknown}; known fields are {sorted(known)}.")
    return cls(**values)
