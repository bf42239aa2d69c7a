"""Tests of `stgnn_jax.eval.baselines`: the classical baselines reported beside the STGNN."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from stgnn_jax import data
from stgnn_jax.eval import baselines
from stgnn_jax.input_pipeline import make_folds

N = 12
METRICS = ("C", "val_auc", "val_auc_by_C", "test_auc", "balanced_acc", "test_acc", "minority_f1",
           "minority_precision", "minority_recall", "prediction_counts", "test_p1")
BLOCK = (slice(0, 3), slice(3, 6))  # the planted converter edges: regions 0-2 x regions 3-5


def cohort(num_subjects: int, *, signal: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(last_fc `[subjects, N, N]` as `data.threshold_fc` gives it, labels `[subjects]`), 30%
  converters. Raw entries are U(-0.6, 0.6) before symmetrising, so a pair is an edge (|r| >= 0.2)
  with probability 4/9. With `signal`, every converter has all 9 BLOCK pairs at r in [0.4, 0.8]:
  edges with values no stable subject shows together (all 9 present: (4/9)^9 ~ 7e-4)."""
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(num_subjects) < round(0.3 * num_subjects)).astype(np.int64)
  raw = rng.uniform(-0.6, 0.6, (num_subjects, N, N))
  if signal:
    raw[labels == 1, BLOCK[0], BLOCK[1]] = rng.uniform(0.4, 0.8, (labels.sum(), 3, 3))
    raw[labels == 1, BLOCK[1], BLOCK[0]] = np.swapaxes(raw[labels == 1, BLOCK[0], BLOCK[1]], -1, -2)
  raw[:, np.arange(N), np.arange(N)] = 1.0
  return data.threshold_fc(raw, 0.2), labels


def reference_fit(x: np.ndarray, y: np.ndarray, c: float) -> Pipeline:
  """The documented model, written out here: standardise, class-balanced L2 logistic regression
  on every feature, converged far beyond the baselines' own tolerance (they solve it in the
  span of the training rows)."""
  return Pipeline([("scale", StandardScaler()),
                   ("logreg", LogisticRegression(C=c, class_weight="balanced", tol=1e-12,
                                                 max_iter=100000))]).fit(x, y)


@pytest.fixture(scope="module")
def signal_run():
  """The planted last-scan signal; first scans drawn independently of everything (so the change
  features of `logreg_change` are noise beside the last scan's values)."""
  last_fc, labels = cohort(120, signal=True)
  first_fc, _ = cohort(120, signal=False, seed=7)
  folds = make_folds(labels, 5, seed=0)
  return (last_fc, first_fc, labels, folds,
          baselines.run_baselines(last_fc, labels, folds, first_fc=first_fc))


# ---------------------------------------------------------------------------------------------
# Features.


