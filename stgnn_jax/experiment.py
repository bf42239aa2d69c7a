"""Cross-validated training: the reference's protocol around the jitted `train_step`.

Per fold (stratified K-fold over subjects, seed `seed`): a stratified 80/20 train/validation split
of the training subjects (seed `seed + fold`), `n_epochs` epochs of shuffled batches (a different,
seeded order every epoch), validation after each epoch, the plateau scheduler on a validation
metric, and the best state by validation AUC among epochs that predict both classes, evaluated on
the held-out fold. With `decision_threshold="val"` each epoch's validation predictions also choose
the decision threshold (`metrics.balanced_threshold`) that the selected epoch then applies to the
test fold; "argmax" is the reference's. Early stopping ends a fold `early_stop_patience` epochs
after its last selected epoch. Classical baselines (`baselines.run_baselines`) are fitted on the
same folds. Everything a run writes goes under `out_dir` atomically, and the run can be resumed
after a kill at any point with identical results.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import time as wall_time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from stgnn_jax import data as data_lib
from stgnn_jax import metrics as metrics_lib
from stgnn_jax.batching import (
    ScanTable,
    SubjectBatch,
    iterate_batches,
    iterate_embedded_batches,
    pack_scans,
)
from stgnn_jax.checkpoints import (
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    restore_state,
    save_checkpoint,
    save_state,
)
from stgnn_jax.config import DECISION_THRESHOLDS, SELECTION_RULES, ModelConfig
from stgnn_jax.training import (
    OptimConfig,
    TrainState,
    auto_focal_alpha,
    encode_graphs,
    eval_step,
    init_params,
    input_statistics,
    plateau_scheduler,
    plateau_step,
    plateau_value,
    replace_encoder,
    train_step,
    with_input_statistics,
)

SUMMARY_METRICS = ("test_acc", "balanced_acc", "minority_f1", "test_auc", "train_acc",
                   "balanced_train_acc")
METRICS_COLUMNS = ("fold", "epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                   "val_balanced_acc", "val_auc", "val_threshold", "lr", "epoch_seconds")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Data, protocol and bookkeeping settings of a cross-validated run."""

  n_epochs: int = 100
  batch_size: int = 16
  num_folds: int = 5
  seed: int = 42
  max_visits: int = 10
  data_root: str | None = None
  var_name: str = "fc_matrix"
  threshold: float = 0.2
  exclude_target_visit: bool = False
  time_normalization: str = "log"
  single_visit_horizon: float = 6.0
  # The main job's built-in cohort: 150 subjects (~510 scans) keep `python train.py` to a few
  # minutes on 2 CPU cores; 300 is the scale of the reference's own synthetic measurements.
  synthetic_subjects: int = 150
  synthetic_regions: int = 100
  pretrain_encoder: bool = False
  pretrain_epochs: int = 100
  pretrained: str | None = None
  num_devices: int | None = None
  graph_multiple: int = 32
  eval_batch_size: int = 64
  # The reference's protocol is decision_threshold="argmax", selection="auc",
  # early_stop_patience=0 (see the README's table of differences for why these defaults).
  decision_threshold: str = "val"
  selection: str = "auc_loss"
  early_stop_patience: int = 30
  baselines: bool = True

  def __post_init__(self):
    checks = [
        ("n_epochs", self.n_epochs >= 1, "must be >= 1"),
        ("batch_size", self.batch_size >= 1, "must be >= 1"),
        ("num_folds", self.num_folds >= 2, "must be >= 2 (cross-validation)"),
        ("max_visits", self.max_visits >= 1, "must be >= 1"),
        ("threshold", self.threshold >= 0, "must be >= 0"),
        ("time_normalization", self.time_normalization in data_lib.TIME_NORMALIZATIONS,
         f"must be one of {data_lib.TIME_NORMALIZATIONS}"),
        ("single_visit_horizon", self.single_visit_horizon > 0, "must be positive (months)"),
        ("pretrain_epochs", self.pretrain_epochs >= 1, "must be >= 1"),
        ("num_devices", self.num_devices is None or self.num_devices >= 1, "must be >= 1"),
        ("graph_multiple", self.graph_multiple >= 1, "must be >= 1"),
        ("eval_batch_size", self.eval_batch_size >= 1, "must be >= 1"),
        ("decision_threshold", self.decision_threshold in DECISION_THRESHOLDS,
         f"must be one of {DECISION_THRESHOLDS}"),
        ("selection", self.selection in SELECTION_RULES, f"must be one of {SELECTION_RULES}"),
        ("early_stop_patience", self.early_stop_patience >= 0, "must be >= 0 (0: off)"),
    ]
    for name, ok, problem in checks:
      if not ok:
        raise ValueError(f"{name}={getattr(self, name)!r} {problem}.")


