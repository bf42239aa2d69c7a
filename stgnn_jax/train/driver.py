"""The fold driver: a fold's epochs, selection, progress and test, written once.

`FoldTrainer` trains one fold for one member (a single run, `single_trainer`, `train_fold`) or
for a chunk of members that share the fold's batches (a sweep, `train.sweep.setup_chunk`); the
layout of their arrays is the engine's (`train.engines`). Per epoch: a seeded shuffle of the
training subjects, the steps, validation, the plateau scheduler on a validation metric, the
selection of each member's best epoch and early stopping (`loop.record_epoch`). A member whose
loss or predictions stop being finite stops and keeps its best state; the others go on.

The trainer's progress (every array and each member's bookkeeping) is saved every
`save_seconds` (0: every epoch) and read back by the next trainer set up in the same folder, so
a killed run resumes exactly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time as wall_time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stgnn_jax.config import ModelConfig, OptimConfig, RunConfig
from stgnn_jax.input_pipeline import FoldSplit, Subjects
from stgnn_jax.train.checkpoints import restore_state, save_checkpoint, save_state
from stgnn_jax.train.engines import OneMember
from stgnn_jax.train.fold_result import LAST_EPOCH, PATH_ALONE, FoldResult
from stgnn_jax.train.linear_path import gate_network, path_alone
from stgnn_jax.train.loop import (
    Fold,
    FoldProgress,
    FrozenEncoderScans,
    NonFiniteError,
    epoch_losses,
    record_epoch,
    setup_fold,
    split_metrics,
    tested_result,
)
from stgnn_jax.train.optimizer import plateau_scheduler, plateau_value
from stgnn_jax.train.sharding import Placement, to_host

logger = logging.getLogger(__name__)


def train_epoch(engine: Any, state: Any, epoch: int, subjects: Subjects, order: np.ndarray,
                run: RunConfig, placement: Placement, epoch_key: jax.Array,
                frozen_scans: FrozenEncoderScans | None = None, mask: Any = None
                ) -> tuple[Any, list[Any]]:
  """Epoch `epoch` (0-based): one pass over `order` in batches of `run.batch_size`, stepped by
  `engine` (its members `mask`ed). Returns `(state, per-step metrics)`, nothing synchronised.

  With `frozen_scans` (a frozen encoder) the steps run on the epoch's precomputed embeddings;
  otherwise each step runs the whole model on its batch's graphs.
  """
  state = engine.stage(state, epoch)
  if frozen_scans is not None:
    # The steps use fold_in(epoch_key, b); the encoder's dropout takes an index no step reaches.
    batches = frozen_scans.batches(engine.first(state), order,
                                   jax.random.fold_in(epoch_key, 2**31 - 1))
  else:
    batches = (placement.batch(b) for b in subjects.batches(order, run.batch_size, run))
  step_metrics = []
  for b, batch in enumerate(batches):
    state, metrics = engine.step(state, batch, jax.random.fold_in(epoch_key, b), mask)
    step_metrics.append(metrics)
  return state, step_metrics


@dataclasses.dataclass
class FoldTrainer:
  """One fold's training: its members' fixed inputs (`folds`, one per member, the same split),
  their bookkeeping (`progress`), the arrays (`state`, `plateau_state`, `best_params`, laid out
  by `engine`) and where the progress is saved (`path`).

  `optim_config` is the static recipe every member shares (its traced values are per member);
  `names` label the members' metrics rows (None: a single run's rows carry no member); the
  first `real` members are reported (the others only pad a chunk over the devices);
  `checkpoint_best` writes `best.msgpack` in the fold's folder whenever the (single) member
  improves.
  """

  folds: list[Fold]
  progress: list[FoldProgress]
  engine: Any
  state: Any
  plateau_state: Any
  best_params: Any
  path: str
  optim_config: OptimConfig
  real: int
  names: list[str] | None = None
  checkpoint_best: bool = False
  save_seconds: float = 0.0

  @property
  def placement(self) -> Placement:
    return self.engine.placement

  def active(self) -> np.ndarray:
    return np.array([not p.stopped and p.next_epoch < f.run.n_epochs
                     for p, f in zip(self.progress, self.folds, strict=True)])

  def to_tree(self) -> dict[str, Any]:
    return {"state": self.state, "plateau_state": self.plateau_state,
            "best_params": self.best_params,
            "meta": json.dumps([p.meta() for p in self.progress])}

  def save(self) -> None:
    save_state(self.path, to_host(self.to_tree()))

  def restore(self) -> None:
    tree = restore_state(self.path, to_host(self.to_tree()))
    self.state = self.engine.place(tree["state"])
    self.plateau_state = self.engine.place(tree["plateau_state"])
    self.best_params = self.engine.place(tree["best_params"])
    for progress, meta in zip(self.progress, json.loads(tree["meta"]), strict=True):
      for name, value in meta.items():
        setattr(progress, name, value)

  def resume_if_saved(self) -> None:
    if os.path.exists(self.path):
      self.restore()
      logger.info("fold %d, %s: resuming at epoch %d", self.folds[0].index,
                  os.path.basename(os.path.dirname(self.path)),
                  min(p.next_epoch for p in self.progress))

  def _stop(self, m: int | np.integer, problem: str) -> None:
    self.progress[m].stop_keeping_best(problem, who=self.engine.who)
    logger.info("fold %d%s: %s", self.folds[m].index,
                f", {self.names[m]}" if self.names else "", self.progress[m].stopped)

  def epoch(self) -> list[dict[str, Any]]:
    """Trains the next epoch of the active members, validates each, steps their plateaus and
    keeps each one's best epoch; returns the metrics rows of the members that trained it (a
    member whose loss or validation predictions are not finite stops, its epoch discarded)."""
    fold, engine = self.folds[0], self.engine
    run, active = fold.run, self.active()
    epoch = min(p.next_epoch for p, a in zip(self.progress, active, strict=True) if a)
    order = np.random.default_rng([run.seed, fold.index, epoch]).permutation(fold.train_idx)
    epoch_key = jax.random.fold_in(jax.random.fold_in(fold.base_key, 1), epoch)
    started = wall_time.perf_counter()
    state, step_metrics = train_epoch(engine, self.state, epoch, fold.subjects, order, run,
                                      self.placement, epoch_key, fold.frozen_scans,
                                      engine.mask(active))
    step_metrics = engine.host(step_metrics)
    epoch_seconds = wall_time.perf_counter() - started
    val_logits, val_losses = engine.predict(fold, state, fold.val_idx)

    vals: list[dict[str, Any] | None] = [None] * len(self.folds)
    keep, train = active.copy(), {}
    for m in np.flatnonzero(active):
      train[m] = epoch_losses([{k: v[m] for k, v in s.items()} for s in step_metrics])
      if not math.isfinite(train[m][0]):
        self._stop(m, f"non-finite training loss ({train[m][0]}) at epoch {epoch}")
        keep[m] = False
        continue
      try:
        vals[m] = split_metrics(val_logits[m], val_losses[m], fold.subjects, fold.val_idx,
                                choose_threshold=run.decision_threshold == "val")
      except NonFiniteError as error:
        self._stop(m, f"non-finite validation predictions at epoch {epoch} ({error})")
        keep[m] = False
    values = np.array([plateau_value(self.optim_config, v) if v else 0.0 for v in vals],
                      np.float32)
    min_scales = np.array([self.optim_config.min_lr / f.optim_config.lr for f in self.folds],
                          np.float32)
    self.plateau_state = engine.plateau(self.optim_config, self.plateau_state, values,
                                        min_scales, keep)
    # The learning rate in float64 on the host, then set in the optimiser's state.
    lrs = [f.optim_config.lr * float(scale)
           for f, scale in zip(self.folds, engine.host(self.plateau_state.scale), strict=True)]
    self.state = engine.where(keep, engine.with_learning_rates(state, lrs), self.state)

    rows = []
    for m in np.flatnonzero(keep):
      val = vals[m]
      assert val is not None  # a kept member was validated
      row = record_epoch(self.progress[m], fold.index, epoch, run, val, lr=lrs[m],
                         train_loss=train[m][0], train_acc=train[m][1],
                         epoch_seconds=epoch_seconds)
      rows.append(dict(row, member=self.names[m]) if self.names else row)
    improved = np.array([p.best_epoch == epoch for p in self.progress]) & keep
    if improved.any():
      # Immutable arrays: the selected parameters are a real copy, never updated in place.
      self.best_params = engine.where(improved, self.state.params, self.best_params)
      if self.checkpoint_best:
        val = vals[0]
        assert val is not None  # the (single) member improved, so it was validated
        save_checkpoint(os.path.join(fold.directory, "best.msgpack"),
                        jax.device_get(self.state.params), fold.model_config, fold=fold.index,
                        epoch=epoch, val_auc=val["auc"],
                        val_balanced_acc=val["balanced_accuracy"],
                        decision_threshold=val["threshold"], focal_alpha=fold.focal_alpha)
    return rows

  def train(self, on_epoch: Callable[[list[dict[str, Any]]], None] = lambda rows: None
            ) -> None:
    """Epochs until every member has stopped or run `n_epochs`; the progress saved at most
    every `save_seconds`, and after the last epoch. `on_epoch` gets each epoch's rows (an epoch
