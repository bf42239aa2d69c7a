"""Every setting of a run, declared once: the model, the optimisation and the protocol.

`ModelConfig` (architecture), `OptimConfig` (loss and optimiser) and `RunConfig` (data, protocol,
bookkeeping) are frozen dataclasses. A field that is a command-line flag of `train.py` carries
its flag in the field's metadata (`setting`): help text, choices, the command line's default
where it differs from the field's, and the reference's value where that differs from the
command line's. `train.py` builds its parser from these fields (`flag_fields`) and the
reference's recipe is read from them (`reference_overrides`), so nothing is declared twice.

`ModelConfig()` and `OptimConfig()` are the reference's architecture and optimiser (the parity
tests build them); `train.py`'s defaults are the recipe that learns on cohorts it was not tuned
to (README, "Differences from the reference"). This module imports no JAX.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from stgnn_jax.errors import ConfigError

LAYER_TYPES = ("GraphSAGE", "GCN", "GAT")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu")
MODEL_TYPES = ("LSTM", "GRU", "RNN")
# "onehot": region index (the reference); "connection_profile": the region's row of thresholded FC
# values (BrainGB's connection profile), the only way the encoder sees connection strengths.
NODE_FEATURES = ("onehot", "connection_profile", "profile_change")
# "meanmax": mean ‖ max over the kept nodes (the reference); "concat": every region's features in
# atlas order (BrainGB's concatenation readout), so the embedding keeps where a change happened.
READOUTS = ("meanmax", "concat")
PLATEAU_METRICS = ("balanced_acc", "auc", "loss")
# The seeds' comparison: the focal loss against cross-entropy, plain or class-weighted.
LOSSES = ("focal", "ce", "weighted_ce")
SCHEDULE_FORM = "VALUE@EPOCH pairs from epoch 0 on, epochs increasing, e.g. 1@0,2@20,3@60"
DECISION_THRESHOLDS = ("val", "argmax")
SELECTION_RULES = ("auc", "auc_loss")
TIME_NORMALIZATIONS = ("log", "minmax", "buckets", "raw")
# The reference clamps --topk_ratio into this range before building its TopK layers.
TOPK_RATIO_RANGE = (0.3, 1.0)
# The groups of train.py's --help, in order.
FLAG_GROUPS = ("data", "model", "training", "sweep")
# What `--sweep NAME=V1,V2,...` can vary within one vmapped program per fold: traced values of
# the loss and the optimiser, and the seed of the initialisation, dropout and batch order. Every
# other setting changes shapes, the architecture, the data or the protocol.
SWEEPABLE = ("focal_alpha", "focal_gamma", "label_smoothing", "loss", "lr", "weight_decay",
             "minority_focus_epochs", "seed")
# Named grids of `--sweep_grid`: "seeds" is the focal-loss seeds' tuning grid (48 members).
SWEEP_GRIDS = {"seeds": ("focal_alpha=0.1,0.25,0.5,0.75", "focal_gamma=0.5,1,2,3",
                         "label_smoothing=0,0.05,0.1")}

_UNSET = object()


def parse_bool(text: str) -> bool:
  """"true"/"false" and their usual spellings, for boolean flags."""
  value = text.strip().lower()
  if value in ("true", "t", "yes", "y", "1", "on"):
    return True
  if value in ("false", "f", "no", "n", "0", "off"):
    return False
  raise ValueError(f"expected true or false, got {text!r}")


def parse_alpha(text: str) -> float | str:
  """A focal α: a number, or "auto"."""
  if text.strip().lower() == "auto":
    return "auto"
  try:
    return float(text)
  except ValueError:
    raise ValueError(f"expected a number in [0, 1] or 'auto', got {text!r}") from None


def parse_schedule(text: str) -> tuple[tuple[int, float], ...]:
  """"1@0,2@20,3@60" -> ((0, 1.0), (20, 2.0), (60, 3.0)): a value from each epoch (0-based) on.

  Raises ValueError, showing the accepted form, unless the stages start at epoch 0 and their
  epochs increase.
  """
  stages = []
  for part in text.split(","):
    value, at, epoch = part.strip().partition("@")
    try:
      stages.append((int(epoch), float(value)))
    except ValueError:
      raise ValueError(f"{text!r} is not a schedule; expected {SCHEDULE_FORM}") from None
    if not at or not math.isfinite(stages[-1][1]):
      raise ValueError(f"{text!r} is not a schedule; expected {SCHEDULE_FORM}")
  epochs = [epoch for epoch, _ in stages]
  if epochs[0] != 0 or any(b <= a for a, b in zip(epochs, epochs[1:])):
    raise ValueError(f"{text!r}: the stages must start at epoch 0 and their epochs increase; "
                     f"expected {SCHEDULE_FORM}")
  return tuple(stages)


def schedule_value(schedule: tuple[tuple[int, float], ...], epoch: int) -> float:
  """The value of the last stage that has started by `epoch`."""
  return [value for start, value in schedule if start <= epoch][-1]


def parse_class_weights(text: str) -> tuple[float, ...]:
  """"1,3" -> (1.0, 3.0)."""
  try:
    return tuple(float(w) for w in text.split(","))
  except ValueError:
    raise ValueError(f"expected one weight per class, e.g. 1,3; got {text!r}") from None


def parse_sweep_axis(text: str) -> tuple[str, tuple[Any, ...]]:
  """"focal_gamma=1,2,3" -> ("focal_gamma", (1.0, 2.0, 3.0)): one axis of a sweep.

  Raises ValueError naming the problem: a setting outside `SWEEPABLE` (it would change shapes,
  the architecture, the data or the protocol), a value its flag would not take, a repeated value.
  """
  name, equals, values = text.partition("=")
  name = name.strip().lstrip("-")
  if not equals or not name:
    raise ValueError(f"{text!r} is not a sweep axis; expected NAME=V1,V2,... e.g. "
                     "focal_gamma=1,2,3")
  if name not in SWEEPABLE:
    if name not in _FLAG_FIELDS:
      raise ValueError(f"{name} is not a setting of train.py; sweepable: {', '.join(SWEEPABLE)}")
    if name in _MODEL_FIELDS:
      problem = "changes the model's architecture or shapes"
    else:
      problem = "changes the data, the batches or the protocol"
    raise ValueError(f"{name} cannot be swept: it {problem}, so its values cannot train in one "
                     f"program; run train.py once per value. Sweepable: {', '.join(SWEEPABLE)}")
  parse = {"focal_alpha": parse_alpha, "minority_focus_epochs": int, "seed": int,
           "loss": str}.get(name, float)
  parsed = []
  for value in values.split(","):
    try:
      parsed.append(parse(value.strip()))
    except ValueError:
      raise ValueError(f"{name}={values}: {value.strip()!r} is not a value of --{name}") from None
    if name == "loss" and parsed[-1] not in LOSSES:
      raise ValueError(f"{name}={values}: {value.strip()!r} is not one of {', '.join(LOSSES)}")
  if len(set(parsed)) != len(parsed):
    raise ValueError(f"{name}={values}: a value is repeated")
  return name, tuple(parsed)


def _sweep_axis_flag(text: str) -> str:
  """--sweep's parser: the axis as given, once it parses (`parse_sweep_axis`)."""
  parse_sweep_axis(text)
  return text.strip()


