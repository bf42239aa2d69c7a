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
  - class-balanced L2 logistic regression (scikit-learn, lbfgs), on the last scan's connection
    values alone or (profile_change) with their change since the first visit, and C from
    `C_GRID`, the pair chosen by stratified inner cross-validation AUC on the training subjects
    (`INNER_FOLDS` folds; the validation split stays untouched for the network's epoch and
    threshold), then refitted on every training subject;
  - the two-class softmax of `(-z/2, z/2)` is the regression's sigmoid of z, so the
    kernel's columns are `-w/2` and `w/2` (bias likewise).

The path's parameters are then constants of the fold (left out of the optimiser, like the input
statistics, `train.optimizer`; the network's last layer starts at 0, so training starts from the
regression), and the checkpoint carries them. The full fit separates the training subjects, so a
network trained against it would learn to cancel it on exactly those subjects; instead each
training subject's path logit enters the loss at its cross-fitted value (the inner model that
did not see it: `offsets`, `SubjectBatch.offset`), and the network learns the residual of the
regression's held-out predictions.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
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


def feature_sets(node_features: str, num_nodes: int) -> dict[str, np.ndarray | None]:
  """The candidate inputs of the linear path, as column masks over `last_visit_inputs`' columns
  (None: all): "profile" (the last scan's connection values) and, with profile_change,
  "profile+change" (also their change since the first visit)."""
  if node_features != "profile_change":
    return {"profile": None}
  profile = np.zeros((num_nodes, 2 * num_nodes), bool)
  profile[:, :num_nodes] = True
  return {"profile": profile.ravel(), "profile+change": None}


def fit_linear_path(x: np.ndarray, labels: np.ndarray, seed: int,
                    sets: Mapping[str, np.ndarray | None] | None = None) -> dict[str, Any]:
  """The class-balanced L2 logistic regression of `labels` on `x` (`last_visit_inputs`); the
  inputs (one of `sets`, column masks; default all columns) and C chosen together by inner
  cross-validated AUC (ties: the first set, the stronger penalty).

  Returns {"w": [F] (0 outside the chosen columns), "b", "C", "features" (the chosen set's
  name), "inner_auc": {"set C": AUC}, "offsets": [subjects]}: "offsets" is, per training
  subject, its cross-fitted logit (from the inner fold that held it out, at the chosen set and
  C) minus the final regression's logit: the correction that makes the linear path enter the
  training loss at an honest, held-out value (`SubjectBatch.offset`).

  Raises ValueError when the training subjects hold one class (no regression exists).
  """
  from sklearn.linear_model import LogisticRegression
  from sklearn.metrics import roc_auc_score
  from sklearn.model_selection import StratifiedKFold

  sets = dict(sets or {"all": None})
  labels = np.asarray(labels)
  counts = np.bincount(labels, minlength=2)
  if counts.min() == 0:
    raise ValueError("the linear path needs both classes among the training subjects")
  key = hashlib.sha256(x.tobytes() + labels.tobytes() + repr(
      (x.shape, seed, [(k, None if m is None else m.tobytes()) for k, m in sets.items()])
  ).encode()).hexdigest()
  if key in _FITTED:
    return _FITTED[key]

  def fit(inputs: np.ndarray, c: float, rows: np.ndarray, model=None):
    # Along the grid each fit starts from the previous C's solution (warm start): the same
    # optimum to the tolerance, in fewer of lbfgs's iterations.
    model = model or LogisticRegression(class_weight="balanced", max_iter=_MAX_ITER, tol=_TOL,
                                        warm_start=True)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # convergence warnings: `converged` is not needed here
      return model.set_params(C=c).fit(inputs[rows], labels[rows])

  inner = list(StratifiedKFold(n_splits=min(INNER_FOLDS, int(counts.min())), shuffle=True,
                               random_state=seed).split(x, labels))
  mean_auc: dict[tuple[str, float], float] = {}
  held_out: dict[tuple[str, float], np.ndarray] = {}
  for name, columns in sets.items():
    inputs = x if columns is None else x[:, columns]
    scores: dict[float, list[float]] = {c: [] for c in C_GRID}
    for c in C_GRID:
      held_out[name, c] = np.zeros(len(labels))
    for train, held in inner:
      model = None
      for c in sorted(C_GRID):
        model = fit(inputs, c, train, model)
        held_out[name, c][held] = model.decision_function(inputs[held])
        scores[c].append(roc_auc_score(labels[held], held_out[name, c][held]))
    mean_auc.update({(name, c): float(np.mean(v)) for c, v in scores.items()})
  order = {name: i for i, name in enumerate(sets)}
  name, best = max(mean_auc, key=lambda k: (mean_auc[k], -order[k[0]], -k[1]))
  columns = sets[name]
  inputs = x if columns is None else x[:, columns]
  model = fit(inputs, best, np.arange(len(labels)))
  w = np.zeros(x.shape[1], np.float32)
  w[slice(None) if columns is None else columns] = model.coef_[0]
  result = {"w": w, "b": float(model.intercept_[0]), "C": float(best), "features": name,
            "inner_auc": {f"{k[0]} {k[1]:g}": a for k, a in mean_auc.items()},
            "offsets": (held_out[name, best] - model.decision_function(inputs)).astype(np.float32)}
  _FITTED[key] = result
  logger.info("linear path: %s, C %g (inner AUC %.3f)", name, best, mean_auc[name, best])
  return result


def with_linear_path(params: Mapping[str, Any], fitted: Mapping[str, Any]) -> dict[str, Any]:
  """`params` with the linear path set to the regression `fitted` (the softmax of its two logits
  `(-z/2, z/2)` is the regression's sigmoid of `z = w . x + b`) and the classifier's last layer
  zeroed."""
  current = params["linear_path"]
  w = np.asarray(fitted["w"], np.float32)
  if current["kernel"].shape != (w.size, 2):
    raise ValueError(f"a linear path of {w.size} inputs for a model whose path has "
                     f"{current['kernel'].shape[0]}")
  kernel = np.stack([-w / 2, w / 2], axis=1)
  bias = np.array([-fitted["b"] / 2, fitted["b"] / 2], np.float32)
  # The network's last layer starts at 0, so the model starts as the regression and the
  # network's contribution grows from nothing as it learns the residual.
  classifier = dict(params["classifier"])
  classifier["head_3"] = jax.tree.map(jnp.zeros_like, classifier["head_3"])
  return dict(params, classifier=classifier,
              linear_path={"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)})
