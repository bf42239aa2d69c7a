"""A finished `train.py` run as a predictor: its folds' models, applied as they were tested.

`load_run(RUN_DIR)` reads what a run wrote (config.json, results.json, each fold's
`best.msgpack` and, when preprocessing was fitted inside the folds, its `preprocessing.npz`) into
a `TrainedRun`. `TrainedRun.predict_cohort` replays, for each fold, everything between the scans
and the probability: the fold's fitted steps (tangent reference, ComBat estimates) applied to the
new scans, the node features, the selected epoch's parameters (input statistics and the linear
path included), the fold's decision threshold and its temperature (`--calibrate`). So a subject
of the run's own cohort gets, from the fold where it was a test subject, exactly the probability
that fold reported, and a new subject gets what each fold's model says about it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stgnn_jax.config import ModelConfig, RunConfig
from stgnn_jax.data.cohort import UNLABELLED, Cohort
from stgnn_jax.data.fold_steps import FIT_FILE, FittedSteps
from stgnn_jax.errors import InputError, RunStateError
from stgnn_jax.eval import calibration as calibration_lib
from stgnn_jax.eval import metrics as metrics_lib

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "best.msgpack"


@dataclasses.dataclass(frozen=True)
class FoldModel:
  """One fold of a finished run, as it was tested.

  `decision_threshold` is on the model's own p(converter) (None: argmax); `temperature` the
  fold's calibration (None: uncalibrated); `fitted` its preprocessing fit (None when the run fits
  none); `test_subjects` the ids of its test subjects with their reported `test_p1`.
  """

  index: int
  params: Any
  decision_threshold: float | None
  temperature: float | None
  fitted: FittedSteps | None
  test_subjects: tuple[str, ...]
  test_p1: np.ndarray

  def probabilities(self, logits: np.ndarray) -> np.ndarray:
    """Calibrated p(converter) of logits `[subjects, 2]` (the model's own without a
    temperature)."""
    if self.temperature is None:
      return metrics_lib.softmax_p1(logits)
    return calibration_lib.calibrated_p1(logits, self.temperature)

  def decisions(self, logits: np.ndarray) -> np.ndarray:
    """0/1 decisions as the fold made them on its test subjects: the model's own p(converter)
    against the fold's validation threshold (argmax without one)."""
    p1 = metrics_lib.softmax_p1(logits)
    if self.decision_threshold is None:
      return (np.argmax(logits, axis=-1) == 1).astype(np.int64)
    return (p1 >= self.decision_threshold).astype(np.int64)

  @property
  def threshold(self) -> float | None:
    """The decision threshold on the calibrated probabilities (`probabilities`)."""
    if self.temperature is None or self.decision_threshold is None:
      return self.decision_threshold
    return calibration_lib.calibrated_threshold(self.decision_threshold, self.temperature)


@dataclasses.dataclass(frozen=True)
class Predictions:
  """The folds' predictions of a cohort's subjects (`TrainedRun.predict_cohort`).

  `logits` `[folds, subjects, 2]`, `p1` the calibrated probabilities `[folds, subjects]`,
  `decisions` `[folds, subjects]` 0/1; `ensemble` the majority decision (a tie, with an even
  number of folds, goes to the side of the mean probability against the folds' mean threshold);
  `agreement` the share of folds that made the ensemble's decision; `out_of_fold` the fold whose
  test subject it was (-1: not a subject of the run), `oof_p1` that fold's probability (NaN
  otherwise).
  """

  subject_ids: tuple[str, ...]
  visits: np.ndarray
  labels: np.ndarray
  logits: np.ndarray
  p1: np.ndarray
  decisions: np.ndarray
  ensemble: np.ndarray
  agreement: np.ndarray
  out_of_fold: np.ndarray
  oof_p1: np.ndarray

  @property
  def p1_mean(self) -> np.ndarray:
    return self.p1.mean(axis=0)

  @property
  def p1_std(self) -> np.ndarray:
    return self.p1.std(axis=0)


def _read_json(path: Path, what: str) -> Any:
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError) as error:
    raise RunStateError(f"{path}: not a readable {what} ({type(error).__name__}: {error})"
                        ) from None


