"""ROI time series -> one connectivity matrix per scan -> the graph the model reads.

Cleaning is nilearn's `signal.clean` (detrending, standardisation, confound regression, a
Butterworth band-pass); the measures are nilearn's `ConnectivityMeasure` with the empirical
covariance of the cleaned series (so `correlation` is exactly `np.corrcoef`), one scan at a time.

How a measure becomes a graph (`measure_graph`): the edges are chosen on the measure's unit-free
form, where `--threshold` means the same for every kind: a correlation and a partial correlation
are their own, a covariance is judged by the correlation it implies, a precision matrix by the
partial correlation it implies. The values on the edges (what the node features and the
baselines read) are the measure's own, after the optional Fisher z (arctanh of the off-diagonal
entries; the diagonal stays as it is, so every region keeps its self loop).

`tangent` is fitted on a group (`data.fold_steps`, inside each fold): per scan this module gives
its Ledoit-Wolf covariance (nilearn's estimator for the tangent space: positive definite for any
scan length); the fold's fit turns it into the tangent matrix, the whitened log-deviation from
the training scans' geometric mean. That matrix says how a scan differs from the group, not
whether two regions are coupled, so its graph's edges are those of the scan's own correlation
(`tangent_graph`: the same edges as `--connectivity correlation` would keep), and its values are
the tangent coordinates.

Errors name the scan and the problem (`CohortError`); nilearn is imported when first needed (the
`timeseries` extra).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from stgnn_jax.config import CONNECTIVITY_KINDS, STANDARDIZE_CHOICES
from stgnn_jax.data.cohort import CohortError
from stgnn_jax.data.preprocessing import threshold_fc

_NILEARN_KIND = {"correlation": "correlation", "partial_correlation": "partial correlation",
                 "covariance": "covariance", "precision": "precision", "tangent": "covariance"}
# Measures that invert the covariance need it full rank.
_INVERTING = ("partial_correlation", "precision")
# arctanh of +-1 is infinite: a perfect correlation is clipped to this first.
_FISHER_Z_CLIP = 1 - 1e-7


@dataclasses.dataclass(frozen=True)
class Cleaning:
  """Signal cleaning before the measure (`nilearn.signal.clean`), one scan at a time.

  Attributes:
    detrend: remove each region's linear trend.
    standardize: "zscore_sample", "psc" (percent signal change) or "none".
    high_pass, low_pass: the band-pass's edges in Hz (None: no edge); need a repetition time.
    confounds: columns of the scan's confounds table regressed out (empty: none).
  """

  detrend: bool = True
  standardize: str = "zscore_sample"
  high_pass: float | None = None
  low_pass: float | None = None
  confounds: tuple[str, ...] = ()

  def __post_init__(self):
    if self.standardize not in STANDARDIZE_CHOICES:
      raise ValueError(f"standardize must be one of {STANDARDIZE_CHOICES}, got "
                       f"{self.standardize!r}")
    for name in ("high_pass", "low_pass"):
      value = getattr(self, name)
      if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive frequency in Hz, got {value}")
    if (self.high_pass is not None and self.low_pass is not None
        and self.high_pass >= self.low_pass):
      raise ValueError(f"high_pass {self.high_pass} Hz is not below low_pass {self.low_pass} Hz: "
                       "no frequency band is left; lower --high_pass or raise --low_pass")

  @property
  def filters(self) -> bool:
    return self.high_pass is not None or self.low_pass is not None

  def check_band(self, t_r: float | None, where: str) -> None:
    """Raises CohortError unless the band-pass (if any) fits below the scan's Nyquist frequency."""
    if not self.filters:
      return
    if t_r is None or not (math.isfinite(t_r) and t_r > 0):
      raise CohortError(f"{where}: --high_pass / --low_pass need the repetition time: pass "
                        "--t_r SECONDS or give the visit table a RepetitionTime column")
    nyquist = 0.5 / t_r
    for name in ("high_pass", "low_pass"):
      value = getattr(self, name)
      if value is not None and value >= nyquist:
        raise CohortError(f"{where}: --{name} {value} Hz is not below the Nyquist frequency "
                          f"{nyquist:g} Hz of a {t_r:g} s repetition time; lower it")


def check_series(series: np.ndarray, where: str, region_names: Sequence[str] | None = None
                 ) -> np.ndarray:
  """`series` as float64 [time points, regions], or CohortError naming the file and problem."""
  series = np.asarray(series)
  if series.ndim != 2:
    raise CohortError(f"{where}: a scan's series must be a 2-D array [time points, regions], got "
                      f"a {series.ndim}-D array of shape {series.shape}")
  if not (np.issubdtype(series.dtype, np.floating) or np.issubdtype(series.dtype, np.integer)):
    raise CohortError(f"{where}: the series must hold real numbers, got dtype {series.dtype}")
  if series.shape[0] == 0 or series.shape[1] == 0:
    raise CohortError(f"{where}: an empty series (shape {series.shape})")
  series = series.astype(np.float64)
  bad = ~np.isfinite(series)
  if bad.any():
    t, r = np.argwhere(bad)[0]
    raise CohortError(f"{where}: {int(bad.sum())} non-finite (NaN or inf) value(s), the first at "
                      f"time point {t}, region {_region(r, region_names)}; fix or remove the scan")
  constant = np.flatnonzero(np.ptp(series, axis=0) == 0)
  if constant.size:
    names = ", ".join(_region(r, region_names) for r in constant[:5])
    raise CohortError(f"{where}: {constant.size} region(s) constant over time ({names}"
                      f"{', ...' if constant.size > 5 else ''}): no connectivity can be measured; "
                      "remove the region from every scan or fix the extraction")
  return series


