"""Tests of `stgnn_jax.eval.metrics`: the decision threshold and metrics at a threshold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from stgnn_jax.eval import metrics


def _best_balanced_accuracy_brute_force(labels, scores):
  """Balanced accuracy of `scores >= t` for every candidate t (each score and +inf)."""
  candidates = np.append(np.unique(scores), np.inf)
  return max(balanced_accuracy_score(labels, scores >= t) for t in candidates)


@pytest.mark.parametrize("seed", range(8))
def test_balanced_threshold_reaches_the_best_balanced_accuracy(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(8, 60))
  labels = (rng.random(n) < 0.3).astype(int)
  labels[:2] = [0, 1]
  # Overlapping classes, some tied scores.
  scores = np.round(np.clip(rng.normal(0.4 + 0.25 * labels, 0.2), 0, 1), 2)
  threshold = metrics.balanced_threshold(labels, scores)
  achieved = balanced_accuracy_score(labels, scores >= threshold)
  assert achieved == pytest.approx(_best_balanced_accuracy_brute_force(labels, scores))


def test_balanced_threshold_lies_between_the_scores_it_separates():
  labels = np.array([0, 0, 0, 1, 1])
  scores = np.array([0.05, 0.1, 0.2, 0.6, 0.9])
  assert metrics.balanced_threshold(labels, scores) == pytest.approx(0.4)
  # A converter class with low probabilities everywhere (what the argmax calls all "stable").
  assert metrics.balanced_threshold(labels, scores / 10) == pytest.approx(0.04)
  assert metrics.balanced_threshold(np.zeros(4, int), np.linspace(0, 1, 4)) is None


def test_classification_metrics_at_a_threshold():
  labels = np.array([0, 0, 1, 1, 1])
  p1 = np.array([0.1, 0.3, 0.25, 0.45, 0.8])
  logits = np.stack([np.log1p(-p1), np.log(p1)], axis=-1)
  argmax = metrics.classification_metrics(labels, logits, report=False)
  assert argmax["prediction_counts"] == {"0": 4, "1": 1}
  at = metrics.classification_metrics(labels, logits, threshold=0.2, report=False)
  assert at["prediction_counts"] == {"0": 1, "1": 4}
  assert at["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, p1 >= 0.2))
  assert at["auc"] == argmax["auc"]  # the AUC does not depend on the threshold
  with pytest.raises(ValueError, match="two classes"):
    metrics.classification_metrics(labels, np.zeros((5, 3)), threshold=0.5)


def test_summarize_leaves_undefined_values_out():
  folds = [{"auc": 0.5}, {"auc": None}, {"auc": 0.9}]
  summary = metrics.summarize(folds, ["auc"])["auc"]
  assert summary["n"] == 2
  assert summary["mean"] == pytest.approx(0.7)
  assert summary["std"] == pytest.approx(np.std([0.5, 0.9]))


def test_calibration_against_hand_computed_values():
  labels = np.array([1, 0, 1, 0, 1])
  p1 = np.array([0.97, 0.40, 0.55, 0.10, 0.45])
  # Confidence max(p, 1 - p): 0.97, 0.60, 0.55, 0.90, 0.55; predictions 1, 0, 1, 0, 0.
  # Bins of width 0.1: [0.5, 0.6): 0.55, 0.55 (right, wrong) -> |0.5 - 0.55| = 0.05;
  # [0.6, 0.7): 0.60 (right) -> 0.40; [0.9, 1]: 0.90, 0.97 (both right) -> |1 - 0.935| = 0.065.
  result = metrics.calibration(labels, p1)
  assert result["ece"] == pytest.approx((2 * 0.05 + 1 * 0.40 + 2 * 0.065) / 5)
  assert result["brier"] == pytest.approx(np.mean((p1 - labels) ** 2))
  assert result["confidence_mean"] == pytest.approx(np.mean([0.97, 0.6, 0.55, 0.9, 0.55]))
  assert (result["confidence_min"], result["confidence_max"]) == pytest.approx((0.55, 0.97))
  assert result["overconfident"] == 1  # only 0.97 > 0.95
  table = metrics.reliability_bins(labels, p1)
  assert table["count"].tolist() == [0, 0, 0, 0, 0, 2, 1, 0, 0, 2]
  np.testing.assert_allclose(table["accuracy"][[5, 6, 9]], [0.5, 1.0, 1.0])
