"""The parsed cohort stored on disk: the cohort cache, and the scan store that `--scan_store
memmap` trains from.

A stored cohort is one folder:

    cohort.npz        everything but the scans (ids, labels, visits, groups, sites, the
                      loader's counts and warnings), compressed
    fc.npy            [scans, N, N] float32, every subject's input visits' edge values,
                      subjects in the cohort's order, visits oldest first
    adjacency.npy     [scans, N, N] bool, the edges
    measures.npy      [scans, N, N] float32, the whole measures (only when the cohort keeps them)

The scans are plain `.npy` arrays so that `read_cache(memory_map=True)` maps them read-only
(`numpy.load(mmap_mode="r")`): a subject's arrays are then views of the files, read from disk
when a batch packs them, and the operating system keeps in memory only the pages it has room for,
so a cohort larger than the memory trains. Read without `memory_map` they are loaded whole; the
cohort is the same.

`ScanStoreWriter` writes a stored cohort while it is built (`cohort.CohortBuilder`), one
subject at a time, into a temporary folder that is renamed into place once complete: a
concurrent or killed run never sees half a cohort, and loading never holds every scan in memory.
A cache entry is named by a key (computed by `reference_format.load_cohort`) that covers the
scan files' names, sizes and modification times, the tables and every setting that changes the
cohort; an unreadable entry is rebuilt with a warning; an unwritable cache folder falls back to
the user's cache folder.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from stgnn_jax import atomic
from stgnn_jax.data.cohort import Cohort, CohortError, CohortWarning, Subject

# Raised when the stored form changes (6: a folder whose scans are `.npy` files that can be
# memory-mapped) or the loader refuses more (5: FC values beyond ±100, contradictory labels), so
# that a cohort cached before is read, and checked, again.
CACHE_FORMAT_VERSION = 6
CACHE_DIR_NAME = ".stgnn_cache"
# The files of a stored cohort: its non-scan data, and each scan array with its dtype.
META_FILE = "cohort.npz"
SCAN_ARRAYS = {"fc": np.dtype(np.float32), "adjacency": np.dtype(np.bool_),
               "measures": np.dtype(np.float32)}


def user_cache_dir() -> Path:
  """$XDG_CACHE_HOME/stgnn_jax (default ~/.cache/stgnn_jax): where the cache goes when the
  cohort's own folder is not writable."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base) / "stgnn_jax"


def _covariate_table(rows: list[tuple[str, ...]]) -> np.ndarray:
  width = len(rows[0]) if rows else 0
  return np.array(rows, dtype=str).reshape(len(rows), width)


def _cohort_from_arrays(meta: Mapping[str, np.ndarray],
                        scans: Mapping[str, np.ndarray]) -> Cohort:
  """The cohort of a stored folder: `meta` from `META_FILE`, `scans` its scan arrays (each
  subject's visits become views of them)."""
  if int(meta["version"]) != CACHE_FORMAT_VERSION:
    raise ValueError("cache written by another version")
  num_nodes, used, unused, skipped, subjects_skipped, ignored = (int(c) for c in meta["counts"])
  num_visits = meta["num_visits"]
  measure_kind = str(meta["measure_kind"])
  shape = (int(num_visits.sum()), num_nodes, num_nodes)
  for name in ("fc", "adjacency", *(("measures",) if measure_kind else ())):
    if scans[name].shape != shape or scans[name].dtype != SCAN_ARRAYS[name]:
      raise ValueError(f"{name}.npy holds {scans[name].dtype} {scans[name].shape}, the cohort "
                       f"{SCAN_ARRAYS[name]} {shape}")
  starts = np.concatenate([[0], np.cumsum(num_visits)])
  sites, covariates = meta["sites"], meta["covariates"]

  def visits(values, i):  # subject i's rows of a per-visit array
    return values[starts[i]:starts[i + 1]]

  subjects = tuple(
      Subject(subject_id=str(meta["subject_ids"][i]), label=int(meta["labels"][i]),
              adjacency=visits(scans["adjacency"], i), months=visits(meta["months"], i),
              time_to_predict=float(meta["time_to_predict"][i]),
              group=str(meta["groups"][i]) if meta["has_group"][i] else None,
              fc=visits(scans["fc"], i),
              measure=visits(scans["measures"], i) if measure_kind else None,
              sites=tuple(str(x) for x in visits(sites, i)) if len(sites) else (),
              covariates=tuple(tuple(str(x) for x in row) for row in visits(covariates, i))
              if len(covariates) else ())
      for i in range(len(num_visits)))
  return Cohort(subjects=subjects, num_nodes=num_nodes, n_scans_used=used, n_scans_unused=unused,
                n_scans_skipped=skipped, n_subjects_skipped=subjects_skipped,
                n_files_ignored=ignored, warnings=tuple(str(w) for w in meta["warnings"]),
                region_names=tuple(str(r) for r in meta["region_names"]),
                measure_kind=measure_kind)


