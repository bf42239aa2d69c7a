"""ROI time-series scans on disk: one file per scan, as fMRIPrep / XCP-D / nilearn's maskers leave.

    ROOT/TimeSeries/sub-<ID>_run-<NN>_timeseries.<npy|tsv|csv>  one scan, [time points, regions]
    ROOT/Confounds/sub-<ID>_run-<NN>_confounds.tsv              its confounds (with --confounds)
    ROOT/TADPOLE_TEMPORAL.csv   the visit table, as for FC matrices; an optional RepetitionTime
                                column (seconds) gives each scan's own TR

A `.tsv` / `.csv` may start with a header row of region names (kept: they name the regions; every
scan must have the same ones); a `.npy` holds the bare array. `read_scan_graph` reads, checks,
cleans and measures one scan (`connectivity`); `reference_format.load_cohort` matches the files
to the visit table exactly as it does FC matrices.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stgnn_jax.data.cohort import CohortError
from stgnn_jax.data.connectivity import (
  Cleaning,
  check_series,
  clean_series,
  measure_graph,
  min_time_points,
  scan_connectivity,
)
from stgnn_jax.data.scan_folder import ScanRead

TIMESERIES_DIR = "TimeSeries"
CONFOUNDS_DIR = "Confounds"
TIMESERIES_FILE_PATTERN = re.compile(
    r"sub-(?P<subject>[A-Za-z0-9]+)_run-(?P<run>\d+)_timeseries\.(?:npy|tsv|csv)")
TIMESERIES_FILE_FORMAT = "sub-<ID>_run-<NN>_timeseries.<npy|tsv|csv>"


def confounds_file_name(subject_id: str, run: int) -> str:
  """The confounds table of a scan: ("002S0295", 1) -> "sub-002S0295_run-01_confounds.tsv"."""
  return f"sub-{subject_id}_run-{run:02d}_confounds.tsv"


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def read_table(path: Path) -> tuple[np.ndarray, tuple[str, ...] | None]:
  """A `.tsv` / `.csv` of numbers as float64 [rows, columns], and its header if it has one (a
  first row with any cell that is not a number)."""
  delimiter = "\t" if path.suffix == ".tsv" else ","
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      rows = [row for row in csv.reader(f, delimiter=delimiter) if any(c.strip() for c in row)]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise CohortError(f"{path}: cannot read the table: {e}") from e
  if not rows:
    raise CohortError(f"{path}: an empty table")
  header = None
  if not all(_is_number(cell) for cell in rows[0]):
    header = tuple(cell.strip() for cell in rows[0])
    rows = rows[1:]
  width = len(header) if header else len(rows[0]) if rows else 0
  values = np.empty((len(rows), width), np.float64)
  for i, row in enumerate(rows):
    line = i + 1 + (header is not None)
    if len(row) != width:
      raise CohortError(f"{path}, line {line}: {len(row)} values, but the table has {width} "
                        "columns")
    for j, cell in enumerate(row):
      try:
        values[i, j] = float(cell)
      except ValueError:
        raise CohortError(f"{path}, line {line}, column {j + 1}: not a number: "
                          f"{cell.strip()!r}") from None
  return values, header


def read_series(path: Path) -> tuple[np.ndarray, tuple[str, ...] | None]:
  """One scan's [time points, regions] series (checked: `connectivity.check_series`) and its
  region names (None for a `.npy` or a table without a header)."""
  if path.suffix == ".npy":
    try:
      array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise CohortError(f"{path}: cannot read the .npy file: {e}") from e
    return check_series(array, str(path)), None
  values, names = read_table(path)
  return check_series(values, str(path), names), names


def read_confounds(path: Path, columns: Sequence[str], num_points: int) -> np.ndarray:
  """The named columns of a scan's confounds table, [time points, len(columns)]."""
  if not path.is_file():
    raise CohortError(f"{path}: confounds table not found (asked for by --confounds)")
  values, header = read_table(path)
  if header is None:
    raise CohortError(f"{path}: the confounds table needs a header row naming its columns")
  missing = [c for c in columns if c not in header]
  if missing:
    raise CohortError(f"{path}: no column(s) {', '.join(map(repr, missing))} (found "
                      f"{', '.join(map(repr, header))})")
  if len(values) != num_points:
    raise CohortError(f"{path}: {len(values)} rows, but the scan has {num_points} time points")
  chosen = values[:, [header.index(c) for c in columns]]
  if not np.isfinite(chosen).all():
    raise CohortError(f"{path}: non-finite values in the confounds {', '.join(columns)} (e.g. "
                      "the first row of a derivative); fill them before training")
  return chosen


def read_scan_graph(path: Path, *, kind: str, cleaning: Cleaning, t_r: float | None,
                    threshold: float, fisher_z: bool, confounds_dir: Path) -> ScanRead:
  """A time-series scan's graph values (`connectivity.measure_graph`), its region names and its
  whole measure (symmetric; for `tangent` the covariance the fold's fit starts from)."""
  series, names = read_series(path)
  where = str(path)
  needed = min_time_points(kind, series.shape[1], cleaning)
  if series.shape[0] < needed:
    raise CohortError(f"{where}: {series.shape[0]} time points, but {kind} of "
                      f"{series.shape[1]} regions needs at least {needed}")
  cleaning.check_band(t_r, where)
  confounds = None
  if cleaning.confounds:
    match = TIMESERIES_FILE_PATTERN.fullmatch(path.name)
    assert match is not None  # only matching files are read
    confounds = read_confounds(
        confounds_dir / confounds_file_name(match["subject"], int(match["run"])),
        cleaning.confounds, series.shape[0])
  cleaned = clean_series(series, cleaning, t_r=t_r, confounds=confounds)
  matrix = scan_connectivity(cleaned, kind, where)
  symmetric = ((matrix + matrix.T) / 2).astype(np.float32)
  return ScanRead(measure_graph(matrix, kind, threshold, use_fisher_z=fisher_z), names, symmetric)
