"""Tests of `stgnn_jax.data` (cohort loading) and of the built-in synthetic cohort (`synthetic`,
written by `writer`, loaded in memory by `synthetic_scans`)."""

from __future__ import annotations

import csv
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from stgnn_jax import data
from stgnn_jax.data import CohortError, CohortWarning, reference_format, synthetic
from stgnn_jax.data.synthetic_scans import cohort_from_scans

TEMPORAL_HEADER = ["Subject", "Visit", "Label_CS_Num", "Visit_Order", "Months_From_Baseline",
                   "Months_To_Next_Original"]
N = 6


def random_fc(seed: int, n: int = N) -> np.ndarray:
  """A symmetric FC-like matrix with unit diagonal and entries spread across the 0.2 threshold."""
  rng = np.random.default_rng(seed)
  a = rng.uniform(-0.6, 0.6, (n, n))
  a = (a + a.T) / 2
  np.fill_diagonal(a, 1.0)
  return a


def write_root(root: Path, scans: dict[tuple[str, int], np.ndarray], rows: list[list],
               *, simplified: list[list] | None = None, var_name: str = "fc_matrix",
               header: list[str] = TEMPORAL_HEADER) -> Path:
  """Writes a data root. `scans`: (file id, run) -> matrix; `rows`: TADPOLE_TEMPORAL rows in
  `header` order; `simplified`: (Subject, Visit_idx, Group, Label) rows."""
  fc_dir = root / "FC_Matrices"
  fc_dir.mkdir(parents=True, exist_ok=True)
  for (subject, run), matrix in scans.items():
    np.savez(fc_dir / reference_format.scan_file_name(subject, run), **{var_name: matrix})
  with open(root / "TADPOLE_TEMPORAL.csv", "w", newline="") as f:
    csv.writer(f).writerows([header] + rows)
  if simplified is not None:
    with open(root / "TADPOLE_Simplified.csv", "w", newline="") as f:
      csv.writer(f).writerows([["Subject", "Visit_idx", "Group", "Label_CS_Num"]] + simplified)
  return root


def two_subject_root(root: Path, **kwargs) -> tuple[Path, dict[tuple[str, int], np.ndarray]]:
  """Subject 002_S_0001: 3 scans, rows written out of Visit_Order, labels 0, 0, 1 (converter).
  Subject 003_S_0002: 1 scan, stable."""
  scans = {("002S0001", 1): random_fc(1), ("002S0001", 2): random_fc(2),
           ("002S0001", 3): random_fc(3), ("003S0002", 1): random_fc(4)}
  rows = [["002_S_0001", "m12", 1, 3, 12.0, ""],
          ["002_S_0001", "bl", 0, 1, 0.0, 6.0],
          ["002_S_0001", "m06", 0, 2, 6.5, 5.5],
          ["003_S_0002", "bl", 0, 1, 0.0, 12.0]]
  simplified = [["002_S_0001", 1, "MCI", 0], ["002_S_0001", 0, "CN", 0],
                ["003_S_0002", 0, "AD", 0]]
  return write_root(root, scans, rows, simplified=simplified, **kwargs), scans


# ---------------------------------------------------------------------------------------------
# Matrix -> graph.


def test_fc_to_adjacency_symmetrises_then_thresholds_absolute_value():
  fc = np.eye(4)
  fc[0, 1], fc[1, 0] = 0.10, 0.35  # mean 0.225 >= 0.2: edge although 0.10 alone is not
  fc[0, 2], fc[2, 0] = 0.10, 0.25  # mean 0.175: no edge although 0.25 alone is
  fc[1, 2] = fc[2, 1] = -0.3       # |-0.3| >= 0.2: an edge
  fc[2, 3] = fc[3, 2] = 0.2        # exactly the threshold: an edge (only |A| < t is dropped)
  fc[1, 3] = fc[3, 1] = 0.19999
  adjacency = data.fc_to_adjacency(fc, 0.2)
  expected = np.eye(4, dtype=bool)
  for i, j in [(0, 1), (1, 2), (2, 3)]:
    expected[i, j] = expected[j, i] = True
  np.testing.assert_array_equal(adjacency, expected)
  assert adjacency.dtype == bool


def test_fc_to_adjacency_diagonal_gives_self_loops_and_zero_is_no_edge():
  fc = random_fc(0)
  assert data.fc_to_adjacency(fc).diagonal().all()
  np.fill_diagonal(fc, 0.0)
  assert not data.fc_to_adjacency(fc).diagonal().any()
  # threshold 0: every nonzero entry is an edge, zeros are not.
  sparse = np.diag([1.0, 0.0, 1.0])
  sparse[0, 1] = sparse[1, 0] = 1e-9
  np.testing.assert_array_equal(data.fc_to_adjacency(sparse, 0.0),
                                [[1, 1, 0], [1, 0, 0], [0, 0, 1]])