def read_cache(path: Path, *, memory_map: bool = False) -> Cohort | None:
  """The cohort stored in the folder `path`, its scans memory-mapped read-only (`memory_map`)
  or loaded whole; None if absent, or unreadable (then with a warning)."""
  if not (path / META_FILE).is_file():
    return None
  try:
    with np.load(path / META_FILE, allow_pickle=False) as archive:
      meta = {name: archive[name] for name in archive.files}
    scans = {}
    for name in SCAN_ARRAYS:
      if (path / f"{name}.npy").is_file():
        array = np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        if not memory_map:
          array = np.array(array)  # read whole, into memory of its own
        array.setflags(write=False)  # read-only: subjects keep views of it, not copies
        scans[name] = array
    return _cohort_from_arrays(meta, scans)
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    warnings.warn(f"{path}: unreadable cohort cache ({e}); rebuilding it", CohortWarning,
                  stacklevel=3)
    return None


class ScanStoreWriter:
  """A `cohort.SubjectStore` that writes each subject into a new stored cohort as it comes: its
  scans appended to the `.npy` files, the rest kept in lists until `cohort()` completes the
  folder and returns the cohort read back from it (`read_cache`, with `memory_map`).

  The folder `directory` is new and private to the writer. `cohort()` renames it to `final`
  (a cache entry; an entry another run completed first is used instead), or, with `final` None,
  reads it and deletes it: on POSIX a deleted file stays readable while it is mapped, so the
  store lasts as long as the process and nothing is left behind. `discard()` removes the folder
  of a load that failed.
  """

  def __init__(self, directory: Path, *, memory_map: bool, final: Path | None):
    self.directory, self.memory_map, self.final = Path(directory), memory_map, final
    self.files: dict[str, BinaryIO] = {}
    self.num_scans = 0
    self.meta: dict[str, list[Any]] = {name: [] for name in (
        "subject_ids", "labels", "num_visits", "months", "time_to_predict", "groups",
        "has_group", "sites", "covariates")}

  def add(self, subject: Subject) -> None:
    given = {"fc": subject.fc, "adjacency": subject.adjacency, "measures": subject.measure}
    arrays = {name: array for name, array in given.items() if array is not None}
    if not self.files:
      for name in arrays:
        self.files[name] = open(self.directory / f"{name}.npy", "wb")  # noqa: SIM115
        # The header of 0 scans holds the place of the final one, of the same length: numpy
        # pads every .npy header so that its first dimension can grow in place.
        self.files[name].write(self._header(name, 0, subject.fc.shape[-1]))
    if arrays.keys() != self.files.keys():
      raise ValueError(f"subject {subject.subject_id}: arrays {sorted(arrays)} unlike the "
                       f"earlier subjects' {sorted(self.files)}")
    for name, f in self.files.items():
      f.write(np.ascontiguousarray(arrays[name], SCAN_ARRAYS[name]).data)
    self.num_scans += subject.num_visits
    meta = self.meta
    meta["subject_ids"].append(subject.subject_id)
    meta["labels"].append(subject.label)
    meta["num_visits"].append(subject.num_visits)
    meta["months"].append(subject.months)
    meta["time_to_predict"].append(subject.time_to_predict)
    meta["groups"].append(subject.group or "")
    meta["has_group"].append(subject.group is not None)
    meta["sites"].extend(subject.sites)
    meta["covariates"].extend(subject.covariates)

  def _header(self, name: str, num_scans: int, num_nodes: int) -> bytes:
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {
        "descr": npy_format.dtype_to_descr(SCAN_ARRAYS[name]), "fortran_order": False,
        "shape": (num_scans, num_nodes, num_nodes)})
    return buffer.getvalue()

  def cohort(self, **fields: Any) -> Cohort:
    meta = self.meta
    arrays = {
        "version": np.array(CACHE_FORMAT_VERSION),
        "subject_ids": np.array(meta["subject_ids"], dtype=str),
        "labels": np.array(meta["labels"], np.int32),
        "num_visits": np.array(meta["num_visits"], np.int32),
        "months": np.concatenate(meta["months"]),
        "time_to_predict": np.array(meta["time_to_predict"], np.float64),
        "groups": np.array(meta["groups"], dtype=str),
        "has_group": np.array(meta["has_group"], bool),
        "counts": np.array([fields["num_nodes"], fields["n_scans_used"],
                            fields["n_scans_unused"], fields["n_scans_skipped"],
                            fields["n_subjects_skipped"], fields["n_files_ignored"]], np.int64),
        "warnings": np.array(fields["warnings"], dtype=str).reshape(-1),
        "region_names": np.array(fields["region_names"], dtype=str).reshape(-1),
        "measure_kind": np.array(fields["measure_kind"]),
        "sites": np.array(meta["sites"], dtype=str),
        "covariates": _covariate_table(meta["covariates"]),
    }
    for name, f in self.files.items():
      header = self._header(name, self.num_scans, fields["num_nodes"])
      if len(header) != len(self._header(name, 0, fields["num_nodes"])):
        raise RuntimeError(f"{name}.npy: its header for {self.num_scans} scans does not fit the "
                           "space held for it (numpy no longer pads .npy headers for growth)")
      f.seek(0)
      f.write(header)
      f.flush()
      os.fsync(f.fileno())
      f.close()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, allow_pickle=False, **arrays)
    atomic.write_bytes(self.directory / META_FILE, buffer.getvalue())
    if self.final is None:
      cohort = read_cache(self.directory, memory_map=self.memory_map)
      shutil.rmtree(self.directory)
    else:
      cohort = read_cache(self._commit(self.final), memory_map=self.memory_map)
    if cohort is None:
      raise CohortError(f"{self.final or self.directory}: the cohort just stored cannot be read "
                        "back (see the warning); check the disk")
    return cohort

  def _commit(self, final: Path) -> Path:
    """Renames the folder to `final`; keeps an entry there that another run completed first
    (the same key, so the same cohort) and replaces an unreadable one."""
    try:
      os.rename(self.directory, final)
    except OSError:
      if (final / META_FILE).is_file():
        with warnings.catch_warnings():
          warnings.simplefilter("ignore", CohortWarning)
          readable = read_cache(final) is not None
        if readable:
          shutil.rmtree(self.directory)
          return final
      shutil.rmtree(final, ignore_errors=True)
      os.rename(self.directory, final)
    return final

  def discard(self) -> None:
    """Removes the folder (a load that failed)."""
    for f in self.files.values():
      f.close()
    shutil.rmtree(self.directory, ignore_errors=True)


