"""A fold's parts: its fixed inputs, its bookkeeping, predictions, metrics and results entry.

`setup_fold` makes the fold's inputs (training statistics, the fitted linear path, the focal α)
and initial state; `driver.FoldTrainer` runs its epochs. Selection of the best epoch is by
validation AUC among epochs that predict both classes (`FoldProgress.improves`). With
`decision_threshold="val"` each epoch's validation predictions also choose the decision threshold
(`metrics.balanced_threshold`) that the selected epoch then applies to the test fold; "argmax" is
the reference's. Early stopping ends a fold `early_stop_patience` epochs after its last selected
epoch (`record_epoch`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stgnn_jax.config import ModelConfig, OptimConfig, RunConfig
from stgnn_jax.eval import calibration as calibration_lib
from stgnn_jax.eval import metrics as metrics_lib
from stgnn_jax.input_pipeline import (
    FoldSplit,
    ScanTable,
    Subjects,
    iterate_embedded_batches,
    pack_scans,
)
from stgnn_jax.train.fold_result import BEST_EPOCH, LAST_EPOCH, PATH_ALONE, FoldResult
from stgnn_jax.train.linear_path import (
    PATH_RECORD,
    fit_linear_path,
    last_visit_inputs,
    path_columns,
    with_linear_path,
)
from stgnn_jax.train.pretrain import load_encoder
from stgnn_jax.train.sharding import Placement, to_host
from stgnn_jax.train.state import (
    TrainState,
    auto_class_weights,
    auto_focal_alpha,
    init_params,
    input_statistics,
    with_input_statistics,
)
from stgnn_jax.train.step import encode_graphs, eval_step

logger = logging.getLogger(__name__)


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
        features=None if subjects.features is None else subjects.features.subset(train_idx))
    self.chunks = [placement.batch(chunk) for chunk in self.table.chunks]
    self.position = {int(subject): p for p, subject in enumerate(train_idx)}
    self.run = run
    self.placement = placement

  def batches(self, state: TrainState, order: np.ndarray, key: jax.Array | None, *,
              batch_size: int | None = None):
    """The epoch's `EmbeddedBatch`es for subjects in `order` (cohort indices), of
    `batch_size` (default: the run's) subjects; `key` None embeds in eval mode."""
    embeddings = jnp.concatenate([
        encode_graphs(state.params, graphs, time,
                      jax.random.key(0) if key is None else jax.random.fold_in(key, c),
                      model_config=state.model_config, deterministic=key is None)
        for c, (graphs, time) in enumerate(self.chunks)])
    positions = np.array([self.position[int(i)] for i in order])
    # Any subject may pick any row: the embeddings are replicated, the subjects sharded.
    embeddings = self.placement.replicate(embeddings)
    for batch in iterate_embedded_batches(self.table, batch_size=batch_size or self.run.batch_size,
                                          max_visits=self.run.max_visits, order=positions):
      yield dataclasses.replace(self.placement.batch(batch), embeddings=embeddings)


def predict_split(state: TrainState, subjects: Subjects, indices: np.ndarray, run: RunConfig,
                  placement: Placement, step: Callable = eval_step
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(logits [n, classes], per-subject loss [n]) for `indices`, in eval mode; with a sweep's
  vmapped `step`, `[members, n, classes]` and `[members, n]`."""
  batches = (placement.batch(b) for b in subjects.batches(indices, run.eval_batch_size, run))
  return collect_predictions(state, batches, len(indices), run.eval_batch_size, step)


def collect_predictions(state: Any, batches, count: int, size: int, step: Callable = eval_step
                        ) -> tuple[np.ndarray, np.ndarray]:
  """`step`'s (logits, losses) over `batches` of `size` subject slots, the padding of the last
  one dropped: `count` subjects along the second-to-last and last axes."""
  logits, losses = [], []
  for start, batch in zip(range(0, count, size), batches, strict=True):
    out = to_host(step(state, batch))
    n = min(size, count - start)
    logits.append(out["logits"][..., :n, :])
    losses.append(out["loss"][..., :n])
  return np.concatenate(logits, axis=-2), np.concatenate(losses, axis=-1)


class NonFiniteError(ArithmeticError):
  """A model's predictions or loss are not finite (a diverged or unusable state)."""


def evaluate(state, subjects, indices, run, placement, *, threshold: float | None = None,
             choose_threshold: bool = False, reports: bool = False) -> dict[str, Any]:
  """Metrics of `indices` at `threshold` (None: argmax); with `choose_threshold`, at the split's
  own `metrics.balanced_threshold` instead (returned as "threshold"; None if undefined).

  Raises NonFiniteError when a prediction or loss is not finite (metrics would be undefined).
  """
  logits, losses = predict_split(state, subjects, indices, run, placement)
  return split_metrics(logits, losses, subjects, indices, threshold=threshold,
                       choose_threshold=choose_threshold, reports=reports)


def split_metrics(logits: np.ndarray, losses: np.ndarray, subjects: Subjects,
                  indices: np.ndarray, *, threshold: float | None = None,
                  choose_threshold: bool = False, reports: bool = False) -> dict[str, Any]:
  """`evaluate`'s metrics from a model's predictions of `indices` (`predict_split`)."""
  bad = ~(np.isfinite(logits).all(axis=-1) & np.isfinite(losses))
  if bad.any():
    raise NonFiniteError(f"{int(bad.sum())} of {len(bad)} predictions are not finite")
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


@dataclasses.dataclass
class FoldProgress:
  """A member's bookkeeping in a fold, beside its arrays (`driver.FoldTrainer`): its selected
  epoch, where it stands and its metrics rows; saved with the arrays for --resume."""

  best_epoch: int = -1
  best_val_auc: float = -math.inf
  best_val_loss: float = math.inf
  best_threshold: float | None = None
  next_epoch: int = 0
  stopped: str = ""
  history: list = dataclasses.field(default_factory=list)

  META = ("best_epoch", "best_val_auc", "best_val_loss", "best_threshold", "next_epoch",
          "stopped", "history")

  def meta(self) -> dict[str, Any]:
    """The bookkeeping (everything but the arrays), as JSON values."""
    return {name: getattr(self, name) for name in self.META}

  def stop_keeping_best(self, problem: str, who: str = "fold") -> None:
    """Stops training after `problem` (a non-finite loss or prediction); the best state so far
    stays the one to test."""
    self.stopped = (f"{problem}; the {who} stops and keeps its best state so far (epoch "
                    f"{self.best_epoch}; -1: the last finite state)")

  def improves(self, val: dict[str, Any], selection: str) -> bool:
    """Whether a validation result beats the selected epoch: a higher AUC, or with "auc_loss" an
    equal AUC and a lower loss (small validation splits tie often, e.g. at AUC 1)."""
    if not predicts_both_classes(val) or val["auc"] is None:
      return False
    if val["auc"] != self.best_val_auc:
      return val["auc"] > self.best_val_auc
    return selection == "auc_loss" and val["loss"] < self.best_val_loss


@dataclasses.dataclass
class Fold:
  """One fold's fixed inputs: its subjects, the model it trains, where it writes."""

  index: int
  train_idx: np.ndarray
  val_idx: np.ndarray
  test_idx: np.ndarray
  subjects: Subjects
  model_config: ModelConfig
  optim_config: OptimConfig
  run: RunConfig
  placement: Placement
  directory: str
  base_key: jax.Array
  focal_alpha: float
  class_weights: tuple[float, ...] | None
  frozen_scans: FrozenEncoderScans | None
  linear_path: dict[str, Any] | None = None  # the fitted path's C and inner AUCs

  @property
  def progress_path(self) -> str:
    return os.path.join(self.directory, "progress.msgpack")


def setup_fold(index: int, split: FoldSplit, subjects: Subjects, model_config: ModelConfig,
               optim_config: OptimConfig, run: RunConfig, placement: Placement,
               directory: str) -> tuple[Fold, TrainState]:
  """The fold's fixed inputs and its initial state (`driver.single_trainer` resumes a state
  saved in `directory`).

  Parameters come from the fold's seed, the input statistics from its training scans only (no
  test subject leaks into them), the linear path from a regression on its training subjects
  (`train.linear_path`; their cross-fitted offsets ride in `fold.subjects`), the encoder from
  --pretrained or --pretrain_encoder, the focal α from its training labels with
  `focal_alpha="auto"`.
  """
  train_idx, val_idx, test_idx = split
  subjects = subjects.for_fold(train_idx)
  base_key = jax.random.fold_in(jax.random.key(run.seed), index)
  first = next(subjects.batches(train_idx, run.batch_size, run))
  params = init_params(model_config, first, jax.random.fold_in(base_key, 0))
  if subjects.features is not None:
    train_features = subjects.features.subset(train_idx)
    stats = input_statistics(train_features)
    params = with_input_statistics(params, stats)
    if model_config.linear_path:
      fitted = fit_linear_path(
          last_visit_inputs(train_features, stats),
          subjects.labels[train_idx], seed=run.seed + index,
          columns=path_columns(model_config.node_features, model_config.node_slots),
          change=model_config.linear_path_change)
      params = with_linear_path(params, fitted)
      offsets = np.zeros(len(subjects.labels), np.float32)
      offsets[train_idx] = fitted["offsets"]
      subjects = subjects.with_offsets(offsets)
  params = load_encoder(params, model_config, run, subjects, train_idx, directory, base_key)
  path_fit = None if not model_config.linear_path else {
      name: fitted[name] for name in PATH_RECORD if name in fitted}
  focal_alpha = (auto_focal_alpha(subjects.labels[train_idx])
                 if optim_config.focal_alpha == "auto" else optim_config.focal_alpha)
  assert not isinstance(focal_alpha, str)  # "auto" is the only string OptimConfig accepts
  class_weights = (auto_class_weights(subjects.labels[train_idx])
                   if optim_config.loss == "weighted_ce" and optim_config.class_weights is None
                   else optim_config.class_weights)
  state = placement.replicate(TrainState.create(params, model_config, optim_config,
                                                focal_alpha=focal_alpha,
                                                class_weights=class_weights))
  fold = Fold(index=index, train_idx=train_idx, val_idx=val_idx, test_idx=test_idx,
              subjects=subjects, model_config=model_config, optim_config=optim_config, run=run,
              placement=placement, directory=directory, base_key=base_key,
              focal_alpha=focal_alpha, class_weights=class_weights,
              frozen_scans=(FrozenEncoderScans(subjects, train_idx, run, placement)
                            if model_config.freeze_encoder else None),
              linear_path=path_fit)
  return fold, state


def epoch_losses(step_metrics: list[dict[str, Any]]) -> tuple[float, float]:
  """(mean training loss, accuracy) of an epoch from its steps' metrics (host values)."""
  count = sum(float(m["count"]) for m in step_metrics)
  train_loss = sum(float(m["loss"]) * float(m["count"]) for m in step_metrics) / count
  return train_loss, sum(float(m["correct"]) for m in step_metrics) / count


def record_epoch(progress: FoldProgress, fold: int, epoch: int, run: RunConfig,
                 val: dict[str, Any], *, train_loss: float, train_acc: float, lr: float,
                 epoch_seconds: float) -> dict[str, Any]:
  """The bookkeeping of a validated epoch: selection (`progress.best_*` when it improves),
  the metrics row, the next epoch and early stopping. The caller keeps the selected epoch's
  parameters. Returns the row."""
  if progress.improves(val, run.selection):
    progress.best_val_auc, progress.best_val_loss = val["auc"], val["loss"]
    progress.best_epoch, progress.best_threshold = epoch, val["threshold"]
  row = {"fold": fold, "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
         "val_loss": val["loss"], "val_acc": val["accuracy"],
         "val_balanced_acc": val["balanced_accuracy"], "val_auc": val["auc"],
         "val_threshold": val["threshold"], "lr": lr, "epoch_seconds": epoch_seconds}
  progress.history.append(row)
  progress.next_epoch = epoch + 1
  if run.early_stop_patience and epoch - progress.best_epoch >= run.early_stop_patience:
    progress.stopped = (f"early stop at epoch {epoch}: no better validation epoch for "
                        f"{run.early_stop_patience} epochs (best epoch {progress.best_epoch})")
  return row


def tested_result(fold: Fold, progress: FoldProgress, test: tuple[np.ndarray, np.ndarray],
                  train: tuple[np.ndarray, np.ndarray],
                  val_logits: np.ndarray | None = None,
                  gate: dict[str, Any] | None = None) -> FoldResult:
  """The fold's result from the tested model's (logits, losses) of its test and training
  subjects (`predict_split`); with its validation logits, the temperature fitted on them
  (`eval.calibration`) and the test fold's calibrated ECE and Brier score; with the network
  gate's record (`linear_path.gate_network`), the path alone when the gate kept it."""
  path = gate is not None and gate["tested"] == PATH_ALONE
  if gate is not None and path:
    threshold = gate["path_threshold"]
  else:
    threshold = progress.best_threshold if progress.best_epoch >= 0 else None
  try:
    tested = split_metrics(*test, fold.subjects, fold.test_idx, threshold=threshold, reports=True)
    trained = split_metrics(*train, fold.subjects, fold.train_idx, threshold=threshold)
  except NonFiniteError as error:
    reason = f"the fold's model gives non-finite test or training predictions ({error})"
    logger.warning("fold %d: %s; its metrics are undefined", fold.index, reason)
    return undefined_result(fold, progress, reason)
  # The reference's argmax predictions of the same model, beside those at the chosen threshold.
  argmax = metrics_lib.classification_metrics(tested["labels"], tested["logits"], report=False)
  test_p1 = metrics_lib.softmax_p1(tested["logits"]).tolist()
  calibrated: dict[str, Any] = {}
  if val_logits is not None:
    temperature = calibration_lib.fit_temperature(fold.subjects.labels[fold.val_idx], val_logits)
    if temperature is not None:
      scores = metrics_lib.calibration(
          tested["labels"], calibration_lib.calibrated_p1(tested["logits"], temperature))
      calibrated = {"temperature": temperature, "ece_calibrated": scores["ece"],
                    "brier_calibrated": scores["brier"]}
  return FoldResult(
      test_acc=tested["accuracy"],
      balanced_acc=tested["balanced_accuracy"],
      minority_precision=tested["minority_precision"],
      minority_recall=tested["minority_recall"],
      minority_f1=tested["minority_f1"],
      test_auc=tested["auc"],
      test_loss=tested["loss"],
      train_acc=trained["accuracy"],
      balanced_train_acc=trained["balanced_accuracy"],
      decision_threshold=threshold,
      argmax={"test_acc": argmax["accuracy"], "balanced_acc": argmax["balanced_accuracy"],
              "minority_f1": argmax["minority_f1"],
              "prediction_counts": argmax["prediction_counts"]},
      tested=PATH_ALONE if path else BEST_EPOCH if progress.best_epoch >= 0 else LAST_EPOCH,
      best_val_auc=progress.best_val_auc if progress.best_epoch >= 0 else None,
      stopped=progress.stopped or None,
      prediction_counts=tested["prediction_counts"],
      classification_report=tested["classification_report"],
      test_p1=test_p1,
      **metrics_lib.calibration(tested["labels"], test_p1),
      **calibrated,
      per_conversion_type=tested.get("per_conversion_type"),
      per_horizon=tested.get("per_horizon"),
      network_gate=None if gate is None else {
          name: value for name, value in gate.items() if name != "path_threshold"},
      **_fold_facts(fold, progress))


def undefined_result(fold: Fold, progress: FoldProgress, reason: str) -> FoldResult:
  """The result of a fold whose model cannot be tested: every metric None."""
  return FoldResult(stopped="; ".join(filter(None, [progress.stopped, reason])),
                    **_fold_facts(fold, progress))


def _fold_facts(fold: Fold, progress: FoldProgress) -> dict[str, Any]:
  """What a fold's result says whether or not its model could be tested."""
  return {"fold": fold.index, "focal_alpha": fold.focal_alpha,
          "class_weights": fold.class_weights, "linear_path": fold.linear_path,
          "best_epoch": progress.best_epoch, "epochs_run": progress.next_epoch,
          "n_train": len(fold.train_idx), "n_val": len(fold.val_idx),
          "n_test": len(fold.test_idx), "test_subjects": fold.test_idx.tolist(),
          "history": progress.history}
