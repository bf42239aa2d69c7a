"""A folder of scan files matched to the visit table: the part of loading that every input kind
shares (FC matrices, ROI time series).

`read_scan_folder` lists the folder, matches each `sub-<ID>_run-<NN>_...` file to its subject's
rows of TADPOLE_TEMPORAL.csv (run k = the k-th visit by Visit_Order), reads each matched scan into
its graph values with the kind's reader, and builds the `Cohort` subject by subject
(`CohortBuilder`: with a store on disk, one subject's scans are in memory at a time). What it
skips it says (`CohortWarning`) and counts; what it cannot use it refuses (`CohortError`, naming
the file).
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stgnn_jax.data.cohort import (
    Cohort,
    CohortBuilder,
    CohortError,
    CohortWarning,
    SubjectStore,
    VisitRecord,
)

FileStats = tuple[str, int, int, int, int]


def file_stats(directory: Path) -> list[FileStats]:
  """(name, size, mtime_ns, ctime_ns, inode) of every entry of `directory`, sorted by name; size
  -1 for an entry that is not a regular file.

  These are the cache key's view of the scans: a file rewritten in place gets a new ctime (which,
  unlike the mtime, no copy tool or `touch` can set back), a file replaced by another a new inode,
  so a changed scan is read again even with the same size and mtime.
  """
  stats = []
  with os.scandir(directory) as entries:
    for entry in entries:
      if entry.is_file():
        stat = entry.stat()
        stats.append((entry.name, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino))
      else:
        stats.append((entry.name, -1, 0, 0, 0))
  return sorted(stats)


class ScanRead(NamedTuple):
  """One scan as read: its graph values `[N, N]`, its region names (None where the file has
  none), and its whole measure before the threshold (None where the kind keeps none)."""

  graph: np.ndarray
  names: tuple[str, ...] | None
  measure: np.ndarray | None = None


# A kind's reader: (scan file, its visit row, note) -> the scan.
ScanReader = Callable[[Path, VisitRecord, Callable[[str], None]], ScanRead]


@dataclasses.dataclass(frozen=True)
class ScanKind:
  """How one input kind's scan files are named and read.

  Attributes:
    directory: the folder under the data root (FC_Matrices, TimeSeries).
    pattern: a file name's full match, with groups `subject` and `run`.
    file_format: the pattern as users read it, for messages.
    suffixes: file endings that look like scans (a misnamed one is named in a warning).
    read: the reader of one scan.
    measure_kind: what the readers' measures are, kept in the cohort (`Subject.measure`) for
      the steps fitted inside each fold; "" keeps none.
  """

  directory: str
  pattern: re.Pattern
  file_format: str
  suffixes: tuple[str, ...]
  read: ScanReader
  measure_kind: str = ""


def read_scan_folder(root: Path, files: Sequence[FileStats], kind: ScanKind,
                     table: Path, visits: dict[str, list[VisitRecord]],
                     groups: dict[str, str | None], *, threshold: float, messages: list[str],
                     build_kwargs: dict, store: SubjectStore | None = None) -> Cohort:
  """The cohort of `root`'s scan folder (`files`: its `file_stats`), read with `kind`; `visits`
  are the rows of the visit table `table`; each subject goes to `store` (`CohortBuilder`) once
  its scans are read."""

  def note(message: str) -> None:
    messages.append(message)
    warnings.warn(message, CohortWarning, stacklevel=5)

  scan_dir = root / kind.directory
  runs_by_subject: dict[str, dict[int, Path]] = {}
  n_ignored = 0
  stray = []
  for name, size, *_ in files:
    match = kind.pattern.fullmatch(name)
    if size < 0 and match is not None:
      n_ignored += 1
      note(f"{scan_dir / name}: a folder (or other non-file), not a scan file; skipped")
      continue
    if match is None or int(match["run"]) == 0:
      n_ignored += 1
      if name.lower().endswith(kind.suffixes):
        # Looks like a scan but is not named like one: say so rather than drop it quietly.
        note(f"{scan_dir / name}: name does not match {kind.file_format} (1-based run); file "
             "skipped")
      elif not name.startswith("."):  # hidden files (.DS_Store) are ignored without a word
        stray.append(name)
      continue
    subject, run = match["subject"], int(match["run"])
    previous = runs_by_subject.setdefault(subject, {}).get(run)
    if previous is not None:
      raise CohortError(f"{scan_dir / name} and {previous}: two files for run {run} of subject "
                        f"{subject}")
    runs_by_subject[subject][run] = scan_dir / name
  if stray:
    note(f"{scan_dir}: ignored {len(stray)} file(s) that are not scans: {', '.join(stray[:5])}"
         + (", ..." if len(stray) > 5 else ""))

  builder = CohortBuilder(visits, groups, store=store, **build_kwargs)
  n_skipped = n_subjects_skipped = off_diagonal = 0
  num_nodes, first_path = None, None
  region_names: tuple[str, ...] | None = None
  for subject in sorted(runs_by_subject):
    paths = runs_by_subject[subject]
    rows = visits.get(subject)
    if rows is None:
      # The reference labels these 0; a label we do not have must not be invented.
      n_skipped += len(paths)
      n_subjects_skipped += 1
      skipped = [p.name for _, p in sorted(paths.items())]
      names = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3
                                        else "")
      note(f"subject {subject} has no row in {table}; its {len(paths)} scan(s) skipped: {names}")
      continue
    scans: dict[int, np.ndarray] = {}
    measures: dict[int, np.ndarray] = {}
    for run in sorted(paths):
      if run > len(rows):
        n_skipped += 1
        note(f"{paths[run]}: run {run} but subject {subject} has only {len(rows)} visit row(s) in "
             f"{table}, so the scan has no visit time; skipped")
        continue
      values, names_here, measure = kind.read(paths[run], rows[run - 1], note)
      if num_nodes is None:
        num_nodes, first_path, region_names = values.shape[0], paths[run], names_here
      elif values.shape[0] != num_nodes:
        n = values.shape[0]
        raise CohortError(f"{paths[run]}: {n}x{n} matrix, but {first_path} is "
                          f"{num_nodes}x{num_nodes}; all scans must use the same atlas")
      elif names_here is not None and region_names is not None and names_here != region_names:
        first_diff = next(i for i, (a, b) in enumerate(zip(names_here, region_names, strict=True))
                          if a != b)
        raise CohortError(f"{paths[run]}: region {first_diff + 1} is named "
                          f"{names_here[first_diff]!r}, but {region_names[first_diff]!r} in "
                          f"{first_path}; every scan must list the same regions in the same order")
      scans[run] = values
      off_diagonal += int(np.count_nonzero(values)) - int(np.count_nonzero(np.diagonal(values)))
      if kind.measure_kind:
        assert measure is not None, "a kind that keeps measures reads them"
        measures[run] = measure
    if not scans:
      n_subjects_skipped += 1
    builder.add(subject, scans, measures if kind.measure_kind else None)

  if not runs_by_subject:
    raise CohortError(f"{scan_dir}: no scan files named {kind.file_format}")
  if num_nodes == 1:
    note(f"{first_path}: a 1-region atlas; every graph has a single node")
  if num_nodes and num_nodes > 1 and off_diagonal == 0:
    note(f"threshold {threshold} removes every edge between regions in every scan: the graphs "
         "hold self loops only; lower --threshold")
  return builder.cohort(n_scans_skipped=n_skipped, n_subjects_skipped=n_subjects_skipped,
                        n_files_ignored=n_ignored, warning_messages=messages,
                        measure_kind=kind.measure_kind, region_names=region_names or ())
