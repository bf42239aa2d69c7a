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
  - class-balanced L2 logistic regression (`eval.baselines.fit_logistic_grid`: scikit-learn's
    lbfgs, solved exactly in the span of the subjects) on the last scan's connection values,
    the logistic regression the `logreg_fc` baseline fits; with profile_change the change since
    the first visit is left to the network (a choice between the two input sets by inner CV
    picked the change set by chance on four of five real-BOLD cohorts and lost 0.01-0.05 AUC
    there: README). C from `C_GRID` is chosen by stratified inner cross-validation AUC on the
    training subjects (`INNER_FOLDS` folds; the validation split stays untouched for the
    network's epoch and threshold), then the regression is refitted on every training subject;
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
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stgnn_jax.eval.baselines import C_GRID, fit_logistic_grid

logger = logging.getLogger(__name__)

INNER_FOLDS = 3
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


def path_columns(node_features: str, num_nodes: int) -> np.ndarray | None:
  """The path's inputs among `last_visit_inputs`' columns: the last scan's connection values.
  With profile_change node features the change columns are left to the network (a mask);
  None: every column."""
  if node_features != "profile_change":
    return None
  profile = np.zeros((num_nodes, 2 * num_nodes), bool)
  profile[:, :num_nodes] = True
  return profile.ravel()


def fit_linear_path(x: np.ndarray, labels: np.ndarray, seed: int,
                    columns: np.ndarray | None = None) -> dict[str, Any]:
  """The class-balanced L2 logistic regression of `labels` on `x[:, columns]`
  (`last_visit_inputs`, `path_columns`), C chosen by inner cross-validated AUC on these
  subjects (ties: the stronger penalty).

  Returns {"w": [F] (0 outside `columns`), "b", "C", "inner_auc": {"C": AUC}, "offsets":
  [subjects]}: "offsets" is, per subject, its cross-fitted logit (from the inner fold that held
  it out, at the chosen C) minus the final regression's logit: the correction that makes the
  linear path enter the training loss at an honest, held-out value (`SubjectBatch.offset`).

  Raises ValueError when the subjects hold one class (no regression exists).
  """
  from sklearn.metrics import roc_auc_score
  from sklearn.model_selection import StratifiedKFold

  labels = np.asarray(labels)
  counts = np.bincount(labels, minlength=2)
  if counts.min() == 0:
    raise ValueError("the linear path needs both classes among the training subjects")
  key = hashlib.sha256(x.tobytes() + labels.tobytes() + repr(
      (x.shape, seed, None if columns is None else columns.tobytes())).encode()).hexdigest()
  if key in _FITTED:
    return _FITTED[key]
  inputs = x if columns is None else x[:, columns]
  grid = sorted(C_GRID)
  held_out = np.zeros((len(grid), len(labels)))
  scores: list[list[float]] = [[] for _ in grid]
  inner = StratifiedKFold(n_splits=min(INNER_FOLDS, int(counts.min())), shuffle=True,
                          random_state=seed)
  for train, held in inner.split(inputs, labels):
    # The inputs are the model's own standardised features: no second standardisation.
    models = fit_logistic_grid(inputs[train], labels[train], grid, standardize=False)
    for i, model in enumerate(models):
      held_out[i, held] = model.decision_function(inputs[held])
      scores[i].append(roc_auc_score(labels[held], held_out[i, held]))
  mean_auc = [float(np.mean(s)) for s in scores]
  best = max(range(len(grid)), key=lambda i: (mean_auc[i], -grid[i]))
  [model] = fit_logistic_grid(inputs, labels, [grid[best]], standardize=False)
  w = np.zeros(x.shape[1], np.float32)
  w[slice(None) if columns is None else columns] = model.w
  result = {"w": w, "b": model.b, "C": grid[best],
            "inner_auc": {f"{c:g}": a for c, a in zip(grid, mean_auc, strict=True)},
            "offsets": (held_out[best] - model.decision_function(inputs)).astype(np.float32)}
  _FITTED[key] = result
  logger.info("linear path: C %g (inner AUC %.3f)", grid[best], mean_auc[best])
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
