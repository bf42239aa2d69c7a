"""The reference's on-disk cohort format (kept byte-compatible), read by `load_cohort`.

    ROOT/FC_Matrices/sub-<ID>_run-<NN>_fc_matrix.npz   one scan; the [N, N] matrix under `var_name`
    ROOT/TADPOLE_TEMPORAL.csv    Subject, Visit, Label_CS_Num, Visit_Order, Months_From_Baseline,
                                 Months_To_Next_Original    (one row per visit)
    ROOT/TADPOLE_Simplified.csv  Subject, Visit_idx, Group[, Label_CS_Num]   (optional)

Differences from the reference, all deliberate (it silently mislabels or mis-reads in these cases):
  - A scan whose subject has no row in TADPOLE_TEMPORAL.csv is skipped with a warning and counted
    (the reference labels it 0).
  - Non-finite matrix entries raise `CohortError` naming the file (the reference's threshold keeps
    NaN and inf as edges); so do entries beyond `FC_VALUE_BOUND` in magnitude (a scan in other
    units, or damaged).
  - A subject labelled 1 (converter) at a visit and 0 at a later one, or with two labels at one
    Visit_Order, raises `CohortError` naming the rows (the reference takes the last row's label).
  - Every malformed input (missing file or column, bad value, missing npz key, wrong matrix shape)
    raises `CohortError` naming the file and the problem; skips are `CohortWarning`s and counted.

A parsed cohort is cached (`cache`), keyed by the files' names, sizes, times and inodes and the
settings; with `memory_map` its scans are read from the cache's files as they are used.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stgnn_jax.data.cache import (
    CACHE_DIR_NAME,
    CACHE_FORMAT_VERSION,
    cache_writer,
    read_cache,
    user_cache_dir,
)
from stgnn_jax.data.cohort import (
    UNLABELLED,
    Cohort,
    CohortError,
    CohortWarning,
    SubjectStore,
    VisitRecord,
)
from stgnn_jax.data.connectivity import TimeSeriesSettings
from stgnn_jax.data.preprocessing import threshold_fc
from stgnn_jax.data.scan_folder import (
    FileStats,
    ScanKind,
    ScanRead,
    ScanReader,
    file_stats,
    read_scan_folder,
)
from stgnn_jax.data.timeseries import (
    CONFOUNDS_DIR,
    TIMESERIES_DIR,
    TIMESERIES_FILE_FORMAT,
    TIMESERIES_FILE_PATTERN,
    read_scan_graph,
)

FC_DIR = "FC_Matrices"


TEMPORAL_CSV = "TADPOLE_TEMPORAL.csv"


SIMPLIFIED_CSV = "TADPOLE_Simplified.csv"


# <ID> has no underscore: the CSV's `002_S_0295` is matched with underscores removed.
SCAN_FILE_PATTERN = re.compile(r"sub-(?P<subject>[A-Za-z0-9]+)_run-(?P<run>\d+)_fc_matrix\.npz")


SCAN_FILE_FORMAT = "sub-<ID>_run-<NN>_fc_matrix.npz"


def subject_file_id(subject: str) -> str:
  """The `<ID>` of a subject's scan files: its CSV id without underscores ("002_S_0295" ->
  "002S0295"); the key `load_cohort` matches scans and visit rows by."""
  return subject.replace("_", "")


def scan_file_name(subject: str, run: int) -> str:
  """The name of `subject`'s scan `run` (1-based) in `FC_DIR`, as `SCAN_FILE_FORMAT` describes
  and `SCAN_FILE_PATTERN` matches: ("002_S_0295", 1) -> "sub-002S0295_run-01_fc_matrix.npz"."""
  return f"sub-{subject_file_id(subject)}_run-{run:02d}_fc_matrix.npz"


# `Visit` is part of the format but nothing reads it, so a table without it is accepted.
TEMPORAL_COLUMNS = ("Subject", "Label_CS_Num", "Visit_Order", "Months_From_Baseline",
                    "Months_To_Next_Original")


# The largest |value| an FC scan may hold: a correlation lies in [-1, 1], its Fisher z (arctanh)
# below about 19 for any float64 correlation short of 1. Larger values are another unit (e.g. a
# covariance, or a scan multiplied by mistake) that would change every graph; time series, in
# arbitrary units, and the measures the tool computes itself are not bounded.
FC_VALUE_BOUND = 100.0


# The simplified table's Label_CS_Num is not read: labels come from TADPOLE_TEMPORAL.csv only.
SIMPLIFIED_COLUMNS = ("Subject", "Visit_idx", "Group")


def _read_table(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
  """Rows of a CSV file as (line number, {column: stripped text}); checks the header."""
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's byte-order mark
      reader = csv.DictReader(f)
      header = [(name or "").strip() for name in (reader.fieldnames or [])]
      missing = [c for c in required if c not in header]
      if missing:
        raise CohortError(
            f"{path}: missing required column(s) {', '.join(repr(c) for c in missing)} "
            f"(found columns: {', '.join(repr(c) for c in header) or 'none'})")
      reader.fieldnames = header
      return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None})
              for row in reader]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise CohortError(f"{path}: cannot read the CSV file: {e}") from e


def _parse_float(text: str, *, path: Path, line: int, column: str, allow_blank: bool) -> float:
  if text == "" or text.lower() in ("nan", "na", "n/a"):
    if allow_blank:
      return math.nan
    raise CohortError(f"{path}, line {line}: column {column!r} is blank")
  try:
    return float(text)
  except ValueError:
    raise CohortError(f"{path}, line {line}: column {column!r} is not a number: {text!r}") from None


def _subject_key(text: str, *, path: Path, line: int) -> str:
  key = subject_file_id(text)
  if not key:
    raise CohortError(f"{path}, line {line}: column 'Subject' is blank")
  return key


def read_visit_table(path: Path | str, covariate_columns: Sequence[str] = (), *,
                     require_site: bool = False, require_labels: bool = True
                     ) -> tuple[dict[str, list[VisitRecord]], list[str]]:
  """Reads TADPOLE_TEMPORAL.csv.

  Args:
    path: the CSV file.
    covariate_columns: further columns kept per visit (`VisitRecord.covariates`), required and
      never blank.
    require_site: the `Site` column is required and never blank (site harmonisation); without
      it a `Site` column is read when present.
    require_labels: False for subjects to predict: the `Label_CS_Num` column may be absent and
      its values blank (`cohort.UNLABELLED`).

  Returns:
    (subject id without underscores -> its rows sorted by Visit_Order, warning messages).

  Raises:
    CohortError: unreadable file, missing column, no row, or a bad value (blank or non-numeric
      Visit_Order / Months_From_Baseline, Label_CS_Num not 0 or 1, a subject's label that goes
      back from 1 to 0 or differs within one Visit_Order); the message names the line(s).
  """
  path = Path(path)
  visits: dict[str, list[VisitRecord]] = {}
  labels: dict[str, list[tuple[float, int, int, str]]] = {}  # (order, line, label, Subject)
  required = (*(c for c in TEMPORAL_COLUMNS if require_labels or c != "Label_CS_Num"),
              *(("Site",) if require_site else ()), *covariate_columns)
  table = _read_table(path, required)
  if not table:
    raise CohortError(f"{path}: no visit rows under the header; add a row per scan")
  for line, row in table:
    subject = _subject_key(row["Subject"], path=path, line=line)
    label = _parse_float(row.get("Label_CS_Num", ""), path=path, line=line,
                         column="Label_CS_Num", allow_blank=not require_labels)
    if math.isnan(label) and not require_labels:
      label = UNLABELLED
    elif label not in (0.0, 1.0):
      raise CohortError(f"{path}, line {line}: Label_CS_Num must be 0 or 1, got "
                        f"{row['Label_CS_Num']!r}")
    order = _parse_float(row["Visit_Order"], path=path, line=line, column="Visit_Order",
                         allow_blank=False)
    months = _parse_float(row["Months_From_Baseline"], path=path, line=line,
                          column="Months_From_Baseline", allow_blank=False)
    to_next = _parse_float(row["Months_To_Next_Original"], path=path, line=line,
                           column="Months_To_Next_Original", allow_blank=True)
    if not (math.isfinite(order) and math.isfinite(months)):
      raise CohortError(f"{path}, line {line}: Visit_Order and Months_From_Baseline must be finite")
    t_r = _parse_float(row.get("RepetitionTime", ""), path=path, line=line,
                       column="RepetitionTime", allow_blank=True)
    if not (math.isnan(t_r) or (math.isfinite(t_r) and t_r > 0)):
      raise CohortError(f"{path}, line {line}: RepetitionTime must be a positive number of "
                        f"seconds, got {row['RepetitionTime']!r}")
    site = row.get("Site", "")
    if require_site and not site:
      raise CohortError(f"{path}, line {line}: column 'Site' is blank (--harmonize needs each "
                        "scan's site)")
    blank = [c for c in covariate_columns if not row[c]]
    if blank:
      raise CohortError(f"{path}, line {line}: covariate column(s) {', '.join(map(repr, blank))} "
                        "blank (--harmonize_covariates needs a value for every scan)")
    visits.setdefault(subject, []).append(VisitRecord(
        order, months, to_next, int(label), t_r, site,
        tuple(row[c] for c in covariate_columns)))
    if label != UNLABELLED:
      labels.setdefault(subject, []).append((order, line, int(label), row["Subject"]))
  for labelled in labels.values():
    _check_labels(path, sorted(labelled, key=lambda r: r[0]))
  messages = []
  backwards, negative = [], []
  for subject, rows in visits.items():
    rows.sort(key=lambda r: r.order)  # stable: equal orders keep the table's order
    orders = [r.order for r in rows]
    if len(set(orders)) < len(orders):
      messages.append(f"{path}: subject {subject} has repeated Visit_Order values {orders}; rows "
                      "with equal Visit_Order are taken in table order")
    visit_months = [r.months for r in rows]
    if any(later < earlier for earlier, later in itertools.pairwise(visit_months)):
      backwards.append(subject)
    if min(visit_months) < 0:
      negative.append(subject)
  for subjects, problem in (
      (backwards, "Months_From_Baseline decreasing along Visit_Order (the visits are taken in "
                  "Visit_Order; their gaps, the time feature, come out negative)"),
      (negative, "negative Months_From_Baseline")):
    if subjects:
      messages.append(f"{path}: {len(subjects)} subject(s) with {problem}, e.g. "
                      + ", ".join(sorted(subjects)[:3]))
  return visits, messages


def _check_labels(path: Path, rows: list[tuple[float, int, int, str]]) -> None:
  """Raises CohortError unless a subject's labelled rows (order, line, label, Subject), sorted by
  Visit_Order, are 0 until a conversion and 1 from it on: a converter's row followed by a stable
  one, or two labels at one Visit_Order, leave its label (the last row's) in doubt."""
  for (order, line, label, subject), (next_order, next_line, next_label, _) in (
      itertools.pairwise(rows)):
    if next_order == order and next_label != label:
      first, second = sorted([(line, label), (next_line, next_label)])
      raise CohortError(
          f"{path}, lines {first[0]} and {second[0]}: subject {subject} has two rows at "
          f"Visit_Order {order:g} labelled {first[1]} and {second[1]}; keep one label per visit")
    if label == 1 and next_label == 0:
      raise CohortError(
          f"{path}, lines {line} and {next_line}: subject {subject} is labelled 1 (converter) at "
          f"Visit_Order {order:g} but 0 at the later Visit_Order {next_order:g}; a subject's "
          "Label_CS_Num is 0 until its conversion and 1 from it on")


def read_baseline_groups(path: Path | str) -> dict[str, str | None]:
  """Reads TADPOLE_Simplified.csv: subject id -> Group of its first row by Visit_idx (None if
  blank). Raises CohortError on a missing column or a non-numeric Visit_idx."""
  path = Path(path)
  first: dict[str, tuple[float, str | None]] = {}
  for line, row in _read_table(path, SIMPLIFIED_COLUMNS):
    subject = _subject_key(row["Subject"], path=path, line=line)
    index = _parse_float(row["Visit_idx"], path=path, line=line, column="Visit_idx",
                         allow_blank=False)
    if subject not in first or index < first[subject][0]:
      first[subject] = (index, row["Group"] or None)
  return {subject: group for subject, (_, group) in first.items()}


def _read_scan(path: Path, var_name: str) -> np.ndarray:
  """One scan's FC matrix `[N, N]`, checked: readable npz, key present, square, real, finite."""
  try:
    archive = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise CohortError(f"{path}: cannot read the .npz file: {e}") from e
  if not isinstance(archive, np.lib.npyio.NpzFile):  # e.g. a bare .npy saved under this name
    raise CohortError(f"{path}: not an .npz archive (found a bare {type(archive).__name__})")
  with archive:
    if var_name not in archive.files:
      raise CohortError(
          f"{path}: no array named {var_name!r}; the file has {sorted(archive.files)}. "
          "Pass the right key with var_name= (--var_name on the command line).")
    try:
      fc = archive[var_name]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
      raise CohortError(f"{path}: cannot read {var_name!r} from the .npz file "
                        f"({type(e).__name__}: {e}); the file is damaged") from e
  if fc.ndim != 2 or fc.shape[0] != fc.shape[1]:
    raise CohortError(f"{path}: {var_name!r} must be a square 2-D matrix, got shape {fc.shape}")
  if fc.shape[0] == 0:
    raise CohortError(f"{path}: {var_name!r} is a 0x0 matrix; a scan needs one row and column "
                      "per region")
  if not (np.issubdtype(fc.dtype, np.floating) or np.issubdtype(fc.dtype, np.integer)):
    raise CohortError(f"{path}: {var_name!r} must hold real numbers, got dtype {fc.dtype}")
  n_bad = int(fc.size - np.count_nonzero(np.isfinite(fc)))
  if n_bad:
    raise CohortError(f"{path}: {var_name!r} has {n_bad} non-finite (NaN or inf) entries; fix or "
                      "remove the scan")
  largest = float(np.max(np.abs(fc.astype(np.float64))))
  if largest > FC_VALUE_BOUND:
    raise CohortError(f"{path}: {var_name!r} has values up to {largest:.3g} in magnitude, beyond "
                      f"{FC_VALUE_BOUND:g}; values of a correlation (±1) or its Fisher z (about "
                      "±20) are expected: the scan is in other units or damaged")
  return fc


@dataclasses.dataclass(frozen=True)
class HarmonizeColumns:
  """What site harmonisation reads from the visit table: its `Site` column (`site`: required,
  never blank) and the covariate columns named; with `site` the scans' whole measures are kept
  for the fit inside each fold."""

  site: bool = False
  covariates: tuple[str, ...] = ()


def _read_fc_graph(var_name: str, threshold: float, keep_measures: bool) -> ScanReader:
  """The FC-matrix kind's reader: the matrix under `var_name`, thresholded (`threshold_fc`), and
  with `keep_measures` the symmetrised matrix itself."""
  def read(path: Path, row: VisitRecord, note) -> ScanRead:
    fc = _read_scan(path, var_name)
    if not fc.any():
      note(f"{path}: every entry is 0 (an empty scan: no edge but the self loops)")
    measure = ((fc + fc.T) / 2).astype(np.float32) if keep_measures else None
    return ScanRead(threshold_fc(fc, threshold), None, measure)
  return read


def _fc_kind(var_name: str, threshold: float, keep_measures: bool) -> ScanKind:
  return ScanKind(FC_DIR, SCAN_FILE_PATTERN, SCAN_FILE_FORMAT, (".npz",),
                  _read_fc_graph(var_name, threshold, keep_measures),
                  "fc" if keep_measures else "")


def _timeseries_kind(connectivity: TimeSeriesSettings, threshold: float, root: Path,
                     keep_measures: bool) -> ScanKind:
  def read(path: Path, row: VisitRecord, note) -> ScanRead:
    t_r = row.repetition_time if math.isfinite(row.repetition_time) else connectivity.t_r
    return read_scan_graph(path, kind=connectivity.kind, cleaning=connectivity.cleaning,
                           t_r=t_r, threshold=threshold, fisher_z=connectivity.fisher_z,
                           confounds_dir=root / CONFOUNDS_DIR)
  # tangent is fitted inside each fold: its scans' covariances are always kept.
  keep = keep_measures or connectivity.kind == "tangent"
  return ScanKind(TIMESERIES_DIR, TIMESERIES_FILE_PATTERN, TIMESERIES_FILE_FORMAT,
                  (".npy", ".tsv", ".csv"), read, connectivity.kind if keep else "")


def _load_uncached(root: Path, files: Sequence[FileStats], kind: ScanKind, *, threshold: float,
                   build_kwargs: dict, harmonize: HarmonizeColumns, require_labels: bool,
                   store: SubjectStore | None = None) -> Cohort:
  messages: list[str] = []
  visits, table_messages = read_visit_table(root / TEMPORAL_CSV, harmonize.covariates,
                                            require_site=harmonize.site,
                                            require_labels=require_labels)
  for message in table_messages:
    messages.append(message)
    warnings.warn(message, CohortWarning, stacklevel=3)
  groups = {}
  if (root / SIMPLIFIED_CSV).is_file():
    groups = read_baseline_groups(root / SIMPLIFIED_CSV)
  return read_scan_folder(root, files, kind, root / TEMPORAL_CSV, visits, groups,
                          threshold=threshold, messages=messages, build_kwargs=build_kwargs,
                          store=store)


def input_kind(root: Path, requested: str | None) -> str:
  """Which scans `root` holds: "fc" (FC_Matrices/) or "timeseries" (TimeSeries/); `requested`
  chooses when it holds both (None: there must be exactly one)."""
  present = [k for k, d in (("fc", FC_DIR), ("timeseries", TIMESERIES_DIR)) if (root / d).is_dir()]
  if requested is not None:
    folder = FC_DIR if requested == "fc" else TIMESERIES_DIR
    if requested not in present:
      raise CohortError(f"{root / folder}: folder of scans not found (--input {requested})")
    return requested
  if not present:
    raise CohortError(f"{root / FC_DIR}: folder of scans not found (expected "
                      f"{FC_DIR}/{SCAN_FILE_FORMAT} or {TIMESERIES_DIR}/{TIMESERIES_FILE_FORMAT})")
  if len(present) > 1:
    raise CohortError(f"{root} holds both {FC_DIR}/ and {TIMESERIES_DIR}/: choose one with "
                      "--input fc or --input timeseries")
  return present[0]


def load_cohort(
    data_root: str | os.PathLike,
    *,
    var_name: str = "fc_matrix",
    threshold: float = 0.2,
    max_visits: int = 10,
    exclude_target_visit: bool = False,
    single_visit_horizon: float = 6.0,
    input: str | None = None,
    timeseries: TimeSeriesSettings | None = None,
    harmonize: HarmonizeColumns | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    memory_map: bool = False,
    require_both_classes: bool = True,
    require_labels: bool = True,
) -> Cohort:
  """Loads a cohort stored in the reference's on-disk format (see the module docstring), with
  FC matrices or ROI time series as its scans (`timeseries` module).

  Scans are matched to subjects by file name (`sub-<ID>_run-<NN>_fc_matrix.npz` or
  `sub-<ID>_run-<NN>_timeseries.<npy|tsv|csv>`, <ID> = the CSV's Subject without underscores);
  graphs come from `threshold_fc` (FC) or `connectivity.measure_graph` (time series); subjects from
  `build_cohort` (label = last visit row, run k = k-th visit by Visit_Order, last `max_visits`
  inputs, time rules).

  Skipped with a `CohortWarning`, and counted in the `Cohort`: scans of a subject without any row in
  TADPOLE_TEMPORAL.csv (never labelled 0), a run k of a subject with fewer than k visit rows (no
  visit time for it), scan-like files whose name does not match the pattern (named one by one),
  other non-scan files (one summary warning; hidden files such as .DS_Store silently).

  Caching: the parsed cohort is stored (`cache`: its scans as `.npy` files, the rest in one
  compressed npz) in a folder named by a hash of the input files' names, sizes, mtimes, ctimes
  and inodes (`scan_folder.file_stats`: a scan rewritten or replaced is read again, whatever its
  size and mtime), the absolute root and the settings, so a later call with unchanged inputs
  reads that folder instead of every scan (warnings are re-issued from the cache). It is written
  while the scans are read, one subject at a time, and the cohort returned is read back from it.
  It goes to `cache_dir`, by default ROOT/.stgnn_cache or, if that is not writable,
  $XDG_CACHE_HOME/stgnn_jax (~/.cache/stgnn_jax); if neither is writable the cohort is returned
  uncached with a warning (with `memory_map`, CohortError). Old cache entries are not deleted.

  Args:
    data_root: ROOT, holding FC_Matrices/ or TimeSeries/ and TADPOLE_TEMPORAL.csv (+ optional
      TADPOLE_Simplified.csv, Confounds/).
    var_name: the key of the matrix inside each npz.
    threshold: edge threshold on |FC| (time series: on the measure's unit-free form).
    max_visits: most recent input visits kept per subject.
    exclude_target_visit: hold the last scan out as the prediction target (see `build_cohort`).
    single_visit_horizon: months of the time feature when a subject has no gap to measure.
    input: "fc" or "timeseries" when ROOT holds both folders; None: the one it holds.
    timeseries: how time-series scans become graphs (default: `TimeSeriesSettings()`).
    harmonize: the visit-table columns of site harmonisation (default: none); the scans' whole
      measures are then kept (`Subject.measure`), as they are for `tangent`.
    cache_dir: where to cache; None for the default above.
    use_cache: False to neither read nor write the cache (the cohort is built in memory).
    memory_map: the subjects' scans are read-only memory maps of the cache's `.npy` files, read
      from disk when used (`--scan_store memmap`), instead of arrays in memory; the same cohort.
    require_both_classes: raise if all subjects share one label.
    require_labels: False to read subjects for prediction: labels may be absent or blank
      (`cohort.UNLABELLED`), and one class is no error.

  Returns:
    The `Cohort`, subjects sorted by id.

  Raises:
    CohortError: a missing folder or CSV, both scan folders without `input`, a missing column, a
      bad CSV value or a subject's contradictory labels, an unreadable or malformed scan (a
      non-square, mismatched or non-finite matrix, FC values beyond `FC_VALUE_BOUND`; a series
      with NaN, a constant region, too few time points, a non-numeric cell, other region
      names), two files for one run, no usable scan, or a single class. The message names the
      file (and line or column) and the problem.
  """
  root = Path(data_root)
  if not root.is_dir():
    raise CohortError(f"{root}: data folder not found")
  temporal = root / TEMPORAL_CSV
  kind_name = input_kind(root, input)
  if not temporal.is_file():
    raise CohortError(f"{temporal}: visit table not found")
  if not threshold >= 0:
    raise ValueError(f"threshold must be >= 0, got {threshold}")
  timeseries = timeseries or TimeSeriesSettings()
  harmonize = harmonize or HarmonizeColumns()
  kind = (_fc_kind(var_name, float(threshold), harmonize.site) if kind_name == "fc"
          else _timeseries_kind(timeseries, float(threshold), root, harmonize.site))
  build_kwargs = dict(max_visits=int(max_visits), exclude_target_visit=bool(exclude_target_visit),
                      single_visit_horizon=float(single_visit_horizon),
                      require_both_classes=bool(require_both_classes) and require_labels)
  files = file_stats(root / kind.directory)
  if memory_map and not use_cache:
    raise ValueError("memory_map maps the cache's files: it needs use_cache=True")
  if not use_cache:
    return _load_uncached(root, files, kind, threshold=float(threshold),
                          build_kwargs=build_kwargs, harmonize=harmonize,
                          require_labels=require_labels)

  tables = [(p.name, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino)
            for p in (temporal, root / SIMPLIFIED_CSV) if p.is_file() for s in [p.stat()]]
  # What changes a time-series cohort: its settings and, when they are read, the confounds.
  source = ([var_name] if kind_name == "fc" else
            [dataclasses.asdict(timeseries), file_stats(root / CONFOUNDS_DIR)
             if timeseries.cleaning.confounds and (root / CONFOUNDS_DIR).is_dir() else []])
  key_source = json.dumps([CACHE_FORMAT_VERSION, str(root.resolve()), kind_name, files, tables,
                           source, float(threshold), build_kwargs,
                           dataclasses.asdict(harmonize), require_labels], sort_keys=True)
  name = f"cohort-{hashlib.sha256(key_source.encode()).hexdigest()[:32]}"
  directories = ([Path(cache_dir)] if cache_dir is not None
                 else [root / CACHE_DIR_NAME, user_cache_dir()])
  for directory in directories:
    cohort = read_cache(directory / name, memory_map=memory_map)
    if cohort is not None:
      for message in cohort.warnings:
        warnings.warn(message, CohortWarning, stacklevel=2)
      return cohort
  with cache_writer(directories, name, memory_map=memory_map) as store:
    return _load_uncached(root, files, kind, threshold=float(threshold),
                          build_kwargs=build_kwargs, harmonize=harmonize,
                          require_labels=require_labels, store=store)
