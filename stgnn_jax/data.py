"""Cohort data: FC matrices + TADPOLE visit tables -> labelled per-subject graph sequences.

Reads the reference's on-disk format (kept byte-compatible) and applies its "from matrix to graph"
rules (`/work/shared/reference/original-stgnn.md`):

    ROOT/FC_Matrices/sub-<ID>_run-<NN>_fc_matrix.npz   one scan; the [N, N] matrix under `var_name`
    ROOT/TADPOLE_TEMPORAL.csv    Subject, Visit, Label_CS_Num, Visit_Order, Months_From_Baseline,
                                 Months_To_Next_Original    (one row per visit)
    ROOT/TADPOLE_Simplified.csv  Subject, Visit_idx, Group[, Label_CS_Num]   (optional)

Graphs: `fc_to_adjacency` symmetrises, thresholds `|A| < threshold` away and keeps every other
nonzero entry as an edge, self loops included; `threshold_fc` keeps the FC values on those edges.
A `Subject` stores both: the reference's convolutions read only the edges (with one-hot node
features, `node_features`), the connection-profile node features and the baselines read the values.

Differences from the reference, all deliberate (it silently mislabels or mis-reads in these cases):
  - A scan whose subject has no row in TADPOLE_TEMPORAL.csv is skipped with a warning and counted
    (the reference labels it 0).
  - Non-finite matrix entries raise `CohortError` naming the file (the reference's threshold keeps
    NaN and inf as edges).
  - Every malformed input (missing file or column, bad value, missing npz key, wrong matrix shape)
    raises `CohortError` naming the file and the problem; skips are `CohortWarning`s and counted.

This module depends on numpy and the standard library only.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

FC_DIR = "FC_Matrices"
TEMPORAL_CSV = "TADPOLE_TEMPORAL.csv"
SIMPLIFIED_CSV = "TADPOLE_Simplified.csv"
# <ID> has no underscore: the CSV's `002_S_0295` is matched with underscores removed.
SCAN_FILE_PATTERN = re.compile(r"sub-(?P<subject>[A-Za-z0-9]+)_run-(?P<run>\d+)_fc_matrix\.npz")
SCAN_FILE_FORMAT = "sub-<ID>_run-<NN>_fc_matrix.npz"
# `Visit` is part of the format but nothing reads it, so a table without it is accepted.
TEMPORAL_COLUMNS = ("Subject", "Label_CS_Num", "Visit_Order", "Months_From_Baseline",
                    "Months_To_Next_Original")
# The simplified table's Label_CS_Num is not read: labels come from TADPOLE_TEMPORAL.csv only.
SIMPLIFIED_COLUMNS = ("Subject", "Visit_idx", "Group")

TIME_NORMALIZATIONS = ("log", "minmax", "buckets", "raw")
HORIZON_BUCKETS = ("0-6m", "6-12m", "12-24m", "24m+")
_BUCKET_UPPER_EDGES = (6.0, 12.0, 24.0)  # months; a bucket holds [lower, upper)

_CACHE_FORMAT_VERSION = 2
_CACHE_DIR_NAME = ".stgnn_cache"


class CohortError(ValueError):
  """The data on disk cannot be turned into a cohort; the message names the file and the problem."""


class CohortWarning(UserWarning):
  """Something was skipped or ignored while loading a cohort (the `Cohort` counts it too)."""


# ---------------------------------------------------------------------------------------------
# Matrix -> graph.


def _symmetrised(fc: np.ndarray, threshold: float) -> np.ndarray:
  """(A + A^T) / 2 in the input's float precision, after checking shape, dtype and values."""
  fc = np.asarray(fc)
  if fc.ndim < 2 or fc.shape[-1] != fc.shape[-2]:
    raise ValueError(f"expected square matrices [..., N, N], got shape {fc.shape}")
  if not (np.issubdtype(fc.dtype, np.floating) or np.issubdtype(fc.dtype, np.integer)
          or fc.dtype == np.bool_):
    raise ValueError(f"expected a real-valued matrix, got dtype {fc.dtype}")
  if not threshold >= 0:
    raise ValueError(f"threshold must be >= 0, got {threshold}")
  if not np.issubdtype(fc.dtype, np.floating):
    fc = fc.astype(np.float64)
  n_bad = int(np.size(fc) - np.count_nonzero(np.isfinite(fc)))
  if n_bad:
    # The reference would keep NaN/inf as edges (|nan| < t is False); refuse instead.
    raise ValueError(f"matrix has {n_bad} non-finite (NaN or inf) entries")
  return (fc + np.swapaxes(fc, -1, -2)) / 2


def _edges(symmetric: np.ndarray, threshold: float) -> np.ndarray:
  """The reference's edge rule on a symmetrised matrix: |A_ij| >= threshold and A_ij != 0."""
  return (np.abs(symmetric) >= threshold) & (symmetric != 0)


