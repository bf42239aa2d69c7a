"""The model's settings: `ModelConfig`, the STGNN's architecture."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from stgnn_jax.config.fields import Settings, check_fields, positive_int, setting, warn_once

LAYER_TYPES = ("GraphSAGE", "GCN", "GAT")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu")
MODEL_TYPES = ("LSTM", "GRU", "RNN")
# "onehot": region index (the reference); "connection_profile": the region's row of thresholded FC
# values (BrainGB's connection profile), the only way the encoder sees connection strengths.
NODE_FEATURES = ("onehot", "connection_profile", "profile_change")
# "meanmax": mean ‖ max over the kept nodes (the reference); "concat": every region's features in
# atlas order (BrainGB's concatenation readout), so the embedding keeps where a change happened.
READOUTS = ("meanmax", "concat")
# How the linear path takes the change since the first visit (`train.linear_path`).
LINEAR_PATH_CHANGE = ("evidence", "never", "always")
NETWORK_GATES = ("evidence", "always", "never")
# The reference clamps --topk_ratio into this range before building its TopK layers.
TOPK_RATIO_RANGE = (0.3, 1.0)


@dataclasses.dataclass(frozen=True)
class ModelConfig(Settings):
  """Architecture of the STGNN: field names are the reference's, defaults train.py's recipe
  (README, "Differences from the reference"); `ModelConfig.reference()` is the reference's.

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
    linear_path: add a linear function of the last visit's node features (standardised, before
      input dropout) to the classifier's logits (`nn.model.LinearPath`): a logistic regression
      on the last scan, fitted per fold (`train.linear_path`), beside the graph path. Needs
      explicit node features and a trained encoder. False in the reference.
    linear_path_change: how the path takes the change since the first visit, with
      profile_change node features: "evidence" (the last scan's regression and the regression
      on the last scan beside the change, mixed by the training subjects' cross-fitted DeLong
      evidence that the second ranks better), "never" or "always".
    network_gate: with linear_path, which model a fold tests: "evidence" (the trained network
      beside the path only when its validation AUC beats the path alone's by DeLong's paired
      z >= `train.linear_path.NETWORK_MIN_Z`, else the path alone), "always" (the selected
      epoch, whatever the path alone scores) or "never" (the path alone: the fitted
      regression).
      regression).
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
  node_features: str = setting(
      "profile_change", "profile_change: each region's row of thresholded FC values beside its "
      "change since the subject's first visit; connection_profile: the row only; onehot: the "
      "region index (the reference: only which edges exist)",
      group="model", choices=NODE_FEATURES, reference="onehot")
  layer_type: str = setting("GraphSAGE", "graph convolution", group="model", choices=LAYER_TYPES)
  gnn_hidden_dim: int = setting(256, "width of the hidden graph layers", group="model")
  output_dim: int = 256
  gnn_num_layers: int = setting(1, "graph convolution blocks (the reference: 2)", group="model",
                                reference=2)
  gnn_activation: str = setting("elu", "activation of the graph blocks", group="model",
                                choices=ACTIVATIONS)
  gnn_dropout: float = 0.2
  input_dropout: float = setting(
      0.5, "dropout on the standardised connection-profile entries before the first graph "
      "layer (the reference: 0)", group="model", reference=0.0)
  graph_norm: bool = setting(
      False, "GraphNorm after each graph convolution (the reference: true; it rescales every "
      "feature per graph, dividing out changes in connection strength)", group="model",
      reference=True)
  use_topk_pooling: bool = setting(
      False, "TopK pooling after each graph layer (the reference: true)", group="model",
      reference=True)
  topk_ratio: float = setting(
      0.3, "fraction of nodes kept by TopK (clamped to [0.3, 1] as in the reference)",
      group="model")
  readout: str = setting(
      "concat", "graph embedding: every region's projected features in atlas order (needs "
      "--no-use_topk_pooling) or mean ‖ max over nodes (the reference)", group="model",
      choices=READOUTS, reference="meanmax")
  readout_node_dim: int = setting(8, "per-region width of the concat readout", group="model")
  use_time_features: bool = setting(False, "fuse the time-to-predict into the embeddings",
                                    group="model")
  linear_path: bool = setting(
      True, "add a linear function of the last visit's standardised node features to the "
      "logits (a logistic regression on the last scan beside the graph path; the reference: "
      "false)", group="model", reference=False)
  linear_path_change: str = setting(
      "evidence", "how the linear path takes the change since the first visit (profile_change "
      "node features): mixed with the last scan's regression by the training subjects' "
      "cross-fitted evidence that it ranks better (DeLong's z, weight Phi(z/2)), never (the "
      "last scan alone), or always", group="model", choices=LINEAR_PATH_CHANGE)
  network_gate: str = setting(
      "evidence", "with --linear_path, the model a fold tests: evidence (the trained network "
      "beside the path only if its validation AUC beats the path alone's by DeLong's paired "
      "z >= 1.645, one-sided p < 0.05; else the path alone), always (the selected epoch) or never "
      "(the path alone)", group="model", choices=NETWORK_GATES)
  model_type: str = setting("LSTM", "temporal classifier", group="model", choices=MODEL_TYPES)
  lstm_hidden_dim: int = setting(64, "hidden size of the recurrent layers", group="model")
  lstm_num_layers: int = setting(1, "stacked recurrent layers", group="model")
  lstm_bidirectional: bool | None = setting(
      None, "bidirectional recurrence; unset = the reference (LSTM bidirectional, GRU/RNN not)",
      group="model")
  lstm_dropout: float = 0.45
  classifier_dropout: float = 0.45
  num_classes: int = 2
  freeze_encoder: bool = setting(
      False, "the reference's behaviour: graph embeddings without gradient (the encoder never "
      "learns unless pretrained); by default the encoder trains end to end", group="model",
      reference=True)
  max_nodes: int | None = None

  MISSING_FIELDS_ARE_REFERENCE: ClassVar[bool] = True

  def __post_init__(self):
    check_fields(self, [
        ("layer_type", self.layer_type in LAYER_TYPES,
         f"is not a graph layer; use one of {', '.join(LAYER_TYPES)}"),
        ("gnn_activation", self.gnn_activation in ACTIVATIONS,
         f"is not an activation; use one of {', '.join(ACTIVATIONS)}"),
        ("node_features", self.node_features in NODE_FEATURES,
         f"is not a kind of node features; use one of {', '.join(NODE_FEATURES)}"),
        ("readout", self.readout in READOUTS,
         f"is not a readout; use one of {', '.join(READOUTS)}"),
        ("readout", not (self.readout == "concat" and self.use_topk_pooling),
         "needs every region in atlas order; set use_topk_pooling=False with it "
         "(--no-use_topk_pooling)"),
        ("model_type", self.model_type in MODEL_TYPES,
         f"is not a temporal model; use one of {', '.join(MODEL_TYPES)}"),
        *[(name, positive_int(getattr(self, name)), "must be a positive integer")
          for name in ("input_dim", "gnn_hidden_dim", "output_dim", "gnn_num_layers",
                       "lstm_hidden_dim", "lstm_num_layers", "readout_node_dim")],
        ("num_classes", positive_int(self.num_classes) and self.num_classes >= 2,
         "must be an integer >= 2 (2: stable, converter)"),
        ("max_nodes", self.max_nodes is None or positive_int(self.max_nodes),
         "must be None or a positive integer (the largest graph size)"),
        *[(name, 0.0 <= getattr(self, name) < 1.0, "is a dropout rate outside [0, 1)")
          for name in ("gnn_dropout", "input_dropout", "lstm_dropout", "classifier_dropout")],
        ("topk_ratio", 0.0 < self.topk_ratio <= 1.0,
         "is outside (0, 1]; pass the fraction of nodes to keep, e.g. 0.3"),
        ("linear_path", not self.linear_path or (
            self.explicit_node_features and not self.freeze_encoder),
         "needs explicit node features (connection_profile or profile_change) and a trained "
         "encoder; pass linear_path=False (--no-linear_path) with onehot or freeze_encoder"),
        ("linear_path_change", self.linear_path_change != "always"
         or self.node_features == "profile_change",
         "needs profile_change node features (the change since the first visit); pass "
         "--node_features profile_change or --linear_path_change never"),
        ("network_gate", self.network_gate == "evidence" or self.linear_path,
         "chooses between the network and the linear path: add --linear_path (or leave "
         "--network_gate out)"),
        ("input_dropout", self.input_dropout == 0 or self.explicit_node_features,
         "drops node-feature entries, but one-hot nodes have none; pass input_dropout=0 "
         "(--input_dropout 0) with node_features='onehot'"),
    ])
    if self.use_topk_pooling and self.effective_topk_ratio != self.topk_ratio:
      warn_once(
          f"topk_ratio={self.topk_ratio} is clamped to {self.effective_topk_ratio} as in the "
          "reference (TopK keeps between 30% and 100% of the nodes).")
    if self.use_topk_pooling and self.effective_topk_ratio >= 1.0:
      warn_once(
          "topk_ratio=1.0: PyTorch Geometric's TopKPooling reads a ratio >= 1 as a node count, so "
          "each graph keeps ONE node (kept for parity with the reference). To keep every node, "
          "set use_topk_pooling=False.")

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
    return list(zip(widths[:-1], widths[1:], strict=True))