def setting(default: Any, help: str, *, group: str, choices: tuple | None = None,
            cli_default: Any = _UNSET, reference: Any = _UNSET,
            parse: Callable[[str], Any] | None = None, repeat: bool = False) -> Any:
  """A config field that is also a flag of train.py (`--<field name>`).

  Args:
    default: the field's default.
    help: the flag's help text.
    group: its group in `--help`, one of `FLAG_GROUPS`.
    choices: the values the flag accepts.
    cli_default: train.py's default, where it differs from `default`.
    reference: the reference's value, where it differs from train.py's default and from
      `default` (e.g. a protocol setting whose field default is already the recipe's).
    parse: the flag's parser, where the field's type does not say it (e.g. "0.9" or "auto").
    repeat: the flag may be given several times; the field is the tuple of its values.
  """
  if group not in FLAG_GROUPS:
    raise ValueError(f"setting: group {group!r} is not one of {FLAG_GROUPS}")
  metadata = {"help": help, "group": group, "choices": choices, "parse": parse,
              "repeat": repeat}
  if cli_default is not _UNSET:
    metadata["cli_default"] = cli_default
  if reference is not _UNSET:
    metadata["reference"] = reference
  return dataclasses.field(default=default, metadata=metadata)


def flag_fields(config_class: type) -> Iterator[dataclasses.Field]:
  """The fields of a config class that are train.py flags, in declaration order."""
  return (f for f in dataclasses.fields(config_class) if "help" in f.metadata)