def fc_to_adjacency(fc: np.ndarray, threshold: float = 0.2) -> np.ndarray:
  """Turns FC matrices into boolean adjacency matrices (the reference's rules 1-2).

  A <- (A + A^T) / 2, then entry (i, j) is an edge iff |A_ij| >= threshold and A_ij != 0. The
  result is symmetric (both directions of every edge) and keeps the diagonal, so the unit diagonal
  of an FC matrix gives every node a self loop (a zero diagonal gives none). The arithmetic runs in
  the input's float precision, like the reference's tensors.

  Args:
    fc: `[..., N, N]` real matrices, e.g. one scan `[N, N]` or a subject's visits `[visits, N, N]`.
    threshold: entries with |A| below it are no edge; must be >= 0.

  Returns:
    `[..., N, N]` bool, `adjacency[..., i, j]` True iff i and j are connected.

  Raises:
    ValueError: non-square, non-real or non-finite input, or a negative threshold.
  """
  return _edges(_symmetrised(fc, threshold), threshold)


def threshold_fc(fc: np.ndarray, threshold: float = 0.2) -> np.ndarray:
  """The edge values of `fc_to_adjacency`'s graphs: the symmetrised FC where there is an edge.

  The reference stores these values on its edges but its convolutions never read them; the
  connection-profile node features (`ModelConfig.node_features`) and the classical baselines do.
  The comparison runs in the input's precision (as `fc_to_adjacency`), then the kept values are
  rounded to float32, so `threshold_fc(fc, t) != 0` equals `fc_to_adjacency(fc, t)` for every
  threshold > 0 (a kept value is at least the threshold).

  Args:
    fc: `[..., N, N]` real matrices.
    threshold: entries with |A| below it become 0; must be >= 0.

  Returns:
    `[..., N, N]` float32, symmetric, 0 where there is no edge.
  """
  symmetric = _symmetrised(fc, threshold)
  return np.where(_edges(symmetric, threshold), symmetric, 0).astype(np.float32)


def connection_features(fc: np.ndarray, kind: str = "connection_profile") -> np.ndarray:
  """Node features of a subject's visits from their edge values (`threshold_fc`).

  Args:
    fc: `[visits, N, N]` thresholded FC values, oldest visit first.
    kind: "connection_profile" (region i's row of each visit) or "profile_change" (that row
      beside its change since the first visit: `[fc[v], fc[v] - fc[0]]`; 0 for a single visit).

  Returns:
    `[visits, N, N]` or `[visits, N, 2N]` float32.
  """
  fc = np.asarray(fc, np.float32)
  if kind == "connection_profile":
    return fc
  if kind == "profile_change":
    return np.concatenate([fc, fc - fc[:1]], axis=-1)
  raise ValueError(f"unknown node features {kind!r}; expected connection_profile or "
                   "profile_change")


