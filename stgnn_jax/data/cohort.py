"""The domain types, `Subject` and `Cohort`, and the reference's rules that assemble them.

`build_cohort` turns per-subject scans and visit rows into labelled subjects: the label of the
last visit, the last `max_visits` visits, the time to predict (`Months_To_Next_Original`, or
`single_visit_horizon` for one visit), optionally without the target visit. Malformed input
raises `CohortError` naming the problem; skipped subjects are `CohortWarning`s and counted.
`CohortBuilder` applies the same rules one subject at a time, so that a loader holds one
subject's scans at a time and may hand each built subject to a `SubjectStore` on disk
(`cache.ScanStoreWriter`) instead of keeping it in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from stgnn_jax.data.preprocessing import normalize_time
from stgnn_jax.errors import CohortError


class CohortWarning(UserWarning):
  """Something was skipped or ignored while loading a cohort (the `Cohort` counts it too)."""


@dataclasses.dataclass(frozen=True)
class VisitRecord:
  """One row of TADPOLE_TEMPORAL.csv for a subject.

  Attributes:
    order: `Visit_Order`; a subject's rows are sorted by it (ties keep table order).
    months: `Months_From_Baseline`.
    months_to_next: `Months_To_Next_Original`, NaN when blank.
    label: `Label_CS_Num`, 0 stable or 1 converter (`UNLABELLED` in a table read for
      prediction, where the label may be blank).
    repetition_time: the optional `RepetitionTime` (seconds) of the visit's scan, NaN when
      absent (time-series input: the band-pass and the TR of each scan).
    site: the optional `Site` of the visit's scan ("" when the table has none).
    covariates: the visit's values of the covariate columns asked for (ComBat's), as text.
  """

  order: float
  months: float
  months_to_next: float
  label: int
  repetition_time: float = math.nan
  site: str = ""
  covariates: tuple[str, ...] = ()


# The label of a subject read for prediction whose visit table gives none (`predict.py`).
UNLABELLED = -1


def _frozen(array: np.ndarray) -> bool:
  """Whether nothing can write to `array`'s memory: it and every array it views are read-only,
  down to memory of its own or a read-only buffer (a memory map opened for reading)."""
  base: Any = array
  while isinstance(base, np.ndarray):
    if base.flags.writeable:
      return False
    base = base.base
  try:
    return base is None or memoryview(base).readonly
  except TypeError:  # a base that is no buffer: assume it may change
    return False


def _readonly(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
  if isinstance(array, np.ndarray) and array.dtype == dtype and _frozen(array):
    return array  # nobody can change it (e.g. rows of a read-only scan store): no copy needed
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
    measure: `[visits, N, N]` float32, each scan's whole measure before the threshold (the
      cohort's `measure_kind`), kept only for the steps fitted inside each fold
      (`data.fold_steps`); None otherwise.
    sites: each input visit's site ("" unknown), or () when the cohort has no sites.
    covariates: each input visit's covariate values (`VisitRecord.covariates`), or ().

  Arrays that nobody can write (read-only memory maps of a scan store, `cache.read_cache`) are
  kept as they are; any other array is copied and frozen.
  """

  subject_id: str
  label: int
  adjacency: np.ndarray
  months: np.ndarray
  time_to_predict: float
  group: str | None = None
  # None is accepted (every edge weighs 1) and replaced in __post_init__: never None after.
  fc: np.ndarray = None  # type: ignore[assignment]
  measure: np.ndarray | None = None
  sites: tuple[str, ...] = ()
  covariates: tuple[tuple[str, ...], ...] = ()

  def __post_init__(self):
    # Frozen and read-only: a cohort is shared by folds and caches, nothing may edit it in place.
    object.__setattr__(self, "adjacency", _readonly(self.adjacency, np.bool_))
    object.__setattr__(self, "fc", _readonly(
        self.adjacency if self.fc is None else self.fc, np.float32))
    object.__setattr__(self, "months", _readonly(self.months, np.float64))
    if self.measure is not None:
      object.__setattr__(self, "measure", _readonly(self.measure, np.float32))
      if self.measure.shape != self.adjacency.shape:
        raise ValueError(f"subject {self.subject_id}: measure of shape {self.measure.shape} for "
                         f"graphs of shape {self.adjacency.shape}")
    object.__setattr__(self, "sites", tuple(self.sites))
    object.__setattr__(self, "covariates", tuple(tuple(c) for c in self.covariates))
    for name in ("sites", "covariates"):
      if getattr(self, name) and len(getattr(self, name)) != self.adjacency.shape[0]:
        raise ValueError(f"subject {self.subject_id}: {len(getattr(self, name))} {name} for "
                         f"{self.adjacency.shape[0]} visits")
    object.__setattr__(self, "label", int(self.label))
    object.__setattr__(self, "time_to_predict", float(self.time_to_predict))
    if self.adjacency.ndim != 3 or self.adjacency.shape[1] != self.adjacency.shape[2]:
      raise ValueError(f"subject {self.subject_id}: adjacency must be [visits, N, N], got "
                       f"{self.adjacency.shape}")
    if self.months.shape != self.adjacency.shape[:1] or not len(self.months):
      raise ValueError(f"subject {self.subject_id}: {len(self.months)} months for "
                       f"{self.adjacency.shape[0]} visits")
    if self.label not in (0, 1, UNLABELLED):
      raise ValueError(f"subject {self.subject_id}: label must be 0 or 1, got {self.label}")
    if self.fc.shape != self.adjacency.shape or not (
        _memory_mapped(self.fc, self.adjacency)
        or np.array_equal(self.fc != 0, self.adjacency)):
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
            and np.array_equal(self.months, other.months, equal_nan=True)
            and _same_optional(self.measure, other.measure)
            and self.sites == other.sites and self.covariates == other.covariates)

  __hash__ = None  # type: ignore[assignment]  # holds arrays: unhashable


