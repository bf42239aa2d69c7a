"""Tests of `input_pipeline.make_folds`: the reference's stratified cross-validation protocol."""

from __future__ import annotations

import numpy as np
import pytest

from stgnn_jax.input_pipeline import make_folds


@pytest.mark.parametrize("num_folds", [2, 5])
def test_folds_partition_the_subjects_and_keep_the_class_balance(num_folds):
  labels = np.array([1] * 17 + [0] * 43, np.int32)
  folds = make_folds(labels, num_folds, seed=42)
  assert len(folds) == num_folds
  tests = np.concatenate([test for _, _, test in folds])
  np.testing.assert_array_equal(np.sort(tests), np.arange(len(labels)))  # each subject tested once
  for train, val, test in folds:
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert len(train) + len(val) + len(test) == len(labels)
    # Stratified: every split holds each class in proportion (to within one subject).
    for split in (train, val, test):
      assert abs(labels[split].mean() - labels.mean()) <= 1 / len(split) + 1e-9
    assert len(val) == int(np.ceil(0.2 * (len(train) + len(val))))  # scikit-learn rounds up


def test_folds_are_deterministic_per_seed():
  labels = np.array([0, 1] * 20, np.int32)
  same = make_folds(labels, 4, seed=7)
  for a, b in zip(same, make_folds(labels, 4, seed=7)):
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
  other = make_folds(labels, 4, seed=8)
  assert any(not np.array_equal(a[2], b[2]) for a, b in zip(same, other))


def test_folds_refuse_a_class_smaller_than_the_fold_count():
  with pytest.raises(ValueError, match="num_folds=5 but the smaller class has only 3 subjects"):
    make_folds(np.array([1, 1, 1] + [0] * 20), 5, seed=0)


def test_folds_refuse_a_cohort_too_small_for_the_validation_split():
  """The guard above passed this cohort; scikit-learn's 80/20 split then failed inside."""
  with pytest.raises(ValueError, match="fold 0 keeps 15 stable and 1 converter subjects for "
                     "training and validation: the stratified 80/20 validation split needs"):
    make_folds(np.array([1, 1] + [0] * 30), 2, seed=0)