def node_features(num_nodes: int, dtype: np.dtype = np.float32) -> np.ndarray:
  """The reference's node features: the `[N, N]` identity, row i = one-hot index of region i.

  Identical for every scan, so cohorts do not store them; the reference's "infinite feature -> 0"
  rule cannot trigger on an identity matrix.
  """
  return np.eye(num_nodes, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Cohort types.


@dataclasses.dataclass(frozen=True)
class VisitRecord:
  """One row of TADPOLE_TEMPORAL.csv for a subject.

  Attributes:
    order: `Visit_Order`; a subject's rows are sorted by it (ties keep table order).
    months: `Months_From_Baseline`.
    months_to_next: `Months_To_Next_Original`, NaN when blank.
    label: `Label_CS_Num`, 0 stable or 1 converter.
  """

  order: float
  months: float
  months_to_next: float
  label: int


def _readonly(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
  array = np.array(array, dtype=dtype)  # a private copy, so freezing it cannot surprise a caller
  array.setflags(write=False)
  return array


@dataclasses.dataclass(frozen=True)
class Subject:
  """One subject's input sequence and label.

  Attributes:
    subject_id: file-name form of the id, e.g. "002S0295" (the CSV's "002_S_0295" without "_").
    label: 0 stable, 1 converter: `Label_CS_Num` of the subject's last CSV row in Visit_Order.
    adjacency: `[visits, N, N]` bool, input visits only, oldest first, at most `max_visits`.
    months: `[visits]` float64 Months_From_Baseline of each input visit.
    time_to_predict: months (raw) for the time feature, see `load_cohort`.
    group: baseline Group from TADPOLE_Simplified.csv (CN/MCI/AD), None if unknown.
    fc: `[visits, N, N]` float32 edge values (`threshold_fc`: the symmetrised FC where there is
      an edge, 0 elsewhere), nonzero exactly where `adjacency` is True. None (graphs given
      without values) means every edge weighs 1.
  """

  subject_id: str
  label: int
  adjacency: np.ndarray
  months: np.ndarray
  time_to_predict: float
  group: str | None = None
  fc: np.ndarray | None = None

  def __post_init__(self):
    # Frozen and read-only: a cohort is shared by folds and caches, nothing may edit it in place.
    object.__setattr__(self, "adjacency", _readonly(self.adjacency, np.bool_))
    object.__setattr__(self, "fc", _readonly(
        self.adjacency if self.fc is None else self.fc, np.float32))
    object.__setattr__(self, "months", _readonly(self.months, np.float64))
    object.__setattr__(self, "label", int(self.label))
    object.__setattr__(self, "time_to_predict", float(self.time_to_predict))
    if self.adjacency.ndim != 3 or self.adjacency.shape[1] != self.adjacency.shape[2]:
      raise ValueError(f"subject {self.subject_id}: adjacency must be [visits, N, N], got "
                       f"{self.adjacency.shape}")
    if self.months.shape != self.adjacency.shape[:1] or not len(self.months):
      raise ValueError(f"subject {self.subject_id}: {len(self.months)} months for "
                       f"{self.adjacency.shape[0]} visits")
    if self.label not in (0, 1):
      raise ValueError(f"subject {self.subject_id}: label must be 0 or 1, got {self.label}")
    if self.fc.shape != self.adjacency.shape or not np.array_equal(self.fc != 0, self.adjacency):
      raise ValueError(f"subject {self.subject_id}: fc values must be nonzero exactly on the "
                       "edges of adjacency (use data.threshold_fc)")

  @property
  def num_visits(self) -> int:
    return self.adjacency.shape[0]

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, Subject):
      return NotImplemented
    return (self.subject_id == other.subject_id and self.label == other.label
            and self.group == other.group
            and _same_float(self.time_to_predict, other.time_to_predict)
            and np.array_equal(self.adjacency, other.adjacency)
            and np.array_equal(self.fc, other.fc)
            and np.array_equal(self.months, other.months, equal_nan=True))

  __hash__ = None  # holds arrays


def _same_float(a: float, b: float) -> bool:
  return a == b or (math.isnan(a) and math.isnan(b))


@dataclasses.dataclass(frozen=True)
class Cohort:
  """A labelled cohort, subjects sorted by id.

  Attributes:
    subjects: the subjects.
    num_nodes: N, regions per scan (the node-feature dimension, identity features).
    n_scans_used: scans in the input sequences (= total visits over subjects).
    n_scans_unused: valid scans outside every input sequence: target visits held out by
      `exclude_target_visit` and visits older than the last `max_visits`.
    n_scans_skipped: scans dropped because of a problem (subject without label row, run without
      visit row); each is named in `warnings`.
    n_subjects_skipped: subjects whose scans were all skipped.
    n_files_ignored: files in FC_Matrices that are not scans by name (stray or mis-named files).
    warnings: the warning messages issued while loading (re-issued on a cache hit).
  """

  subjects: tuple[Subject, ...]
  num_nodes: int
  n_scans_used: int = 0
  n_scans_unused: int = 0
  n_scans_skipped: int = 0
  n_subjects_skipped: int = 0
  n_files_ignored: int = 0
  warnings: tuple[str, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "subjects", tuple(self.subjects))
    object.__setattr__(self, "warnings", tuple(self.warnings))

  def __len__(self) -> int:
    return len(self.subjects)

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, Cohort):
      return NotImplemented
    return all(getattr(self, f.name) == getattr(other, f.name) for f in dataclasses.fields(self))

  __hash__ = None

  @property
  def subject_ids(self) -> tuple[str, ...]:
    return tuple(s.subject_id for s in self.subjects)

  def labels(self) -> np.ndarray:
    """`[subjects]` int32 labels, 1 = converter."""
    return np.array([s.label for s in self.subjects], np.int32)

  def num_visits(self) -> np.ndarray:
    """`[subjects]` int32 number of input visits."""
    return np.array([s.num_visits for s in self.subjects], np.int32)

  def time_to_predict(self) -> np.ndarray:
    """`[subjects]` float64 raw time-to-predict in months."""
    return np.array([s.time_to_predict for s in self.subjects], np.float64)

  def summary(self) -> str:
    """One line, e.g. "300 subjects (92 converters), 976 scans used, 0 skipped (...), N = 100"."""
    n_conv = int(self.labels().sum())
    text = (f"{len(self.subjects)} subjects ({n_conv} converters), {self.n_scans_used} scans used, "
            f"{self.n_scans_skipped} skipped ({self.n_subjects_skipped} subjects without usable "
            f"label/visit rows)")
    if self.n_scans_unused:
      text += f", {self.n_scans_unused} not used as input (target visits / beyond max_visits)"
    if self.n_files_ignored:
      text += f", {self.n_files_ignored} files ignored"
    text += f", {self.num_nodes} regions"
    if self.warnings:
      text += f", {len(self.warnings)} warnings"
    return text