def test_fc_to_adjacency_accepts_a_stack_and_rejects_bad_input():
  stack = np.stack([random_fc(s) for s in range(3)])
  np.testing.assert_array_equal(data.fc_to_adjacency(stack),
                                np.stack([data.fc_to_adjacency(m) for m in stack]))
  with pytest.raises(ValueError, match="square"):
    data.fc_to_adjacency(np.zeros((3, 4)))
  bad = random_fc(0)
  bad[1, 2] = np.nan
  with pytest.raises(ValueError, match="1 non-finite"):
    data.fc_to_adjacency(bad)
  with pytest.raises(ValueError, match="threshold"):
    data.fc_to_adjacency(random_fc(0), -0.1)


def test_threshold_fc_keeps_the_values_on_exactly_the_edges():
  stack = np.stack([random_fc(s) for s in range(3)])
  stack[0, 1, 2] = 0.3  # asymmetric: the symmetrised value decides, as for the edges
  values = data.threshold_fc(stack, 0.2)
  assert values.dtype == np.float32
  np.testing.assert_array_equal(values != 0, data.fc_to_adjacency(stack, 0.2))
  symmetric = (stack + np.swapaxes(stack, -1, -2)) / 2
  edges = data.fc_to_adjacency(stack, 0.2)
  np.testing.assert_array_equal(values[edges], symmetric[edges].astype(np.float32))
  np.testing.assert_array_equal(values, np.swapaxes(values, -1, -2))
  with pytest.raises(ValueError, match="non-finite"):
    data.threshold_fc(np.full((3, 3), np.nan))


def test_connection_features_profile_and_change_since_the_first_visit():
  fc = data.threshold_fc(np.stack([random_fc(s) for s in range(3)]))
  np.testing.assert_array_equal(data.connection_features(fc), fc)
  both = data.connection_features(fc, "profile_change")
  assert both.shape == (3, N, 2 * N) and both.dtype == np.float32
  np.testing.assert_array_equal(both[..., :N], fc)
  for v in range(3):
    np.testing.assert_array_equal(both[v, :, N:], fc[v] - fc[0])
  assert not data.connection_features(fc[:1], "profile_change")[..., N:].any()
  with pytest.raises(ValueError, match="unknown node features"):
    data.connection_features(fc, "onehot")


def test_loaded_subjects_carry_the_edge_values(tmp_path):
  root, scans = two_subject_root(tmp_path)
  converter = data.load_cohort(root, use_cache=False).subjects[0]
  for k in range(3):
    np.testing.assert_array_equal(converter.fc[k],
                                  data.threshold_fc(scans[("002S0001", k + 1)]))
  assert not converter.fc.flags.writeable
  # A graph given without values weighs 1 per edge; values off the edges are refused.
  plain = data.Subject("X", 0, np.eye(2, dtype=bool)[None], np.zeros(1), 6.0)
  np.testing.assert_array_equal(plain.fc, np.eye(2, dtype=np.float32)[None])
  with pytest.raises(ValueError, match="nonzero exactly on the edges"):
    data.Subject("X", 0, np.eye(2, dtype=bool)[None], np.zeros(1), 6.0,
                 fc=np.full((1, 2, 2), 0.5, np.float32))


# ---------------------------------------------------------------------------------------------
# The reference's rules, on a hand-made root.


def test_load_labels_runs_months_groups(tmp_path):
  root, scans = two_subject_root(tmp_path)
  cohort = data.load_cohort(root)
  assert cohort.subject_ids == ("002S0001", "003S0002")
  converter, stable = cohort.subjects
  # Label of the last row in Visit_Order (written first in the file), not of the first row.
  assert (converter.label, stable.label) == (1, 0)
  np.testing.assert_array_equal(cohort.labels(), [1, 0])
  # Run k <-> k-th row in Visit_Order.
  np.testing.assert_array_equal(converter.months, [0.0, 6.5, 12.0])
  for k in range(3):
    np.testing.assert_array_equal(converter.adjacency[k],
                                  data.fc_to_adjacency(scans[("002S0001", k + 1)]))
  assert converter.time_to_predict == pytest.approx(6.0)  # mean gap of (6.5, 5.5)
  assert stable.time_to_predict == 6.0                    # one visit: single_visit_horizon
  # Baseline group = Group of the smallest Visit_idx, whatever the row order.
  assert (converter.group, stable.group) == ("CN", "AD")
  assert cohort.num_nodes == N
  assert (cohort.n_scans_used, cohort.n_scans_skipped, cohort.n_subjects_skipped) == (4, 0, 0)
  assert cohort.summary().startswith("2 subjects (1 converters), 4 scans used, 0 skipped")
  assert not converter.adjacency.flags.writeable


def test_group_is_none_without_simplified_table(tmp_path):
  root, _ = two_subject_root(tmp_path)
  (root / "TADPOLE_Simplified.csv").unlink()
  assert [s.group for s in data.load_cohort(root).subjects] == [None, None]


def long_root(root: Path, n_runs: int = 5) -> Path:
  scans = {("011S0003", k): random_fc(10 + k) for k in range(1, n_runs + 1)}
  scans[("011S0004", 1)] = random_fc(99)
  months = [0.0, 6.0, 12.0, 24.0, 36.0, 48.0][:n_runs]
  rows = [["011_S_0003", "v", 1 if k == n_runs else 0, k, m, ""] for k, m in
          zip(range(1, n_runs + 1), months, strict=True)]
  rows.append(["011_S_0004", "bl", 0, 1, 0.0, 12.0])
  return write_root(root, scans, rows)


