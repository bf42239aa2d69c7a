"""From an FC matrix to a graph, and the time features: the reference's preprocessing rules.

`fc_to_adjacency` symmetrises a scan, drops `|A| < threshold` and keeps every other nonzero entry
as an edge, self loops included (the reference's "from matrix to graph"); `threshold_fc` keeps the
FC values on those edges. The reference's convolutions read only the edges (one-hot node
features); `connection_features` gives the connection-profile node features built from the
values. `normalize_time` and the horizon buckets scale the time-to-predict.

This module depends on numpy only.
"""

from __future__ import annotations

import numpy as np

from stgnn_jax.config import TIME_NORMALIZATIONS

HORIZON_BUCKETS = ("0-6m", "6-12m", "12-24m", "24m+")


_BUCKET_UPPER_EDGES = (6.0, 12.0, 24.0)  # months; a bucket holds [lower, upper)


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