# ---------------------------------------------------------------------------------------------
# Time features and report groupings.


def horizon_bucket_index(months: np.ndarray | float) -> np.ndarray:
  """Index into `HORIZON_BUCKETS` of each time: [0, 6) -> 0, [6, 12) -> 1, [12, 24) -> 2,
  >= 24 -> 3 (negative times fall in the first bucket). Shape as `months`, int32."""
  return np.searchsorted(_BUCKET_UPPER_EDGES, np.asarray(months, np.float64),
                         side="right").astype(np.int32)


def horizon_bucket(months: float) -> str:
  """Label of the horizon bucket of `months`: "0-6m", "6-12m", "12-24m" or "24m+" (a time equal
  to a boundary goes to the later bucket, e.g. 6.0 -> "6-12m")."""
  return HORIZON_BUCKETS[int(horizon_bucket_index(float(months)))]


def normalize_time(months: np.ndarray, normalization: str = "log", *,
                   max_months: float | None = None) -> np.ndarray:
  """The reference's time normalisations (rule 8), on raw months.

  - `log`: log1p(months / 12) (the default).
  - `minmax`: clip(months / max_months, 0, 1), `max_months` defaulting to `max(months)` (all zeros
    if that is not positive). Pass the training set's maximum to keep test times out of it.
  - `buckets`: the horizon bucket (`horizon_bucket_index`) mapped to 0, 1/3, 2/3, 1.
  - `raw`: months / 12 (years).

  Args:
    months: `[...]` raw times in months.
    normalization: one of `TIME_NORMALIZATIONS`.
    max_months: the `minmax` scale.

  Returns:
    `[...]` float32.
  """
  months = np.asarray(months, np.float64)
  if normalization == "log":
    out = np.log1p(months / 12.0)
  elif normalization == "minmax":
    scale = float(np.max(months, initial=0.0)) if max_months is None else float(max_months)
    out = np.clip(months / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(months)
  elif normalization == "buckets":
    out = horizon_bucket_index(months) / (len(HORIZON_BUCKETS) - 1)
  elif normalization == "raw":
    out = months / 12.0
  else:
    raise ValueError(f"unknown time normalization {normalization!r}; expected one of "
                     f"{TIME_NORMALIZATIONS}")
  return out.astype(np.float32)


def time_features(cohort: Cohort, normalization: str = "log", *,
                  max_months: float | None = None) -> np.ndarray:
  """`[subjects]` float32 normalised time-to-predict (`normalize_time`); for `minmax` the default
  scale is the maximum over this cohort."""
  return normalize_time(cohort.time_to_predict(), normalization, max_months=max_months)


def conversion_type(subject: Subject) -> str:
  """Per-conversion-type report category from baseline group + label.

  CN -> "CN→MCI" / "CN-Stable", MCI -> "MCI→AD" / "MCI-Stable", AD -> "AD-Stable"; an AD subject
  labelled converter has no worse stage to reach, so it is reported as "AD-Converter" (a data issue
  to look at, not hidden in another category). Any other group G gives "G-Converter" / "G-Stable";
  an unknown group (None) gives "Unknown-Converter" / "Unknown-Stable".
  """
  group = subject.group if subject.group else "Unknown"
  if subject.label == 1:
    return {"CN": "CN→MCI", "MCI": "MCI→AD"}.get(group, f"{group}-Converter")
  return f"{group}-Stable"


# ---------------------------------------------------------------------------------------------
# Assembling subjects (shared by the disk loader and in-memory cohorts).


def build_cohort(
    scans: Mapping[str, Mapping[int, np.ndarray]],
    visits: Mapping[str, Sequence[VisitRecord]],
    groups: Mapping[str, str | None] | None = None,
    *,
    max_visits: int = 10,
    exclude_target_visit: bool = False,
    single_visit_horizon: float = 6.0,
    require_both_classes: bool = True,
    n_scans_skipped: int = 0,
    n_subjects_skipped: int = 0,
    n_files_ignored: int = 0,
    warning_messages: Sequence[str] = (),
) -> Cohort:
  """Builds a cohort from matched scans and visit rows (the reference's rules 4-7).

  For each subject (sorted by id): visit rows are sorted by `order` (stable); run k (1-based) is
  the k-th row, which gives its months and months-to-next; the label is the LAST row's label. The
  sequence is the scans in run order.
  - Without `exclude_target_visit`: input = the last `max_visits` scans; time-to-predict = mean gap
    between consecutive input visits, `single_visit_horizon` for a single visit.
  - With it and >1 scan: the last scan is the target, input = the last `max_visits` scans before it
    (so up to `max_visits` inputs), time = months(target) - months(last input). With one scan:
    input = that scan, time = its months-to-next if finite and > 0, else `single_visit_horizon`.
    The label is still the last CSV row's (rule 4).

  Args:
    scans: subject id -> run -> `[N, N]` float edge values (`threshold_fc`) or bool adjacency
      (every edge weighs 1); every run must have a visit row.
    visits: subject id -> its visit rows (any order); one entry per subject of `scans` at least.
    groups: subject id -> baseline group, for `conversion_type`.
    max_visits: inputs kept per subject (the most recent), >= 1.
    exclude_target_visit: see above.
    single_visit_horizon: months used when one visit gives no gap.
    require_both_classes: raise if the cohort has a single class (it cannot be trained on).
    n_scans_skipped, n_subjects_skipped, n_files_ignored, warning_messages: the loader's
      bookkeeping, copied into the `Cohort`.

  Returns:
    The `Cohort`.

  Raises:
    CohortError: no subject, a run without visit row, mixed matrix sizes, or a single class.
  """
  if int(max_visits) < 1:
    raise ValueError(f"max_visits must be >= 1, got {max_visits}")
  if not math.isfinite(single_visit_horizon):
    raise ValueError(f"single_visit_horizon must be finite, got {single_visit_horizon}")
  groups = groups or {}
  subjects = []
  num_nodes = None
  n_unused = 0
  for subject_id in sorted(scans):
    runs = sorted(scans[subject_id])
    if not runs:
      continue
    rows = sorted(visits.get(subject_id, ()), key=lambda r: r.order)
    if runs[-1] > len(rows) or runs[0] < 1:
      raise CohortError(f"subject {subject_id}: runs {runs} but {len(rows)} visit rows; run k "
                        "needs a k-th visit row")
    fc = np.stack([np.asarray(scans[subject_id][k], np.float32) for k in runs])
    adjacency = fc != 0
    if num_nodes is None:
      num_nodes = adjacency.shape[-1]
    if adjacency.shape[1:] != (num_nodes, num_nodes):
      raise CohortError(f"subject {subject_id}: scans of shape {adjacency.shape[1:]}, other "
                        f"subjects have {num_nodes}x{num_nodes}")
    months = np.array([rows[k - 1].months for k in runs], np.float64)
    if exclude_target_visit and len(runs) > 1:
      inputs = slice(max(0, len(runs) - 1 - max_visits), len(runs) - 1)
      time = months[-1] - months[inputs][-1]
    elif exclude_target_visit:
      inputs = slice(0, 1)
      to_next = rows[runs[0] - 1].months_to_next
      time = to_next if math.isfinite(to_next) and to_next > 0 else single_visit_horizon
    else:
      inputs = slice(max(0, len(runs) - max_visits), len(runs))
      kept = months[inputs]
      time = float(np.mean(np.diff(kept))) if len(kept) > 1 else single_visit_horizon
    subject = Subject(subject_id=subject_id, label=rows[-1].label, adjacency=adjacency[inputs],
                      months=months[inputs], time_to_predict=time, group=groups.get(subject_id),
                      fc=fc[inputs])
    n_unused += len(runs) - subject.num_visits
    subjects.append(subject)

  if not subjects:
    raise CohortError("no subject has a usable scan: " + (
        "; ".join(warning_messages[:3]) if warning_messages else "no scans"))
  cohort = Cohort(
      subjects=tuple(subjects), num_nodes=int(num_nodes),
      n_scans_used=sum(s.num_visits for s in subjects), n_scans_unused=n_unused,
      n_scans_skipped=n_scans_skipped, n_subjects_skipped=n_subjects_skipped,
      n_files_ignored=n_files_ignored, warnings=tuple(warning_messages))
  labels = cohort.labels()
  if require_both_classes and len(np.unique(labels)) < 2:
    only = int(labels[0])
    raise CohortError(
        f"all {len(labels)} subjects have label {only} ({'converter' if only else 'stable'}): a "
        "cohort needs both classes (check Label_CS_Num in the visit table: a subject's label is "
        "its last row's)")
  return cohort


# ---------------------------------------------------------------------------------------------
# Reading the files.


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
  key = text.replace("_", "")
  if not key:
    raise CohortError(f"{path}, line {line}: column 'Subject' is blank")
  return key


def read_visit_table(path: Path | str) -> tuple[dict[str, list[VisitRecord]], list[str]]:
  """Reads TADPOLE_TEMPORAL.csv.

  Args:
    path: the CSV file.

  Returns:
    (subject id without underscores -> its rows sorted by Visit_Order, warning messages).

  Raises:
    CohortError: unreadable file, missing column, or a bad value (blank or non-numeric
      Visit_Order / Months_From_Baseline, Label_CS_Num not 0 or 1); the message names the line.
  """
  path = Path(path)
  visits: dict[str, list[VisitRecord]] = {}
  for line, row in _read_table(path, TEMPORAL_COLUMNS):
    subject = _subject_key(row["Subject"], path=path, line=line)
    label = _parse_float(row["Label_CS_Num"], path=path, line=line, column="Label_CS_Num",
                         allow_blank=False)
    if label not in (0.0, 1.0):
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
    visits.setdefault(subject, []).append(VisitRecord(order, months, to_next, int(label)))
  messages = []
  for subject, rows in visits.items():
    rows.sort(key=lambda r: r.order)  # stable: equal orders keep the table's order
    orders = [r.order for r in rows]
    if len(set(orders)) < len(orders):
      messages.append(f"{path}: subject {subject} has repeated Visit_Order values {orders}; rows "
                      "with equal Visit_Order are taken in table order")
  return visits, messages


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
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise CohortError(f"{path}: cannot read {var_name!r} from the .npz file: {e}") from e
  if fc.ndim != 2 or fc.shape[0] != fc.shape[1]:
    raise CohortError(f"{path}: {var_name!r} must be a square 2-D matrix, got shape {fc.shape}")
  if not (np.issubdtype(fc.dtype, np.floating) or np.issubdtype(fc.dtype, np.integer)):
    raise CohortError(f"{path}: {var_name!r} must hold real numbers, got dtype {fc.dtype}")
  n_bad = int(fc.size - np.count_nonzero(np.isfinite(fc)))
  if n_bad:
    raise CohortError(f"{path}: {var_name!r} has {n_bad} non-finite (NaN or inf) entries; fix or "
                      "remove the scan")
  return fc


def _file_stats(directory: Path) -> list[tuple[str, int, int]]:
  """(name, size, mtime_ns) of every regular file in `directory`, sorted by name."""
  stats = []
  with os.scandir(directory) as entries:
    for entry in entries:
      if entry.is_file():
        stat = entry.stat()
        stats.append((entry.name, stat.st_size, stat.st_mtime_ns))
  return sorted(stats)


def _load_uncached(root: Path, files: Sequence[tuple[str, int, int]], *, var_name: str,
                   threshold: float, build_kwargs: dict) -> Cohort:
  messages: list[str] = []

  def note(message: str) -> None:
    messages.append(message)
    warnings.warn(message, CohortWarning, stacklevel=4)

  fc_dir = root / FC_DIR
  visits, table_messages = read_visit_table(root / TEMPORAL_CSV)
  for message in table_messages:
    note(message)
  groups = {}
  if (root / SIMPLIFIED_CSV).is_file():
    groups = read_baseline_groups(root / SIMPLIFIED_CSV)

  runs_by_subject: dict[str, dict[int, Path]] = {}
  n_ignored = 0
  stray = []
  for name, _, _ in files:
    match = SCAN_FILE_PATTERN.fullmatch(name)
    if match is None or int(match["run"]) == 0:
      n_ignored += 1
      if name.lower().endswith(".npz"):
        # Looks like a scan but is not named like one: say so rather than drop it quietly.
        note(f"{fc_dir / name}: name does not match {SCAN_FILE_FORMAT} (1-based run); file skipped")
      elif not name.startswith("."):  # hidden files (.DS_Store) are ignored without a word
        stray.append(name)
      continue
    subject, run = match["subject"], int(match["run"])
    previous = runs_by_subject.setdefault(subject, {}).get(run)
    if previous is not None:
      raise CohortError(f"{fc_dir / name} and {previous}: two files for run {run} of subject "
                        f"{subject}")
    runs_by_subject[subject][run] = fc_dir / name
  if stray:
    note(f"{fc_dir}: ignored {len(stray)} file(s) that are not scans: {', '.join(stray[:5])}"
         + (", ..." if len(stray) > 5 else ""))

  scans: dict[str, dict[int, np.ndarray]] = {}
  n_skipped = n_subjects_skipped = 0
  num_nodes, first_path = None, None
  for subject in sorted(runs_by_subject):
    paths = runs_by_subject[subject]
    rows = visits.get(subject)
    if rows is None:
      # The reference labels these 0; a label we do not have must not be invented.
      n_skipped += len(paths)
      n_subjects_skipped += 1
      names = ", ".join(p.name for _, p in sorted(paths.items()))
      note(f"subject {subject} has no row in {root / TEMPORAL_CSV}; its {len(paths)} scan(s) "
           f"skipped: {names}")
      continue
    for run in sorted(paths):
      if run > len(rows):
        n_skipped += 1
        note(f"{paths[run]}: run {run} but subject {subject} has only {len(rows)} visit row(s) in "
             f"{root / TEMPORAL_CSV}, so the scan has no visit time; skipped")
        continue
      fc = _read_scan(paths[run], var_name)
      if num_nodes is None:
        num_nodes, first_path = fc.shape[0], paths[run]
      elif fc.shape[0] != num_nodes:
        raise CohortError(f"{paths[run]}: {fc.shape[0]}x{fc.shape[0]} matrix, but {first_path} is "
                          f"{num_nodes}x{num_nodes}; all scans must use the same atlas")
      scans.setdefault(subject, {})[run] = threshold_fc(fc, threshold)
    if subject not in scans:
      n_subjects_skipped += 1

  if not runs_by_subject:
    raise CohortError(f"{fc_dir}: no scan files named {SCAN_FILE_FORMAT}")
  return build_cohort(scans, visits, groups, n_scans_skipped=n_skipped,
                      n_subjects_skipped=n_subjects_skipped, n_files_ignored=n_ignored,
                      warning_messages=messages, **build_kwargs)


# ---------------------------------------------------------------------------------------------
# The cache: one compressed npz per (input files, settings).


def _user_cache_dir() -> Path:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base) / "stgnn_jax"