# ---------------------------------------------------------------------------------------------
# Data.


def load_data(run: RunConfig) -> data_lib.Cohort:
  """The cohort on disk (`data_root`) or, without one, the built-in synthetic cohort."""
  if run.data_root is not None:
    return data_lib.load_cohort(
        run.data_root, var_name=run.var_name, threshold=run.threshold,
        max_visits=run.max_visits, exclude_target_visit=run.exclude_target_visit,
        single_visit_horizon=run.single_visit_horizon)
  from stgnn_jax import synthetic
  scans = synthetic.make_synthetic_cohort(
      num_subjects=run.synthetic_subjects, num_regions=run.synthetic_regions, seed=run.seed,
      threshold=run.threshold)
  return synthetic.cohort_from_scans(
      scans, max_visits=run.max_visits, exclude_target_visit=run.exclude_target_visit,
      single_visit_horizon=run.single_visit_horizon)


def make_folds(labels: np.ndarray, num_folds: int, seed: int):
  """[(train, val, test) subject indices] per fold, the reference's stratified protocol."""
  from sklearn.model_selection import StratifiedKFold, train_test_split

  counts = np.bincount(labels, minlength=2)
  if counts.min() < num_folds:
    raise ValueError(
        f"num_folds={num_folds} but the smaller class has only {counts.min()} subjects; lower "
        "--num_folds or add subjects.")
  folds = []
  splitter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
  for k, (train_val, test) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
    train, val = train_test_split(train_val, test_size=0.2, stratify=labels[train_val],
                                  random_state=seed + k)
    folds.append((np.sort(train), np.sort(val), np.sort(test)))
  return folds


class Subjects:
  """The cohort as the arrays the batcher needs, plus report groupings."""

  def __init__(self, cohort: data_lib.Cohort, run: RunConfig, model_config: ModelConfig):
    use_time = model_config.use_time_features
    self.adjacency = [s.adjacency for s in cohort.subjects]
    self.features = ([data_lib.connection_features(s.fc, model_config.node_features)
                      for s in cohort.subjects]
                     if model_config.explicit_node_features else None)
    # What the classical baselines see: each subject's last input scan, edge values.
    self.last_fc = np.stack([s.fc[-1] for s in cohort.subjects])
    self.labels = cohort.labels().astype(np.int32)
    self.time = (data_lib.time_features(cohort, run.time_normalization) if use_time else None)
    self.conversion_types = [data_lib.conversion_type(s) for s in cohort.subjects]
    self.has_groups = any(s.group is not None for s in cohort.subjects)
    self.horizons = ([data_lib.horizon_bucket(s.time_to_predict) for s in cohort.subjects]
                     if use_time else None)
    self.num_nodes = cohort.num_nodes

  def batches(self, indices: np.ndarray, batch_size: int, run: RunConfig):
    return iterate_batches(self.adjacency, self.labels, self.time, batch_size=batch_size,
                           max_visits=run.max_visits, graph_multiple=run.graph_multiple,
                           order=indices, features=self.features)


# ---------------------------------------------------------------------------------------------
# Devices.


class Placement:
  """Puts batches on a 1-D `data` mesh (sharded on their leading axis), params replicated."""

  def __init__(self, num_devices: int | None, batch_size: int, eval_batch_size: int,
               graph_multiple: int):
    available = jax.devices()
    n = len(available) if num_devices is None else num_devices
    if n > len(available):
      raise ValueError(f"--num_devices {n} but only {len(available)} JAX device(s) are present.")
    for name, size in (("batch_size", batch_size), ("eval batch size", eval_batch_size),
                       ("graph_multiple", graph_multiple)):
      if size % n:
        raise ValueError(f"{name}={size} is not divisible by the {n} devices used; pick "
                         "--num_devices that divides it.")
    self.num_devices = n
    mesh = Mesh(np.array(available[:n]), ("data",))
    self.batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    self.replicated = NamedSharding(mesh, PartitionSpec())

  def batch(self, batch: SubjectBatch) -> SubjectBatch:
    return jax.device_put(batch, self.batch_sharding)

  def replicate(self, tree: Any) -> Any:
    return jax.device_put(tree, self.replicated)