def cli_default(field: dataclasses.Field) -> Any:
  """train.py's default of a flag field."""
  return field.metadata.get("cli_default", field.default)


def reference_value(field: dataclasses.Field) -> Any:
  """The reference's value of a flag field: `reference`, else the field's own default."""
  return field.metadata.get("reference", field.default)


def reference_overrides() -> dict[str, Any]:
  """{flag: the reference's value} for every flag whose train.py default is not the reference's:
  `train.py` with these flags runs the reference's recipe (README, "Differences from the
  reference").

  >>> overrides = reference_overrides()
  >>> overrides["focal_alpha"], overrides["freeze_encoder"], "lr" in overrides
  (0.9, True, True)
  """
  return {f.name: reference_value(f)
          for config_class in (ModelConfig, OptimConfig, RunConfig)
          for f in flag_fields(config_class) if reference_value(f) != cli_default(f)}


def reference_flags() -> list[str]:
  """`reference_overrides()` as train.py arguments."""
  args = []
  for name, value in reference_overrides().items():
    args += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
  return args


def _validate(config: Any, checks: list[tuple[str, bool, str]]) -> None:
  """Raises ValueError naming the first failed check: "<Config>.<field>=<value> <problem>."."""
  for name, ok, problem in checks:
    if not ok:
      raise ConfigError(
          f"{type(config).__name__}.{name}={getattr(config, name)!r} {problem}.")


_warned: set[str] = set()


def _warn_once(message: str) -> None:
  """A warning about a setting, once per process (a config is rebuilt, e.g. with the cohort's
  atlas size, without repeating it)."""
  if message not in _warned:
    _warned.add(message)
    warnings.warn(message, stacklevel=4)