def test_max_visits_keeps_the_last_visits(tmp_path):
  root = long_root(tmp_path)
  subject = data.load_cohort(root, max_visits=3).subjects[0]
  np.testing.assert_array_equal(subject.months, [12.0, 24.0, 36.0])
  for i, run in enumerate([3, 4, 5]):
    np.testing.assert_array_equal(subject.adjacency[i], data.fc_to_adjacency(random_fc(10 + run)))
  assert subject.time_to_predict == 12.0  # mean gap of the kept visits
  cohort = data.load_cohort(root, max_visits=3)
  assert (cohort.n_scans_used, cohort.n_scans_unused) == (4, 2)


def test_exclude_target_visit_with_several_visits(tmp_path):
  root = long_root(tmp_path)
  subject = data.load_cohort(root, exclude_target_visit=True).subjects[0]
  np.testing.assert_array_equal(subject.months, [0.0, 6.0, 12.0, 24.0])
  assert subject.time_to_predict == 36.0 - 24.0
  assert subject.label == 1
  # The target is held out first, then the inputs are trimmed to max_visits.
  trimmed = data.load_cohort(root, exclude_target_visit=True, max_visits=2).subjects[0]
  np.testing.assert_array_equal(trimmed.months, [12.0, 24.0])
  np.testing.assert_array_equal(trimmed.adjacency[-1], data.fc_to_adjacency(random_fc(14)))


@pytest.mark.parametrize("to_next, expected", [("12.0", 12.0), ("", 9.0), ("0", 9.0),
                                               ("-3", 9.0), ("nan", 9.0)])
def test_exclude_target_visit_with_one_visit(tmp_path, to_next, expected):
  scans = {("002S0001", 1): random_fc(1), ("002S0002", 1): random_fc(2)}
  rows = [["002_S_0001", "bl", 1, 1, 0.0, to_next], ["002_S_0002", "bl", 0, 1, 0.0, "6"]]
  cohort = data.load_cohort(write_root(tmp_path, scans, rows), exclude_target_visit=True,
                            single_visit_horizon=9.0)
  subject = cohort.subjects[0]
  assert subject.num_visits == 1 and subject.time_to_predict == expected


def test_time_normalizations():
  months = np.array([0.0, 5.9, 6.0, 12.0, 18.0, 24.0, 60.0])
  np.testing.assert_allclose(data.normalize_time(months, "log"), np.log1p(months / 12), rtol=1e-6)
  np.testing.assert_allclose(data.normalize_time(months, "raw"), months / 12, rtol=1e-6)
  np.testing.assert_allclose(data.normalize_time(months, "minmax"), months / 60, rtol=1e-6)
  np.testing.assert_allclose(data.normalize_time(months, "minmax", max_months=24.0),
                             np.clip(months / 24, 0, 1), rtol=1e-6)
  np.testing.assert_allclose(data.normalize_time(months, "buckets"),
                             [0, 0, 1 / 3, 2 / 3, 2 / 3, 1, 1], rtol=1e-6)
  assert data.normalize_time(months, "log").dtype == np.float32
  with pytest.raises(ValueError, match="unknown time normalization"):
    data.normalize_time(months, "zscore")
  assert [data.horizon_bucket(m) for m in (0, 5.99, 6, 11.9, 12, 23.9, 24, 100)] == [
      "0-6m", "0-6m", "6-12m", "6-12m", "12-24m", "12-24m", "24m+", "24m+"]


def test_time_features_of_a_cohort(tmp_path):
  root, _ = two_subject_root(tmp_path)
  cohort = data.load_cohort(root)
  for name in data.TIME_NORMALIZATIONS:
    np.testing.assert_array_equal(data.time_features(cohort, name),
                                  data.normalize_time(cohort.time_to_predict(), name))
  np.testing.assert_allclose(data.time_features(cohort, "minmax"), [1.0, 1.0])


def test_conversion_type():
  def subject(group, label):
    return data.Subject("X", label, np.ones((1, 2, 2), bool), np.zeros(1), 6.0, group)
  cases = {("CN", 1): "CN→MCI", ("CN", 0): "CN-Stable", ("MCI", 1): "MCI→AD",
           ("MCI", 0): "MCI-Stable", ("AD", 0): "AD-Stable", ("AD", 1): "AD-Converter",
           (None, 0): "Unknown-Stable", (None, 1): "Unknown-Converter"}
  for (group, label), expected in cases.items():
    assert data.conversion_type(subject(group, label)) == expected


# ---------------------------------------------------------------------------------------------
# Skips and bad input: every message names the file (or column) and the problem.