def _memory_mapped(*arrays: np.ndarray) -> bool:
  """Whether every array is a memory map (rows of a scan store, `cache.read_cache`): the store
  holds only subjects that were checked when it was written, and checking again would read every
  scan of it from disk."""
  return all(isinstance(a, np.memmap) for a in arrays)


def _same_optional(a: np.ndarray | None, b: np.ndarray | None) -> bool:
  return a is b if a is None or b is None else np.array_equal(a, b)


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
    region_names: the regions' names where the scans carry them (time-series tables with a
      header row), in atlas order; empty otherwise.
    measure_kind: what the subjects' `measure` holds ("fc", a `--connectivity` kind; tangent:
      the scan's covariance), "" when they hold none.
  """

  subjects: tuple[Subject, ...]
  num_nodes: int
  n_scans_used: int = 0
  n_scans_unused: int = 0
  n_scans_skipped: int = 0
  n_subjects_skipped: int = 0
  n_files_ignored: int = 0
  warnings: tuple[str, ...] = ()
  region_names: tuple[str, ...] = ()
  measure_kind: str = ""

  def __post_init__(self):
    object.__setattr__(self, "subjects", tuple(self.subjects))
    object.__setattr__(self, "warnings", tuple(self.warnings))
    object.__setattr__(self, "region_names", tuple(self.region_names))
    if self.region_names and len(self.region_names) != self.num_nodes:
      raise ValueError(f"{len(self.region_names)} region names for {self.num_nodes} regions")

  def __len__(self) -> int:
    return len(self.subjects)

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, Cohort):
      return NotImplemented
    return all(getattr(self, f.name) == getattr(other, f.name) for f in dataclasses.fields(self))

  __hash__ = None  # type: ignore[assignment]  # holds subjects with arrays: unhashable

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

  def fingerprint(self) -> dict[str, str]:
    """SHA-256 digests (16 hex digits) of what the cohort is made of: its subjects (ids and
    groups), labels, visits (months and time to predict) and scans (edges and their values).
    Equal fingerprints mean the same data; a run folder keeps it to refuse a changed cohort."""
    def digest(*arrays) -> str:
      h = hashlib.sha256()
      for array in arrays:
        array = np.ascontiguousarray(array)
        h.update(f"{array.dtype.str}{array.shape}".encode())
        h.update(array.tobytes())
      return h.hexdigest()[:16]

    subjects = self.subjects
    return {
        "subjects": digest(np.array([s.subject_id for s in subjects], dtype=str),
                           np.array([s.group or "" for s in subjects], dtype=str)),
        "labels": digest(self.labels()),
        "visits": digest(np.concatenate([s.months for s in subjects]),
                         self.time_to_predict(), self.num_visits()),
        "scans": digest(*[a for s in subjects for a in (s.adjacency, s.fc)]),
        # Only where they exist, so that a cohort without them keeps its fingerprint.
        **({"measures": digest(*[s.measure for s in subjects if s.measure is not None])}
           if self.measure_kind else {}),
        **({"sites": digest(np.array([x for s in subjects for x in s.sites + sum(
            s.covariates, ())], dtype=str))} if any(s.sites or s.covariates for s in subjects)
           else {}),
    }

  def summary(self) -> str:
    """One line, e.g. "300 subjects (92 converters), 976 scans used, 0 skipped (...), N = 100"."""
    labels = self.labels()
    known = f"{int((labels == 1).sum())} converters"
    if (labels == UNLABELLED).any():
      known += f", {int((labels == UNLABELLED).sum())} unlabelled"
    text = (f"{len(self.subjects)} subjects ({known}), {self.n_scans_used} scans used, "
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


def time_features(cohort: Cohort, normalization: str = "log", *,
                  max_months: float | None = None) -> np.ndarray:
  """`[subjects]` float32 normalised time-to-predict (`normalize_time`); for `minmax` the default
  scale is the maximum over this cohort.

  Raises CohortError when a value is not finite (the log of a time-to-predict <= -12 months, from
  visits whose months decrease), naming the subjects.
  """
  months = cohort.time_to_predict()
  out = normalize_time(months, normalization, max_months=max_months)
  bad = np.flatnonzero(~np.isfinite(out))
  if bad.size:
    examples = ", ".join(f"{cohort.subjects[i].subject_id} ({months[i]:g} months)"
                         for i in bad[:3])
    raise CohortError(
        f"the {normalization!r} time normalisation is undefined for {bad.size} subject(s) whose "
        f"time to predict is negative, e.g. {examples}: their Months_From_Baseline decrease "
        "along Visit_Order; fix the visit table, or use another --time_normalization.")
  return out


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


class SubjectStore(Protocol):
  """Where `CohortBuilder` puts each subject it builds, and the cohort they make."""

  def add(self, subject: Subject) -> None:
    """Takes one built subject; subjects arrive sorted by id."""

  def cohort(self, **fields: Any) -> Cohort:
    """The cohort of the subjects added, with `fields`: `Cohort`'s other attributes."""


