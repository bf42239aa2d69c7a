"""Writes generated cohorts (`SyntheticScans`) in the reference's on-disk format.

The layout is `reference_format`'s, whose `load_cohort` reads it back: `load_cohort` of the folder
equals `synthetic_scans.cohort_from_scans` of the scans written.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from stgnn_jax import atomic
from stgnn_jax.data.reference_format import (
    FC_DIR,
    SCAN_FILE_PATTERN,
    SIMPLIFIED_CSV,
    TEMPORAL_CSV,
    scan_file_name,
)
from stgnn_jax.data.synthetic_scans import SyntheticScans


def _viscode(months: float) -> str:
  return "bl" if months == 0 else f"m{int(round(months)):02d}"


def write_scans(directory: str | os.PathLike, scans: SyntheticScans, *,
                var_name: str = "fc_matrix", overwrite: bool = False) -> None:
  """Writes `scans` in the reference's on-disk format.

  Creates `directory/FC_Matrices/sub-<ID>_run-<NN>_fc_matrix.npz` (`scan_file_name`; the float32
  matrix under `var_name`), `directory/TADPOLE_TEMPORAL.csv` and `directory/TADPOLE_Simplified.csv`.
  Floats are written with Python's shortest round-trip repr, so `load_cohort` reads back exactly
  the generated values.

  Args:
    directory: the data root (created if needed).
    scans: the cohort.
    var_name: the npz key.
    overwrite: replace an earlier cohort's files; without it an existing visit table, groups
      table or non-empty FC_Matrices folder raises `FileExistsError` (nothing is written).
  """
  root = Path(directory)
  fc_dir = root / FC_DIR
  if root.exists() and not root.is_dir():
    raise FileExistsError(f"{root} exists and is not a folder; pass a folder for the cohort")
  existing = [p for p in (root / TEMPORAL_CSV, root / SIMPLIFIED_CSV) if p.exists()]
  if fc_dir.is_dir() and any(fc_dir.iterdir()):
    existing.append(fc_dir)
  if existing and not overwrite:
    raise FileExistsError(
        f"{root} already holds a cohort ({', '.join(p.name for p in existing)}); pass another "
        "folder, or --overwrite (overwrite=True) to replace it")
  fc_dir.mkdir(parents=True, exist_ok=True)
  for path in fc_dir.iterdir():
    if SCAN_FILE_PATTERN.fullmatch(path.name):
      path.unlink()

  for i, subject in enumerate(scans.subject_ids):
    for k in range(len(scans.fc[i])):
      np.savez_compressed(fc_dir / scan_file_name(subject, k + 1), **{var_name: scans.fc[i][k]})
  write_visit_tables(root, scans)


def write_visit_tables(root: Path, scans: SyntheticScans,
                       columns: Mapping[str, Sequence[str]] | None = None) -> None:
  """Writes `root/TADPOLE_TEMPORAL.csv` (with `columns`: further columns, a value per subject,
  e.g. its Site) and `root/TADPOLE_Simplified.csv` for `scans`' visits."""
  columns = columns or {}
  temporal_rows, simplified_rows = [], []
  for i, subject in enumerate(scans.subject_ids):
    for k in range(len(scans.fc[i])):
      months, to_next = float(scans.months[i][k]), float(scans.months_to_next[i][k])
      label = int(scans.visit_labels[i][k])
      temporal_rows.append([subject, _viscode(months), label, k + 1, repr(months),
                            "" if math.isnan(to_next) else repr(to_next),
                            *(values[i] for values in columns.values())])
      simplified_rows.append([subject, k, scans.groups[i][k], label])
  _write_csv(root / TEMPORAL_CSV, ["Subject", "Visit", "Label_CS_Num", "Visit_Order",
                                   "Months_From_Baseline", "Months_To_Next_Original",
                                   *columns], temporal_rows)
  _write_csv(root / SIMPLIFIED_CSV, ["Subject", "Visit_idx", "Group", "Label_CS_Num"],
             simplified_rows)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\r\n")  # csv's default, as open(newline="") wrote
  writer.writerow(header)
  writer.writerows(rows)
  atomic.write_text(path, buffer.getvalue())