def test_unlabeled_subject_is_skipped_and_counted_not_labelled_zero(tmp_path):
  root, _ = two_subject_root(tmp_path)
  fc_dir = root / "FC_Matrices"
  for run in (1, 2):
    np.savez(fc_dir / f"sub-099S0009_run-0{run}_fc_matrix.npz", fc_matrix=random_fc(run))
  with pytest.warns(CohortWarning, match=r"subject 099S0009 has no row in .*TADPOLE_TEMPORAL"
                    r"\.csv; its 2 scan\(s\) skipped: sub-099S0009_run-01_fc_matrix\.npz"):
    cohort = data.load_cohort(root)
  assert "099S0009" not in cohort.subject_ids
  assert (cohort.n_scans_skipped, cohort.n_subjects_skipped, cohort.n_scans_used) == (2, 1, 4)
  assert "2 skipped (1 subjects" in cohort.summary()


def test_run_without_visit_row_is_skipped(tmp_path):
  root, _ = two_subject_root(tmp_path)
  np.savez(root / "FC_Matrices" / "sub-003S0002_run-02_fc_matrix.npz", fc_matrix=random_fc(7))
  with pytest.warns(CohortWarning, match=r"sub-003S0002_run-02_fc_matrix\.npz: run 2 but subject "
                    r"003S0002 has only 1 visit row"):
    cohort = data.load_cohort(root)
  assert cohort.subjects[1].num_visits == 1 and cohort.n_scans_skipped == 1


def test_one_class_cohort_is_an_error(tmp_path):
  scans = {("002S0001", 1): random_fc(1), ("002S0002", 1): random_fc(2)}
  rows = [["002_S_0001", "bl", 0, 1, 0.0, ""], ["002_S_0002", "bl", 0, 1, 0.0, ""]]
  root = write_root(tmp_path, scans, rows)
  with pytest.raises(CohortError, match="all 2 subjects have label 0 .*both classes"):
    data.load_cohort(root)
  assert len(data.load_cohort(root, require_both_classes=False)) == 2


def test_missing_folder_and_tables(tmp_path):
  with pytest.raises(CohortError, match=re.escape(str(tmp_path / "nope")) + ": data folder"):
    data.load_cohort(tmp_path / "nope")
  with pytest.raises(CohortError, match=r"FC_Matrices: folder of scans not found"):
    data.load_cohort(tmp_path)
  root, _ = two_subject_root(tmp_path)
  (root / "TADPOLE_TEMPORAL.csv").unlink()
  with pytest.raises(CohortError, match=r"TADPOLE_TEMPORAL\.csv: visit table not found"):
    data.load_cohort(root)


@pytest.mark.parametrize("column", ["Subject", "Label_CS_Num", "Visit_Order",
                                    "Months_From_Baseline", "Months_To_Next_Original"])
def test_missing_column_is_named(tmp_path, column):
  keep = [i for i, name in enumerate(TEMPORAL_HEADER) if name != column]
  rows = [["002_S_0001", "bl", 1, 1, 0.0, ""], ["002_S_0002", "bl", 0, 1, 0.0, ""]]
  root = write_root(tmp_path, {("002S0001", 1): random_fc(1)}, [[r[i] for i in keep] for r in rows],
                    header=[TEMPORAL_HEADER[i] for i in keep])
  with pytest.raises(CohortError, match=rf"TADPOLE_TEMPORAL\.csv: missing required column\(s\) "
                     rf"'{column}'"):
    data.load_cohort(root)


def test_missing_column_of_simplified_table(tmp_path):
  root, _ = two_subject_root(tmp_path)
  (root / "TADPOLE_Simplified.csv").write_text("Subject,Visit_idx,Label_CS_Num\n002_S_0001,0,0\n")
  with pytest.raises(CohortError, match=r"TADPOLE_Simplified\.csv: missing required column\(s\) "
                     r"'Group'"):
    data.load_cohort(root)


@pytest.mark.parametrize("field, value, problem", [
    (2, "2", "Label_CS_Num must be 0 or 1, got '2'"),
    (2, "", "column 'Label_CS_Num' is blank"),
    (3, "first", "column 'Visit_Order' is not a number: 'first'"),
    (4, "", "column 'Months_From_Baseline' is blank"),
])
def test_bad_csv_value_names_file_and_line(tmp_path, field, value, problem):
  rows = [["002_S_0001", "bl", 1, 1, 0.0, ""], ["002_S_0002", "bl", 0, 1, 0.0, ""]]
  rows[1][field] = value
  root = write_root(tmp_path, {("002S0001", 1): random_fc(1)}, rows)
  with pytest.raises(CohortError, match=r"TADPOLE_TEMPORAL\.csv, line 3: " + re.escape(problem)):
    data.load_cohort(root)


def test_npz_without_the_key(tmp_path):
  root, _ = two_subject_root(tmp_path, var_name="connectivity")
  with pytest.raises(CohortError, match=r"sub-002S0001_run-01_fc_matrix\.npz: no array named "
                     r"'fc_matrix'; the file has \['connectivity'\].*--var_name"):
    data.load_cohort(root)
  assert len(data.load_cohort(root, var_name="connectivity")) == 2


