"""The linear path's weights: a penalised logistic regression fitted on a fold's training subjects.

`ModelConfig.linear_path` adds `w . x + b` to the STGNN's converter logit, x the last visit's
standardised node features flattened (`nn.model.LinearPath`). Trained by the network's optimiser
this path does not find what a logistic regression finds on FC computed from real BOLD (README,
"Learning on connectivity from real BOLD"): real FC is dominated by each person's own pattern,
the conversion effect lies along directions of small variance, and the weakly penalised
maximum-likelihood direction, which whitens by the features' covariance, generalises while
shrunk or sign-like (Adam) solutions stay near chance. So the path is fitted in closed form per
fold, like the classical baselines but on the training subjects alone:

  - features: each training subject's last visit, standardised with the fold's input statistics
    (the same transformation the model applies), flattened;
  - class-balanced L2 logistic regression (scikit-learn, lbfgs), C from `C_GRID` chosen by
    stratified inner cross-validation AUC on the training subjects (`INNER_FOLDS` folds; the
    validation split stays untouched for the network's epoch and threshold), then refitted on
    every training subject;
  - the two-class softmax of `(-z/2, z/2)` is the regression's sigmoid of z, so the
    kernel's columns are `-w/2` and `w/2` (bias likewise).

The path's parameters are then constants of the fold (left out of the optimiser, like the input
statistics, `train.optimizer`), so the network trains on the residual of the regression. The
checkpoint carries them.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from stgnn_jax.eval.baselines import C_GRID

logger = logging.getLogger(__name__)

INNER_FOLDS = 3
_MAX_ITER = 5000
_TOL = 1e-6
# Fits keyed by a digest of their inputs: a sweep sets up every member of a fold with the same
# training subjects, and each would otherwise refit the same regression.
_FITTED: dict[str, dict[str, Any]] = {}


def last_visit_inputs(features: Sequence[np.ndarray], stats: Mapping[str, np.ndarray]
                      ) -> np.ndarray:
  """`[subjects, N * F]` float64: each subject's last visit's node features `[N, F]`,
  standardised as `model.InputStandardization` does (`(x - mean) * scale`), flattened."""
  mean = np.asarray(stats["mean"], np.float64)
  scale = np.asarray(stats["scale"], np.float64)
  return np.stack([((np.asarray(f[-1], np.float64) - mean) * scale).ravel() for f in features])


def fit_linear_path(x: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, Any]:
  """The class-balanced L2 logistic regression of `labels` on `x` (`last_visit_inputs`), C by
  inner cross-validated AUC.

  Returns {"w": [F], "b": float, "C": float, "inner_auc": {C: AUC}, "offsets": [subjects]}:
  "offsets" is, per training subject, its cross-fitted logit (from the inner fold that held it
  out, at the chosen C) minus the final regression's logit: the correction that makes the linear
  path enter the training loss at an honest, held-out value (`SubjectBatch.offset`).

  Raises ValueError when the training subjects hold one class (no regression exists).
  """
  from sklearn.linear_model import LogisticRegression
  from sklearn.metrics import roc_auc_score
  from sklearn.model_selection import StratifiedKFold

  labels = np.asarray(labels)
  counts = np.bincount(labels, minlength=2)
  if counts.min() == 0:
    raise ValueError("the linear path needs both classes among the training subjects")
  key = hashlib.sha256(x.tobytes() + labels.tobytes() + str((x.shape, seed)).encode()).hexdigest()
  if key in _FITTED:
    return _FITTED[key]

  def fit(c: float, rows: np.ndarray, model=None):
    # Along the grid each fit starts from the previous C's solution (warm start): the same
    # optimum to the tolerance, in fewer of lbfgs's iterations.
    model = model or LogisticRegression(class_weight="balanced", max_iter=_MAX_ITER, tol=_TOL,
                                        warm_start=True)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # convergence warnings: `converged` is not needed here
      return model.set_params(C=c).fit(x[rows], labels[rows])

  inner = StratifiedKFold(n_splits=min(INNER_FOLDS, int(counts.min())), shuffle=True,
                          random_state=seed)
  scores: dict[float, list[float]] = {c: [] for c in C_GRID}
  held_out = {c: np.zeros(len(labels)) for c in C_GRID}
  for train, held in inner.split(x, labels):
    model = None
    for c in sorted(C_GRID):
      model = fit(c, train, model)
      held_out[c][held] = model.decision_function(x[held])
      scores[c].append(roc_auc_score(labels[held], held_out[c][held]))
  mean_auc = {c: float(np.mean(v)) for c, v in scores.items()}
  best = max(C_GRID, key=lambda c: (mean_auc[c], -c))  # ties: the stronger penalty
  model = fit(best, np.arange(len(labels)))
  offsets = held_out[best] - model.decision_function(x)
  result = {"w": model.coef_[0].astype(np.float32), "b": float(model.intercept_[0]),
            "C": float(best), "inner_auc": {str(c): a for c, a in mean_auc.items()},
            "offsets": offsets.astype(np.float32)}
  _FITTED[key] = result
  logger.info("linear path: C %g (inner AUC %.3f)", best, mean_auc[best])
  return result


def with_linear_path(params: Mapping[str, Any], fitted: Mapping[str, Any]) -> dict[str, Any]:
  """`params` with the linear path set to the regression `fitted`: the softmax of its two logits
  `(-z/2, z/2)` is the regression's sigmoid of `z = w . x + b`."""
  current = params["linear_path"]
  w = np.asarray(fitted["w"], np.float32)
  if current["kernel"].shape != (w.size, 2):
    raise ValueError(f"a linear path of {w.size} inputs for a model whose path has "
                     f"{current['kernel'].shape[0]}")
  kernel = np.stack([-w / 2, w / 2], axis=1)
  bias = np.array([-fitted["b"] / 2, fitted["b"] / 2], np.float32)
  return dict(params, linear_path={"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)})