def _region(index: int, names: Sequence[str] | None) -> str:
  return repr(names[index]) if names else f"column {index}"


def min_time_points(kind: str, num_regions: int, cleaning: Cleaning) -> int:
  """The fewest time points a measure can be computed from: 3 for a correlation or a
  covariance; for a measure that inverts the covariance, enough for it to be full rank (one per
  region, plus one for the mean and one for a removed trend)."""
  if kind in _INVERTING:
    return num_regions + 1 + int(cleaning.detrend)
  return 3


def clean_series(series: np.ndarray, cleaning: Cleaning, *, t_r: float | None,
                 confounds: np.ndarray | None = None) -> np.ndarray:
  """`nilearn.signal.clean` of one scan's [time points, regions] series."""
  from nilearn import signal

  return signal.clean(
      series, detrend=cleaning.detrend,
      standardize=None if cleaning.standardize == "none" else cleaning.standardize,
      confounds=confounds, low_pass=cleaning.low_pass, high_pass=cleaning.high_pass,
      t_r=t_r, filter="butterworth" if cleaning.filters else False)


def scan_connectivity(series: np.ndarray, kind: str, where: str) -> np.ndarray:
  """The [regions, regions] measure of one cleaned scan (nilearn, empirical covariance; for
  `tangent`, the scan's Ledoit-Wolf covariance that the fold's tangent fit starts from)."""
  from nilearn.connectome import ConnectivityMeasure
  from sklearn.covariance import EmpiricalCovariance, LedoitWolf

  if kind not in CONNECTIVITY_KINDS:
    raise ValueError(f"unknown connectivity {kind!r}; expected one of {CONNECTIVITY_KINDS}")
  if kind in _INVERTING:
    rank = np.linalg.matrix_rank(series - series.mean(0))
    if rank < series.shape[1]:
      raise CohortError(f"{where}: its covariance has rank {rank} < {series.shape[1]} regions, so "
                        f"{kind} (which inverts it) is undefined; use --connectivity correlation "
                        "or longer scans")
  estimator = (LedoitWolf(store_precision=False) if kind == "tangent"
               else EmpiricalCovariance())
  measure = ConnectivityMeasure(kind=_NILEARN_KIND[kind], cov_estimator=estimator,
                                standardize=False)
  return np.asarray(measure.fit_transform([series])[0], np.float64)


def unit_free(matrix: np.ndarray, kind: str) -> np.ndarray:
  """The scale-free form of a measure that `--threshold` applies to (see the module docstring;
  for `tangent` the measure is the scan's covariance: its correlation)."""
  if kind in ("correlation", "partial_correlation"):
    return matrix
  scale = np.sqrt(np.outer(np.diagonal(matrix), np.diagonal(matrix)))
  if kind in ("covariance", "tangent"):
    return matrix / scale
  partial = -matrix / scale
  np.fill_diagonal(partial, 1.0)
  return partial


def fisher_z(matrix: np.ndarray) -> np.ndarray:
  """arctanh of the off-diagonal entries (clipped to +-(1 - 1e-7)); the diagonal unchanged."""
  z = np.arctanh(np.clip(matrix, -_FISHER_Z_CLIP, _FISHER_Z_CLIP))
  np.fill_diagonal(z, np.diagonal(matrix))
  return z


def measure_graph(matrix: np.ndarray, kind: str, threshold: float, *, use_fisher_z: bool,
                  values: np.ndarray | None = None) -> np.ndarray:
  """A scan's graph values (as `threshold_fc` gives for an FC matrix): the measure's values (or
  the given `values`, e.g. harmonised ones), Fisher z-transformed if asked, on the edges chosen
  by `threshold` on the measure's unit-free form. A kept value that is exactly 0 carries
  nothing: that edge is dropped (the reference's rule, A_ij != 0)."""
  symmetric = (matrix + matrix.T) / 2
  edges = threshold_fc(unit_free(symmetric, kind), threshold) != 0
  kept = symmetric if values is None else (values + values.T) / 2
  kept = fisher_z(kept) if use_fisher_z else kept
  return np.where(edges, kept, 0).astype(np.float32)


def tangent_graph(covariance: np.ndarray, tangent: np.ndarray, threshold: float) -> np.ndarray:
  """A tangent scan's graph values: its tangent matrix on the edges of its own correlation."""
  return measure_graph(covariance, "tangent", threshold, use_fisher_z=False, values=tangent)


@dataclasses.dataclass(frozen=True)
class TimeSeriesSettings:
  """How time-series scans become graphs: the measure (`kind`), its Fisher z, the repetition
  time in seconds where the visit table has no RepetitionTime (`t_r`), and the cleaning."""

  kind: str = "correlation"
  fisher_z: bool = False
  t_r: float | None = None
  cleaning: Cleaning = dataclasses.field(default_factory=Cleaning)

  def __post_init__(self):
    if self.kind not in CONNECTIVITY_KINDS:
      raise ValueError(f"unknown connectivity {self.kind!r}; expected one of "
                       f"{CONNECTIVITY_KINDS}")
    if self.fisher_z and self.kind not in ("correlation", "partial_correlation"):
      raise ValueError(f"Fisher z applies to correlations, not to {self.kind}: drop --fisher_z "
                       "or use --connectivity correlation / partial_correlation")
    if self.t_r is not None and not (math.isfinite(self.t_r) and self.t_r > 0):
      raise ValueError(f"t_r must be a positive number of seconds, got {self.t_r}")