def test_features_equal_hand_computed_values():
  m = np.eye(4, dtype=np.float32)
  m[0, 1] = m[1, 0] = 0.5
  m[0, 3] = m[3, 0] = -0.25
  m[1, 2] = m[2, 1] = 0.75
  last = np.stack([m, np.eye(4, dtype=np.float32)])
  features = baselines.baseline_features(last, last)  # one visit each: first is last
  assert list(features) == list(baselines.BASELINES)
  # Upper triangle, row-major: (0,1) (0,2) (0,3) (1,2) (1,3) (2,3).
  np.testing.assert_array_equal(features["logreg_fc"],
                                [[0.5, 0, -0.25, 0.75, 0, 0], [0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(features["logreg_edges"],
                                [[1, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]])
  # The unit diagonal (self loops) is not a neighbour.
  np.testing.assert_array_equal(features["logreg_degree"], [[2, 2, 1, 1], [0, 0, 0, 0]])
  np.testing.assert_array_equal(features["logreg_change"],
                                np.concatenate([features["logreg_fc"], np.zeros((2, 6))], axis=1))
  with pytest.raises(ValueError, match="subjects, N, N"):
    baselines.baseline_features(m, m)
  with pytest.raises(ValueError, match="first_fc must have last_fc's shape"):
    baselines.baseline_features(last, last[:1])


def test_change_features_are_the_last_scan_and_its_change_since_the_first():
  last = np.eye(3)
  last[0, 1] = last[1, 0] = 0.5
  last[1, 2] = last[2, 1] = -0.3
  first = np.eye(3)
  first[0, 1] = first[1, 0] = 0.25  # weakened, kept
  first[0, 2] = first[2, 0] = 0.4  # an edge that disappeared
  # Subject 0 has two visits (first, last); subject 1 one visit (its first scan is its last).
  features = baselines.baseline_features(np.stack([last, last]), np.stack([first, last]))
  # Upper triangle, row-major: (0,1) (0,2) (1,2); then last - first on the same entries.
  np.testing.assert_array_equal(features["logreg_change"],
                                [[0.5, 0, -0.3, 0.25, -0.4, -0.3],
                                 [0.5, 0, -0.3, 0, 0, 0]])
  np.testing.assert_array_equal(features["logreg_change"][:, :3], features["logreg_fc"])
  # Only the change baseline sees the first scans.
  alone = baselines.baseline_features(np.stack([last, last]), np.stack([last, last]))
  for name in ("logreg_fc", "logreg_edges", "logreg_degree"):
    np.testing.assert_array_equal(features[name], alone[name])


# ---------------------------------------------------------------------------------------------
# Signal and no signal.


def test_a_planted_linear_signal_is_found_in_every_fold(signal_run):
  *_, results = signal_run
  for name in ("logreg_fc", "logreg_edges"):
    aucs = [f["test_auc"] for f in results[name]["folds"]]
    assert all(auc > 0.9 for auc in aucs), (name, aucs)
    assert all(f["undefined"] is None and f["converged"] for f in results[name]["folds"])


def change_cohort(num_subjects: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(last_fc, first_fc, labels) where the classes differ only in the change since the first
  visit: every last scan is drawn from one distribution (as `cohort` without signal), a stable
  subject's first scan is its last one re-measured (raw noise sd 0.05), a converter's first scan
  has the 9 BLOCK pairs 0.4 stronger than its last (they weakened over time). About a tenth of
  the subjects have one visit (first scan = last scan, no change)."""
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(num_subjects) < round(0.3 * num_subjects)).astype(np.int64)
  raw_last = rng.uniform(-0.6, 0.6, (num_subjects, N, N))
  raw_first = raw_last + rng.normal(0, 0.05, raw_last.shape)
  raw_first[labels == 1, BLOCK[0], BLOCK[1]] += 0.4
  one_visit = rng.random(num_subjects) < 0.1
  raw_first[one_visit] = raw_last[one_visit]
  fc = []
  for raw in (raw_last, raw_first):
    raw = np.triu(raw, 1) + np.swapaxes(np.triu(raw, 1), -1, -2)
    raw[:, np.arange(N), np.arange(N)] = 1.0
    fc.append(data.threshold_fc(raw, 0.2))
  return fc[0], fc[1], labels


def test_a_signal_only_in_the_change_is_found_by_logreg_change_alone():
  last_fc, first_fc, labels = change_cohort(120)
  results = baselines.run_baselines(last_fc, labels, make_folds(labels, 3, seed=0),
                                    first_fc=first_fc)
  auc = {name: results[name]["summary"]["test_auc"]["mean"] for name in baselines.BASELINES}
  assert auc["logreg_change"] > 0.8, auc
  for name in ("logreg_fc", "logreg_edges", "logreg_degree"):  # the last scan alone: chance
    assert auc[name] < 0.65, auc
  assert results["logreg_change"]["num_features"] == N * (N - 1)


def test_labels_independent_of_the_matrices_give_chance_auc():
  last_fc, _ = cohort(200, signal=False, seed=1)
  first_fc, _ = cohort(200, signal=False, seed=4)
  labels = np.random.default_rng(2).permutation(np.arange(200) < 60).astype(np.int64)
  results = baselines.run_baselines(last_fc, labels, make_folds(labels, 5, seed=0),
                                    first_fc=first_fc)
  for name in baselines.BASELINES:
    assert abs(results[name]["summary"]["test_auc"]["mean"] - 0.5) < 0.15, name


# ---------------------------------------------------------------------------------------------
# The given folds, and C chosen on validation only.


def test_every_fold_is_the_given_split_and_matches_the_reference_model(signal_run):
  last_fc, first_fc, labels, folds, results = signal_run
  features = baselines.baseline_features(last_fc, first_fc)
  with threadpool_limits(limits=1, user_api="blas"):  # 100 tiny reference fits; threads contend
    for name in baselines.BASELINES:
      for (train, val, test), fold in zip(folds, results[name]["folds"], strict=True):
        assert fold["test_subjects"] == test.tolist()
        assert (fold["n_train"], fold["n_val"], fold["n_test"]) == (len(train), len(val), len(test))
        x = features[name]
        val_aucs = {f"{c:g}": skm.roc_auc_score(labels[val],
                                                reference_fit(x[train], labels[train], c)
                                                .decision_function(x[val]))
                    for c in baselines.C_GRID}
        np.testing.assert_allclose(list(fold["val_auc_by_C"].values()), list(val_aucs.values()),
                                   atol=1e-12)
        best = max(val_aucs.values())
        assert fold["C"] == next(c for c in baselines.C_GRID if val_aucs[f"{c:g}"] == best)
        assert fold["c_selection"] == "validation AUC" and fold["val_auc"] == best
        p1 = reference_fit(x[train], labels[train], fold["C"]).predict_proba(x[test])[:, 1]
        np.testing.assert_allclose(fold["test_p1"], p1, atol=1e-6)
        predictions = (p1 > 0.5).astype(int)
        assert fold["test_auc"] == pytest.approx(skm.roc_auc_score(labels[test], p1))
        assert fold["balanced_acc"] == pytest.approx(
            skm.balanced_accuracy_score(labels[test], predictions))
        assert fold["test_acc"] == pytest.approx(np.mean(predictions == labels[test]))
        assert fold["minority_f1"] == pytest.approx(skm.f1_score(labels[test], predictions))
        assert fold["prediction_counts"] == {"0": int((predictions == 0).sum()),
                                             "1": int((predictions == 1).sum())}


def test_unsorted_test_indices_keep_their_order():
  last_fc, labels = cohort(60, signal=True)
  train, val, test = make_folds(labels, 3, seed=0)[0]
  shuffled = np.random.default_rng(0).permutation(test)
  [fold] = baselines.run_baselines(last_fc, labels, [(train, val, shuffled)],
                                   first_fc=last_fc)["logreg_fc"]["folds"]
  [in_order] = baselines.run_baselines(last_fc, labels, [(train, val, test)],
                                       first_fc=last_fc)["logreg_fc"]["folds"]
  assert fold["test_subjects"] == shuffled.tolist()
  by_subject = dict(zip(in_order["test_subjects"], in_order["test_p1"], strict=True))
  np.testing.assert_allclose(fold["test_p1"], [by_subject[s] for s in shuffled.tolist()])


def test_each_fold_uses_its_own_matrices():
  """`fold_fc` (preprocessing fitted inside each fold) replaces both scans for that fold only:
  each fold's results are those of a run on that fold's matrices alone."""
  last_fc, first_fc, labels = change_cohort(60, seed=1)
  folds = make_folds(labels, 2, seed=0)
  other_last, other_first, _ = change_cohort(60, seed=2)
  results = baselines.run_baselines(last_fc, labels, folds, first_fc=first_fc,
                                    fold_fc=[(last_fc, first_fc), (other_last, other_first)])
  alone = [baselines.run_baselines(last, labels, [split], first_fc=first)
           for (last, first), split in zip([(last_fc, first_fc), (other_last, other_first)],
                                           folds, strict=True)]
  for name in baselines.BASELINES:
    for fold, [expected] in zip(results[name]["folds"], [a[name]["folds"] for a in alone],
                                strict=True):
      assert fold["test_p1"] == expected["test_p1"] and fold["C"] == expected["C"], name


class _PlantedScores:
  """A fitted model whose decision function is a fixed score per subject; the subject is read
  from feature 0 (FC entry (0, 1), set to 1 + subject index)."""

  def __init__(self, scores: np.ndarray):
    self.scores = scores

  def decision_function(self, x: np.ndarray) -> np.ndarray:
    return self.scores[np.rint(x[:, 0]).astype(int) - 1]


def test_c_is_chosen_on_validation_never_on_test(monkeypatch):
  last_fc, labels = cohort(60, signal=False)
  last_fc[:, 0, 1] = last_fc[:, 1, 0] = 1 + np.arange(60)
  train, val, test = make_folds(labels, 3, seed=0)[0]
  # C = 0.01 ranks validation perfectly and test backwards; C = 1 the other way round; the other
  # C rank nobody. Choosing on test would pick C = 1 and report test AUC 1.
  good_on_val = np.where(np.isin(np.arange(60), test), -labels, labels).astype(float)
  planted = {0.01: good_on_val, 1.0: -good_on_val}
  fitted_on = []
  real_fit_grid = baselines._fit_grid

  def fit_grid(x, y, cs):
    if x.shape[1] != N * (N - 1) // 2:  # logreg_fc only (logreg_change is wider): real fits
      return real_fit_grid(x, y, cs)
    fitted_on.append(np.rint(x[:, 0]).astype(int) - 1)
    return [(_PlantedScores(planted.get(c, np.zeros(60))), True) for c in cs]

  monkeypatch.setattr(baselines, "_fit_grid", fit_grid)
  [fold] = baselines.run_baselines(last_fc, labels, [(train, val, test)],
                                   first_fc=last_fc)["logreg_fc"]["folds"]
  np.testing.assert_array_equal(fitted_on[0], train)
  assert (fold["C"], fold["val_auc"], fold["test_auc"]) == (0.01, 1.0, 0.0)
  assert fold["val_auc_by_C"] == {"0.001": 0.5, "0.01": 1.0, "0.1": 0.5, "1": 0.0, "10": 0.5,
                                 "100": 0.5, "1000": 0.5}

  # Every C equally good on validation: the smallest (strongest regularisation) wins.
  planted = {c: good_on_val for c in baselines.C_GRID}
  [fold] = baselines.run_baselines(last_fc, labels, [(train, val, test)],
                                   first_fc=last_fc)["logreg_fc"]["folds"]
  assert fold["C"] == min(baselines.C_GRID)


def test_validation_with_one_class_falls_back_to_the_default_c(signal_run):
  last_fc, first_fc, labels, folds, _ = signal_run
  train, val, test = folds[0]
  stable_val = val[labels[val] == 0]
  results = baselines.run_baselines(last_fc, labels, [(train, stable_val, test)],
                                    first_fc=first_fc)
  for name in baselines.BASELINES:
    [fold] = results[name]["folds"]
    assert fold["C"] == baselines.DEFAULT_C == 1.0
    assert fold["c_selection"] == "default (validation has one class)"
    assert fold["val_auc"] is None and fold["test_auc"] is not None and fold["undefined"] is None


# ---------------------------------------------------------------------------------------------
# Folds that cannot be fitted.


def test_a_one_class_training_split_is_undefined_and_the_other_folds_still_run(signal_run):
  last_fc, first_fc, labels, folds, _ = signal_run
  train, val, test = folds[0]
  broken = [(train[labels[train] == 0], val, test)] + folds[1:]
  results = baselines.run_baselines(last_fc, labels, broken, first_fc=first_fc)
  for name in baselines.BASELINES:
    first, *rest = results[name]["folds"]
    assert first["undefined"] == "training split has one class (label 0)"
    assert all(first[key] is None for key in METRICS)
    assert first["test_subjects"] == test.tolist()
    assert all(f["undefined"] is None and f["test_auc"] is not None for f in rest)
    assert results[name]["summary"]["test_auc"]["n"] == len(folds) - 1


def test_row_space_spans_the_rows_as_an_svd_does():
  """The basis against numpy's SVD: the same projector onto the rows' span, orthonormal, the
  rank found where the rows are dependent, and `x` in the basis; no reduction for as many rows
  as columns."""
  rng = np.random.default_rng(3)
  x = rng.normal(size=(9, 40))
  x[8] = (x[0] + x[1]) / 2  # dependent rows: rank 8
  x -= x.mean(axis=0)  # standardised inputs are centred: one more exact zero, rank 7
  _, singular, vt = np.linalg.svd(x, full_matrices=False)
  reference = vt[singular > singular[0] * 1e-10]
  basis, reduced = baselines.row_space(x)
  assert basis.shape == (40, len(reference)) == (40, 7)
  np.testing.assert_allclose(basis.T @ basis, np.eye(7), atol=1e-12)
  np.testing.assert_allclose(basis @ basis.T, reference.T @ reference, atol=1e-12)
  np.testing.assert_allclose(reduced, x @ basis, atol=1e-12)
  assert baselines.row_space(rng.normal(size=(40, 40))) is None


def test_constant_features_are_undefined():
  _, labels = cohort(40, signal=False)
  same = np.broadcast_to(cohort(1, signal=False)[0], (40, N, N))
  folds = make_folds(labels, 2, seed=0)
  results = baselines.run_baselines(same, labels, folds, first_fc=same)
  for name in baselines.BASELINES:
    for fold in results[name]["folds"]:
      assert fold["undefined"] == "features are constant over the training subjects"
      assert all(fold[key] is None for key in METRICS)
    assert results[name]["summary"]["test_auc"] == {"mean": None, "std": None, "n": 0}

  # The same edges everywhere with different values: only the edge and degree baselines lose.
  values = same * np.random.default_rng(0).uniform(1.0, 1.2, (40, 1, 1))
  results = baselines.run_baselines(values, labels, folds, first_fc=values)
  for name in ("logreg_fc", "logreg_change"):  # the change is constant (0), the values are not
    assert all(f["undefined"] is None for f in results[name]["folds"])
  for name in ("logreg_edges", "logreg_degree"):
    assert all(f["undefined"] is not None for f in results[name]["folds"])


def test_caller_errors_raise():
  last_fc, labels = cohort(20, signal=False)
  folds = make_folds(labels, 2, seed=0)
  with pytest.raises(ValueError, match="labels must be"):
    baselines.run_baselines(last_fc, labels[:-1], folds, first_fc=last_fc)
  with pytest.raises(ValueError, match="0/1"):
    baselines.run_baselines(last_fc, labels * 2, folds, first_fc=last_fc)
  bad = last_fc.copy()
  bad[0, 0, 1] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    baselines.run_baselines(bad, labels, folds, first_fc=last_fc)
  with pytest.raises(ValueError, match="non-finite"):
    baselines.run_baselines(last_fc, labels, folds, first_fc=bad)
  with pytest.raises(ValueError, match="non-finite"):
    baselines.run_baselines(last_fc, labels, folds, first_fc=last_fc,
                            fold_fc=[(last_fc, last_fc), (last_fc, bad)])
  with pytest.raises(ValueError, match="first_fc must have"):
    baselines.run_baselines(last_fc, labels, folds, first_fc=last_fc[1:])
  with pytest.raises(ValueError, match="fold_fc has 1 entries for 2 folds"):
    baselines.run_baselines(last_fc, labels, folds, first_fc=last_fc,
                            fold_fc=[(last_fc, last_fc)])
  with pytest.raises(ValueError, match="every fold's FC matrices"):
    baselines.run_baselines(last_fc, labels, folds, first_fc=last_fc,
                            fold_fc=[(last_fc, last_fc), (last_fc[1:], last_fc[1:])])
  with pytest.raises(ValueError, match="c_grid"):
    baselines.run_baselines(last_fc, labels, folds, first_fc=last_fc, c_grid=())


# ---------------------------------------------------------------------------------------------
# Summary and output.


def test_summary_is_numpy_over_the_defined_folds(signal_run):
  last_fc, first_fc, labels, folds, _ = signal_run
  train, val, test = folds[1]
  folds = [(folds[0][0][labels[folds[0][0]] == 1], *folds[0][1:]),  # undefined
           (train, val, test[labels[test] == 0]),  # test AUC undefined, accuracy defined
           *folds[2:]]
  results = baselines.run_baselines(last_fc, labels, folds, first_fc=first_fc)
  json.dumps(results)  # the run's results.json takes it as it is
  for name in baselines.BASELINES:
    fold_results = results[name]["folds"]
    assert fold_results[0]["undefined"] == "training split has one class (label 1)"
    assert fold_results[1]["test_auc"] is None and fold_results[1]["test_acc"] is not None
    for key in baselines.SUMMARY_METRICS:
      values = [f[key] for f in fold_results if f[key] is not None]
      assert len(values) == (len(folds) - 2 if key == "test_auc" else len(folds) - 1)
      assert results[name]["summary"][key] == {
          "mean": pytest.approx(np.mean(values)), "std": pytest.approx(np.std(values)),
          "n": len(values)}


def test_validation_threshold_maximises_validation_balanced_accuracy():
  """With decision_threshold="val" the test predictions use the chosen model's threshold that is
  best on validation (checked by brute force over every validation score)."""
  last_fc, labels = cohort(90, signal=False, seed=3)
  labels[:12] = 1  # a weak, partly visible signal: some converters get a raised block
  last_fc[:8, 0, 3] = last_fc[:8, 3, 0] = 0.9
  folds = make_folds(labels, 3, seed=1)
  results = baselines.run_baselines(last_fc, labels, folds, first_fc=last_fc,
                                    decision_threshold="val")
  features = baselines.baseline_features(last_fc, last_fc)
  for (train, val, test), fold in zip(folds, results["logreg_fc"]["folds"], strict=True):
    model = reference_fit(features["logreg_fc"][train], labels[train], fold["C"])
    val_p1 = model.predict_proba(features["logreg_fc"][val])[:, 1]
    best = max(skm.balanced_accuracy_score(labels[val], val_p1 >= t)
               for t in np.append(np.unique(val_p1), np.inf))
    threshold = fold["decision_threshold"]
    assert skm.balanced_accuracy_score(labels[val], val_p1 >= threshold) == pytest.approx(best)
    predictions = np.asarray(fold["test_p1"]) >= threshold
    assert fold["balanced_acc"] == pytest.approx(
        skm.balanced_accuracy_score(labels[test], predictions))
  with pytest.raises(ValueError, match="decision_threshold"):
    baselines.run_baselines(last_fc, labels, folds, first_fc=last_fc, decision_threshold="median")