# ---------------------------------------------------------------------------------------------
# One training epoch.


class FrozenEncoderScans:
  """A fold's training scans, packed once, embedded once per epoch by the frozen encoder.

  A frozen encoder's parameters do not change within an epoch, so instead of running it inside
  every step (on graph slots padded per batch, one compilation per graph bucket), each epoch
  embeds all training scans in chunks of one shape and the steps train the classifier on
  `EmbeddedBatch`es of those embeddings. Encoder dropout is still drawn afresh for every scan
  in every epoch, as when the reference embeds each batch in its data loader.
  """

  def __init__(self, subjects: Subjects, train_idx: np.ndarray, run: RunConfig,
               placement: Placement):
    self.table: ScanTable = pack_scans(
        [subjects.adjacency[i] for i in train_idx], subjects.labels[train_idx],
        None if subjects.time is None else subjects.time[train_idx],
        chunk_size=run.graph_multiple,
        features=None if subjects.features is None else [subjects.features[i] for i in train_idx])
    self.chunks = [placement.batch(chunk) for chunk in self.table.chunks]
    self.position = {int(subject): p for p, subject in enumerate(train_idx)}
    self.run = run
    self.placement = placement

  def batches(self, state: TrainState, order: np.ndarray, key: jax.Array):
    """The epoch's `EmbeddedBatch`es for subjects in `order` (cohort indices)."""
    embeddings = jnp.concatenate([
        encode_graphs(state.params, graphs, time, jax.random.fold_in(key, c),
                      model_config=state.model_config)
        for c, (graphs, time) in enumerate(self.chunks)])
    positions = np.array([self.position[int(i)] for i in order])
    # Any subject may pick any row: the embeddings are replicated, the subjects sharded.
    embeddings = self.placement.replicate(embeddings)
    for batch in iterate_embedded_batches(self.table, None, batch_size=self.run.batch_size,
                                          max_visits=self.run.max_visits, order=positions):
      yield self.placement.batch(batch).replace(embeddings=embeddings)


def train_epoch(state: TrainState, epoch: int, subjects: Subjects, order: np.ndarray,
                run: RunConfig, placement: Placement, epoch_key: jax.Array,
                frozen_scans: FrozenEncoderScans | None = None):
  """Epoch `epoch` (0-based): one pass over `order` in batches of `run.batch_size`.

  Returns `(state, per-step metrics)`. With `frozen_scans` (a frozen encoder) the steps run on
  the epoch's precomputed embeddings; otherwise each step runs the whole model on its batch's
  graphs. Nothing is synchronised.
  """
  # Placed like the rest of the state: an uncommitted scalar would make the first step of a
  # run compile once more than the others.
  state = state.replace(epoch=placement.replicate(np.int32(epoch)))
  if frozen_scans is not None:
    # The steps use fold_in(epoch_key, b); the encoder's dropout takes an index no step reaches.
    batches = frozen_scans.batches(state, order, jax.random.fold_in(epoch_key, 2**31 - 1))
  else:
    batches = (placement.batch(b) for b in subjects.batches(order, run.batch_size, run))
  step_metrics = []
  for b, batch in enumerate(batches):
    state, m = train_step(state, batch, jax.random.fold_in(epoch_key, b))
    step_metrics.append(m)
  return state, step_metrics


# ---------------------------------------------------------------------------------------------
# Evaluation.


def predict_split(state: TrainState, subjects: Subjects, indices: np.ndarray, run: RunConfig,
                  placement: Placement) -> tuple[np.ndarray, np.ndarray]:
  """(logits [n, classes], per-subject focal loss [n]) for `indices`, in eval mode."""
  logits, losses = [], []
  size = run.eval_batch_size
  for start, batch in zip(range(0, len(indices), size),
                          subjects.batches(indices, size, run)):
    out = jax.device_get(eval_step(state, placement.batch(batch)))
    n = min(size, len(indices) - start)
    logits.append(out["logits"][:n])
    losses.append(out["loss"][:n])
  return np.concatenate(logits), np.concatenate(losses)


