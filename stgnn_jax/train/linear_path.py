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
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stgnn_jax.config.model import LINEAR_PATH_CHANGE, NETWORK_GATES
from stgnn_jax.eval.baselines import C_GRID, fit_logistic_grid
from stgnn_jax.eval.metrics import auc_or_none, balanced_threshold, paired_auc_z, softmax_p1
from stgnn_jax.train.fold_result import PATH_ALONE

logger = logging.getLogger(__name__)

INNER_FOLDS = 3
# What a fold's result records of the fitted path (`fit_linear_path`'s keys).
PATH_RECORD = ("C", "inner_auc", "change_weight", "change_z", "C_change", "inner_auc_change")
# DeLong's paired z that the trained network's validation AUC must reach over the path alone's
# for the network to be tested (`ModelConfig.network_gate` "evidence"): the one-sided 5 % level.
# The selected epoch is the best of many on a split with a handful of converters, so its
# validation AUC is biased upwards; a gain that is not significant at this level is noise (README,
# "A gate between the network and the path").
NETWORK_MIN_Z = 1.645
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
  """The last scan's connection values among `last_visit_inputs`' columns (a mask): with
  profile_change node features, the other columns are the change since the first visit;
  None: every column is the last scan's."""
  if node_features != "profile_change":
    return None
  profile = np.zeros((num_nodes, 2 * num_nodes), bool)
  profile[:, :num_nodes] = True
  return profile.ravel()