that no member kept has none)."""
    saved = wall_time.monotonic()
    while self.active().any():
      rows = self.epoch()
      if wall_time.monotonic() - saved >= self.save_seconds or not self.active().any():
        self.save()
        saved = wall_time.monotonic()
      if rows:  # none when every member stopped on a non-finite epoch
        on_epoch(rows)

  def test(self) -> list[FoldResult]:
    """Each real member's result: its selected epoch (or, when no epoch was selected, its last
    state) on the test fold."""
    fold, engine = self.folds[0], self.engine
    has_best = np.array([p.best_epoch >= 0 for p in self.progress])
    for m in np.flatnonzero(~has_best[:self.real]):
      logger.info("fold %d%s: no epoch predicted both validation classes with a defined AUC; "
                  "testing the last state instead (the fold's checkpoint holds it)", fold.index,
                  f", {self.names[m]}" if self.names else "")
    # What is tested is what a fold's checkpoint holds: without a selected epoch, the last state.
    self.best_params = engine.where(has_best, self.best_params, self.state.params)
    if self.checkpoint_best and not has_best[0]:
      save_checkpoint(os.path.join(fold.directory, "best.msgpack"),
                      jax.device_get(self.state.params), fold.model_config, fold=fold.index,
                      epoch=self.progress[0].next_epoch - 1, val_auc=None,
                      decision_threshold=None, focal_alpha=fold.focal_alpha, tested=LAST_EPOCH)
    gates = self.gate() if fold.model_config.linear_path else [None] * len(self.folds)
    best = self.state.replace(params=self.best_params)
    test = engine.predict(fold, best, fold.test_idx)
    train = engine.predict(fold, best, fold.train_idx)
    val = (engine.predict(fold, best, fold.val_idx)[0]
           if fold.run.calibrate == "temperature" else None)
    return [tested_result(self.folds[m], self.progress[m], (test[0][m], test[1][m]),
                          (train[0][m], train[1][m]), None if val is None else val[m], gates[m])
            for m in range(self.real)]

  def gate(self) -> list[dict[str, Any]]:
    """The network gate (`ModelConfig.network_gate`): each member's selected model against its
    linear path alone on the validation subjects (`linear_path.gate_network`); the members the
    gate gives the path alone test it (and a single run's best.msgpack holds it). Returns each
    member's gate record."""
    fold, engine = self.folds[0], self.engine
    path_params = path_alone(self.best_params)
    network = engine.predict(fold, self.state.replace(params=self.best_params), fold.val_idx)[0]
    path = engine.predict(fold, self.state.replace(params=path_params), fold.val_idx)[0]
    labels = fold.subjects.labels[fold.val_idx]
    gates = [gate_network(fold.model_config.network_gate, labels, network[m], path[m],
                          choose_threshold=fold.run.decision_threshold == "val")
             for m in range(len(self.folds))]
    keep = np.array([g["tested"] != PATH_ALONE for g in gates])
    for m, g in enumerate(gates[:self.real]):
      z = "undefined (under two of a class)" if g["z"] is None else f"{g['z']:.2f}"
      logger.info("fold %d%s: validation AUC of the network %s, of the path alone %s, DeLong z "
                  "%s: %s is tested", fold.index, f", {self.names[m]}" if self.names else "",
                  _auc_text(g["val_auc_network"]), _auc_text(g["val_auc_path"]), z,
                  "the path alone" if not keep[m] else "the network")
    self.best_params = engine.where(keep, self.best_params, path_params)
    if self.checkpoint_best and not keep[0]:
      progress = self.progress[0]
      save_checkpoint(os.path.join(fold.directory, "best.msgpack"),
                      jax.device_get(path_params), fold.model_config, fold=fold.index,
                      epoch=progress.best_epoch, val_auc=gates[0]["val_auc_path"],
                      decision_threshold=gates[0]["path_threshold"],
                      focal_alpha=fold.focal_alpha, tested=PATH_ALONE)
    return gates


def _auc_text(auc: float | None) -> str:
  return "undefined" if auc is None else f"{auc:.3f}"


def single_trainer(index: int, split: FoldSplit, subjects: Subjects, model_config: ModelConfig,
                   optim_config: OptimConfig, run: RunConfig, placement: Placement,
                   directory: str) -> FoldTrainer:
  """A single run's trainer of fold `index` in `directory` (resumed from its progress there)."""
  fold, state = setup_fold(index, split, subjects, model_config, optim_config, run, placement,
                           directory)
  trainer = FoldTrainer(
      folds=[fold], progress=[FoldProgress()], engine=OneMember(placement), state=state,
      plateau_state=plateau_scheduler(optim_config).init(jnp.zeros(())), best_params=state.params,
      path=fold.progress_path, optim_config=optim_config, real=1, checkpoint_best=True)
  trainer.resume_if_saved()
  return trainer


def train_fold(index: int, split: FoldSplit, subjects: Subjects, model_config: ModelConfig,
               optim_config: OptimConfig, run: RunConfig, placement: Placement, directory: str,
               *, on_epoch: Callable[[list[dict[str, Any]]], None] = lambda history: None
               ) -> FoldResult:
  """Trains one fold of a single run, resuming from `directory/progress.msgpack` if present.

  Returns the fold's result (its test/train metrics and one metrics row per epoch, `history`);
  `on_epoch` is called with the history after every epoch.
  """
  trainer = single_trainer(index, split, subjects, model_config, optim_config, run, placement,
                           directory)
  history = trainer.progress[0].history
  trainer.train(lambda rows: on_epoch(history))
  [result] = trainer.test()
  return result