def evaluate(state, subjects, indices, run, placement, *, threshold: float | None = None,
             choose_threshold: bool = False, reports: bool = False) -> dict[str, Any]:
  """Metrics of `indices` at `threshold` (None: argmax); with `choose_threshold`, at the split's
  own `metrics.balanced_threshold` instead (returned as "threshold"; None if undefined)."""
  logits, losses = predict_split(state, subjects, indices, run, placement)
  labels = subjects.labels[indices]
  if choose_threshold:
    threshold = metrics_lib.balanced_threshold(labels, metrics_lib.softmax_p1(logits))
  result = metrics_lib.classification_metrics(
      labels, logits, threshold=threshold, losses=losses,
      groups=[subjects.conversion_types[i] for i in indices]
      if reports and subjects.has_groups else None,
      horizons=[subjects.horizons[i] for i in indices]
      if reports and subjects.horizons is not None else None,
      report=reports)
  result["logits"] = logits
  result["labels"] = labels
  result["threshold"] = threshold
  return result


def predicts_both_classes(result: dict[str, Any]) -> bool:
  return all(count > 0 for count in result["prediction_counts"].values())


# ---------------------------------------------------------------------------------------------
# One fold.


@dataclasses.dataclass
class FoldProgress:
  """What a fold has to remember between epochs (saved after every epoch for --resume)."""

  state: TrainState
  plateau_state: Any
  best_params: Any
  best_epoch: int = -1
  best_val_auc: float = -math.inf
  best_val_loss: float = math.inf
  best_threshold: float | None = None
  next_epoch: int = 0
  stopped: str = ""
  history: list = dataclasses.field(default_factory=list)

  def to_tree(self) -> dict[str, Any]:
    return {"state": self.state, "plateau_state": self.plateau_state,
            "best_params": self.best_params,
            "meta": json.dumps({"best_epoch": self.best_epoch, "best_val_auc": self.best_val_auc,
                                "best_val_loss": self.best_val_loss,
                                "best_threshold": self.best_threshold,
                                "next_epoch": self.next_epoch, "stopped": self.stopped,
                                "history": self.history})}

  def restore(self, path: str) -> None:
    tree = restore_state(path, self.to_tree())
    meta = json.loads(tree["meta"])
    self.state = tree["state"]
    self.plateau_state = tree["plateau_state"]
    self.best_params = tree["best_params"]
    self.best_epoch = meta["best_epoch"]
    self.best_val_auc = meta["best_val_auc"]
    self.best_val_loss = meta["best_val_loss"]
    self.best_threshold = meta["best_threshold"]
    self.next_epoch = meta["next_epoch"]
    self.stopped = meta["stopped"]
    self.history = meta["history"]

  def improves(self, val: dict[str, Any], selection: str) -> bool:
    """Whether a validation result beats the selected epoch: a higher AUC, or with "auc_loss" an
    equal AUC and a lower loss (small validation splits tie often, e.g. at AUC 1)."""
    if not predicts_both_classes(val) or val["auc"] is None:
      return False
    if val["auc"] != self.best_val_auc:
      return val["auc"] > self.best_val_auc
    return selection == "auc_loss" and val["loss"] < self.best_val_loss