def load_run(directory: str | os.PathLike) -> TrainedRun:
  """The finished run in `directory` (a `train.py --out_dir`).

  Raises:
    InputError: not a run folder; a run that has not finished (naming the folds that lack
      their result or checkpoint); damaged files.
  """
  from stgnn_jax.train.checkpoints import load_checkpoint

  root = Path(directory)
  if not (root / CONFIG_FILE).is_file():
    raise InputError(f"{root}: not a run folder (no {CONFIG_FILE}); pass the --out_dir of a "
                     "train.py run.")
  config = _read_json(root / CONFIG_FILE, "run configuration")
  try:
    run = RunConfig.from_dict(config["run"])
  except (KeyError, TypeError, ValueError) as error:
    raise RunStateError(f"{root / CONFIG_FILE}: not a run configuration of this version "
                        f"({type(error).__name__}: {error})") from None
  missing = [k for k in range(run.num_folds)
             if not (root / f"fold_{k}" / CHECKPOINT_FILE).is_file()]
  if not (root / RESULTS_FILE).is_file() or missing:
    lacking = ([f"folds without {CHECKPOINT_FILE}: {', '.join(map(str, missing))}"] if missing
               else []) + ([] if (root / RESULTS_FILE).is_file() else [f"no {RESULTS_FILE}"])
    raise InputError(f"{root}: the run has not finished ({'; '.join(lacking)}); finish it with "
                     f"train.py --resume {root}")
  results = _read_json(root / RESULTS_FILE, "results file")
  subject_ids = results.get("subject_ids")
  folds: list[FoldModel] = []
  model_config = None
  for k, entry in enumerate(results["folds"]):
    params, config_k, metadata = load_checkpoint(root / f"fold_{k}" / CHECKPOINT_FILE)
    model_config = model_config or config_k
    fit_path = root / f"fold_{k}" / FIT_FILE
    fitted = FittedSteps.load(fit_path) if fit_path.is_file() else None
    test_ids = (tuple(subject_ids[i] for i in entry["test_subjects"]) if subject_ids else ())
    folds.append(FoldModel(
        index=k, params=params,
        decision_threshold=entry.get("decision_threshold", metadata.get("decision_threshold")),
        temperature=entry.get("temperature"), fitted=fitted, test_subjects=test_ids,
        test_p1=np.asarray(entry.get("test_p1") or [], np.float64)))
  assert model_config is not None  # a finished run has folds
  unfitted = [f.index for f in folds if f.fitted is None]
  if unfitted and results.get("preprocessing", {}).get("fitted_in_each_fold"):
    raise InputError(f"{root}: folds {unfitted} lack their {FIT_FILE} (the preprocessing fitted "
                     "on their training subjects); the run folder is incomplete.")
  return TrainedRun(directory=str(root), model_config=model_config, run=run,
                    folds=tuple(folds),
                    subject_ids=None if subject_ids is None else tuple(subject_ids))


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """A finished run's folds (`load_run`): its architecture, settings and fold models."""

  directory: str
  model_config: ModelConfig
  run: RunConfig
  folds: tuple[FoldModel, ...]
  subject_ids: tuple[str, ...] | None

  def read_cohort(self, data_root: str | os.PathLike, *, input: str | None = None,
                  use_cache: bool = True) -> Cohort:
    """The subjects under `data_root` read as the run read its own (the same reading,
    cleaning, connectivity and threshold settings; labels optional).

    Raises InputError for a cohort the run cannot apply to: another number of regions (both
    named), or visit-table subjects without a usable scan (named).
    """
    from stgnn_jax.data.reference_format import (
        TEMPORAL_CSV,
        HarmonizeColumns,
        load_cohort,
        read_visit_table,
    )
    from stgnn_jax.train.cross_validation import timeseries_settings

    run = self.run
    cohort = load_cohort(
        data_root, var_name=run.var_name, threshold=run.threshold, max_visits=run.max_visits,
        exclude_target_visit=run.exclude_target_visit,
        single_visit_horizon=run.single_visit_horizon,
        input=input if input is not None else run.input, timeseries=timeseries_settings(run),
        harmonize=HarmonizeColumns(site=run.harmonize != "none",
                                   covariates=run.harmonize_covariates),
        use_cache=use_cache, require_labels=False)
    if cohort.num_nodes != self.model_config.input_dim:
      raise InputError(f"{data_root}: its scans have {cohort.num_nodes} regions but the run "
                       f"{self.directory} was trained on {self.model_config.input_dim}; use "
                       "scans of the same atlas.")
    visits, _ = read_visit_table(Path(data_root) / TEMPORAL_CSV, require_labels=False)
    without = sorted(set(visits) - {s.subject_id for s in cohort.subjects})
    if without:
      shown = ", ".join(without[:5]) + (f" and {len(without) - 5} more" if len(without) > 5
                                        else "")
      raise InputError(f"{data_root}: subject(s) {shown} of the visit table have no usable "
                       "scan; add their scans or remove their rows.")
    return cohort

  def predict_cohort(self, cohort: Cohort) -> Predictions:
    """Every fold's prediction of every subject of `cohort` (`read_cohort`)."""
    from stgnn_jax.input_pipeline import Subjects

    run, config = self.run, self.model_config
    if config.use_time_features and run.time_normalization == "minmax":
      raise InputError(f"{self.directory}: the run scales its time feature by each fold's "
                       "training subjects (--time_normalization minmax), which the run folder "
                       "does not keep; predictions need a run with another normalisation.")
    indices = np.arange(len(cohort.subjects))
    logits = []
    unfitted = None  # the subjects' arrays of every fold without a fit: built once
    for fold in self.folds:
      if fold.fitted is not None:
        subjects = Subjects(fold.fitted.apply(cohort), run, config)
      else:
        unfitted = unfitted or Subjects(cohort, run, config)
        subjects = unfitted
      logits.append(_predict(fold.params, config, subjects, indices, run))
    return self._predictions(cohort, np.stack(logits))

  def _predictions(self, cohort: Cohort, logits: np.ndarray) -> Predictions:
    ids = tuple(s.subject_id for s in cohort.subjects)
    p1 = np.stack([f.probabilities(z) for f, z in zip(self.folds, logits, strict=True)])
    decisions = np.stack([f.decisions(z) for f, z in zip(self.folds, logits, strict=True)])
    votes = decisions.mean(axis=0)
    thresholds = [0.5 if f.threshold is None else f.threshold for f in self.folds]
    tie_break = p1.mean(axis=0) >= np.mean(thresholds)
    ensemble = np.where(votes == 0.5, tie_break, votes > 0.5).astype(np.int64)
    agreement = (decisions == ensemble).mean(axis=0)
    out_of_fold = np.full(len(ids), -1, np.int64)
    oof_p1 = np.full(len(ids), np.nan)
    position = {subject: i for i, subject in enumerate(ids)}
    for fold in self.folds:
      for subject in fold.test_subjects:
        i = position.get(subject)
        if i is not None:
          out_of_fold[i] = fold.index
          oof_p1[i] = p1[fold.index, i]
    return Predictions(
        subject_ids=ids, visits=np.array([s.num_visits for s in cohort.subjects]),
        labels=cohort.labels(), logits=logits, p1=p1, decisions=decisions, ensemble=ensemble,
        agreement=agreement, out_of_fold=out_of_fold, oof_p1=oof_p1)

  def predict(self, subjects: Sequence[Sequence[np.ndarray]],
              time_gaps: Sequence[float] | None = None) -> Predictions:
    """The folds' predictions from arrays: per subject its visits' FC matrices (oldest first,
    raw values; the run's --threshold is applied) and, for a model with time features, its
    months to predict (`time_gaps`; default the run's --single_visit_horizon). For runs on FC
    input without fold-fitted steps; other runs predict from their files (`read_cohort`,
    `predict_cohort`)."""
    from stgnn_jax.data.cohort import Subject
    from stgnn_jax.data.preprocessing import threshold_fc

    if any(f.fitted is not None for f in self.folds):
      raise InputError("this run fits preprocessing inside each fold (tangent or ComBat), "
                       "which needs the scans' measures: predict with read_cohort and "
                       "predict_cohort from a data folder.")
    if time_gaps is not None and len(time_gaps) != len(subjects):
      raise InputError(f"{len(time_gaps)} time_gaps for {len(subjects)} subjects; give one "
                       "per subject.")
    n = self.model_config.input_dim
    members = []
    for s, visits in enumerate(subjects):
      stack = np.asarray(visits, np.float64)
      if stack.ndim != 3 or stack.shape[1:] != (n, n) or len(stack) == 0:
        raise InputError(f"subject {s}: its visits have shape {stack.shape}; the run needs "
                         f"[visits, {n}, {n}] (one {n}x{n} matrix per visit).")
      bad = np.argwhere(~np.isfinite(stack).all(axis=(1, 2)))
      if bad.size:
        raise InputError(f"subject {s}, visit {int(bad[0, 0])}: the matrix has non-finite "
                         "(NaN or inf) entries.")
      fc = threshold_fc(stack, self.run.threshold)
      gap = self.run.single_visit_horizon if time_gaps is None else float(time_gaps[s])
      members.append(Subject(subject_id=str(s), label=UNLABELLED, adjacency=fc != 0, fc=fc,
                             months=np.arange(len(fc), dtype=np.float64),
                             time_to_predict=gap))
    cohort = Cohort(subjects=tuple(members), num_nodes=n, n_scans_used=sum(
        m.num_visits for m in members))
    return self.predict_cohort(cohort)


def eval_batches(subjects: Any, indices: np.ndarray, run: RunConfig) -> Iterator[tuple[Any, int]]:
  """`(batch, real subjects in it)` over `indices` in the run's evaluation batches (the last one
  padded)."""
  size = run.eval_batch_size
  for start, batch in zip(range(0, len(indices), size), subjects.batches(indices, size, run),
                          strict=True):
    yield batch, min(size, len(indices) - start)


def _predict(params: Any, config: ModelConfig, subjects: Any, indices: np.ndarray,
             run: RunConfig) -> np.ndarray:
  """Eval-mode logits `[subjects, 2]` of `indices`, in the run's evaluation batches."""
  from stgnn_jax.inference import apply_model

  out = [np.asarray(apply_model(params, config, batch))[:count]
         for batch, count in eval_batches(subjects, indices, run)]
  return np.concatenate(out).astype(np.float64)
