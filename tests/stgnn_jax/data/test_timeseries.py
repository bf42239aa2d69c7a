"""Time-series input (`data.timeseries`, `data.connectivity`, `load_cohort` on TimeSeries/): the
measures against NumPy's definitions, how each becomes a graph, and every bad input's one line."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import numpy as np
import pytest

from stgnn_jax.data import connectivity
from stgnn_jax.data.cohort import CohortError
from stgnn_jax.data.connectivity import Cleaning, TimeSeriesSettings
from stgnn_jax.data.preprocessing import threshold_fc
from stgnn_jax.data.reference_format import load_cohort
from stgnn_jax.data.timeseries import TIMESERIES_DIR
from tests.helpers import (
    ROOT,
    SERIES_REGIONS,
    cohort_data,
    results_of,
    run_train,
    series,
    train_command,
    write_cohort,
)

RAW = Cleaning(detrend=False, standardize="none")  # the measures of the series as written
REGIONS = SERIES_REGIONS


def small_cohort(rng, n=8, visits=2, **kwargs):
  return [[series(rng, **kwargs) for _ in range(visits)] for _ in range(n)], [0, 1] * (n // 2)


def load(root, **settings):
  threshold = settings.pop("threshold", 0.2)
  return load_cohort(root, use_cache=False, threshold=threshold,
                     timeseries=TimeSeriesSettings(**settings))


def test_correlation_is_numpys_corrcoef_per_scan(tmp_path):
  rng = np.random.default_rng(0)
  scans, labels = small_cohort(rng)
  write_cohort(tmp_path, scans, labels)
  cohort = load(tmp_path, cleaning=RAW)
  for subject, visits in zip(cohort.subjects, scans, strict=True):
    for fc, x in zip(subject.fc, visits, strict=True):
      np.testing.assert_allclose(fc, threshold_fc(np.corrcoef(x.T), 0.2), atol=1e-6)
  # Cleaning with the defaults (detrend, z-score) changes no correlation of trend-free series
  # beyond the removed trend; a linear drift, though, is removed before the measure.
  drift = [[x + np.linspace(0, 50, len(x))[:, None] * rng.normal(size=REGIONS) for x in v]
           for v in scans]
  write_cohort(tmp_path / "drift", drift, labels)
  cleaned = load(tmp_path / "drift")
  raw = load(tmp_path / "drift", cleaning=RAW)
  assert np.abs(raw.subjects[0].fc).mean() > np.abs(cleaned.subjects[0].fc).mean()


@pytest.mark.parametrize("kind", ["covariance", "precision", "partial_correlation"])
def test_each_kind_is_thresholded_on_its_unit_free_form(tmp_path, kind):
  rng = np.random.default_rng(1)
  scans, labels = small_cohort(rng, coupling=1.5)
  for visits in scans:  # scaled regions: a covariance's values are not correlations
    for x in visits:
      x *= np.arange(1, REGIONS + 1)
  write_cohort(tmp_path, scans, labels)
  cohort = load(tmp_path, kind=kind, cleaning=RAW, threshold=0.3)
  x = scans[0][0]
  covariance = np.cov(x.T, bias=True)
  precision = np.linalg.inv(covariance)
  d = np.sqrt(np.diag(precision))
  partial = -precision / np.outer(d, d)
  np.fill_diagonal(partial, 1)
  values, unit_free = {
      "covariance": (covariance, np.corrcoef(x.T)),
      "precision": (precision, partial),
      "partial_correlation": (partial, partial)}[kind]
  got = cohort.subjects[0].fc[0]
  edges = np.abs(unit_free) >= 0.3
  np.testing.assert_array_equal(got != 0, edges)
  np.testing.assert_allclose(got[edges], values[edges], rtol=1e-5, atol=1e-6)


def test_fisher_z_keeps_the_correlations_edges_and_self_loops(tmp_path):
  rng = np.random.default_rng(2)
  scans, labels = small_cohort(rng, coupling=1.0)
  write_cohort(tmp_path, scans, labels)
  plain = load(tmp_path, cleaning=RAW).subjects[1].fc[0]
  z = load(tmp_path, cleaning=RAW, fisher_z=True).subjects[1].fc[0]
  np.testing.assert_array_equal(plain != 0, z != 0)
  off = ~np.eye(REGIONS, dtype=bool) & (plain != 0)
  np.testing.assert_allclose(z[off], np.arctanh(plain[off]), rtol=1e-5)
  np.testing.assert_array_equal(np.diagonal(z), 1)
  with pytest.raises(ValueError, match="Fisher z applies to correlations"):
    TimeSeriesSettings(kind="covariance", fisher_z=True)


def test_tables_with_a_header_name_the_regions_and_confounds_are_regressed_out(tmp_path):
  rng = np.random.default_rng(3)
  scans, labels = small_cohort(rng, n=4, visits=1)
  names = [f"roi_{i}" for i in range(REGIONS)]
  write_cohort(tmp_path, scans, labels, ext="tsv", header=names)
  cohort = load(tmp_path, cleaning=RAW)
  assert cohort.region_names == tuple(names)
  for subject, visits in zip(cohort.subjects, scans, strict=True):
    np.testing.assert_allclose(subject.fc[0], threshold_fc(np.corrcoef(visits[0].T), 0.2),
                               atol=1e-6)
  # A confound shared by every region: regressed out, the correlations it made are gone.
  confounds = tmp_path / "Confounds"
  confounds.mkdir()
  for s, visits in enumerate(scans):
    shared = 3 * rng.normal(size=len(visits[0]))
    visits[0] += shared[:, None]
    with open(confounds / f"sub-S{s:03d}_run-01_confounds.tsv", "w") as f:
      f.write("global\tother\n" + "".join(f"{v}\t0\n" for v in shared))
  write_cohort(tmp_path, scans, labels, ext="tsv", header=names)
  with_global = load(tmp_path, cleaning=RAW)
  regressed = load(tmp_path, cleaning=dataclasses.replace(RAW, confounds=("global",)))
  assert np.abs(with_global.subjects[0].fc[0]).mean() > 0.8
  assert np.abs(regressed.subjects[0].fc[0]).mean() < 0.5
  with pytest.raises(CohortError, match=r"no column\(s\) 'csf' \(found 'global', 'other'\)"):
    load(tmp_path, cleaning=dataclasses.replace(RAW, confounds=("csf",)))


def test_the_band_pass_uses_each_scans_repetition_time(tmp_path):
  rng = np.random.default_rng(4)
  scans, labels = small_cohort(rng, n=4, points=200)
  band = dataclasses.replace(RAW, high_pass=0.01, low_pass=0.1)
  write_cohort(tmp_path, scans, labels)
  with pytest.raises(CohortError, match="need the repetition time: pass --t_r SECONDS or give "
                     "the visit table a RepetitionTime column"):
    load(tmp_path, cleaning=band)
  filtered = load(tmp_path, cleaning=band, t_r=2.0)
  write_cohort(tmp_path, scans, labels, t_r=2.0)  # the same TR from the visit table
  assert load(tmp_path, cleaning=band) == filtered
  with pytest.raises(CohortError, match=r"--low_pass 0.3 Hz is not below the Nyquist frequency "
                     r"0.25 Hz of a 2 s repetition time"):
    load(tmp_path, cleaning=dataclasses.replace(band, low_pass=0.3))
  with pytest.raises(ValueError, match="no frequency band is left"):
    Cleaning(high_pass=0.1, low_pass=0.05)


def test_a_cohort_of_time_series_reads_back_from_the_cache_equal(tmp_path):
  rng = np.random.default_rng(5)
  scans, labels = small_cohort(rng)
  write_cohort(tmp_path, scans, labels, ext="csv", header=[f"r{i}" for i in range(REGIONS)])
  settings = TimeSeriesSettings(cleaning=RAW)
  first = load_cohort(tmp_path, timeseries=settings, cache_dir=tmp_path / "cache")
  again = load_cohort(tmp_path, timeseries=settings, cache_dir=tmp_path / "cache")
  assert again == first and again.region_names == first.region_names
  other = load_cohort(tmp_path, timeseries=TimeSeriesSettings(kind="covariance", cleaning=RAW),
                      cache_dir=tmp_path / "cache")
  assert other != first  # another measure is another cache entry
  assert len(list((tmp_path / "cache").iterdir())) == 2


def _rewrite(root, name, content):
  path = root / TIMESERIES_DIR / name
  if isinstance(content, np.ndarray):
    np.save(path, content)
  else:
    path.write_text(content)


@pytest.mark.parametrize("name, content, message", [
    ("sub-S000_run-01_timeseries.npy", np.full((60, REGIONS), np.nan),
     r"sub-S000_run-01_timeseries.npy: 360 non-finite \(NaN or inf\) value\(s\), the first at time "
     r"point 0, region column 0"),
    ("sub-S000_run-01_timeseries.npy", np.ones(60),
     r"must be a 2-D array \[time points, regions\], got a 1-D array"),
    ("sub-S000_run-01_timeseries.npy", np.ones((2, 60, REGIONS)), "got a 3-D array"),
    ("sub-S000_run-01_timeseries.npy", np.ones((60, REGIONS)),
     r"6 region\(s\) constant over time \(column 0, column 1"),
    ("sub-S000_run-01_timeseries.npy", np.random.default_rng(0).normal(size=(2, REGIONS)),
     "2 time points, but correlation of 6 regions needs at least 3"),
    ("sub-S000_run-01_timeseries.npy", np.random.default_rng(0).normal(size=(60, 4)),
     "S001_run-01_timeseries.npy: 6x6 matrix, but .*S000_run-01_timeseries.npy is 4x4; all scans "
     "must use the same atlas"),
    ("sub-S000_run-01_timeseries.npy", np.array([["a"] * REGIONS] * 60),
     "must hold real numbers, got dtype <U1"),
])
def test_bad_series_stop_with_one_line_naming_the_file(tmp_path, name, content, message):
  rng = np.random.default_rng(6)
  scans, labels = small_cohort(rng, n=4, visits=1)
  write_cohort(tmp_path, scans, labels)
  _rewrite(tmp_path, name, content)
  with pytest.raises(CohortError, match=message):
    load(tmp_path)


def test_bad_tables_are_named_by_line_and_column(tmp_path):
  rng = np.random.default_rng(7)
  scans, labels = small_cohort(rng, n=4, visits=1)
  names = [f"roi_{i}" for i in range(REGIONS)]
  write_cohort(tmp_path, scans, labels, ext="tsv", header=names)
  lines = (tmp_path / TIMESERIES_DIR / "sub-S001_run-01_timeseries.tsv").read_text().split("\n")
  cells = lines[1].split("\t")
  cells[2] = "oops"  # line 2 (the first row of values), column 3
  lines[1] = "\t".join(cells)
  _rewrite(tmp_path, "sub-S001_run-01_timeseries.tsv", "\n".join(lines))
  with pytest.raises(CohortError, match=r"sub-S001_run-01_timeseries.tsv, line 2, column 3: "
                     r"not a number: 'oops'"):
    load(tmp_path)
  write_cohort(tmp_path, scans, labels, ext="tsv", header=names[::-1])
  write_cohort(tmp_path / "x", scans[:1], labels[:1], ext="tsv", header=names)
  (tmp_path / TIMESERIES_DIR / "sub-S000_run-01_timeseries.tsv").write_text(
      (tmp_path / "x" / TIMESERIES_DIR / "sub-S000_run-01_timeseries.tsv").read_text())
  with pytest.raises(CohortError, match="region 1 is named 'roi_5', but 'roi_0' in .*every scan "
                     "must list the same regions in the same order"):
    load(tmp_path)


def test_a_folder_with_both_inputs_asks_to_choose(tmp_path):
  rng = np.random.default_rng(8)
  scans, labels = small_cohort(rng, n=4, visits=1)
  write_cohort(tmp_path, scans, labels)
  (tmp_path / "FC_Matrices").mkdir()
  with pytest.raises(CohortError, match="holds both FC_Matrices/ and TimeSeries/: choose one "
                     "with --input fc or --input timeseries"):
    load(tmp_path)
  assert len(load_cohort(tmp_path, input="timeseries", use_cache=False).subjects) == 4


def test_precision_needs_more_time_points_than_regions(tmp_path):
  rng = np.random.default_rng(9)
  scans, labels = small_cohort(rng, n=4, visits=1, points=REGIONS + 1)
  write_cohort(tmp_path, scans, labels)
  with pytest.raises(CohortError, match="7 time points, but precision of 6 regions needs at "
                     "least 8"):
    load(tmp_path, kind="precision")
  assert connectivity.min_time_points("precision", 6, RAW) == 7


def test_train_py_runs_on_time_series_with_steps_fitted_in_each_fold(tmp_path, compile_cache):
  """The command line end to end on a time-series folder with sites: the tangent measure and
  ComBat fitted in each fold, recorded and stored; bad input is one line, exit 2."""
  from stgnn_jax.data.fold_steps import FIT_FILE, FittedSteps

  scans, labels, columns = cohort_data(seed=6, n=24)
  write_cohort(tmp_path / "data", scans, labels, columns=columns)
  out = tmp_path / "out"
  run_train(["--data_root", str(tmp_path / "data"), "--connectivity", "tangent", "--harmonize",
             "combat", "--harmonize_covariates", "Age", "--num_folds", "2", "--n_epochs", "2",
             "--gnn_hidden_dim", "8", "--lstm_hidden_dim", "4", "--out_dir", str(out),
             "--save_path", str(tmp_path / "save"), "--no_progress"], compile_cache)
  config = json.loads((out / "config.json").read_text())["run"]
  assert (config["connectivity"], config["harmonize"]) == ("tangent", "combat")
  assert config["harmonize_covariates"] == ["Age"] and config["detrend"] is True
  results = results_of(out)
  assert len(results["folds"]) == 2 and "logreg_fc" in results["baselines"]
  assert "24 subjects" in results["cohort"] and "6 regions" in results["cohort"]
  record = results["preprocessing"]
  assert record["input"] == "timeseries" and record["connectivity"] == "tangent"
  assert record["fitted_in_each_fold"] == ["tangent", "combat"]
  for k in range(2):
    fit = FittedSteps.load(out / f"fold_{k}" / FIT_FILE)
    assert fit.whitening is not None and fit.combat is not None
    assert fit.combat.covariates[0].name == "Age" and fit.combat.sites == ("A", "B")
  # A later prediction replays each fold's stored fit: the run's own test probabilities.
  from stgnn_jax.trained_run import load_run

  trained = load_run(out)
  predictions = trained.predict_cohort(trained.read_cohort(tmp_path / "data"))
  for fold in results["folds"]:
    z = predictions.logits[fold["fold"], fold["test_subjects"]]
    np.testing.assert_allclose(1 / (1 + np.exp(z[:, 0] - z[:, 1])), fold["test_p1"], atol=1e-5)

  lonely = dict(columns, Site=columns["Site"][:-1] + ["C"])
  write_cohort(tmp_path / "lonely", scans, labels, columns=lonely)
  write_cohort(tmp_path / "no_site", scans, labels)
  np.save(tmp_path / "no_site" / TIMESERIES_DIR / "sub-S003_run-02_timeseries.npy",
          np.ones((70, REGIONS)))
  for data, flags, message in (
      ("no_site", [], "sub-S003_run-02_timeseries.npy: 6 region(s) constant over time"),
      ("data", ["--high_pass", "0.2", "--low_pass", "0.1"],
       "RunConfig.high_pass=0.2 Hz is not below low_pass=0.1 Hz: no frequency band is left"),
      ("no_site", ["--harmonize", "combat"], "missing required column(s) 'Site'"),
      ("lonely", ["--harmonize", "combat"], "site 'C' (subject S023) is held out in fold")):
    bad = subprocess.run(train_command("--data_root", str(tmp_path / data), "--out_dir",
                                       str(tmp_path / "bad"), *flags),
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, (
        bad.stderr)
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