def _cohort_to_arrays(cohort: Cohort) -> dict[str, np.ndarray]:
  subjects = cohort.subjects
  adjacency = np.concatenate([s.adjacency for s in subjects])
  return {
      "version": np.array(_CACHE_FORMAT_VERSION),
      "subject_ids": np.array([s.subject_id for s in subjects], dtype=str),
      "labels": cohort.labels(),
      "num_visits": cohort.num_visits(),
      "months": np.concatenate([s.months for s in subjects]),
      "time_to_predict": cohort.time_to_predict(),
      "groups": np.array([s.group or "" for s in subjects], dtype=str),
      "has_group": np.array([s.group is not None for s in subjects]),
      # Bit-packed: ~1000 scans of 100x100 edges is 1.2 MB instead of 10 MB.
      "adjacency_bits": np.packbits(adjacency.reshape(-1)),
      # The edge values only (20-50% of the pairs), in the adjacency's row-major order.
      "fc_values": np.concatenate([s.fc[s.adjacency] for s in subjects]),
      "counts": np.array([cohort.num_nodes, cohort.n_scans_used, cohort.n_scans_unused,
                          cohort.n_scans_skipped, cohort.n_subjects_skipped,
                          cohort.n_files_ignored], np.int64),
      "warnings": np.array(cohort.warnings, dtype=str).reshape(-1),
  }


