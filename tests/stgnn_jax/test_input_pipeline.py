"""Tests of `stgnn_jax.input_pipeline`: padded batches with static shapes, the frozen encoder's
scan table, connection-profile node features, and `make_folds` (the reference's stratified
cross-validation protocol)."""

from __future__ import annotations

import numpy as np
import pytest

from stgnn_jax.config import RunConfig
from stgnn_jax.data import synthetic
from stgnn_jax.input_pipeline import (
    FoldSplit,
    Subjects,
    graph_budget,
    iterate_batches,
    iterate_embedded_batches,
    make_folds,
    pack_scans,
    pack_subjects,
)
from tests.helpers import reference_model


def test_connection_profile_batches_carry_each_visits_fc_rows():
  rng = np.random.default_rng(5)
  fc = [np.where(rng.random((n, 6, 6)) < 0.4, rng.uniform(0.2, 0.9, (n, 6, 6)), 0)
        .astype(np.float32) for n in (2, 1, 3)]
  fc = [(f + np.swapaxes(f, 1, 2)) / 2 for f in fc]
  adjacency = [f != 0 for f in fc]
  batch = next(iterate_batches(adjacency, [0, 1, 0], None, batch_size=4, max_visits=3,
                               graph_multiple=8, order=[2, 0, 1], features=fc))
  nodes = np.asarray(batch.graphs.nodes)
  assert nodes.shape == (8, 6, 6)
  np.testing.assert_array_equal(nodes[:6], np.concatenate([fc[2], fc[0], fc[1]]))
  assert not nodes[6:].any()  # padding graphs
  one_hot = next(iterate_batches(adjacency, [0, 1, 0], None, batch_size=4, max_visits=3,
                               graph_multiple=8))
  assert one_hot.graphs.nodes is None
  with pytest.raises(ValueError, match="features must be"):
    pack_subjects(adjacency, features=[f[:1] for f in fc])


def test_batches_have_static_shapes_and_masks():
  rng = np.random.default_rng(1)
  lengths = rng.integers(1, 6, size=37)
  adjacency = [rng.random((n, 8, 8)) < 0.3 for n in lengths]
  labels = rng.integers(0, 2, size=37)
  batches = list(iterate_batches(adjacency, labels, None, batch_size=16, max_visits=5,
                                 graph_multiple=8, order=rng.permutation(37)))
  assert len(batches) == 3
  for batch in batches:
    assert batch.lengths.shape == (16,) and batch.max_visits == 5
    assert batch.graphs.adjacency.shape[0] % 8 == 0
  last = batches[-1]
  assert last.subject_mask.sum() == 37 - 32 and not last.subject_mask[5:].any()
  assert (last.lengths[5:] == 0).all()
  assert graph_budget(33, multiple=32, cap=80) == 64
  assert graph_budget(79, multiple=32, cap=80) == 80


def test_embedded_batches_pick_each_subjects_visits_in_order():
  rng = np.random.default_rng(8)
  lengths = [3, 1, 4, 2, 2]
  adjacency = [rng.random((n, 6, 6)) < 0.5 for n in lengths]
  table = pack_scans(adjacency, [0, 1, 1, 0, 1], None, chunk_size=4)
  assert [graphs.adjacency.shape[0] for graphs, _ in table.chunks] == [4, 4, 4]
  rows = np.concatenate([graphs.adjacency for graphs, _ in table.chunks])
  batches = list(iterate_embedded_batches(table, batch_size=2, max_visits=4,
                                          order=[2, 0, 4, 1, 3]))
  assert len(batches) == 3 and not batches[-1].subject_mask[1]
  for batch, chosen in zip(batches, ([2, 0], [4, 1], [3]), strict=True):
    for s, subject in enumerate(chosen):
      assert batch.lengths[s] == lengths[subject] and batch.labels[s] == table.labels[subject]
      for v in range(lengths[subject]):  # the row holds that subject's visit v
        np.testing.assert_array_equal(rows[batch.visit_index[s, v]], adjacency[subject][v])


def test_minmax_time_is_scaled_by_the_folds_training_subjects_only():

  cohort = synthetic.synthetic_cohort(num_subjects=30, num_regions=10, seed=1)
  run = RunConfig(time_normalization="minmax")
  subjects = Subjects(cohort, run, reference_model(input_dim=10, use_time_features=True))
  months = cohort.time_to_predict()
  train_idx = np.flatnonzero(months < months.max())  # the longest horizon is held out
  fold = subjects.for_fold(train_idx)
  np.testing.assert_allclose(fold.time, np.clip(months / months[train_idx].max(), 0, 1),
                             rtol=1e-6)
  assert fold.time.max() == 1.0 and subjects.time.max() == 1.0
  assert not np.array_equal(fold.time, subjects.time)  # the cohort-wide scale differed


@pytest.mark.parametrize("num_folds", [2, 5])
def test_folds_partition_the_subjects_and_keep_the_class_balance(num_folds):
  labels = np.array([1] * 17 + [0] * 43, np.int32)
  folds = make_folds(labels, num_folds, seed=42)
  assert len(folds) == num_folds
  assert all(isinstance(split, FoldSplit) for split in folds)
  tests = np.concatenate([split.test for split in folds])
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
  for a, b in zip(same, make_folds(labels, 4, seed=7), strict=True):
    for x, y in zip(a, b, strict=True):
      np.testing.assert_array_equal(x, y)
  other = make_folds(labels, 4, seed=8)
  assert any(not np.array_equal(a.test, b.test) for a, b in zip(same, other, strict=True))


def test_folds_refuse_a_class_smaller_than_the_fold_count():
  with pytest.raises(ValueError, match="num_folds=5 but the smaller class has only 3 subjects"):
    make_folds(np.array([1, 1, 1] + [0] * 20), 5, seed=0)


def test_folds_refuse_a_cohort_too_small_for_the_validation_split():
  """The guard above passed this cohort; scikit-learn's 80/20 split then failed inside."""
  with pytest.raises(ValueError, match="fold 0 keeps 15 stable and 1 converter subjects for "
                     "training and validation: the stratified 80/20 validation split needs"):
    make_folds(np.array([1, 1] + [0] * 30), 2, seed=0)