@pytest.mark.parametrize("matrix, problem", [
    (np.zeros((6, 5)), "must be a square 2-D matrix, got shape (6, 5)"),
    (np.zeros((2, 6, 6)), "must be a square 2-D matrix, got shape (2, 6, 6)"),
    (np.full((6, 6), np.nan), "has 36 non-finite (NaN or inf) entries"),
    (np.where(np.eye(6) > 0, np.inf, 0.3), "has 6 non-finite (NaN or inf) entries"),
    (np.eye(4), "4x4 matrix, but"),
    (np.array([["a"] * 6] * 6), "must hold real numbers"),
])
def test_bad_matrix_names_the_file(tmp_path, matrix, problem):
  root, _ = two_subject_root(tmp_path)
  np.savez(root / "FC_Matrices" / "sub-003S0002_run-01_fc_matrix.npz", fc_matrix=matrix)
  with pytest.raises(CohortError, match=r"sub-003S0002_run-01_fc_matrix\.npz: .*"
                     + re.escape(problem)):
    data.load_cohort(root)


def test_unreadable_npz_names_the_file(tmp_path):
  root, _ = two_subject_root(tmp_path)
  (root / "FC_Matrices" / "sub-003S0002_run-01_fc_matrix.npz").write_bytes(b"not a zip file")
  with pytest.raises(CohortError, match=r"sub-003S0002_run-01_fc_matrix\.npz: cannot read"):
    data.load_cohort(root)
  np.save(root / "FC_Matrices" / "bare.npy", random_fc(0))
  os.replace(root / "FC_Matrices" / "bare.npy",
             root / "FC_Matrices" / "sub-003S0002_run-01_fc_matrix.npz")
  with pytest.raises(CohortError, match=r"run-01_fc_matrix\.npz: not an \.npz archive"):
    data.load_cohort(root)


def test_stray_and_misnamed_files(tmp_path):
  root, _ = two_subject_root(tmp_path)
  fc_dir = root / "FC_Matrices"
  (fc_dir / ".DS_Store").write_bytes(b"\0")
  (fc_dir / "README.txt").write_text("notes")
  np.savez(fc_dir / "sub-002S0001_run-04_fcmatrix.npz", fc_matrix=random_fc(0))
  np.savez(fc_dir / "sub-002S0001_run-00_fc_matrix.npz", fc_matrix=random_fc(0))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    cohort = data.load_cohort(root, use_cache=False)
  messages = [str(w.message) for w in caught if issubclass(w.category, CohortWarning)]
  assert any("sub-002S0001_run-04_fcmatrix.npz: name does not match "
             "sub-<ID>_run-<NN>_fc_matrix.npz" in m for m in messages)
  assert any("sub-002S0001_run-00_fc_matrix.npz: name does not match" in m for m in messages)
  assert any("ignored 1 file(s) that are not scans: README.txt" in m for m in messages)
  assert not any(".DS_Store" in m for m in messages)
  assert cohort.n_files_ignored == 4 and cohort.n_scans_used == 4


def test_two_files_for_one_run(tmp_path):
  root, _ = two_subject_root(tmp_path)
  np.savez(root / "FC_Matrices" / "sub-003S0002_run-1_fc_matrix.npz", fc_matrix=random_fc(0))
  with pytest.raises(CohortError, match=r"two files for run 1 of subject 003S0002"):
    data.load_cohort(root)


def test_no_scans(tmp_path):
  root, _ = two_subject_root(tmp_path)
  for path in (root / "FC_Matrices").iterdir():
    path.unlink()
  with pytest.raises(CohortError, match=r"FC_Matrices: no scan files named"):
    data.load_cohort(root)


# ---------------------------------------------------------------------------------------------
# The cache.


def count_scan_reads(monkeypatch) -> list[Path]:
  reads = []
  real = reference_format._read_scan

  def counting(path, var_name):
    reads.append(path)
    return real(path, var_name)

  monkeypatch.setattr(reference_format, "_read_scan", counting)
  return reads


def test_second_load_uses_the_cache(tmp_path, monkeypatch):
  root, _ = two_subject_root(tmp_path)
  reads = count_scan_reads(monkeypatch)
  first = data.load_cohort(root)
  assert len(reads) == 4
  (entry,) = (root / ".stgnn_cache").glob("cohort-*")
  assert sorted(p.name for p in entry.iterdir()) == ["adjacency.npy", "cohort.npz", "fc.npy"]
  second = data.load_cohort(root)
  assert len(reads) == 4  # nothing re-read
  assert second == first  # edge values included (Subject equality compares `fc`)
  assert second.subjects[0].adjacency.dtype == bool
  assert len(np.unique(second.subjects[0].fc)) > 3  # real FC values, not 0/1 weights
  # Other settings are another cache entry.
  data.load_cohort(root, threshold=0.3)
  assert len(reads) == 8
  # A changed input file invalidates the entry.
  np.savez(root / "FC_Matrices" / "sub-003S0002_run-01_fc_matrix.npz", fc_matrix=random_fc(50))
  os.utime(root / "FC_Matrices" / "sub-003S0002_run-01_fc_matrix.npz", ns=(1, 1))
  changed = data.load_cohort(root)
  assert len(reads) == 12 and changed != first