def train_fold(fold: int, split, subjects: Subjects, model_config: ModelConfig,
               optim_config: OptimConfig, run: RunConfig, placement: Placement, fold_dir: str,
               *, on_epoch: Callable[[list[dict[str, Any]]], None] = lambda history: None,
               log: Callable[[str], None] = print) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """Trains one fold, resuming from `fold_dir/progress.msgpack` if present.

  Returns:
    `(result, history)`: the fold's test/train metrics and one metrics row per epoch.
    `on_epoch` is called with the history after every epoch.
  """
  train_idx, val_idx, test_idx = split
  base_key = jax.random.fold_in(jax.random.key(run.seed), fold)
  first = next(subjects.batches(train_idx, run.batch_size, run))
  params = init_params(model_config, first, jax.random.fold_in(base_key, 0))
  if subjects.features is not None:
    # Standardised over this fold's training scans only: no test subject leaks into them.
    params = with_input_statistics(
        params, input_statistics([subjects.features[i] for i in train_idx]))
  params = load_encoder(params, model_config, run, subjects, train_idx, fold_dir, base_key, log)
  focal_alpha = (auto_focal_alpha(subjects.labels[train_idx])
                 if optim_config.focal_alpha == "auto" else optim_config.focal_alpha)
  state = placement.replicate(TrainState.create(params, model_config, optim_config,
                                                focal_alpha=focal_alpha))
  progress = FoldProgress(state=state,
                          plateau_state=plateau_scheduler(optim_config).init(jnp.zeros(())),
                          best_params=state.params)
  frozen_scans = (FrozenEncoderScans(subjects, train_idx, run, placement)
                  if model_config.freeze_encoder else None)
  progress_path = os.path.join(fold_dir, "progress.msgpack")
  if os.path.exists(progress_path):
    progress.restore(progress_path)
    progress.state = placement.replicate(progress.state)
    log(f"fold {fold}: resuming at epoch {progress.next_epoch}")

  while progress.next_epoch < run.n_epochs and not progress.stopped:
    epoch = progress.next_epoch
    order = np.random.default_rng([run.seed, fold, epoch]).permutation(train_idx)
    epoch_key = jax.random.fold_in(jax.random.fold_in(base_key, 1), epoch)
    started = wall_time.perf_counter()
    state, step_metrics = train_epoch(progress.state, epoch, subjects, order, run, placement,
                                      epoch_key, frozen_scans)
    step_metrics = jax.device_get(step_metrics)
    epoch_seconds = wall_time.perf_counter() - started
    count = sum(float(m["count"]) for m in step_metrics)
    train_loss = sum(float(m["loss"]) * float(m["count"]) for m in step_metrics) / count
    train_acc = sum(float(m["correct"]) for m in step_metrics) / count
    if not math.isfinite(train_loss):
      progress.stopped = (f"non-finite training loss ({train_loss}) at epoch {epoch}; the fold "
                          f"stops and keeps the best state so far (epoch {progress.best_epoch})")
      log(f"fold {fold}: {progress.stopped}")
      break

    val = evaluate(state, subjects, val_idx, run, placement,
                   choose_threshold=run.decision_threshold == "val")
    progress.plateau_state = plateau_step(optim_config, progress.plateau_state,
                                          plateau_value(optim_config, val))
    lr = optim_config.lr * float(progress.plateau_state.scale)
    state = state.with_learning_rate(lr)
    if progress.improves(val, run.selection):
      progress.best_val_auc, progress.best_val_loss = val["auc"], val["loss"]
      progress.best_epoch, progress.best_threshold = epoch, val["threshold"]
      progress.best_params = state.params  # immutable arrays: a real copy, never updated in place
      save_checkpoint(os.path.join(fold_dir, "best.msgpack"), jax.device_get(state.params),
                      model_config, fold=fold, epoch=epoch, val_auc=val["auc"],
                      val_balanced_acc=val["balanced_accuracy"],
                      decision_threshold=val["threshold"], focal_alpha=focal_alpha)
    row = {"fold": fold, "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
           "val_loss": val["loss"], "val_acc": val["accuracy"],
           "val_balanced_acc": val["balanced_accuracy"], "val_auc": val["auc"],
           "val_threshold": val["threshold"], "lr": lr, "epoch_seconds": epoch_seconds}
    progress.history.append(row)
    progress.state = state
    progress.next_epoch = epoch + 1
    if run.early_stop_patience and epoch - progress.best_epoch >= run.early_stop_patience:
      progress.stopped = (f"early stop at epoch {epoch}: no better validation epoch for "
                          f"{run.early_stop_patience} epochs (best epoch {progress.best_epoch})")
    save_state(progress_path, progress.to_tree())
    on_epoch(progress.history)

  if progress.best_epoch < 0:
    log(f"fold {fold}: no epoch predicted both validation classes with a defined AUC; testing "
        "the last state instead")
    best_state = progress.state
  else:
    best_state = progress.state.replace(params=progress.best_params)
  threshold = progress.best_threshold if progress.best_epoch >= 0 else None
  test = evaluate(best_state, subjects, test_idx, run, placement, threshold=threshold,
                  reports=True)
  train = evaluate(best_state, subjects, train_idx, run, placement, threshold=threshold)
  # The reference's argmax predictions of the same model, beside those at the chosen threshold.
  argmax = metrics_lib.classification_metrics(test["labels"], test["logits"], report=False)
  result = {
      "fold": fold,
      "test_acc": test["accuracy"],
      "balanced_acc": test["balanced_accuracy"],
      "minority_precision": test["minority_precision"],
      "minority_recall": test["minority_recall"],
      "minority_f1": test["minority_f1"],
      "test_auc": test["auc"],
      "test_loss": test["loss"],
      "train_acc": train["accuracy"],
      "balanced_train_acc": train["balanced_accuracy"],
      "decision_threshold": threshold,
      "argmax": {"test_acc": argmax["accuracy"], "balanced_acc": argmax["balanced_accuracy"],
                 "minority_f1": argmax["minority_f1"],
                 "prediction_counts": argmax["prediction_counts"]},
      "focal_alpha": focal_alpha,
      "best_epoch": progress.best_epoch,
      "best_val_auc": progress.best_val_auc if progress.best_epoch >= 0 else None,
      "epochs_run": progress.next_epoch,
      "stopped": progress.stopped or None,
      "n_train": len(train_idx), "n_val": len(val_idx), "n_test": len(test_idx),
      "prediction_counts": test["prediction_counts"],
      "classification_report": test["classification_report"],
      "test_subjects": test_idx.tolist(),
      "test_p1": metrics_lib.softmax_p1(test["logits"]).tolist(),
  }
  for key in ("per_conversion_type", "per_horizon"):
    if key in test:
      result[key] = test[key]
  return result, progress.history