def _cohort_from_arrays(arrays: Mapping[str, np.ndarray]) -> Cohort:
  if int(arrays["version"]) != _CACHE_FORMAT_VERSION:
    raise ValueError("cache written by another version")
  num_nodes, used, unused, skipped, subjects_skipped, ignored = (int(c) for c in arrays["counts"])
  num_visits = arrays["num_visits"]
  total = int(num_visits.sum())
  adjacency = np.unpackbits(arrays["adjacency_bits"], count=total * num_nodes * num_nodes)
  adjacency = adjacency.astype(bool).reshape(total, num_nodes, num_nodes)
  fc = np.zeros(adjacency.shape, np.float32)
  fc[adjacency] = arrays["fc_values"]
  starts = np.concatenate([[0], np.cumsum(num_visits)])
  subjects = tuple(
      Subject(subject_id=str(arrays["subject_ids"][i]), label=int(arrays["labels"][i]),
              adjacency=adjacency[starts[i]:starts[i + 1]],
              months=arrays["months"][starts[i]:starts[i + 1]],
              time_to_predict=float(arrays["time_to_predict"][i]),
              group=str(arrays["groups"][i]) if arrays["has_group"][i] else None,
              fc=fc[starts[i]:starts[i + 1]])
      for i in range(len(num_visits)))
  return Cohort(subjects=subjects, num_nodes=num_nodes, n_scans_used=used, n_scans_unused=unused,
                n_scans_skipped=skipped, n_subjects_skipped=subjects_skipped,
                n_files_ignored=ignored, warnings=tuple(str(w) for w in arrays["warnings"]))