def test_cache_reissues_warnings(tmp_path):
  root, _ = two_subject_root(tmp_path)
  np.savez(root / "FC_Matrices" / "sub-099S0009_run-01_fc_matrix.npz", fc_matrix=random_fc(0))
  with pytest.warns(CohortWarning, match="099S0009"):
    first = data.load_cohort(root)
  with pytest.warns(CohortWarning, match="099S0009"):
    second = data.load_cohort(root)
  assert second == first and second.n_scans_skipped == 1


def test_cache_falls_back_to_user_cache_and_survives_corruption(tmp_path, monkeypatch):
  root, _ = two_subject_root(tmp_path / "data")
  (root / ".stgnn_cache").write_text("a file where the cache folder would go")
  monkeypatch.setattr(reference_format, "user_cache_dir", lambda: tmp_path / "user-cache")
  reads = count_scan_reads(monkeypatch)
  first = data.load_cohort(root)
  (cached,) = (tmp_path / "user-cache").glob("cohort-*")
  assert data.load_cohort(root) == first and len(reads) == 4
  (cached / "fc.npy").write_bytes(b"garbage")
  with pytest.warns(CohortWarning, match="unreadable cohort cache"):
    assert data.load_cohort(root) == first
  assert len(reads) == 8


def test_unwritable_cache_dir_warns_and_loads(tmp_path):
  root, _ = two_subject_root(tmp_path)
  (tmp_path / "blocker").write_text("")
  with pytest.warns(CohortWarning, match="could not write the cohort cache"):
    cohort = data.load_cohort(root, cache_dir=tmp_path / "blocker" / "cache")
  assert len(cohort) == 2


# ---------------------------------------------------------------------------------------------
# The synthetic cohort.

SMALL = dict(num_subjects=14, num_regions=20, seed=3)


def test_synthetic_round_trip_through_disk(tmp_path):
  scans = synthetic.write_synthetic(tmp_path, **SMALL)
  loaded = data.load_cohort(tmp_path)
  in_memory = synthetic.synthetic_cohort(**SMALL)
  assert loaded == in_memory
  assert len(loaded) == 14 and loaded.n_scans_used == scans.num_scans
  assert [s.group for s in loaded.subjects] == [g[0] for g in scans.groups]
  np.testing.assert_array_equal(loaded.labels(), scans.labels)
  for subject, months in zip(loaded.subjects, scans.months, strict=True):
    np.testing.assert_array_equal(subject.months, months)
  for settings in (dict(exclude_target_visit=True, max_visits=2), dict(max_visits=1)):
    assert data.load_cohort(tmp_path, **settings) == cohort_from_scans(scans, **settings)
  with pytest.raises(FileExistsError):
    synthetic.write_synthetic(tmp_path, **SMALL)
  synthetic.write_synthetic(tmp_path, overwrite=True, var_name="fc", **dict(SMALL, seed=4))
  assert data.load_cohort(tmp_path, var_name="fc") == synthetic.synthetic_cohort(
      **dict(SMALL, seed=4))


def test_synthetic_is_deterministic_per_seed():
  a, b = synthetic.make_synthetic_cohort(**SMALL), synthetic.make_synthetic_cohort(**SMALL)
  c = synthetic.make_synthetic_cohort(**dict(SMALL, seed=4))
  assert a.subject_ids == b.subject_ids
  for x, y in zip(a.fc, b.fc, strict=True):
    np.testing.assert_array_equal(x, y)
  assert synthetic.synthetic_cohort(**SMALL) == synthetic.synthetic_cohort(**SMALL)
  assert a.subject_ids != c.subject_ids
  assert synthetic.synthetic_cohort(**SMALL) != synthetic.synthetic_cohort(**dict(SMALL, seed=4))


def test_synthetic_matrices_look_like_fc():
  scans = synthetic.make_synthetic_cohort(num_subjects=40, num_regions=30, seed=1)
  fc = np.concatenate(scans.fc)
  assert fc.dtype == np.float32
  np.testing.assert_array_equal(fc, np.swapaxes(fc, 1, 2))
  np.testing.assert_array_equal(fc[:, np.arange(30), np.arange(30)], 1.0)
  off = fc[:, ~np.eye(30, dtype=bool)]
  assert np.all(np.abs(off) < 1)
  assert np.mean(np.abs(off) >= 0.2) == pytest.approx(0.3, abs=0.03)
  assert np.any(off <= -0.2)  # some anti-correlated edges, as in real FC
  n_visits = np.array([len(f) for f in scans.fc])
  assert n_visits.min() >= 1 and n_visits.max() <= 6
  assert scans.labels.sum() == 12  # round(0.3 * 40)
  for months, labels, groups in zip(scans.months, scans.visit_labels, scans.groups, strict=True):
    assert months[0] == 0 and np.all(np.diff(months) > 3)
    assert labels[:-1].sum() == 0
    assert groups[-1] == {("CN", 1): "MCI", ("MCI", 1): "AD"}.get((groups[0], labels[-1]),
                                                                  groups[0])


