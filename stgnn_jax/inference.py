"""Black-box prediction from raw FC matrices, with the reference's preprocessing (`predict`), or
with everything a finished train.py run fitted (`load_run`)."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from stgnn_jax.config import ModelConfig
from stgnn_jax.data.preprocessing import connection_features, threshold_fc
from stgnn_jax.input_pipeline import SubjectBatch, pack_subjects
from stgnn_jax.nn.model import STGNN

if TYPE_CHECKING:
  from stgnn_jax.trained_run import TrainedRun


@functools.partial(jax.jit, static_argnames=("config", "deterministic"))
def apply_model(params: Mapping[str, Any], config: ModelConfig, batch: SubjectBatch,
                rng: jax.Array | None = None, *, deterministic: bool = True) -> jax.Array:
  """Jitted `STGNN(config)` on a `SubjectBatch` -> logits `[subjects, num_classes]`.

  Compiles once per (config, batch shapes); `rng` feeds dropout when not deterministic.
  """
  rngs = None if rng is None else {"dropout": rng}
  logits = STGNN(config).apply(
      {"params": params}, batch.graphs, batch.visit_slot, batch.lengths, batch.time,
      max_visits=batch.max_visits, deterministic=deterministic, rngs=rngs)
  assert isinstance(logits, jax.Array)  # apply without `mutable` returns the output alone
  return logits


def predict(params: Mapping[str, Any], config: ModelConfig,
            subjects: Sequence[Sequence[np.ndarray]],
            time_gaps: Sequence[float] | None = None, threshold: float = 0.2) -> np.ndarray:
  """Logits `[subjects, num_classes]` for raw FC matrices, in eval mode.

  Args:
    params: `{"encoder": ..., "classifier": ...}`, e.g. from `params_from_torch`.
    config: the model's architecture.
    subjects: per subject, its visits' raw `N x N` FC matrices, oldest first (no trimming is
      applied: pass the visits the model should see).
    time_gaps: per subject the time feature as the model sees it (already normalised, e.g.
      `log1p(months / 12)`); required when `config.use_time_features`.
    threshold: |FC| below it is no edge (the reference's `--threshold`).

  Returns:
    NumPy float32 logits.
  """
  if len(subjects) == 0:
    raise ValueError("predict: no subjects given.")
  if config.use_time_features and time_gaps is None:
    raise ValueError("predict: the model uses time features; pass time_gaps (one per subject).")
  if time_gaps is not None and len(time_gaps) != len(subjects):
    raise ValueError(
        f"predict: {len(time_gaps)} time_gaps for {len(subjects)} subjects; give one per subject.")
  values = []
  n = config.input_dim
  for s, visits in enumerate(subjects):
    if len(visits) == 0:
      raise ValueError(f"predict: subject {s} has no visit.")
    matrices = [np.asarray(v) for v in visits]
    for v, matrix in enumerate(matrices):
      if matrix.ndim != 2:
        raise ValueError(
            f"predict: visit {v} of subject {s} has shape {matrix.shape}, not an N x N matrix; "
            "pass, per subject, a list of its visits' matrices.")
      if not (np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)
              or matrix.dtype == bool):
        raise ValueError(f"predict: visit {v} of subject {s} holds {matrix.dtype} values; FC "
                         "matrices are real.")
      if matrix.shape != (n, n):
        raise ValueError(
            f"predict: visit {v} of subject {s} is a {matrix.shape[0]}x{matrix.shape[1]} matrix "
            f"but the model expects {n}x{n} (ModelConfig.input_dim).")
    with np.errstate(over="ignore"):  # a value beyond float32's range is refused just below
      stack = np.stack(matrices).astype(np.float32)
    for v, matrix in enumerate(stack):
      n_bad = int(matrix.size - np.count_nonzero(np.isfinite(matrix)))
      if n_bad:  # checked after the cast: a float64 value beyond float32's range becomes inf
        raise ValueError(
            f"predict: visit {v} of subject {s} has {n_bad} "
            f"{'entry that is' if n_bad == 1 else 'entries that are'} NaN or infinite (or beyond "
            "float32's range); FC matrices are finite: fix or leave out that scan.")
    if stack.shape[1:] != (config.input_dim, config.input_dim):
      raise ValueError(
          f"predict: subject {s} has {stack.shape[1]}x{stack.shape[2]} matrices but the model "
          f"expects {config.input_dim}x{config.input_dim} (ModelConfig.input_dim).")
    values.append(threshold_fc(stack, threshold))
  features = ([connection_features(v, config.node_features) for v in values]
              if config.explicit_node_features else None)
  batch = pack_subjects([v != 0 for v in values], time=time_gaps, features=features)
  return np.asarray(apply_model(params, config, batch))


def load_run(directory: str | os.PathLike) -> TrainedRun:
  """A finished `train.py` run (its `--out_dir`) as a predictor: every fold's selected model
  with its preprocessing fit, decision threshold and temperature (`stgnn_jax.trained_run`).

  `load_run(d).predict(subjects)` predicts from per-subject lists of FC matrices, like
  `predict` with the run's own architecture; `read_cohort` and `predict_cohort` from a data
  folder in any input format the run reads (what `predict.py` does).
  """
  from stgnn_jax.trained_run import load_run as load

  return load(directory)
