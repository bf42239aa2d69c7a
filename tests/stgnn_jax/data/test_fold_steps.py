"""Preprocessing fitted inside each fold (`data.fold_steps`): the tangent space against nilearn,
fits that see the training subjects only, ComBat in the pipeline, the stored fit, and train.py
end to end with its one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest

from stgnn_jax.config import ModelConfig, RunConfig
from stgnn_jax.data.cohort import CohortError
from stgnn_jax.data.connectivity import Cleaning, TimeSeriesSettings
from stgnn_jax.data.fold_steps import FIT_FILE, FittedSteps, FoldSteps
from stgnn_jax.data.reference_format import HarmonizeColumns, load_cohort
from stgnn_jax.errors import RunStateError
from stgnn_jax.input_pipeline import Subjects
from tests.helpers import cohort_data, write_cohort

RAW = Cleaning(detrend=False, standardize="none")
N = 16


def _load(root, kind="tangent", harmonize=False, covariates=()):
  return load_cohort(root, use_cache=False, threshold=0.2,
                     timeseries=TimeSeriesSettings(kind=kind, cleaning=RAW),
                     harmonize=HarmonizeColumns(site=harmonize, covariates=tuple(covariates)))


def test_tangent_is_nilearns_fitted_on_the_training_scans(tmp_path):
  from nilearn.connectome import ConnectivityMeasure

  scans, labels, columns = cohort_data()
  write_cohort(tmp_path, scans, labels, columns=columns)
  cohort = _load(tmp_path)
  assert cohort.measure_kind == "tangent"
  train = np.arange(0, N, 2)
  steps = FoldSteps.for_cohort(cohort, threshold=0.2, fisher_z=False, harmonize="none")
  fitted = steps.fit(cohort, train)
  # nilearn on the series themselves (its tangent default: Ledoit-Wolf covariances).
  reference = ConnectivityMeasure(kind="tangent")
  reference.fit([x for i in train for x in scans[i]])
  # The stored covariances are float32: equal to that precision.
  np.testing.assert_allclose(fitted.mean, reference.mean_, rtol=2e-5, atol=1e-6)
  expected = reference.transform([x for visits in scans for x in visits])
  graphs = fitted.apply(cohort)
  for i, subject in enumerate(graphs.subjects):
    for v in range(2):
      edges = subject.adjacency[v]
      np.testing.assert_allclose(subject.fc[v][edges], expected[2 * i + v][edges], rtol=1e-3,
                                 atol=2e-5)
      # The edges are those of the scan's own correlation (the graph of --connectivity
      # correlation at the same threshold, up to Ledoit-Wolf's shrinkage).
      covariance = np.asarray(subject.measure[v], np.float64)
      correlation = covariance / np.sqrt(np.outer(np.diag(covariance), np.diag(covariance)))
      np.testing.assert_array_equal(edges, np.abs(correlation) >= 0.2)


@pytest.mark.parametrize("kind, harmonize", [("tangent", "none"), ("correlation", "combat"),
                                             ("tangent", "combat")])
def test_a_fold_fit_sees_its_training_subjects_only(tmp_path, kind, harmonize):
  scans, labels, columns = cohort_data(seed=1)
  train, held = np.arange(0, 12), np.arange(12, N)
  changed = [[x * 1.3 + 0.5 * np.roll(x, 1, axis=1) if i in held else x for x in visits]
             for i, visits in enumerate(scans)]
  for name, data in (("a", scans), ("b", changed)):
    write_cohort(tmp_path / name, data, labels, columns=columns)
  on = harmonize != "none"
  a, b = (_load(tmp_path / name, kind, on, ("Age",) if on else ()) for name in "ab")
  steps = FoldSteps.for_cohort(a, threshold=0.2, fisher_z=False, harmonize=harmonize,
                               covariates=("Age",) if on else ())
  fit_a, fit_b = steps.fit(a, train), steps.fit(b, train)
  for one, other in ((fit_a.mean, fit_b.mean), (fit_a.whitening, fit_b.whitening)):
    assert (one is None) == (kind != "tangent")
    if one is not None:
      np.testing.assert_array_equal(one, other)
  if on:
    for name, array in fit_a.combat.arrays().items():
      np.testing.assert_array_equal(array, fit_b.combat.arrays()[name], err_msg=name)
  graphs_a, graphs_b = fit_a.apply(a), fit_b.apply(b)
  for i in train:
    np.testing.assert_array_equal(graphs_a.subjects[i].fc, graphs_b.subjects[i].fc)
  assert not np.array_equal(graphs_a.subjects[held[0]].fc, graphs_b.subjects[held[0]].fc)
  # Changing a training subject's series does change the fit.
  fit_c = steps.fit(b, np.concatenate([train[:-1], held[:1]]))
  assert not np.array_equal(fit_c.apply(b).subjects[0].fc, graphs_b.subjects[0].fc)


def test_combat_in_the_pipeline_removes_the_site_effect_on_connections(tmp_path):
  scans, labels, columns = cohort_data(seed=2, n=24, site_scale=1.0)
  # Site B adds a shared signal to regions 3-5: their correlations are higher there.
  rng = np.random.default_rng(5)
  scans = [[x + (1.0 * rng.normal(size=(len(x), 1)) * np.r_[0, 0, 0, 1, 1, 1]
                 if s == "B" else 0) for x in visits]
           for visits, s in zip(scans, columns["Site"], strict=True)]
  write_cohort(tmp_path, scans, labels, columns=columns)
  cohort = _load(tmp_path, "correlation", True)
  steps = FoldSteps.for_cohort(cohort, threshold=0.0, fisher_z=False, harmonize="combat")
  graphs = steps.fit(cohort, np.arange(24)).apply(cohort)

  def site_gap(c):
    values = {s: np.mean([sub.fc[:, 3, 4] for sub in c.subjects if sub.sites[0] == s])
              for s in "AB"}
    return values["B"] - values["A"]

  raw = load_cohort(tmp_path, use_cache=False, threshold=0.0,
                    timeseries=TimeSeriesSettings(cleaning=RAW))
  assert site_gap(raw) > 0.3 and abs(site_gap(graphs)) < 0.05


def test_a_fold_fit_is_stored_and_read_back(tmp_path):
  scans, labels, columns = cohort_data(seed=3)
  write_cohort(tmp_path / "data", scans, labels, columns=columns)
  cohort = _load(tmp_path / "data", harmonize=True)
  steps = FoldSteps.for_cohort(cohort, threshold=0.2, fisher_z=False, harmonize="combat")
  subjects = Subjects(cohort, RunConfig(), ModelConfig(input_dim=6), steps)
  train = np.arange(10)
  first = subjects.fit_fold(train, str(tmp_path))
  stored = FittedSteps.load(tmp_path / FIT_FILE)
  assert stored.steps == steps and stored.train_ids == tuple(f"S{i:03d}" for i in range(10))
  again = subjects.fit_fold(train, str(tmp_path))  # read back, not refitted
  np.testing.assert_array_equal(again.last_fc, first.last_fc)
  assert not np.array_equal(first.last_fc, subjects.last_fc)  # the steps changed the graphs
  with pytest.raises(RunStateError, match=f"{FIT_FILE}: fitted with other settings or training"):
    subjects.fit_fold(np.arange(1, 11), str(tmp_path))


def test_sites_that_a_fold_cannot_harmonise_are_refused_before_training(tmp_path):
  scans, labels, columns = cohort_data(seed=4)
  columns["Site"] = ["A" if i % 2 else "B" for i in range(N - 1)] + ["C"]
  write_cohort(tmp_path, scans, labels, columns=columns)
  cohort = _load(tmp_path, "correlation", True)
  steps = FoldSteps.for_cohort(cohort, threshold=0.2, fisher_z=False, harmonize="combat")
  held_c = (np.arange(N - 1), np.array([], int), np.array([N - 1]))
  with pytest.raises(CohortError, match=r"site 'C' \(subject S015\) is held out in fold 0"):
    steps.check_folds(cohort, [held_c])
  with pytest.raises(CohortError, match="'Site' is blank|missing required column"):
    write_cohort(tmp_path / "nosite", scans, labels)
    _load(tmp_path / "nosite", "correlation", True)


def test_harmonisation_settings_are_checked_with_the_other_settings():
  from stgnn_jax.errors import ConfigError

  with pytest.raises(ConfigError, match="harmonize_covariates.*must not name the label"):
    RunConfig(harmonize="combat", harmonize_covariates=("Age", "Label_CS_Num"))
  with pytest.raises(ConfigError, match="harmonize_covariates.*add --harmonize combat"):
    RunConfig(harmonize_covariates=("Age",))