def test_synthetic_signal_is_in_the_change_not_in_the_edge_count():
  """The default cohort: a linear model on the first->last change of the adjacency separates the
  classes; the edge count (density) alone does not."""
  from sklearn.linear_model import LogisticRegression
  from sklearn.metrics import roc_auc_score
  from sklearn.model_selection import StratifiedKFold, cross_val_predict

  scans = synthetic.make_synthetic_cohort()
  cohort = cohort_from_scans(scans)
  labels = cohort.labels()
  assert len(cohort) == 300 and 850 <= cohort.n_scans_used <= 1100
  upper = np.triu_indices(cohort.num_nodes, k=1)
  first = np.array([s.adjacency[0][upper] for s in cohort.subjects], np.float32)
  last = np.array([s.adjacency[-1][upper] for s in cohort.subjects], np.float32)
  density = np.mean([s.adjacency[:, upper[0], upper[1]].mean() for s in cohort.subjects])
  assert density == pytest.approx(0.3, abs=0.02)
  scores = cross_val_predict(LogisticRegression(solver="liblinear"), last - first, labels,
                             cv=StratifiedKFold(5, shuffle=True, random_state=0),
                             method="decision_function")
  assert roc_auc_score(labels, scores) > 0.9
  for edge_count in (last.sum(1), last.sum(1) - first.sum(1)):
    auc = roc_auc_score(labels, edge_count)
    assert max(auc, 1 - auc) < 0.65
  # Rewiring keeps node degrees: even the module regions' degrees at the last visit are no cue.
  degree = np.array([s.adjacency[-1].sum(1) for s in cohort.subjects])
  auc = roc_auc_score(labels, degree[:, scans.module].sum(1))
  assert max(auc, 1 - auc) < 0.65


# ---------------------------------------------------------------------------------------------
# Odd input: an error naming the file, or a warning for what loads but is likely a mistake.


def test_a_zero_by_zero_matrix_is_refused_naming_the_file(tmp_path):
  root, _ = two_subject_root(tmp_path)
  path = root / "FC_Matrices" / "sub-003S0002_run-01_fc_matrix.npz"
  np.savez(path, fc_matrix=np.zeros((0, 0)))
  with pytest.raises(CohortError, match=re.escape(f"{path}: 'fc_matrix' is a 0x0 matrix")):
    data.load_cohort(root, use_cache=False)