def _cross_validated_fit(inputs: np.ndarray, labels: np.ndarray,
                         splits: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
  """One input set's regression: C by the inner folds' mean held-out AUC (ties: the stronger
  penalty), the held-out logits at that C, and the refit on every subject."""
  from sklearn.metrics import roc_auc_score

  grid = sorted(C_GRID)
  held_out = np.zeros((len(grid), len(labels)))
  scores: list[list[float]] = [[] for _ in grid]
  for train, held in splits:
    # The inputs are the model's own standardised features: no second standardisation.
    models = fit_logistic_grid(inputs[train], labels[train], grid, standardize=False)
    for i, model in enumerate(models):
      held_out[i, held] = model.decision_function(inputs[held])
      scores[i].append(roc_auc_score(labels[held], held_out[i, held]))
  mean_auc = [float(np.mean(s)) for s in scores]
  best = max(range(len(grid)), key=lambda i: (mean_auc[i], -grid[i]))
  [model] = fit_logistic_grid(inputs, labels, [grid[best]], standardize=False)
  spread = float(np.std(held_out[best]))
  return {"C": grid[best], "inner_auc": {f"{c:g}": a for c, a in zip(grid, mean_auc,
                                                                     strict=True)},
          "held_out": held_out[best], "model": model, "spread": spread if spread > 0 else 1.0}


def change_weight(z: float) -> float:
  """The change's share of the path, Phi(z / 2) for DeLong's z of its gain in held-out AUC:
  1/2 without evidence either way, 0.84 at z = 2, 0.98 at z = 4."""
  return 0.5 * (1.0 + math.erf(z / (2.0 * math.sqrt(2.0))))


def fit_linear_path(x: np.ndarray, labels: np.ndarray, seed: int,
                    columns: np.ndarray | None = None, change: str = "evidence"
                    ) -> dict[str, Any]:
  """The linear path fitted on these subjects (`x` from `last_visit_inputs`, `columns` from
  `path_columns`): class-balanced L2 logistic regressions, C by inner cross-validated AUC.

  `change` (`ModelConfig.linear_path_change`) says how the change since the first visit (the
  columns outside `columns`) enters: "never" (the last scan's regression alone), "always"
  (the regression on every column, `logreg_change`'s inputs) or "evidence" (both, mixed by the
  evidence for the change, the module docstring). Without change columns (`columns` None) the
  path is the regression on every column whatever `change` says.

  Returns {"w": [F], "b", "C", "inner_auc": {"C": AUC}, "offsets": [subjects]} and with both
  regressions also "change_weight", "change_z", "C_change", "inner_auc_change". "offsets" is,
  per subject, its cross-fitted path logit (from the inner fold that held it out, at the chosen
  C) minus the final path's logit: the correction that makes the path enter the training loss
  at an honest, held-out value (`SubjectBatch.offset`).

  Raises ValueError when the subjects hold one class (no regression exists).
  """
  from sklearn.model_selection import StratifiedKFold

  if change not in LINEAR_PATH_CHANGE:
    raise ValueError(f"change={change!r}: pass one of {', '.join(LINEAR_PATH_CHANGE)}")
  labels = np.asarray(labels)
  counts = np.bincount(labels, minlength=2)
  if counts.min() == 0:
    raise ValueError("the linear path needs both classes among the training subjects")
  key = hashlib.sha256(x.tobytes() + labels.tobytes() + repr(
      (x.shape, seed, change, None if columns is None else columns.tobytes())).encode()
  ).hexdigest()
  if key in _FITTED:
    return _FITTED[key]
  splits = list(StratifiedKFold(n_splits=min(INNER_FOLDS, int(counts.min())), shuffle=True,
                                random_state=seed).split(x, labels))
  # Each input set: its regression and the mask of its columns (None: every column).
  sets: dict[str, np.ndarray | None] = {}
  if columns is None or change == "always":
    sets["path"] = None
  else:
    sets["last"] = columns
    if change == "evidence":
      sets["last_change"] = None
  fits = {name: _cross_validated_fit(x if cols is None else x[:, cols], labels, splits)
          for name, cols in sets.items()}
  # Each regression's weight in the path: with two, each logit divided by the spread of its
  # held-out logits, mixed by the change's weight, and rescaled by the mixed spread.
  if len(fits) == 1:
    shares = {name: 1.0 for name in fits}
    z = None
  else:
    first, second = fits["last"], fits["last_change"]
    z = paired_auc_z(labels, first["held_out"], second["held_out"])
    weight = change_weight(z)
    scale = (1 - weight) * first["spread"] + weight * second["spread"]
    shares = {"last": scale * (1 - weight) / first["spread"],
              "last_change": scale * weight / second["spread"]}
  w = np.zeros(x.shape[1], np.float64)
  b = 0.0
  held = np.zeros(len(labels))
  final = np.zeros(len(labels))
  for name, fit in fits.items():
    cols = sets[name]
    part = np.zeros(x.shape[1])
    part[slice(None) if cols is None else cols] = fit["model"].w
    w += shares[name] * part
    b += shares[name] * float(fit["model"].b)
    held += shares[name] * fit["held_out"]
    final += shares[name] * fit["model"].decision_function(x if cols is None else x[:, cols])
  main = fits.get("last", fits.get("path"))
  assert main is not None
  result: dict[str, Any] = {"w": w.astype(np.float32), "b": b, "C": main["C"],
                            "inner_auc": main["inner_auc"],
                            "offsets": (held - final).astype(np.float32)}
  if z is not None:
    result.update(change_weight=change_weight(z), change_z=z, C_change=fits["last_change"]["C"],
                  inner_auc_change=fits["last_change"]["inner_auc"])
    logger.info("linear path: C %g (inner AUC %.3f), with the change C %g (%.3f); DeLong z %.2f, "
                "the change's weight %.2f", main["C"], main["inner_auc"][f"{main['C']:g}"],
                result["C_change"], result["inner_auc_change"][f"{result['C_change']:g}"], z,
                result["change_weight"])
  else:
    logger.info("linear path: C %g (inner AUC %.3f)", main["C"],
                main["inner_auc"][f"{main['C']:g}"])
  _FITTED[key] = result
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
  return dict(path_alone(params),
              linear_path={"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)})


def path_alone(params: Mapping[str, Any]) -> dict[str, Any]:
  """`params` (one model's, or a sweep's stacked members') with the network's share of the
  logits removed, its last layer zeroed: the linear path alone, as every fold starts."""
  classifier = dict(params["classifier"])
  classifier["head_3"] = jax.tree.map(jnp.zeros_like, classifier["head_3"])
  return dict(params, classifier=classifier)


def gate_network(rule: str, labels: np.ndarray, network: np.ndarray, path: np.ndarray,
                 choose_threshold: bool) -> dict[str, Any]:
  """Which model a fold tests (`ModelConfig.network_gate`), from the validation logits of its
  selected network (`network`, `[subjects, 2]`) and of its path alone (`path`).

  "evidence" keeps the network when DeLong's paired z of its AUC over the path's reaches
  `NETWORK_MIN_Z`; a split with fewer than two subjects of a class gives no evidence (z None),
  so the path alone is tested.
  Returns {"rule", "tested": "network" | "path_alone", "z", "val_auc_network", "val_auc_path",
  "path_threshold"}: the AUCs None without both classes, and "path_threshold" the path's
  own validation threshold (`metrics.balanced_threshold`) with `choose_threshold`, else None.
  """
  if rule not in NETWORK_GATES:
    raise ValueError(f"rule={rule!r}: pass one of {', '.join(NETWORK_GATES)}")
  labels = np.asarray(labels)
  # Ranked by the logit margin: the probabilities' order without their rounding to 1.
  margins = [np.asarray(x, np.float64) @ np.array([-1.0, 1.0]) for x in (network, path)]
  # DeLong's variance needs two subjects of each class (one gives NaN): no evidence either way.
  z = (paired_auc_z(labels, margins[1], margins[0])
       if np.bincount(labels, minlength=2).min() >= 2 else None)
  keep = rule == "always" or (rule == "evidence" and z is not None and z >= NETWORK_MIN_Z)
  return {"rule": rule, "tested": "network" if keep else PATH_ALONE, "z": z,
          "val_auc_network": auc_or_none(labels, margins[0]),
          "val_auc_path": auc_or_none(labels, margins[1]),
          "path_threshold": (balanced_threshold(labels, softmax_p1(path))
                             if choose_threshold else None)}
