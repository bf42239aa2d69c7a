"""Classical baselines reported next to the STGNN, on exactly the model's folds.

Each baseline is an L2-regularised logistic regression on one fixed feature vector per subject,
built from the subject's LAST input visit (the thresholded FC matrix the model sees last) and,
for the longitudinal one, its FIRST input visit (the same kind of matrix, the earliest the model
sees):

  - `logreg_fc`: the upper-triangle FC values (0 where there is no edge), N (N - 1) / 2 features;
  - `logreg_edges`: the same entries binarised (edge present or not);
  - `logreg_degree`: each region's degree (off-diagonal edges), N features;
  - `logreg_change`: `logreg_fc`'s values followed by their change since the first visit
    (last minus first, 0 for a subject with one visit), N (N - 1) features: the linear
    longitudinal baseline.

Per fold: standardise on the training subjects, fit a class-balanced logistic regression for each
C of `C_GRID` on the training subjects only, keep the C with the best validation AUC (ties go to
the smaller C, the stronger regularisation), and evaluate that model on the test subjects with the
project's own metrics (`metrics.classification_metrics`), predicting a converter when
p(converter) > 0.5 or, with `decision_threshold="val"` (as the STGNN's default), when it reaches
the threshold that maximises the validation balanced accuracy (`metrics.balanced_threshold`).
If a simple model on the last scan (or on the last scan and its change) matches the STGNN, the
temporal graph model is not what carries the signal; these numbers make that visible in every run.

A fold that cannot be fitted (one class among the training subjects, features constant over them)
is reported with every metric None and the reason in `undefined`; `run_baselines` does not raise
for it. scikit-learn is an optional extra (`[train]`), so it is imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from stgnn_jax.config import DECISION_THRESHOLDS

BASELINES = ("logreg_fc", "logreg_edges", "logreg_degree", "logreg_change")

# Inverse L2 strengths on standardised features, one decade apart. The AUC depends only on the
# weights' direction; with more features than training subjects (4,950 FC entries, ~150
# subjects) the training set is separable and that direction moves from near the difference of
# the class means (C = 0.001) towards the maximum-margin separator. On FC from real BOLD the
# validation and inner-CV AUCs still rise from C = 10 to 1000 (README, "Learning on connectivity
# from real BOLD"), so the grid reaches 1000; the fits solve the problem exactly in the span of
# the training rows (`row_space`), where lbfgs on all F features stops short of the optimum at
# such weak penalties. For the 100 degree features the grid runs from strong shrinkage to
# almost none.
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)

# Used when the validation split holds one class, so no AUC can choose among the grid.
DEFAULT_C = 1.0

SUMMARY_METRICS = ("test_auc", "balanced_acc", "test_acc", "minority_f1")

# lbfgs on the reduced problem (`row_space`) needs about a hundred iterations, even at C = 1000
# on separable folds; the cap only bounds a pathological case, and `converged` records it.
_MAX_ITER = 5000
# Far tighter than scikit-learn's 1e-4: near-separable folds (F >> subjects) at weak penalties
# otherwise stop at solver-dependent points whose AUCs differ in the third decimal, enough to
# flip the choice of C; on the reduced problem the extra iterations cost milliseconds.
_TOL = 1e-8

_METRIC_KEYS = ("C", "decision_threshold", "val_auc", "val_auc_by_C", "test_auc", "balanced_acc",
                "test_acc", "minority_f1", "minority_precision", "minority_recall",
                "prediction_counts",
                "test_p1", "converged")


def baseline_features(last_fc: np.ndarray, first_fc: np.ndarray) -> dict[str, np.ndarray]:
  """The baselines' feature matrices from each subject's last and first thresholded FC matrix.

  Args:
    last_fc: `[subjects, N, N]` each subject's last input visit's symmetrised FC matrix, entries
      below the edge threshold already 0 (0 = no edge; `data.threshold_fc`).
    first_fc: `[subjects, N, N]` the same for each subject's first input visit (the last one's
      matrix again for a subject with one visit).

  Returns:
    `{name: [subjects, F]}` float64, in `BASELINES` order: `logreg_fc` the upper-triangle values
    of `last_fc` (k = 1, row-major, F = N (N - 1) / 2), `logreg_edges` the same entries as 1.0
    where nonzero else 0.0, `logreg_degree` the number of nonzero off-diagonal entries of each row
    (F = N), `logreg_change` `logreg_fc`'s columns then those of upper(last) - upper(first)
    (F = N (N - 1)).

  Raises:
    ValueError: `last_fc` is not `[subjects, N, N]`, or `first_fc` is not of its shape.
  """
  last_fc, first_fc = np.asarray(last_fc), np.asarray(first_fc)
  if last_fc.ndim != 3 or last_fc.shape[1] != last_fc.shape[2]:
    raise ValueError(f"last_fc must be [subjects, N, N], got shape {last_fc.shape}")
  if first_fc.shape != last_fc.shape:
    raise ValueError(f"first_fc must have last_fc's shape {last_fc.shape}, got {first_fc.shape}")
  n = last_fc.shape[1]
  rows, cols = np.triu_indices(n, k=1)
  upper = last_fc[:, rows, cols].astype(np.float64)
  change = upper - first_fc[:, rows, cols].astype(np.float64)
  off_diagonal = ~np.eye(n, dtype=bool)
  return {
      "logreg_fc": upper,
      "logreg_edges": (upper != 0).astype(np.float64),
      "logreg_degree": ((last_fc != 0) & off_diagonal).sum(axis=2).astype(np.float64),
      "logreg_change": np.concatenate([upper, change], axis=1),
  }


def run_baselines(
    last_fc: np.ndarray,
    labels: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    first_fc: np.ndarray,
    c_grid: Sequence[float] = C_GRID,
    decision_threshold: str = "argmax",
    fold_fc: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, dict[str, Any]]:
  """Every baseline, cross-validated on the given folds.

  Args:
    last_fc: `[subjects, N, N]` as in `baseline_features`.
    labels: `[subjects]` 0 (stable) / 1 (converter).
    folds: per fold `(train_idx, val_idx, test_idx)` int subject indices (the STGNN's own folds,
      e.g. `input_pipeline.make_folds`).
    first_fc: `[subjects, N, N]` each subject's first input visit, as in `baseline_features`.
    c_grid: inverse regularisation strengths (> 0) to choose from on validation AUC.
    decision_threshold: "argmax" (p > 0.5) or "val" (the chosen model's balanced-accuracy
      threshold on the validation split; p > 0.5 when the validation split has one class).
    fold_fc: per fold, its own `(last_fc, first_fc)` (preprocessing fitted inside each fold),
      used instead of `last_fc` and `first_fc` for that fold.

  Returns:
    A JSON-ready `{name: {"folds": [...], "summary": {metric: {"mean", "std", "n"}},
    "num_features": F, "c_grid": [ascending C]}}`. Each fold dict has `fold`, `C`,
    `c_selection`, `val_auc` (at the chosen C), `val_auc_by_C` (`{"0.01": auc, ...}`),
    `test_auc` (None when the test split has one class), `balanced_acc`, `test_acc`,
    `minority_f1`/`_precision`/`_recall` (class 1), `prediction_counts`, `test_p1`
    (p(converter) per test subject, in `test_idx` order), `test_subjects` (`test_idx`),
    `n_train`/`n_val`/`n_test`, `converged` and `undefined` (None, or why the fold has no
    numbers: then every metric is None). `summary` covers `SUMMARY_METRICS` over the defined
    folds.

  Raises:
    ValueError: inconsistent shapes, labels other than 0/1, non-finite FC entries, or an empty or
      non-positive `c_grid` (caller errors, unlike the unfittable folds above).
  """
  from threadpoolctl import threadpool_limits  # a scikit-learn dependency

  from stgnn_jax.eval import metrics as metrics_lib

  features = baseline_features(last_fc, first_fc)
  num_subjects = len(features["logreg_degree"])
  if fold_fc is not None and len(fold_fc) != len(folds):
    raise ValueError(f"fold_fc has {len(fold_fc)} entries for {len(folds)} folds")
  per_fold = ([features] * len(folds) if fold_fc is None else
              [baseline_features(last, first) for last, first in fold_fc])
  if any(len(f["logreg_degree"]) != num_subjects for f in per_fold):
    raise ValueError(f"every fold's FC matrices must hold the {num_subjects} subjects")
  labels = np.asarray(labels)
  if labels.shape != (num_subjects,):
    raise ValueError(f"labels must be [{num_subjects}], got shape {labels.shape}")
  if not np.isin(labels, (0, 1)).all():
    raise ValueError(f"labels must be 0/1, got values {sorted(set(labels.tolist()))}")
  matrices = [last_fc, first_fc, *(m for pair in fold_fc or () for m in pair)]
  if not all(np.isfinite(m).all() for m in matrices):
    raise ValueError("last_fc or first_fc has non-finite entries")
  if decision_threshold not in DECISION_THRESHOLDS:
    raise ValueError(f"decision_threshold must be one of {DECISION_THRESHOLDS}, got "
                     f"{decision_threshold!r}")
  c_grid = sorted(float(c) for c in c_grid)  # ascending, so a tie keeps the smaller C
  if not c_grid or c_grid[0] <= 0:
    raise ValueError(f"c_grid must be positive values, got {c_grid}")
  labels = labels.astype(np.int64)

  results = {}
  # One BLAS thread: these fits are small (~200 x 5000), and a multi-threaded OpenBLAS next to
  # other busy processes (a training run, a test suite) oversubscribes the cores and spins.
  with threadpool_limits(limits=1, user_api="blas"):
    for name in BASELINES:
      fold_results = [
          _run_fold(k, per_fold[k][name], labels, split, c_grid, decision_threshold)
          for k, split in enumerate(folds)]
      results[name] = {
          "num_features": int(features[name].shape[1]),
          "c_grid": c_grid,
          "folds": fold_results,
          "summary": metrics_lib.summarize(fold_results, SUMMARY_METRICS),
      }
  return results


def row_space(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
  """`(basis [F, r], x @ basis [subjects, r])`: an orthonormal basis of the span of `x`'s rows
  (`[subjects, F]`, r its rank) and `x` in it; None when `x` has at least as many rows as
  columns (the span is, in general, every column: nothing to reduce).

  The gradient of an L2-penalised logistic loss in the weights w is a combination of the
  training rows, so the optimum lies in their span: with w = V β (V this basis), |w| = |β| and
  x w = (x V) β, the same problem in r <= subjects unknowns instead of F. With F >> subjects
  (4,950 to 20,000 inputs, ~170 subjects) that is the same regression, found tens of times
  faster and to the solver's tolerance at every C of the grid.

  The basis comes from the eigendecomposition of the subjects' Gram matrix x x^T = U S^2 U^T
  (V = x^T U S^-1, x V = U S): about 2 n^2 F + 9 n^3 operations for n subjects, most of them
  matrix products; an SVD of x took three times longer (12.6 s against 4.2 s for 2,000 x
  20,000 on a 2-core CPU) and dominated a fold's set-up on cohorts of thousands. Directions
  whose singular value is below 1e-6 of the largest (eigenvalue 1e-12) are dropped: float64's
  rounding of the Gram matrix leaves no information below that, and the centring of
  standardised inputs makes one exact zero.
  """
  x = np.asarray(x, np.float64)
  if x.shape[0] >= x.shape[1]:
    return None
  eigenvalues, vectors = np.linalg.eigh(x @ x.T)
  keep = eigenvalues > eigenvalues.max(initial=0.0) * 1e-12
  singular = np.sqrt(eigenvalues[keep])
  vectors = vectors[:, keep]
  return (x.T @ vectors) / singular, vectors * singular


@dataclasses.dataclass(frozen=True)
class LinearLogit:
  """A fitted logistic regression: `decision_function(x) = ((x - mean) * scale) . w + b`."""

  mean: np.ndarray
  scale: np.ndarray
  w: np.ndarray
  b: float
  converged: bool

  def decision_function(self, x: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, np.float64) - self.mean) * self.scale) @ self.w + self.b


def fit_logistic_grid(x: np.ndarray, y: np.ndarray, cs: Sequence[float], *,
                      standardize: bool = True) -> list[LinearLogit]:
  """The class-balanced L2 logistic regression of `y` on `x` `[subjects, F]` for each C of `cs`
  (in that order; each fit starts from the previous one's solution), each feature standardised
  on `x` first (a constant one gets weight 0), solved in the span of the rows (`row_space`)
  when the features outnumber the subjects.
  The intercept is not penalised."""
  from sklearn.exceptions import ConvergenceWarning
  from sklearn.linear_model import LogisticRegression

  x = np.asarray(x, np.float64)
  mean, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
  if standardize:
    std = x.std(axis=0)
    mean, scale = x.mean(axis=0), np.where(std > 0, 1 / np.where(std > 0, std, 1), 0.0)
  z = (x - mean) * scale if standardize else x  # no copy of inputs that are used as they are
  space = row_space(z)
  basis, reduced = space if space is not None else (None, z)
  model = LogisticRegression(class_weight="balanced", solver="lbfgs", tol=_TOL,
                             max_iter=_MAX_ITER, warm_start=True)
  fitted = []
  for c in cs:
    # Non-convergence is reported per fit in `converged` rather than as a warning.
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", ConvergenceWarning)
      model.set_params(C=c).fit(reduced, y)
    w = model.coef_[0] if basis is None else basis @ model.coef_[0]
    fitted.append(LinearLogit(mean=mean, scale=scale, w=w,
                              b=float(model.intercept_[0]),
                              converged=int(np.max(model.n_iter_)) < _MAX_ITER))
  return fitted


def _fit_grid(x: np.ndarray, y: np.ndarray, cs: Sequence[float]) -> list[tuple[Any, bool]]:
  """`(fitted model, converged)` per C of `cs` on the training subjects `x` `[train, F]`, `y`."""
  return [(model, model.converged) for model in fit_logistic_grid(x, y, cs)]


def _log_odds(model, x: np.ndarray) -> np.ndarray:
  """`[subjects]` log p(converter) - log p(stable) (the decision function)."""
  return np.asarray(model.decision_function(x), np.float64).reshape(-1)


def _run_fold(k: int, x: np.ndarray, labels: np.ndarray, split, c_grid: list[float],
              decision_threshold: str) -> dict[str, Any]:
  """One baseline on one fold: `x` `[subjects, F]` (see `run_baselines` for the fields)."""
  from stgnn_jax.eval import metrics as metrics_lib

  train, val, test = (np.asarray(idx, np.int64).reshape(-1) for idx in split)
  entry: dict[str, Any] = {
      "fold": k,
      "c_selection": None,
      **{key: None for key in _METRIC_KEYS},
      "test_subjects": test.tolist(),
      "n_train": int(len(train)),
      "n_val": int(len(val)),
      "n_test": int(len(test)),
      "undefined": None,
  }

  y_train = labels[train]
  train_classes = np.unique(y_train)
  if len(train_classes) == 0:
    entry["undefined"] = "training split is empty"
    return entry
  if len(train_classes) == 1:
    entry["undefined"] = f"training split has one class (label {int(train_classes[0])})"
    return entry
  if len(test) == 0:
    entry["undefined"] = "test split is empty"
    return entry
  if np.ptp(x[train], axis=0).max() == 0:
    entry["undefined"] = "features are constant over the training subjects"
    return entry

  y_val = labels[val]
  if len(np.unique(y_val)) < 2:
    entry["c_selection"] = ("default (validation has one class)" if len(val)
                            else "default (validation split is empty)")
    c = DEFAULT_C
    [(model, converged)] = _fit_grid(x[train], y_train, [c])
  else:
    entry["c_selection"] = "validation AUC"
    by_c: dict[str, float] = {}
    best: tuple[float, float, Any, bool] | None = None
    fits = _fit_grid(x[train], y_train, c_grid)
    for c, (fitted, fitted_converged) in zip(c_grid, fits, strict=True):
      auc = metrics_lib.auc_or_none(y_val, _log_odds(fitted, x[val]))
      assert auc is not None  # the validation split holds both classes
      by_c[f"{c:g}"] = auc
      if best is None or auc > best[0]:  # strict, over ascending C: a tie keeps the smaller C
        best = (auc, c, fitted, fitted_converged)
    assert best is not None, "c_grid is empty"
    entry["val_auc"], c, model, converged = best
    entry["val_auc_by_C"] = by_c

  z = _log_odds(model, x[test])
  # Logits [0, z] have softmax p1 = sigmoid(z) = the model's p(converter) and argmax "z > 0",
  # i.e. p > 0.5, like [log(1 - p), log p] but without clipping saturated probabilities to ties.
  logits = np.stack([np.zeros_like(z), z], axis=-1)
  threshold = None
  if decision_threshold == "val" and len(np.unique(y_val)) == 2:
    val_p1 = 1 / (1 + np.exp(-_log_odds(model, x[val])))
    threshold = metrics_lib.balanced_threshold(y_val, val_p1)
  m = metrics_lib.classification_metrics(labels[test], logits, threshold=threshold, report=False)
  entry.update({
      "C": c,
      "decision_threshold": threshold,
      "test_auc": m["auc"],
      "balanced_acc": m["balanced_accuracy"],
      "test_acc": m["accuracy"],
      "minority_f1": m["minority_f1"],
      "minority_precision": m["minority_precision"],
      "minority_recall": m["minority_recall"],
      "prediction_counts": m["prediction_counts"],
      "test_p1": metrics_lib.softmax_p1(logits).tolist(),
      "converged": bool(converged),
  })
  return entry