def test_a_damaged_compressed_scan_is_refused_naming_the_file(tmp_path):
  root, _ = two_subject_root(tmp_path)
  path = root / "FC_Matrices" / "sub-003S0002_run-01_fc_matrix.npz"
  np.savez_compressed(path, fc_matrix=random_fc(9, 40))
  raw = bytearray(path.read_bytes())
  raw[len(raw) // 2:len(raw) // 2 + 30] = b"\x00" * 30
  path.write_bytes(bytes(raw))
  with pytest.raises(CohortError, match=re.escape(f"{path}: cannot read 'fc_matrix'")):
    data.load_cohort(root, use_cache=False)


def warning_texts(record) -> str:
  return "\n".join(str(w.message) for w in record)


def test_likely_mistakes_load_with_a_warning_each(tmp_path):
  # An all-zero scan, and months that decrease along Visit_Order and go negative.
  scans = {("002S0001", 1): random_fc(1), ("002S0001", 2): np.zeros((N, N)),
           ("003S0002", 1): random_fc(4)}
  rows = [["002_S_0001", "bl", 0, 1, 6.0, ""], ["002_S_0001", "m06", 1, 2, -20.0, ""],
          ["003_S_0002", "bl", 0, 1, 0.0, 12.0]]
  root = write_root(tmp_path / "a", scans, rows)
  (root / "FC_Matrices" / "sub-003S0002_run-02_fc_matrix.npz").mkdir()  # a folder, not a scan
  with pytest.warns(CohortWarning) as record:
    cohort = data.load_cohort(root, use_cache=False)
  text = warning_texts(record)
  assert "sub-002S0001_run-02_fc_matrix.npz: every entry is 0" in text
  assert "1 subject(s) with Months_From_Baseline decreasing along Visit_Order" in text
  assert "1 subject(s) with negative Months_From_Baseline, e.g. 002S0001" in text
  assert "sub-003S0002_run-02_fc_matrix.npz: a folder (or other non-file)" in text
  assert cohort.n_files_ignored == 1
  # The log time feature of a negative time to predict is undefined: refused, naming the subject.
  with pytest.raises(CohortError, match=r"undefined for 1 subject\(s\).*002S0001 \(-26 months\)"):
    data.time_features(cohort, "log")


def test_an_atlas_of_one_region_or_a_threshold_above_every_edge_is_warned_about(tmp_path):
  rows = [["002_S_0001", "bl", 1, 1, 0.0, ""], ["003_S_0002", "bl", 0, 1, 0.0, ""]]
  root = write_root(tmp_path / "one", {("002S0001", 1): np.ones((1, 1)),
                                       ("003S0002", 1): np.ones((1, 1))}, rows)
  with pytest.warns(CohortWarning, match="a 1-region atlas"):
    data.load_cohort(root, use_cache=False)
  root = write_root(tmp_path / "high", {("002S0001", 1): random_fc(1),
                                        ("003S0002", 1): random_fc(2)}, rows)
  with pytest.warns(CohortWarning, match="threshold 0.99 removes every edge between regions"):
    data.load_cohort(root, threshold=0.99, use_cache=False)


def test_a_scan_rewritten_with_the_same_size_and_mtime_is_read_again(tmp_path):
  root, _ = two_subject_root(tmp_path)
  first = data.load_cohort(root)
  path = root / "FC_Matrices" / "sub-003S0002_run-01_fc_matrix.npz"
  stat = path.stat()
  np.savez(path, fc_matrix=-random_fc(4))  # same shape and dtype: the same size
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
  second = data.load_cohort(root)
  np.testing.assert_array_equal(second.subjects[1].fc[0],
                                data.threshold_fc(-random_fc(4), 0.2).astype(np.float32))
  assert second != first


def test_a_header_only_visit_table_is_one_short_line_naming_the_file(tmp_path):
  root, _ = two_subject_root(tmp_path)
  (root / "TADPOLE_TEMPORAL.csv").write_text(",".join(TEMPORAL_HEADER) + "\n")
  with pytest.raises(CohortError) as refused:
    data.load_cohort(root, use_cache=False)
  message = str(refused.value)
  assert message.startswith(f"{root / 'TADPOLE_TEMPORAL.csv'}: no visit rows under the header")
  assert len(message) < 300 and "\n" not in message


def test_no_usable_scan_is_one_short_line_however_many_scans_were_skipped(tmp_path):
  # Scans of 3 subjects with 12 runs each, and a visit table that names none of them: each
  # skipped subject's warning names its scans, which the error line used to repeat.
  scans = {(f"002S000{s}", run): random_fc(run) for s in range(3) for run in range(1, 13)}
  root = write_root(tmp_path, scans, [["099_S_0001", "bl", 0, 1, 0.0, ""]])
  with pytest.warns(CohortWarning) as record, pytest.raises(CohortError) as refused:
    data.load_cohort(root, use_cache=False)
  message = str(refused.value)
  assert message.startswith("no subject has a usable scan") and "002S0000" in message
  assert len(message) < 400 and "\n" not in message
  assert "its 12 scan(s) skipped: sub-002S0000_run-01_fc_matrix.npz" in warning_texts(record)
  assert all(len(str(w.message)) < 400 for w in record)


@pytest.mark.parametrize("labels, orders, problem", [
    ((1, 0), (1, 2), "lines 2 and 3: subject 002_S_0001 is labelled 1 (converter) at "
     "Visit_Order 1 but 0 at the later Visit_Order 2"),
    ((1, 1, 0), (3, 1, 2), "lines 3 and 4: subject 002_S_0001 is labelled 1 (converter) at "
     "Visit_Order 1 but 0 at the later Visit_Order 2"),
    ((0, 1), (1, 1), "lines 2 and 3: subject 002_S_0001 has two rows at Visit_Order 1 labelled "
     "0 and 1"),
])
def test_a_subject_whose_label_goes_back_or_splits_a_visit_is_refused(tmp_path, labels, orders,
                                                                     problem):
  # Rows labelled 0 until a conversion and 1 from it on are the format (two_subject_root); a
  # converter's row followed by a stable one contradicts it, and the last-row rule would then
  # call the subject stable.
  rows = [["002_S_0001", f"v{k}", y, k, 6.0 * k, ""] for y, k in zip(labels, orders, strict=True)]
  rows.append(["003_S_0002", "bl", 0, 1, 0.0, ""])
  scans = {("002S0001", run): random_fc(run) for run in range(1, len(rows))}
  root = write_root(tmp_path, {**scans, ("003S0002", 1): random_fc(9)}, rows)
  with pytest.raises(CohortError, match=r"TADPOLE_TEMPORAL\.csv, " + re.escape(problem)):
    data.load_cohort(root, use_cache=False)


def test_fc_values_far_outside_a_correlations_range_are_refused_naming_the_file(tmp_path):
  root, _ = two_subject_root(tmp_path)
  scan = root / "FC_Matrices" / "sub-003S0002_run-01_fc_matrix.npz"
  np.savez(scan, fc_matrix=random_fc(4) * 1e30)
  with pytest.raises(CohortError, match=re.escape(
      f"{scan}: 'fc_matrix' has values up to 1e+30 in magnitude, beyond 100; values of a "
      "correlation (±1) or its Fisher z (about ±20) are expected")):
    data.load_cohort(root, use_cache=False)
  # Fisher z values load.
  fisher_z = np.arctanh(np.clip(random_fc(4), -0.999999999, 0.999999999))
  np.savez(scan, fc_matrix=fisher_z * 19 / np.abs(fisher_z).max())
  assert len(data.load_cohort(root, use_cache=False)) == 2


def test_time_series_in_large_units_still_load(tmp_path):
  from tests.helpers import cohort_data, write_cohort

  scans, labels, _ = cohort_data(n=8)
  write_cohort(tmp_path, [[1e6 * x for x in visits] for visits in scans], labels)
  assert len(data.load_cohort(tmp_path, use_cache=False)) == 8