def _read_cache(path: Path) -> Cohort | None:
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as archive:
      return _cohort_from_arrays(archive)
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    warnings.warn(f"{path}: unreadable cohort cache ({e}); rebuilding it", CohortWarning,
                  stacklevel=3)
    return None


def _write_cache(cohort: Cohort, directories: Iterable[Path], name: str) -> Path | None:
  """Writes the cache atomically into the first writable directory; returns its path or None."""
  arrays = _cohort_to_arrays(cohort)
  errors = []
  for directory in directories:
    temp = None
    try:
      directory.mkdir(parents=True, exist_ok=True)
      # Temp file + rename: a concurrent or interrupted run never sees a half-written cache.
      with tempfile.NamedTemporaryFile(dir=directory, prefix=".tmp-", suffix=".npz",
                                       delete=False) as f:
        temp = f.name
        np.savez_compressed(f, **arrays)
      os.replace(temp, directory / name)
      return directory / name
    except OSError as e:
      errors.append(f"{directory}: {e}")
      if temp is not None and os.path.exists(temp):
        os.remove(temp)
  warnings.warn("could not write the cohort cache (" + "; ".join(errors) + "); continuing "
                "without it", CohortWarning, stacklevel=3)
  return None


def load_cohort(
    data_root: str | os.PathLike,
    *,
    var_name: str = "fc_matrix",
    threshold: float = 0.2,
    max_visits: int = 10,
    exclude_target_visit: bool = False,
    single_visit_horizon: float = 6.0,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    require_both_classes: bool = True,
) -> Cohort:
  """Loads a cohort stored in the reference's on-disk format (see the module docstring).

  Scans are matched to subjects by file name (`sub-<ID>_run-<NN>_fc_matrix.npz`, <ID> = the CSV's
  Subject without underscores); graphs come from `fc_to_adjacency`; subjects from `build_cohort`
  (label = last visit row, run k = k-th visit by Visit_Order, last `max_visits` inputs, time rules).

  Skipped with a `CohortWarning`, and counted in the `Cohort`: scans of a subject without any row in
  TADPOLE_TEMPORAL.csv (never labelled 0), a run k of a subject with fewer than k visit rows (no
  visit time for it), `.npz` files whose name does not match the pattern (named one by one), other
  non-scan files (one summary warning; hidden files such as .DS_Store silently).

  Caching: the parsed cohort is stored as one compressed npz named by a hash of the input files'
  names, sizes and mtimes, the absolute root and the settings, so a later call with unchanged inputs
  reads one file instead of every scan (warnings are re-issued from the cache). It goes to
  `cache_dir`, by default ROOT/.stgnn_cache or, if that is not writable, $XDG_CACHE_HOME/stgnn_jax
  (~/.cache/stgnn_jax); if neither is writable the cohort is returned uncached with a warning.
  Old cache files are not deleted.

  Args:
    data_root: ROOT, holding FC_Matrices/ and TADPOLE_TEMPORAL.csv (+ optional
      TADPOLE_Simplified.csv).
    var_name: the key of the matrix inside each npz.
    threshold: edge threshold on |FC|.
    max_visits: most recent input visits kept per subject.
    exclude_target_visit: hold the last scan out as the prediction target (see `build_cohort`).
    single_visit_horizon: months of the time feature when a subject has no gap to measure.
    cache_dir: where to cache; None for the default above.
    use_cache: False to neither read nor write the cache.
    require_both_classes: raise if all subjects share one label.

  Returns:
    The `Cohort`, subjects sorted by id.

  Raises:
    CohortError: a missing folder or CSV, a missing column, a bad CSV value, an unreadable npz, a
      missing key, a non-square, mismatched or non-finite matrix, two files for one run, no usable
      scan, or a single class. The message names the file (and line or column) and the problem.
  """
  root = Path(data_root)
  if not root.is_dir():
    raise CohortError(f"{root}: data folder not found")
  fc_dir, temporal = root / FC_DIR, root / TEMPORAL_CSV
  if not fc_dir.is_dir():
    raise CohortError(f"{fc_dir}: folder of scans not found (expected {FC_DIR}/{SCAN_FILE_FORMAT})")
  if not temporal.is_file():
    raise CohortError(f"{temporal}: visit table not found")
  if not threshold >= 0:
    raise ValueError(f"threshold must be >= 0, got {threshold}")
  build_kwargs = dict(max_visits=int(max_visits), exclude_target_visit=bool(exclude_target_visit),
                      single_visit_horizon=float(single_visit_horizon),
                      require_both_classes=bool(require_both_classes))
  files = _file_stats(fc_dir)
  if not use_cache:
    return _load_uncached(root, files, var_name=var_name, threshold=float(threshold),
                          build_kwargs=build_kwargs)

  tables = [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in (temporal, root / SIMPLIFIED_CSV) if p.is_file()]
  key_source = json.dumps([_CACHE_FORMAT_VERSION, str(root.resolve()), files, tables, var_name,
                           float(threshold), build_kwargs], sort_keys=True)
  name = f"cohort-{hashlib.sha256(key_source.encode()).hexdigest()[:32]}.npz"
  directories = ([Path(cache_dir)] if cache_dir is not None
                 else [root / _CACHE_DIR_NAME, _user_cache_dir()])
  for directory in directories:
    cohort = _read_cache(directory / name)
    if cohort is not None:
      for message in cohort.warnings:
        warnings.warn(message, CohortWarning, stacklevel=2)
      return cohort
  cohort = _load_uncached(root, files, var_name=var_name, threshold=float(threshold),
                          build_kwargs=build_kwargs)
  _write_cache(cohort, directories, name)
  return cohort