def _new_writer(directory: Path, prefix: str, *, memory_map: bool, final: Path | None
                ) -> ScanStoreWriter:
  """A `ScanStoreWriter` into a new private folder of `directory` (made if need be); raises
  OSError where `directory` cannot hold one."""
  directory.mkdir(parents=True, exist_ok=True)
  folder = tempfile.mkdtemp(prefix=f"{atomic.TEMP_PREFIX}{prefix}-", dir=directory)
  return ScanStoreWriter(Path(folder), memory_map=memory_map, final=final)


@contextlib.contextmanager
def _discarded_on_failure(writer: ScanStoreWriter | None) -> Iterator[ScanStoreWriter | None]:
  """`writer` for the load inside the `with`; its folder removed if the load fails."""
  try:
    yield writer
  except BaseException:
    if writer is not None:
      writer.discard()
    raise


@contextlib.contextmanager
def cache_writer(directories: Iterable[Path], name: str, *, memory_map: bool
                 ) -> Iterator[ScanStoreWriter | None]:
  """A `ScanStoreWriter` of the cache entry `name` in the first writable directory, discarded
  if the load inside the `with` fails; None, with a warning, where none is writable (the cohort
  then stays in memory) or, with `memory_map`, CohortError: a memory-mapped cohort needs its
  folder."""
  errors = []
  writer = None
  for directory in directories:
    try:
      writer = _new_writer(directory, name, memory_map=memory_map, final=directory / name)
      break
    except OSError as e:
      errors.append(f"{directory}: {e}")
  if writer is None:
    if memory_map:
      raise CohortError("no writable folder for the memory-mapped scan store ("
                        + "; ".join(errors) + "): make the data folder or $XDG_CACHE_HOME "
                        "writable, or use --scan_store memory")
    warnings.warn("could not write the cohort cache (" + "; ".join(errors) + "); continuing "
                  "without it", CohortWarning, stacklevel=4)
  with _discarded_on_failure(writer) as store:
    yield store


@contextlib.contextmanager
def transient_store() -> Iterator[ScanStoreWriter]:
  """A `ScanStoreWriter` for a cohort memory-mapped by this process only (one generated in
  memory, e.g. the built-in cohort under `--scan_store memmap`): a new folder in
  `user_cache_dir()`, deleted as soon as the cohort is read back from it."""
  directory = user_cache_dir()
  try:
    writer = _new_writer(directory, "scans", memory_map=True, final=None)
  except OSError as e:
    raise CohortError(f"{directory}: cannot hold the memory-mapped scan store ({e}); set "
                      "$XDG_CACHE_HOME to a writable folder, or use --scan_store memory") from e
  with _discarded_on_failure(writer) as store:
    assert store is not None
    yield store