def load_encoder(params, model_config, run, subjects, train_idx, fold_dir, key, log):
  """Applies --pretrained (a file) or --pretrain_encoder (on this fold's training subjects)."""
  if run.pretrained:
    encoder = read_pretrained_encoder(run.pretrained, model_config)
    log(f"loaded the pretrained encoder {run.pretrained}")
    return replace_encoder(params, encoder)
  if run.pretrain_encoder:
    from stgnn_jax import pretrain

    path = os.path.join(fold_dir, "pretrained_encoder.msgpack")
    if os.path.exists(path):
      encoder = load_checkpoint(path)[0]["encoder"]
    else:
      encoder = pretrain.pretrain_encoder(
          model_config, subjects.adjacency, subjects.labels, subjects.time, train_idx,
          epochs=run.pretrain_epochs, seed=run.seed, key=jax.random.fold_in(key, 2),
          features=subjects.features, log=log)
      save_checkpoint(path, {"encoder": encoder}, model_config, kind="pretrained_encoder")
    return replace_encoder(params, encoder)
  return params


def read_pretrained_encoder(path: str, model_config: ModelConfig):
  """Encoder params from a stgnn-jax checkpoint or a reference PyTorch `.pth` file."""
  if path.endswith((".pth", ".pt")):
    from stgnn_jax.convert import params_from_torch

    return params_from_torch(path, model_config)["encoder"]
  params = load_checkpoint(path)[0]
  if "encoder" not in params:
    raise ValueError(f"{path!r} holds no encoder parameters.")
  return params["encoder"]


# ---------------------------------------------------------------------------------------------
# The whole run.