class MemoryStore:
  """The subjects kept in memory, as they were built: the default `SubjectStore`."""

  def __init__(self) -> None:
    self.subjects: list[Subject] = []

  def add(self, subject: Subject) -> None:
    self.subjects.append(subject)

  def cohort(self, **fields: Any) -> Cohort:
    return Cohort(subjects=tuple(self.subjects), **fields)


class CohortBuilder:
  """`build_cohort` one subject at a time: `add` each subject's scans in id order, then
  `cohort()`. Each subject goes to `store` as soon as it is built, so a loader that reads one
  subject's scans at a time into a store on disk (`cache.ScanStoreWriter`) never holds the
  whole cohort in memory.

  Args:
    visits, groups, max_visits, exclude_target_visit, single_visit_horizon,
    require_both_classes: as for `build_cohort`.
    store: where the built subjects go; default `MemoryStore()`.
  """

  def __init__(self, visits: Mapping[str, Sequence[VisitRecord]],
               groups: Mapping[str, str | None] | None = None, *, max_visits: int = 10,
               exclude_target_visit: bool = False, single_visit_horizon: float = 6.0,
               require_both_classes: bool = True, store: SubjectStore | None = None):
    if int(max_visits) < 1:
      raise ValueError(f"max_visits must be >= 1, got {max_visits}")
    if not math.isfinite(single_visit_horizon):
      raise ValueError(f"single_visit_horizon must be finite, got {single_visit_horizon}")
    self.visits, self.groups = visits, groups or {}
    self.max_visits, self.exclude_target_visit = int(max_visits), exclude_target_visit
    self.single_visit_horizon, self.require_both_classes = (single_visit_horizon,
                                                            require_both_classes)
    self.store: SubjectStore = MemoryStore() if store is None else store
    self.has_sites = any(r.site for rows in visits.values() for r in rows)
    self.has_covariates = any(r.covariates for rows in visits.values() for r in rows)
    self.num_nodes: int | None = None
    self.labels: list[int] = []
    self.n_used = self.n_unused = 0

  def add(self, subject_id: str, scans: Mapping[int, np.ndarray],
          measures: Mapping[int, np.ndarray] | None = None) -> None:
    """Builds subject `subject_id` from its scans (run -> `[N, N]`, `build_cohort`'s rules)
    and its measures (run -> `[N, N]`, when the cohort keeps them), and hands it to the store.
    A subject without scans is left out."""
    runs = sorted(scans)
    if not runs:
      return
    rows = sorted(self.visits.get(subject_id, ()), key=lambda r: r.order)
    if runs[-1] > len(rows) or runs[0] < 1:
      raise CohortError(f"subject {subject_id}: runs {runs} but {len(rows)} visit rows; run k "
                        "needs a k-th visit row")
    fc = np.stack([np.asarray(scans[k], np.float32) for k in runs])
    adjacency = fc != 0
    if self.num_nodes is None:
      self.num_nodes = adjacency.shape[-1]
    if adjacency.shape[1:] != (self.num_nodes, self.num_nodes):
      raise CohortError(f"subject {subject_id}: scans of shape {adjacency.shape[1:]}, other "
                        f"subjects have {self.num_nodes}x{self.num_nodes}")
    months = np.array([rows[k - 1].months for k in runs], np.float64)
    if self.exclude_target_visit and len(runs) > 1:
      inputs = slice(max(0, len(runs) - 1 - self.max_visits), len(runs) - 1)
      time = months[-1] - months[inputs][-1]
    elif self.exclude_target_visit:
      inputs = slice(0, 1)
      to_next = rows[runs[0] - 1].months_to_next
      time = to_next if math.isfinite(to_next) and to_next > 0 else self.single_visit_horizon
    else:
      inputs = slice(max(0, len(runs) - self.max_visits), len(runs))
      kept = months[inputs]
      time = float(np.mean(np.diff(kept))) if len(kept) > 1 else self.single_visit_horizon
    used = runs[inputs]
    measure = (None if measures is None else
               np.stack([np.asarray(measures[k], np.float32) for k in used]))
    subject = Subject(subject_id=subject_id, label=rows[-1].label, adjacency=adjacency[inputs],
                      months=months[inputs], time_to_predict=time,
                      group=self.groups.get(subject_id), fc=fc[inputs], measure=measure,
                      sites=tuple(rows[k - 1].site for k in used) if self.has_sites else (),
                      covariates=tuple(rows[k - 1].covariates for k in used)
                      if self.has_covariates else ())
    self.n_used += subject.num_visits
    self.n_unused += len(runs) - subject.num_visits
    self.labels.append(subject.label)
    self.store.add(subject)

  def cohort(self, *, n_scans_skipped: int = 0, n_subjects_skipped: int = 0,
             n_files_ignored: int = 0, warning_messages: Sequence[str] = (),
             measure_kind: str = "", region_names: Sequence[str] = ()) -> Cohort:
    """The cohort of the subjects added (the loader's bookkeeping copied into it), from the
    store. Raises CohortError when no subject was added, or (`require_both_classes`) when
    they hold one class."""
    if not self.labels or self.num_nodes is None:
      # The first reason only, shortened: the warnings name every skipped scan already.
      reason = textwrap.shorten(warning_messages[0], 200, placeholder=" ...") if (
          warning_messages) else "no scans"
      raise CohortError(f"no subject has a usable scan ({len(warning_messages)} warning(s); the "
                        f"first: {reason})")
    if self.require_both_classes and len(set(self.labels)) < 2:
      only = self.labels[0]
      raise CohortError(
          f"all {len(self.labels)} subjects have label {only} "
          f"({'converter' if only else 'stable'}): a cohort needs both classes (check "
          "Label_CS_Num in the visit table: a subject's label is its last row's)")
    return self.store.cohort(
        num_nodes=int(self.num_nodes), n_scans_used=self.n_used, n_scans_unused=self.n_unused,
        n_scans_skipped=n_scans_skipped, n_subjects_skipped=n_subjects_skipped,
        n_files_ignored=n_files_ignored, warnings=tuple(warning_messages),
        region_names=tuple(region_names), measure_kind=measure_kind)


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
    measures: Mapping[str, Mapping[int, np.ndarray]] | None = None,
    measure_kind: str = "",
    store: SubjectStore | None = None,
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
    measures: subject id -> run -> `[N, N]` the scan's whole measure (`Subject.measure`), for
      steps fitted inside each fold; `measure_kind` says what they are.
    store: where the subjects go (`CohortBuilder`); default in memory.
    Each visit row's `site` and `covariates` are kept per input visit when any row has them.

  Returns:
    The `Cohort`.

  Raises:
    CohortError: no subject, a run without visit row, mixed matrix sizes, or a single class.
  """
  builder = CohortBuilder(visits, groups, max_visits=max_visits,
                          exclude_target_visit=exclude_target_visit,
                          single_visit_horizon=single_visit_horizon,
                          require_both_classes=require_both_classes, store=store)
  for subject_id in sorted(scans):
    builder.add(subject_id, scans[subject_id],
                None if measures is None else measures.get(subject_id, {}))
  return builder.cohort(n_scans_skipped=n_scans_skipped, n_subjects_skipped=n_subjects_skipped,
                        n_files_ignored=n_files_ignored, warning_messages=warning_messages,
                        measure_kind=measure_kind if measures is not None else "")
