"""The parsed cohort cached as one compressed `.npz`, so a second run skips reading every scan.

The key (computed by `reference_format.load_cohort`) covers the scan files' names, sizes and
modification times, the tables and every setting that changes the cohort; an unreadable cache is
rebuilt with a warning; an unwritable cache folder falls back to the user's cache folder.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from stgnn_jax import atomic
from stgnn_jax.data.cohort import Cohort, CohortWarning, Subject

# Raised also when the loader refuses more (5: FC values beyond ±100, contradictory labels), so
# that a cohort cached before is read, and checked, again.
CACHE_FORMAT_VERSION = 5
CACHE_DIR_NAME = ".stgnn_cache"


def user_cache_dir() -> Path:
  """$XDG_CACHE_HOME/stgnn_jax (default ~/.cache/stgnn_jax): where the cache goes when the
  cohort's own folder is not writable."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base) / "stgnn_jax"


def _cohort_to_arrays(cohort: Cohort) -> dict[str, np.ndarray]:
  subjects = cohort.subjects
  adjacency = np.concatenate([s.adjacency for s in subjects])
  return {
      "version": np.array(CACHE_FORMAT_VERSION),
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
      "region_names": np.array(cohort.region_names, dtype=str).reshape(-1),
      "measure_kind": np.array(cohort.measure_kind),
      # Whole measures (`Subject.measure`), sites and covariate values, where the cohort has them.
      "measures": (np.concatenate([s.measure for s in subjects])
                   if cohort.measure_kind else np.zeros((0, 0, 0), np.float32)),
      "sites": np.array([x for s in subjects for x in s.sites], dtype=str),
      "covariates": _covariate_table([c for s in subjects for c in s.covariates]),
  }


def _covariate_table(rows: list[tuple[str, ...]]) -> np.ndarray:
  width = len(rows[0]) if rows else 0
  return np.array(rows, dtype=str).reshape(len(rows), width)


def _cohort_from_arrays(arrays: Mapping[str, np.ndarray]) -> Cohort:
  if int(arrays["version"]) != CACHE_FORMAT_VERSION:
    raise ValueError("cache written by another version")
  num_nodes, used, unused, skipped, subjects_skipped, ignored = (int(c) for c in arrays["counts"])
  num_visits = arrays["num_visits"]
  total = int(num_visits.sum())
  bits = np.unpackbits(arrays["adjacency_bits"], count=total * num_nodes * num_nodes)
  adjacency = bits.astype(bool).reshape(total, num_nodes, num_nodes)
  fc = np.zeros(adjacency.shape, np.float32)
  fc[adjacency] = arrays["fc_values"]
  starts = np.concatenate([[0], np.cumsum(num_visits)])
  measure_kind = str(arrays["measure_kind"])
  measures, sites, covariates = arrays["measures"], arrays["sites"], arrays["covariates"]

  def visits(values, i):  # subject i's rows of a per-visit array
    return values[starts[i]:starts[i + 1]]

  subjects = tuple(
      Subject(subject_id=str(arrays["subject_ids"][i]), label=int(arrays["labels"][i]),
              adjacency=visits(adjacency, i), months=visits(arrays["months"], i),
              time_to_predict=float(arrays["time_to_predict"][i]),
              group=str(arrays["groups"][i]) if arrays["has_group"][i] else None,
              fc=visits(fc, i),
              measure=visits(measures, i) if measure_kind else None,
              sites=tuple(str(x) for x in visits(sites, i)) if len(sites) else (),
              covariates=tuple(tuple(str(x) for x in row) for row in visits(covariates, i))
              if len(covariates) else ())
      for i in range(len(num_visits)))
  return Cohort(subjects=subjects, num_nodes=num_nodes, n_scans_used=used, n_scans_unused=unused,
                n_scans_skipped=skipped, n_subjects_skipped=subjects_skipped,
                n_files_ignored=ignored, warnings=tuple(str(w) for w in arrays["warnings"]),
                region_names=tuple(str(r) for r in arrays["region_names"]),
                measure_kind=measure_kind)


def read_cache(path: Path) -> Cohort | None:
  """The cached cohort at `path`, or None (absent, or unreadable: then with a warning)."""
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as archive:
      return _cohort_from_arrays(archive)
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    warnings.warn(f"{path}: unreadable cohort cache ({e}); rebuilding it", CohortWarning,
                  stacklevel=3)
    return None


def write_cache(cohort: Cohort, directories: Iterable[Path], name: str) -> Path | None:
  """Writes the cache atomically into the first writable directory; returns its path or None."""
  arrays = _cohort_to_arrays(cohort)
  errors = []
  buffer = io.BytesIO()
  np.savez_compressed(buffer, allow_pickle=False, **arrays)
  for directory in directories:
    try:
      # A concurrent or interrupted run never sees a half-written cache.
      atomic.write_bytes(directory / name, buffer.getvalue())
      return directory / name
    except OSError as e:
      errors.append(f"{directory}: {e}")
  warnings.warn("could not write the cohort cache (" + "; ".join(errors) + "); continuing "
                "without it", CohortWarning, stacklevel=3)
  return None