def _positive_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 1


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
    linear_path: add a linear function of the last visit's node features (standardised, before
      input dropout) to the classifier's logits (`nn.model.LinearPath`): a logistic regression
      on the last scan, fitted per fold (`train.linear_path`), beside the graph path. Needs
      explicit node features and a trained encoder. False in the reference.
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
      "onehot", "profile_change: each region's row of thresholded FC values beside its change "
      "since the subject's first visit; connection_profile: the row only; onehot: the region "
      "index (the reference: only which edges exist)",
      group="model", choices=NODE_FEATURES, cli_default="profile_change")
  layer_type: str = setting("GraphSAGE", "graph convolution", group="model", choices=LAYER_TYPES)
  gnn_hidden_dim: int = setting(256, "width of the hidden graph layers", group="model")
  output_dim: int = 256
  gnn_num_layers: int = setting(2, "graph convolution blocks (the reference: 2)", group="model",
                                cli_default=1)
  gnn_activation: str = setting("elu", "activation of the graph blocks", group="model",
                                choices=ACTIVATIONS)
  gnn_dropout: float = 0.2
  input_dropout: float = setting(
      0.0, "dropout on the standardised connection-profile entries before the first graph "
      "layer (the reference: 0)", group="model", cli_default=0.5)
  graph_norm: bool = setting(
      True, "GraphNorm after each graph convolution (the reference: true; it rescales every "
      "feature per graph, dividing out changes in connection strength)", group="model",
      cli_default=False)
  use_topk_pooling: bool = setting(
      True, "TopK pooling after each graph layer (the reference: true)", group="model",
      cli_default=False)
  topk_ratio: float = setting(
      0.3, "fraction of nodes kept by TopK (clamped to [0.3, 1] as in the reference)",
      group="model")
  readout: str = setting(
      "meanmax", "graph embedding: every region's projected features in atlas order (needs "
      "--no-use_topk_pooling) or mean ‖ max over nodes (the reference)", group="model",
      choices=READOUTS, cli_default="concat")
  readout_node_dim: int = setting(8, "per-region width of the concat readout", group="model")
  use_time_features: bool = setting(False, "fuse the time-to-predict into the embeddings",
                                    group="model")
  linear_path: bool = setting(
      False, "add a linear function of the last visit's standardised node features to the "
      "logits (a logistic regression on the last scan beside the graph path; the reference: "
      "false)", group="model", cli_default=True)
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

  def __post_init__(self):
    _validate(self, [
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
        *[(name, _positive_int(getattr(self, name)), "must be a positive integer")
          for name in ("input_dim", "gnn_hidden_dim", "output_dim", "gnn_num_layers",
                       "lstm_hidden_dim", "lstm_num_layers", "readout_node_dim")],
        ("num_classes", _positive_int(self.num_classes) and self.num_classes >= 2,
         "must be an integer >= 2 (2: stable, converter)"),
        ("max_nodes", self.max_nodes is None or _positive_int(self.max_nodes),
         "must be None or a positive integer (the largest graph size)"),
        *[(name, 0.0 <= getattr(self, name) < 1.0, "is a dropout rate outside [0, 1)")
          for name in ("gnn_dropout", "input_dropout", "lstm_dropout", "classifier_dropout")],
        ("topk_ratio", 0.0 < self.topk_ratio <= 1.0,
         "is outside (0, 1]; pass the fraction of nodes to keep, e.g. 0.3"),
        ("linear_path", not self.linear_path or (
            self.explicit_node_features and not self.freeze_encoder),
         "needs explicit node features (connection_profile or profile_change) and a trained "
         "encoder; pass linear_path=False (--no-linear_path) with onehot or freeze_encoder"),
        ("input_dropout", self.input_dropout == 0 or self.explicit_node_features,
         "drops node-feature entries, but one-hot nodes have none; pass input_dropout=0 "
         "(--input_dropout 0) with node_features='onehot'"),
    ])
    if self.use_topk_pooling and self.effective_topk_ratio != self.topk_ratio:
      _warn_once(
          f"topk_ratio={self.topk_ratio} is clamped to {self.effective_topk_ratio} as in the "
          "reference (TopK keeps between 30% and 100% of the nodes).")
    if self.use_topk_pooling and self.effective_topk_ratio >= 1.0:
      _warn_once(
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
    return list(zip(widths[:-1], widths[1:]))

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(
          f"ModelConfig: unknown field(s) {unknown}; known fields are {sorted(known)}.")
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Loss and optimiser; names and defaults are the reference's flags and constants.

  `focal_alpha` is a number in [0, 1] or "auto" (`train.state.auto_focal_alpha` of each fold's
  training labels). `plateau_metric` is the validation metric the learning-rate plateau watches:
  "balanced_acc" (the reference), "auc" or "loss".
  """

  lr: float = setting(1e-3, "Adam's learning rate (the reference: 1e-3)", group="training",
                      cli_default=3e-4)
  loss: str = setting(
      "focal", "the classification loss: the seeds' focal loss, or their baselines: softmax "
      "cross-entropy (ce) and class-weighted cross-entropy (weighted_ce, PyTorch's "
      "CrossEntropyLoss(weight=...)); every one with --label_smoothing and the minority forcing",
      group="training", choices=LOSSES)
  class_weights: tuple[float, ...] | None = setting(
      None, "weighted_ce's class weights w0,w1 (stable, converter); default: the inverse class "
      "frequency of each fold's training subjects, n / (2 n_c)", group="training",
      parse=parse_class_weights)
  focal_alpha: float | str = setting(
      0.90, "focal α of the converter class, or 'auto': the share of stable subjects in each "
      "fold's training split (weights the minority class up; the reference: 0.9)",
      group="training", cli_default="auto", parse=parse_alpha)
  focal_gamma: float = setting(3.0, "focal γ", group="training")
  gamma_schedule: str | None = setting(
      None, "multi-stage focusing, e.g. 1@0,2@20,3@60: γ = 1 from epoch 0, 2 from epoch 20, 3 "
      "from epoch 60 (replaces --focal_gamma; a traced value, no recompilation)",
      group="training")
  label_smoothing: float = setting(0.05, "label smoothing of the loss", group="training")
  smoothing_schedule: str | None = setting(
      None, "label smoothing by stage, in --gamma_schedule's form (replaces --label_smoothing)",
      group="training")
  minority_focus_epochs: int = setting(
      20, "epochs of the reference's decaying extra cross-entropy on converters",
      group="training")
  weight_decay: float = setting(
      1e-4, "L2 penalty added to the gradient before Adam (torch Adam's weight_decay; the "
      "reference: 1e-4)", group="training", cli_default=1e-2)
  clip_norm: float = 1.0
  adam_b1: float = 0.9
  adam_b2: float = 0.999
  adam_eps: float = 1e-8
  plateau_factor: float = 0.5
  plateau_patience: int = 10
  min_lr: float = 1e-6
  plateau_metric: str = setting(
      "balanced_acc", "validation metric the learning-rate plateau watches (the reference: "
      "balanced_acc)", group="training", choices=PLATEAU_METRICS, cli_default="auc")

  def __post_init__(self):
    if self.class_weights is not None:  # a list from config.json
      object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))
    alpha_ok = self.focal_alpha == "auto" or (
        not isinstance(self.focal_alpha, str) and 0 <= self.focal_alpha <= 1)
    weights = self.class_weights
    _validate(self, [
        ("loss", self.loss in LOSSES, f"must be one of {', '.join(LOSSES)}"),
        ("class_weights", weights is None or (
            len(weights) == 2 and all(0 <= w < math.inf for w in weights) and sum(weights) > 0),
         "needs one finite weight >= 0 per class (2: stable, converter), not all 0, e.g. 1,3"),
        ("lr", 0 < self.lr < math.inf, "must be positive and finite"),
        ("focal_alpha", alpha_ok, "must lie in [0, 1] or be 'auto'"),
        ("plateau_metric", self.plateau_metric in PLATEAU_METRICS,
         f"must be one of {', '.join(PLATEAU_METRICS)}"),
        ("focal_gamma", 0 <= self.focal_gamma < math.inf, "must be finite and >= 0"),
        ("label_smoothing", 0 <= self.label_smoothing <= 1, "must lie in [0, 1]"),
        ("minority_focus_epochs", self.minority_focus_epochs >= 0, "must be >= 0"),
        ("weight_decay", 0 <= self.weight_decay < math.inf, "must be finite and >= 0"),
        ("clip_norm", 0 < self.clip_norm < math.inf, "must be positive and finite"),
        ("plateau_factor", 0 < self.plateau_factor < 1, "must lie in (0, 1)"),
        ("plateau_patience", self.plateau_patience >= 0, "must be >= 0"),
        ("min_lr", 0 <= self.min_lr <= self.lr, "must lie in [0, lr]"),
    ])
    for name, low, high in (("gamma_schedule", 0, math.inf), ("smoothing_schedule", 0, 1)):
      text = getattr(self, name)
      if text is None:
        continue
      try:
        stages = parse_schedule(text)
      except ValueError as error:
        raise ConfigError(f"OptimConfig.{name}={text!r}: {error}") from None
      bad = [value for _, value in stages if not low <= value <= high]
      if bad:
        raise ConfigError(f"OptimConfig.{name}={text!r}: value {bad[0]:g} outside "
                          f"[{low}, {high}]; expected {SCHEDULE_FORM}")
    if self.class_weights is not None and self.loss != "weighted_ce":
      _warn_once(f"class_weights={self.class_weights} are used only by loss='weighted_ce' "
                 f"(this run's loss: {self.loss!r}).")

  def gamma_at(self, epoch: int) -> float:
    """γ of `epoch` (0-based): the schedule's, or `focal_gamma`."""
    if self.gamma_schedule is None:
      return self.focal_gamma
    return schedule_value(parse_schedule(self.gamma_schedule), epoch)

  def smoothing_at(self, epoch: int) -> float:
    """Label smoothing of `epoch` (0-based): the schedule's, or `label_smoothing`."""
    if self.smoothing_schedule is None:
      return self.label_smoothing
    return schedule_value(parse_schedule(self.smoothing_schedule), epoch)


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Data, protocol and bookkeeping settings of a cross-validated run (`train.cross_validation`).

  Its defaults are train.py's; the reference's protocol differs in `decision_threshold`
  ("argmax"), `selection` ("auc") and `early_stop_patience` (0): `reference_overrides`.
  """

  data_root: str | None = setting(
      None, "folder with FC_Matrices/ and TADPOLE_TEMPORAL.csv; without it the built-in "
      "synthetic cohort is used", group="data")
  var_name: str = setting("fc_matrix", "array key inside each .npz", group="data")
  threshold: float = setting(0.2, "|FC| below it is no edge", group="data")
  max_visits: int = setting(10, "keep the last N visits", group="data")
  exclude_target_visit: bool = setting(
      False, "predict the last visit's label from the visits before it", group="data")
  time_normalization: str = setting("log", "how the time-to-predict is scaled", group="data",
                                    choices=TIME_NORMALIZATIONS)
  single_visit_horizon: float = setting(
      6.0, "months to predict for a subject with one visit", group="data")
  # 150 subjects (~510 scans) keep `python train.py` to a few minutes on 2 CPU cores; 300 is the
  # scale of the reference's own synthetic measurements.
  synthetic_subjects: int = setting(
      150, "subjects of the built-in synthetic cohort (300: the scale of the reference's "
      "synthetic measurements, about twice the run time)", group="data")
  synthetic_regions: int = setting(
      100, "regions (nodes) per scan of the built-in synthetic cohort", group="data")
  n_epochs: int = setting(100, "epochs per fold", group="training")
  batch_size: int = setting(16, "subjects per training batch", group="training")
  decision_threshold: str = setting(
      "val", "val: the threshold on p(converter) that maximises validation balanced accuracy, "
      "chosen with the best epoch and applied to the test fold; argmax: the reference",
      group="training", choices=DECISION_THRESHOLDS, reference="argmax")
  selection: str = setting(
      "auc_loss", "best epoch: highest validation AUC, ties by lower validation loss (auc_loss) "
      "or the first (auc, the reference)", group="training", choices=SELECTION_RULES,
      reference="auc")
  early_stop_patience: int = setting(
      30, "stop a fold this many epochs after its best epoch (0: never, the reference)",
      group="training", reference=0)
  baselines: bool = setting(
      True, "fit logistic-regression baselines on the last scan of the same folds",
      group="training")
  num_folds: int = setting(5, "stratified cross-validation folds", group="training")
  seed: int = setting(42, "seed of the folds, the initialisation and the batch order",
                      group="training")
  pretrain_encoder: bool = setting(
      False, "supervised encoder pretraining on each fold's training subjects first",
      group="training")
  pretrain_epochs: int = setting(100, "epochs of encoder pretraining", group="training")
  pretrained: str | None = setting(
      None, "encoder to start from: a stgnn-jax checkpoint or a reference .pth",
      group="training")
  trust_checkpoint: bool = setting(
      False, "unpickle a --pretrained .pth file fully (this runs code stored in the file: only "
      "for files you trust); by default only tensors are read", group="training")
  num_devices: int | None = setting(
      None, "JAX devices for data parallelism (default: all)", group="training")
  graph_multiple: int = setting(
      32, "graph slots per batch are rounded up to this multiple (fewer distinct shapes = "
      "fewer compilations, more padding)", group="training")
  eval_batch_size: int = setting(64, "subjects per evaluation batch", group="training")
  sweep: tuple[str, ...] = setting(
      (), "NAME=V1,V2,...: train every value (repeat the flag: every combination) as one "
      f"vmapped program per fold and select by mean validation AUC; NAME is one of "
      f"{', '.join(SWEEPABLE)}", group="sweep", parse=_sweep_axis_flag, repeat=True)
  sweep_grid: str | None = setting(
      None, "a named sweep: seeds = the focal-loss seeds' grid, focal_alpha 0.1,0.25,0.5,0.75 x "
      "focal_gamma 0.5,1,2,3 x label_smoothing 0,0.05,0.1 (48 members)", group="sweep",
      choices=tuple(SWEEP_GRIDS))
  sweep_chunk: int | None = setting(
      None, "sweep members trained together (default: chosen from the member count, the model "
      "and the batch to fit the memory budget)", group="sweep")

  def __post_init__(self):
    object.__setattr__(self, "sweep", tuple(self.sweep or ()))  # None (argparse), a JSON list
    _validate(self, [
        ("seed", 0 <= self.seed and self.seed + self.num_folds < 2**32,
         "must lie in [0, 2**32 - num_folds) (NumPy and scikit-learn seeds are 32-bit)"),
        ("n_epochs", self.n_epochs >= 1, "must be >= 1"),
        ("batch_size", self.batch_size >= 1, "must be >= 1"),
        ("num_folds", self.num_folds >= 2, "must be >= 2 (cross-validation)"),
        ("max_visits", self.max_visits >= 1, "must be >= 1"),
        ("threshold", 0 <= self.threshold < math.inf, "must be finite and >= 0"),
        ("time_normalization", self.time_normalization in TIME_NORMALIZATIONS,
         f"must be one of {', '.join(TIME_NORMALIZATIONS)}"),
        ("single_visit_horizon", 0 < self.single_visit_horizon < math.inf,
         "must be positive and finite (months)"),
        ("pretrain_epochs", self.pretrain_epochs >= 1, "must be >= 1"),
        ("num_devices", self.num_devices is None or self.num_devices >= 1, "must be >= 1"),
        ("graph_multiple", self.graph_multiple >= 1, "must be >= 1"),
        ("eval_batch_size", self.eval_batch_size >= 1, "must be >= 1"),
        ("decision_threshold", self.decision_threshold in DECISION_THRESHOLDS,
         f"must be one of {', '.join(DECISION_THRESHOLDS)}"),
        ("selection", self.selection in SELECTION_RULES,
         f"must be one of {', '.join(SELECTION_RULES)}"),
        ("early_stop_patience", self.early_stop_patience >= 0, "must be >= 0 (0: off)"),
        ("sweep_grid", self.sweep_grid is None or self.sweep_grid in SWEEP_GRIDS,
         f"must be one of {', '.join(SWEEP_GRIDS)}"),
        ("sweep_chunk", self.sweep_chunk is None or _positive_int(self.sweep_chunk),
         "must be >= 1"),
    ])
    try:
      self.sweep_axes()
    except ValueError as error:
      raise ConfigError(f"RunConfig.sweep: {error}") from None
    if self.pretrained and self.pretrain_encoder:
      _warn_once("pretrained and pretrain_encoder are both set: the pretrained encoder is used "
                 "and no pretraining runs.")

  def sweep_axes(self) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """The sweep's axes, `sweep_grid`'s then `sweep`'s (`parse_sweep_axis`); () for one run.

    Raises ValueError when two axes vary the same setting.
    """
    texts = SWEEP_GRIDS[self.sweep_grid] if self.sweep_grid else ()
    axes = tuple(parse_sweep_axis(text) for text in texts + self.sweep)
    names = [name for name, _ in axes]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
      raise ValueError(f"{repeated[0]} is swept twice (--sweep or --sweep_grid); give its "
                       "values once")
    return axes


_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}
_FLAG_FIELDS = {f.name: f for config_class in (ModelConfig, OptimConfig, RunConfig)
                for f in flag_fields(config_class)}