def run_cross_validation(model_config: ModelConfig, optim_config: OptimConfig, run: RunConfig,
                         out_dir: str, *, progress_bar: bool = True,
                         log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs (or resumes) the cross-validation in `out_dir`; returns the results dict."""
  os.makedirs(out_dir, exist_ok=True)
  cohort = load_data(run)
  log(cohort.summary())
  # Both kinds of node features have one entry per region: the input width is the atlas size.
  model_config = dataclasses.replace(model_config, input_dim=cohort.num_nodes)
  config_path = os.path.join(out_dir, "config.json")
  config = {"model": model_config.to_dict(), "optim": dataclasses.asdict(optim_config),
            "run": dataclasses.asdict(run)}
  if os.path.exists(config_path):
    with open(config_path) as f:
      saved = json.load(f)
    if saved != json.loads(json.dumps(config)):
      raise ValueError(
          f"{config_path} holds a different configuration; resume with the same settings "
          "(train.py --resume DIR reads them from there) or use a new --out_dir.")
  else:
    atomic_write_json(config_path, config)

  subjects = Subjects(cohort, run, model_config)
  placement = Placement(run.num_devices, run.batch_size, run.eval_batch_size, run.graph_multiple)
  if placement.num_devices > 1:
    log(f"data parallel over {placement.num_devices} devices")
  folds = make_folds(subjects.labels, run.num_folds, run.seed)

  results, histories = [], []
  bar = _progress(total=run.num_folds * run.n_epochs, enabled=progress_bar)
  for k, split in enumerate(folds):
    fold_dir = os.path.join(out_dir, f"fold_{k}")
    done_path = os.path.join(fold_dir, "result.json")
    if os.path.exists(done_path):
      with open(done_path) as f:
        done = json.load(f)
      results.append(done["result"])
      histories.append(done["history"])
      bar.update(run.n_epochs)
      continue
    bar.set_description(f"fold {k + 1}/{run.num_folds}")

    def on_epoch(history):
      bar.update(1)
      bar.set_postfix(loss=f"{history[-1]['train_loss']:.4f}",
                      val_auc=_fmt(history[-1]["val_auc"]))
      write_metrics_csv(out_dir, histories + [history])

    os.makedirs(fold_dir, exist_ok=True)
    result, history = train_fold(k, split, subjects, model_config, optim_config, run, placement,
                                  fold_dir, on_epoch=on_epoch, log=bar.write)
    bar.update(run.n_epochs - len(history))  # epochs skipped by an early stop
    atomic_write_json(done_path, {"result": result, "history": history})
    results.append(result)
    histories.append(history)
    write_metrics_csv(out_dir, histories)
    log(f"fold {k}: test acc {result['test_acc']:.3f}, balanced acc "
        f"{result['balanced_acc']:.3f}, AUC {_fmt(result['test_auc'])} (best epoch "
        f"{result['best_epoch']})")
  bar.close()

  summary = metrics_lib.summarize(results, SUMMARY_METRICS)
  output = {"folds": results, "summary": summary, "cohort": cohort.summary()}
  if run.baselines:
    from stgnn_jax import baselines

    output["baselines"] = baselines.run_baselines(
        subjects.last_fc, subjects.labels, folds, decision_threshold=run.decision_threshold)
  atomic_write_json(os.path.join(out_dir, "results.json"), output)
  write_metrics_csv(out_dir, histories)
  from stgnn_jax import reports

  reports.plot_training_curves(out_dir, histories)
  reports.plot_roc_curves(out_dir, results, subjects.labels, output.get("baselines"))
  log(format_summary(summary, output.get("baselines")))
  return output


def write_metrics_csv(out_dir: str, histories: Sequence[Sequence[dict[str, Any]]]) -> None:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=METRICS_COLUMNS, lineterminator="\n")
  writer.writeheader()
  for history in histories:
    for row in history:
      writer.writerow({k: ("" if row[k] is None else row[k]) for k in METRICS_COLUMNS})
  atomic_write_text(os.path.join(out_dir, "metrics.csv"), buffer.getvalue())


def format_summary(summary: dict[str, dict[str, Any]],
                   baselines: dict[str, dict[str, Any]] | None = None) -> str:
  """The STGNN's mean ± std over folds, with the classical baselines' in columns beside it."""
  columns = {"STGNN": summary}
  columns.update({name: b["summary"] for name, b in (baselines or {}).items()})
  lines = ["cross-validation summary (mean ± std over folds; baselines: logistic regression on "
           "the last scan):" if baselines else "cross-validation summary (mean ± std over folds):",
           " " * 22 + "".join(f"{name:>17}" for name in columns)]
  for key in summary:
    cells = []
    for column in columns.values():
      value = column.get(key)
      if value is None:
        cells.append("")
      elif value["mean"] is None:
        cells.append("undefined")
      else:
        cells.append(f"{value['mean']:.4f} ± {value['std']:.4f}")
    lines.append(f"  {key:>20}" + "".join(f"{cell:>17}" for cell in cells))
  return "\n".join(lines)


def _fmt(value: float | None) -> str:
  return "undefined" if value is None else f"{value:.3f}"


def _progress(total: int, enabled: bool):
  from tqdm.auto import tqdm

  return tqdm(total=total, disable=not enabled, unit="epoch", dynamic_ncols=True)
