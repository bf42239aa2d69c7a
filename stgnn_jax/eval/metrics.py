"""Classification metrics of the reference's reports, computed with scikit-learn."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

# The per-fold metrics a run's summary reports (mean, std and count over its folds).
FOLD_SUMMARY_METRICS = ("test_acc", "balanced_acc", "minority_f1", "test_auc", "train_acc",
                        "balanced_train_acc", "ece", "brier", "confidence_mean", "overconfident",
                        "ece_calibrated", "brier_calibrated")


def softmax_p1(logits: np.ndarray) -> np.ndarray:
  """p(class 1) from logits `[subjects, classes]` (the score the reference's AUC uses)."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=-1, keepdims=True)
  probs = np.exp(shifted)
  return probs[:, 1] / probs.sum(axis=-1)


def auc_or_none(labels: np.ndarray, scores: np.ndarray) -> float | None:
  """ROC AUC, or None when the split holds one class only (AUC is undefined there)."""
  if len(np.unique(labels)) < 2:
    return None
  return float(skm.roc_auc_score(labels, scores))


def paired_auc_z(labels: Sequence[int] | np.ndarray, first: np.ndarray, second: np.ndarray
                 ) -> float:
  """DeLong's paired statistic for AUC(second) - AUC(first), two scores of the same subjects:
  the difference over its standard error, from each positive's and each negative's placement
  among the other class (DeLong, DeLong & Clarke-Pearson 1988). Both classes must be present;
  a zero variance (identical rankings) counts as 1e-12."""
  labels = np.asarray(labels)
  positive, negative = labels == 1, labels == 0
  placements = []
  for scores in (first, second):
    scores = np.asarray(scores, np.float64)
    p, n = scores[positive][:, None], scores[negative][None, :]
    wins = (p > n) + 0.5 * (p == n)
    placements.append((wins.mean(axis=1), wins.mean(axis=0), wins.mean()))
  (v1, w1, a1), (v2, w2, a2) = placements
  cov = (np.cov(np.stack([v1, v2])) / positive.sum()
         + np.cov(np.stack([w1, w2])) / negative.sum())
  variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
  return float((a2 - a1) / math.sqrt(max(float(variance), 1e-12)))


def balanced_threshold(labels: Sequence[int] | np.ndarray, scores: np.ndarray) -> float | None:
  """The decision threshold on p(converter) that maximises balanced accuracy on a split.

  Balanced accuracy at threshold t is (TPR(t) + 1 − FPR(t)) / 2, so this is the ROC point with
  the largest Youden's J = TPR − FPR (scikit-learn's `roc_curve`; ties: the first, i.e. the
  highest threshold). The threshold returned lies halfway between that point's score and the
  next lower score, so that scores a little off the split's own still fall on the same side.

  Returns:
    The threshold (predict converter iff p >= threshold), or None when the split has one class.
  """
  labels = np.asarray(labels)
  if len(np.unique(labels)) < 2:
    return None
  fpr, tpr, thresholds = skm.roc_curve(labels, scores, drop_intermediate=False)
  best = int(np.argmax(tpr - fpr))
  # thresholds[0] is +inf (nothing predicted positive); a finite best has a next lower score
  # unless it is the lowest score, where everything is predicted positive.
  if best == 0:
    return float(np.nextafter(np.max(scores), np.inf))
  if best + 1 < len(thresholds):
    return float((thresholds[best] + thresholds[best + 1]) / 2)
  return float(thresholds[best])


def classification_metrics(
    labels: Sequence[int] | np.ndarray,
    logits: np.ndarray,
    *,
    threshold: float | None = None,
    losses: Sequence[float] | np.ndarray | None = None,
    groups: Sequence[str | None] | None = None,
    horizons: Sequence[str] | None = None,
    report: bool = True,
) -> dict[str, Any]:
  """The reference's evaluation of one split.

  Args:
    labels: `[subjects]` true classes (1 = converter, the minority class).
    logits: `[subjects, classes]`.
    threshold: predict class 1 iff p(class 1) >= threshold (two classes only, e.g. from
      `balanced_threshold` on the validation split); None predicts the argmax (the reference).
    losses: optional per-subject losses; their mean is reported as `loss`.
    groups: optional conversion type per subject (e.g. "MCI→AD"): adds `per_conversion_type`.
    horizons: optional horizon bucket per subject (e.g. "6-12m"): adds `per_horizon`.
    report: add `classification_report` (scikit-learn's text report; the slowest part, so the
      per-epoch validation leaves it out).

  Returns:
    A JSON-ready dict: `accuracy`, `balanced_accuracy` (mean of the class recalls),
    `minority_precision`/`_recall`/`_f1` (class 1), `auc` (None when undefined),
    `prediction_counts`, `classification_report` (text, with `report`), and the optional
    breakdowns.
  """
  labels = np.asarray(labels, np.int64)
  logits = np.asarray(logits)
  scores = softmax_p1(logits)
  if threshold is None:
    predictions = logits.argmax(axis=-1)
  else:
    if logits.shape[-1] != 2:
      raise ValueError(f"a decision threshold needs two classes, got {logits.shape[-1]}.")
    predictions = (scores >= threshold).astype(np.int64)
  precision, recall, f1, _ = skm.precision_recall_fscore_support(
      labels, predictions, labels=[1], zero_division=0)
  result: dict[str, Any] = {
      "n": int(len(labels)),
      "accuracy": float(skm.accuracy_score(labels, predictions)),
      "balanced_accuracy": float(_balanced_accuracy(labels, predictions)),
      "minority_precision": float(precision[0]),
      "minority_recall": float(recall[0]),
      "minority_f1": float(f1[0]),
      "auc": auc_or_none(labels, scores),
      "prediction_counts": {str(c): int((predictions == c).sum()) for c in range(logits.shape[1])},
  }
  if report:
    result["classification_report"] = skm.classification_report(
        labels, predictions, labels=list(range(logits.shape[1])),
        target_names=["stable", "converter"][:logits.shape[1]] + [
            f"class {c}" for c in range(2, logits.shape[1])], zero_division=0)
  if losses is not None:
    result["loss"] = float(np.mean(losses))
  if groups is not None:
    result["per_conversion_type"] = _breakdown(labels, predictions, scores, groups)
  if horizons is not None:
    result["per_horizon"] = _breakdown(labels, predictions, scores, horizons)
  return result


def _balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
  # sklearn warns and averages over the classes present; that is the reference's definition.
  if len(np.unique(labels)) < 2:
    return float(np.mean(predictions == labels))
  return skm.balanced_accuracy_score(labels, predictions)


def _breakdown(labels, predictions, scores, keys) -> dict[str, dict[str, Any]]:
  keys = np.asarray([str(k) for k in keys])
  out = {}
  for key in sorted(set(keys)):
    sel = keys == key
    out[key] = {
        "n": int(sel.sum()),
        "accuracy": float(np.mean(predictions[sel] == labels[sel])),
        "auc": auc_or_none(labels[sel], scores[sel]),
    }
  return out


def summarize(folds: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
  """Mean ± std (population, like NumPy's default) over folds of each metric in `keys`.

  Undefined values (None) are left out and counted in `n`.
  """
  summary = {}
  for key in keys:
    values = [f[key] for f in folds if f.get(key) is not None and not math.isnan(f[key])]
    summary[key] = {
        "mean": float(np.mean(values)) if values else None,
        "std": float(np.std(values)) if values else None,
        "n": len(values),
    }
  return summary


def reliability_bins(labels: Sequence[int] | np.ndarray, p1: np.ndarray, bins: int = 10
                     ) -> dict[str, np.ndarray]:
  """Top-label reliability of binary predictions in `bins` equal-width confidence bins.

  The confidence of a prediction is the probability of its predicted class, max(p1, 1 - p1)
  (the seeds' `probs.max(dim=1)`); it is correct when that class is the label.

  Returns:
    `count`, `confidence` (mean per bin) and `accuracy` (per bin), each `[bins]`; empty bins
    have count 0 and NaN means.
  """
  labels = np.asarray(labels)
  p1 = np.asarray(p1, np.float64)
  confidence = np.maximum(p1, 1 - p1)
  correct = (p1 > 0.5).astype(int) == labels  # argmax; a tie (0.5) counts as class 0
  index = np.minimum((confidence * bins).astype(int), bins - 1)
  count = np.bincount(index, minlength=bins)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_confidence = np.bincount(index, confidence, minlength=bins) / count
    accuracy = np.bincount(index, correct.astype(float), minlength=bins) / count
  return {"count": count, "confidence": mean_confidence, "accuracy": accuracy}


def calibration(labels: Sequence[int] | np.ndarray, p1: np.ndarray, *, bins: int = 10,
                overconfident_above: float = 0.95) -> dict[str, Any]:
  """The seeds' confidence checks and the calibration of binary predictions.

  Returns `confidence_mean`, `confidence_min`, `confidence_max` (of max(p1, 1 - p1)),
  `overconfident` (how many predictions are more confident than `overconfident_above`),
  `brier` (scikit-learn's Brier score of p1) and `ece`, the expected calibration error:
  sum over the `bins` equal-width confidence bins of (bin share) x |accuracy - mean confidence|.
  """
  labels = np.asarray(labels)
  p1 = np.asarray(p1, np.float64)
  confidence = np.maximum(p1, 1 - p1)
  table = reliability_bins(labels, p1, bins)
  filled = table["count"] > 0
  gaps = np.abs(table["accuracy"][filled] - table["confidence"][filled])
  return {
      "confidence_mean": float(confidence.mean()),
      "confidence_min": float(confidence.min()),
      "confidence_max": float(confidence.max()),
      "overconfident": int((confidence > overconfident_above).sum()),
      "brier": float(skm.brier_score_loss(labels, p1, pos_label=1)),
      "ece": float((table["count"][filled] / len(p1) * gaps).sum()),
  }
