"""Study: a linear-path rule that takes the change since the first visit only where it helps.

The default recipe's linear path (`stgnn_jax/train/linear_path.py`) is the class-balanced L2
logistic regression of the last scan (`logreg_fc`'s input); `logreg_change` (the last scan beside
its change since the first visit) beats it by more than 0.03 test AUC on four cohorts of the
suite and loses to it by as much on others, where the change adds only noise (issue 19). This
script compares, with scikit-learn alone (no network), rules that fit a linear path on a fold's
training subjects and are judged by their test AUC against max(`logreg_fc`, `logreg_change`) on
the same folds, the folds of the default runs (`bench.learnability.baselines_only`).

Protocol, as `train.linear_path.fit_linear_path` fits the path: per fold, the training split's
subjects T (the validation split is left to the network) and their features, standardised on T
(`--inputs baseline`: `baseline_features`' upper(last) and upper(last) - upper(first), each
column standardised on T; `--inputs model`: the model's own inputs, `last_visit_inputs` of the
profile_change node features with the fold's input statistics); the change block is multiplied
by s (s = 0: the last scan alone, s = 1: `logreg_change`'s features, 0 < s < 1: the change
penalised s^-2 times more heavily); for each s of --s_grid (`S_GRID`), `fit_logistic_grid` over
`C_GRID` in stratified 3-fold inner cross-validation on T, repeated `--repeats` times (repeat 0
is the split `fit_linear_path` uses, `random_state = seed + fold`), and once on all of T. The
inner held-out logits and AUCs and the full fits' test logits are all any rule needs, so they
are cached per cohort (WORK_DIR/linear_path_study/<inputs>-seed<S>[-s<grid>]/<cohort>.npz, the
baselines' fold AUCs in <cohort>.json, written last): a rerun recomputes nothing, and a new rule
costs no fit. Every fit is solved in the span of the fold's training rows, from the Gram
matrices of the two blocks (`reduced_inputs`): the same regression `fit_logistic_grid` finds on
the full features, and the change's weight s only rescales one Gram matrix.

The rules (`rules`; C always by the inner CV's mean AUC, ties to the stronger penalty):
  a  last: s = 0 (the current path; `logreg_fc`'s features, C by inner CV);
  b  change: s = 1 (`logreg_change`'s features);
  c  select: a or b by the better inner-CV AUC (the attempt that failed on real BOLD);
  d  mean: the mean of a's and b's logits (d_z: each divided by its inner held-out logits' std);
  e  stacking on a's and b's inner held-out logits: e_lr a logistic regression, e_cvx a convex
     weight (0, 0.1, ..., 1) on the std-scaled logits chosen by inner AUC;
  f  joint: one regression on [last, s * change], s of {0, 0.25, 0.5, 1} and C by inner CV;
     f_s<v>: s fixed at v, C by inner CV;
  g  switch: b only when its inner-CV AUC exceeds a's by more than a margin, otherwise a;
     g_se: b only when the mean of the paired inner-fold differences exceeds its standard error;
  h  weighting by the evidence for the change: z = DeLong's paired statistic of AUC(b) - AUC(a)
     on the training subjects' cross-fitted logits (each model at its chosen C, divided by the
     logits' std), and h_k<k> the path (1 - w) a + w b on std-scaled logits with w = Phi(z / k)
     (k = 1: the normal approximation of the probability that b ranks better); h_sw2 b if
     z > 2 else a; h_hedge2 b if z > 2, a if z <= 0, their mean between;
and `_r<R>` after a name: the choice made on R repeats of the inner CV (5 by default) instead of
one (h: the held-out logits averaged over the repeats). The table gives each rule's test AUC
(mean ± std over the folds) per cohort, and per rule the worst and mean gap to
max(`logreg_fc`, `logreg_change`) over the cohorts, and the fits it costs.

  PYTHONPATH=. python -m bench.linear_path_study          # 13 cohorts, seed 42: 30-40 min (2 cores)
  PYTHONPATH=. python -m bench.linear_path_study --seed 7 # the same on other folds
  PYTHONPATH=. python -m bench.linear_path_study --inputs model --s_grid 0,1  # the path's inputs
  PYTHONPATH=. python -m bench.linear_path_study --rules a,b,h_k2   # a few rules (cache: seconds)

The report goes to WORK_DIR/linear_path_study[-seed<S>][-model][-s<grid>].md (and .json); the
cohorts are read from --data_root (written by `bench.learnability --cohorts_only`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench.learnability import full_suite, load_average, write_json, write_text
from stgnn_jax.eval.baselines import C_GRID, baseline_features, fit_logistic_grid
from stgnn_jax.eval.metrics import paired_auc_z

S_GRID = (0.0, 0.25, 0.5, 1.0, 2.0)
JOINT_S = (0.0, 0.25, 0.5, 1.0)     # rule f's choices of s (2.0 only in f_ext)
INNER_FOLDS = 3                     # as train.linear_path
REPEAT_STRIDE = 10007               # repeat r's inner split: random_state = seed + fold + r * this
CACHE_VERSION = 1
GAP_LIMIT = 0.03                    # issue 19: the default within 0.03 AUC of the best baseline
# README, "The suite beside the longitudinal baseline `logreg_change`" (seed 42): the default
# recipe's test AUC and the two baselines', to check that the folds here are the runs' folds.
README_SEED42 = {
    "bold-decoupling": (0.830, 0.838, 0.863), "bold-synchrony": (0.875, 0.870, 0.850),
    "bold-coupling": (0.845, 0.834, 0.790), "bold-distributed": (0.875, 0.869, 0.800),
    "generated-distributed": (0.864, 0.886, 0.787), "trajectory": (0.802, 0.644, 0.866),
    "strength": (0.941, 0.929, 0.988), "density": (0.963, 0.962, 0.982),
    "rewiring": (0.935, 0.896, 0.959), "regions": (0.972, 0.941, 0.983),
    "strength-static": (0.948, 0.947, 0.935), "null": (0.460, 0.463, 0.456),
    "density-200": (0.938, 0.886, 0.971),
}


# --- Fits ---------------------------------------------------------------------------------------

def auc(y: np.ndarray, scores: np.ndarray) -> float:
  """ROC AUC of `scores` for the 0/1 labels `y` (both present), ties counted half: the
  Mann-Whitney statistic, without scikit-learn's per-call checks (thousands of calls here)."""
  _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
  ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # average 1-based ranks
  positives = int(np.sum(y == 1))
  negatives = len(y) - positives
  return float((ranks[y == 1].sum() - positives * (positives + 1) / 2)
               / (positives * negatives))


def reduced_inputs(gram: np.ndarray, rows: np.ndarray, others: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
  """The coordinates, in an orthonormal basis of the span of the training rows `rows`, of those
  rows and of the rows `others`, from the Gram matrix `gram` = Z Z^T of every row.

  With Z_rows = U S V^T, the basis V (`baselines.row_space`) gives Z_rows V = U S and
  Z_others V = gram[others, rows] U S^-1: a logistic regression on these coordinates (L2 on the
  coefficients = L2 on the weights in feature space) is `fit_logistic_grid`'s on Z itself."""
  values, vectors = np.linalg.eigh(gram[np.ix_(rows, rows)])
  keep = values > max(values.max(), 0.0) * 1e-12
  vectors, root = vectors[:, keep], np.sqrt(values[keep])
  return vectors * root, gram[np.ix_(others, rows)] @ vectors / root


def fold_inputs(setup: Any, fold: Any, inputs: str) -> tuple[np.ndarray, np.ndarray]:
  """`(last, change)` `[T + test subjects, F]`: the fold's training then test subjects' last-scan
  and change blocks, standardised on the training subjects (see the module docstring)."""
  train, test = np.asarray(fold.train), np.asarray(fold.test)
  order = np.concatenate([train, test])
  if inputs == "baseline":
    features = baseline_features(setup.subjects.last_fc, setup.subjects.first_fc)
    x = features["logreg_change"][order]
    mean, std = x[:len(train)].mean(axis=0), x[:len(train)].std(axis=0)
    z = (x - mean) * np.where(std > 0, 1 / np.where(std > 0, std, 1), 0.0)
    half = x.shape[1] // 2
    return z[:, :half], z[:, half:]
  from stgnn_jax.train.linear_path import last_visit_inputs, path_columns
  from stgnn_jax.train.state import input_statistics

  subjects = setup.subjects.for_fold(train)
  stats = input_statistics([subjects.features[i] for i in train])
  z = last_visit_inputs([subjects.features[i] for i in order], stats)
  profile = path_columns("profile_change", setup.cohort.num_nodes)
  assert profile is not None
  return z[:, profile], z[:, ~profile]


def fit_fold(last: np.ndarray, change: np.ndarray, y: np.ndarray, num_train: int, seed: int,
             repeats: int, s_grid: Sequence[float] = S_GRID) -> dict[str, np.ndarray]:
  """Every fit one fold's rules need (`last`, `change` from `fold_inputs`, `y` their labels).

  Returns {"s_grid" [S], "y_train" [n], "y_test" [m], "inner_fold" [R, n] (which inner fold
  holds each training subject out, per repeat), "inner_auc" [S, R, C, K] (held-out AUC per
  inner fold), "oof" [S, R, C, n] (cross-fitted logits), "test" [S, C, m] (the fit on every
  training subject's test logits)}, S over `s_grid`, C over `C_GRID` (ascending)."""
  from sklearn.model_selection import StratifiedKFold

  grid = sorted(C_GRID)
  y_train, y_test = y[:num_train], y[num_train:]
  train, test = np.arange(num_train), np.arange(num_train, len(y))
  gram_last, gram_change = last @ last.T, change @ change.T
  splits = int(min(INNER_FOLDS, np.bincount(y_train, minlength=2).min()))
  inner = [list(StratifiedKFold(n_splits=splits, shuffle=True,
                                random_state=seed + r * REPEAT_STRIDE).split(train, y_train))
           for r in range(repeats)]
  inner_fold = np.zeros((repeats, num_train), np.int8)
  for r, folds in enumerate(inner):
    for k, (_, held) in enumerate(folds):
      inner_fold[r, held] = k
  inner_auc = np.zeros((len(s_grid), repeats, len(grid), splits))
  oof = np.zeros((len(s_grid), repeats, len(grid), num_train), np.float32)
  test_logits = np.zeros((len(s_grid), len(grid), len(test)), np.float32)
  for i, s in enumerate(s_grid):
    gram = gram_last + s * s * gram_change
    fit_x, test_x = reduced_inputs(gram, train, test)
    models = fit_logistic_grid(fit_x, y_train, grid, standardize=False)
    test_logits[i] = [m.decision_function(test_x) for m in models]
    for r, folds in enumerate(inner):
      for k, (fit, held) in enumerate(folds):
        fit_x, held_x = reduced_inputs(gram, fit, held)
        for j, model in enumerate(fit_logistic_grid(fit_x, y_train[fit], grid,
                                                    standardize=False)):
          oof[i, r, j, held] = model.decision_function(held_x)
          inner_auc[i, r, j, k] = auc(y_train[held], oof[i, r, j, held])
  return {"s_grid": np.asarray(s_grid, np.float64), "y_train": y_train, "y_test": y_test,
          "inner_fold": inner_fold, "inner_auc": inner_auc, "oof": oof, "test": test_logits}


def cohort_fits(name: str, data_root: str, cache_dir: str, seed: int, inputs: str,
                repeats: int, s_grid: Sequence[float] = S_GRID
                ) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
  """The folds' fits (`fit_fold`) and `{"baselines": {name: [fold test AUCs]}, "wall_s"}` of
  one cohort, from the cache when it holds them for these settings, else computed and cached."""
  meta = {"version": CACHE_VERSION, "seed": seed, "inputs": inputs, "repeats": repeats,
          "s_grid": [float(v) for v in s_grid], "c_grid": sorted(C_GRID), "data_root": data_root}
  npz_path = os.path.join(cache_dir, f"{name}.npz")
  json_path = os.path.join(cache_dir, f"{name}.json")
  if os.path.isfile(json_path) and os.path.isfile(npz_path):
    with open(json_path) as f:
      cached = json.load(f)
    if cached.get("meta") == meta:
      with np.load(npz_path) as arrays:
        count = int(arrays["num_folds"])
        fits = [{"s_grid": np.asarray(s_grid, np.float64),
                 **{key: arrays[f"f{k}_{key}"] for key in
                    ("y_train", "y_test", "inner_fold", "inner_auc", "oof", "test")}}
                for k in range(count)]
      return fits, cached
  from threadpoolctl import threadpool_limits  # a scikit-learn dependency

  from stgnn_jax.config import ModelConfig, OptimConfig, RunConfig
  from stgnn_jax.eval import baselines
  from stgnn_jax.train.cross_validation import prepare_run

  started = time.perf_counter()
  setup = prepare_run(ModelConfig(), OptimConfig(), RunConfig(data_root=data_root, seed=seed))
  fits = []
  with threadpool_limits(limits=1, user_api="blas"):
    fitted = baselines.run_baselines(
        setup.subjects.last_fc, setup.subjects.labels, setup.folds,
        first_fc=setup.subjects.first_fc, decision_threshold=setup.run.decision_threshold)
    baseline_s = time.perf_counter() - started
    for k, fold in enumerate(setup.folds):
      last, change = fold_inputs(setup, fold, inputs)
      y = setup.subjects.labels[np.concatenate([fold.train, fold.test])].astype(np.int64)
      fits.append(fit_fold(last, change, y, len(fold.train), setup.run.seed + k, repeats,
                           s_grid))
  os.makedirs(cache_dir, exist_ok=True)
  arrays = {f"f{k}_{key}": value for k, fit in enumerate(fits) for key, value in fit.items()}
  tmp = npz_path + ".tmp.npz"
  np.savez_compressed(tmp, num_folds=len(fits), **arrays)
  os.replace(tmp, npz_path)
  cached = {"meta": meta,
            "baselines": {b: [f["test_auc"] for f in fitted[b]["folds"]] for b in fitted},
            "baselines_s": baseline_s, "wall_s": time.perf_counter() - started}
  write_json(json_path, cached)  # last: marks the cohort done
  return fits, cached


# --- Rules --------------------------------------------------------------------------------------

Fit = dict[str, np.ndarray]
Rule = Callable[[Fit], np.ndarray]


def s_index(fit: Fit, s: float) -> int:
  return [float(v) for v in fit["s_grid"]].index(s)


def mean_auc(fit: Fit, s: float, repeats: int) -> np.ndarray:
  """`[C]` the inner CV's mean held-out AUC at s over its first `repeats` repeats."""
  return fit["inner_auc"][s_index(fit, s), :repeats].mean(axis=(0, 2))


def best_c(fit: Fit, s: float, repeats: int) -> tuple[int, float]:
  """(index into the ascending C grid, its inner AUC): the best, ties to the smaller C."""
  aucs = mean_auc(fit, s, repeats)
  j = int(np.argmax(aucs))  # the first of equal maxima: the smaller C, as fit_linear_path
  return j, float(aucs[j])


def test_logits(fit: Fit, s: float, repeats: int) -> np.ndarray:
  """The test logits of the fit on every training subject at s and its chosen C."""
  return fit["test"][s_index(fit, s), best_c(fit, s, repeats)[0]].astype(np.float64)


def oof_logits(fit: Fit, s: float, repeats: int) -> np.ndarray:
  """`[repeats, n]` the cross-fitted logits at s and its chosen C, per repeat."""
  return fit["oof"][s_index(fit, s), :repeats, best_c(fit, s, repeats)[0]].astype(np.float64)


def scaled_logits(fit: Fit, s: float, repeats: int) -> tuple[np.ndarray, np.ndarray]:
  """(held-out, test) logits at s divided by the held-out logits' std (the mean over repeats):
  the held-out ones averaged over the repeats (each repeat's divided by its own std first)."""
  held = oof_logits(fit, s, repeats)
  spread = held.std(axis=1, keepdims=True)
  return (held / spread).mean(axis=0), test_logits(fit, s, repeats) / float(spread.mean())


def change_evidence(fit: Fit, repeats: int) -> tuple[float, np.ndarray, np.ndarray]:
  """(z, a's scaled test logits, b's): z the DeLong statistic of b's cross-fitted AUC over a's
  on the training subjects, from their repeat-averaged scaled held-out logits."""
  held_a, test_a = scaled_logits(fit, 0.0, repeats)
  held_b, test_b = scaled_logits(fit, 1.0, repeats)
  return paired_auc_z(fit["y_train"], held_a, held_b), test_a, test_b


def normal_cdf(x: float) -> float:
  return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def evidence_weight(kappa: float, repeats: int) -> Rule:
  """(1 - w) a + w b on std-scaled logits, w = Phi(z / kappa): with kappa = 1 the normal
  approximation of the probability that b ranks the subjects better than a."""
  def rule(fit: Fit) -> np.ndarray:
    z, a, b = change_evidence(fit, repeats)
    w = normal_cdf(z / kappa)
    return (1 - w) * a + w * b
  return rule


def evidence_switch(threshold: float, repeats: int, hedge: bool) -> Rule:
  """b when DeLong's z exceeds `threshold`; else a, or (`hedge`) the mean of the scaled logits
  when 0 < z <= threshold."""
  def rule(fit: Fit) -> np.ndarray:
    z, a, b = change_evidence(fit, repeats)
    if z > threshold:
      return b
    return (a + b) / 2 if hedge and z > 0 else a
  return rule


def joint(choices: Sequence[float], repeats: int) -> Rule:
  """s (and its C) by the best inner AUC among `choices`; ties to the smaller s."""
  def rule(fit: Fit) -> np.ndarray:
    scores = [best_c(fit, s, repeats)[1] for s in choices]
    return test_logits(fit, choices[int(np.argmax(scores))], repeats)
  return rule


def fixed(s: float) -> Rule:
  return lambda fit: test_logits(fit, s, 1)


def switch(margin: float, repeats: int) -> Rule:
  """b when its inner AUC exceeds a's by more than `margin`, else a."""
  def rule(fit: Fit) -> np.ndarray:
    gain = best_c(fit, 1.0, repeats)[1] - best_c(fit, 0.0, repeats)[1]
    return test_logits(fit, 1.0 if gain > margin else 0.0, repeats)
  return rule


def switch_se(repeats: int) -> Rule:
  """b when the mean paired difference of the inner folds' AUCs (each at its best C) exceeds
  its standard error over the R x K inner folds, else a."""
  def rule(fit: Fit) -> np.ndarray:
    a = fit["inner_auc"][s_index(fit, 0.0), :repeats, best_c(fit, 0.0, repeats)[0]]
    b = fit["inner_auc"][s_index(fit, 1.0), :repeats, best_c(fit, 1.0, repeats)[0]]
    diff = (b - a).ravel()
    return test_logits(fit, 1.0 if diff.mean() > diff.std(ddof=1) / np.sqrt(diff.size)
                       else 0.0, repeats)
  return rule


def mean_rule(scaled: bool) -> Rule:
  """a's and b's logits averaged (`scaled`: each divided by the std of its held-out logits)."""
  def rule(fit: Fit) -> np.ndarray:
    if scaled:
      return (scaled_logits(fit, 0.0, 1)[1] + scaled_logits(fit, 1.0, 1)[1]) / 2
    return (test_logits(fit, 0.0, 1) + test_logits(fit, 1.0, 1)) / 2
  return rule


def stack_lr(fit: Fit) -> np.ndarray:
  """A class-balanced logistic regression (C = 1) on a's and b's std-scaled cross-fitted logits
  (one inner CV), applied to their full fits' scaled test logits."""
  from sklearn.linear_model import LogisticRegression

  (held_a, test_a), (held_b, test_b) = scaled_logits(fit, 0.0, 1), scaled_logits(fit, 1.0, 1)
  model = LogisticRegression(class_weight="balanced", C=1.0).fit(
      np.stack([held_a, held_b], axis=1), fit["y_train"])
  return np.stack([test_a, test_b], axis=1) @ model.coef_[0]


def stack_convex(repeats: int) -> Rule:
  """alpha a + (1 - alpha) b on std-scaled logits, alpha of 0, 0.1, ..., 1 by the mean inner-fold
  AUC of the combined held-out logits over `repeats` repeats; ties to the larger alpha (a)."""
  alphas = np.linspace(1.0, 0.0, 11)

  def rule(fit: Fit) -> np.ndarray:
    y = fit["y_train"]
    aucs = np.zeros(len(alphas))
    held_a, held_b = oof_logits(fit, 0.0, repeats), oof_logits(fit, 1.0, repeats)
    for r in range(repeats):
      a, b = held_a[r] / held_a[r].std(), held_b[r] / held_b[r].std()
      for k in np.unique(fit["inner_fold"][r]):
        held = fit["inner_fold"][r] == k
        aucs += [auc(y[held], (w * a + (1 - w) * b)[held]) for w in alphas]
    w = alphas[int(np.argmax(aucs))]
    return w * scaled_logits(fit, 0.0, repeats)[1] + (1 - w) * scaled_logits(fit, 1.0, repeats)[1]
  return rule


def rules(repeats: int, s_grid: Sequence[float] = S_GRID
          ) -> dict[str, tuple[str, int, Rule]]:
  """Every rule `s_grid` allows, by name: (description, grid fits per fold (each a fit per C of
  `C_GRID`), fold fits -> test scores). R-repeat variants for `repeats` > 1."""
  once, many = INNER_FOLDS + 1, INNER_FOLDS * repeats + 1  # grid fits per feature set
  found: dict[str, tuple[str, int, Rule]] = {
      "a": ("last scan only (the current path)", once, fixed(0.0)),
      "b": ("[last, change] (logreg_change's features)", once, fixed(1.0)),
      "c": ("a or b by inner-CV AUC", 2 * once, joint((0.0, 1.0), 1)),
      "d": ("mean of a's and b's logits", 2 * once, mean_rule(scaled=False)),
      "d_z": ("mean of a's and b's std-scaled logits", 2 * once, mean_rule(scaled=True)),
      "e_lr": ("stacking: logistic regression on a's, b's held-out logits", 2 * once, stack_lr),
      "e_cvx": ("stacking: convex weight on a's, b's held-out logits", 2 * once,
                stack_convex(1)),
      "f": ("[last, s change], s of 0/.25/.5/1 and C by inner CV", 4 * once,
            joint(JOINT_S, 1)),
      "f_ext": ("[last, s change], s of 0/.25/.5/1/2 and C by inner CV", 5 * once,
                joint(S_GRID, 1)),
      "f_pos": ("[last, s change], s of .25/.5/1 and C by inner CV", 3 * once,
                joint(JOINT_S[1:], 1)),
      **{f"f_s{s:g}": (f"[last, {s:g} change], C by inner CV", once, fixed(s))
         for s in (0.25, 0.5)},
      **{f"g{m:g}": (f"b if its inner AUC exceeds a's by > {m:g}", 2 * once, switch(m, 1))
         for m in (0.01, 0.02, 0.05)},
      **{f"h_k{k:g}": (f"(1 - w) a + w b, std-scaled, w = Phi(z / {k:g}), z DeLong's on the "
                       "held-out logits", 2 * once, evidence_weight(k, 1))
         for k in (1.0, 1.5, 2.0, 3.0)},
      "h_sw2": ("b if DeLong's z > 2, else a", 2 * once, evidence_switch(2.0, 1, hedge=False)),
      "h_hedge2": ("b if z > 2, mean of the scaled logits if 0 < z <= 2, else a", 2 * once,
                   evidence_switch(2.0, 1, hedge=True)),
  }
  if repeats > 1:
    r = f"_r{repeats}"
    found.update({
        f"c{r}": (f"c on {repeats} inner-CV repeats", 2 * many, joint((0.0, 1.0), repeats)),
        f"e_cvx{r}": (f"e_cvx on {repeats} inner-CV repeats", 2 * many, stack_convex(repeats)),
        f"f{r}": (f"f on {repeats} inner-CV repeats", 4 * many, joint(JOINT_S, repeats)),
        f"f_pos{r}": (f"f_pos on {repeats} inner-CV repeats", 3 * many,
                      joint(JOINT_S[1:], repeats)),
        **{f"g{m:g}{r}": (f"g{m:g} on {repeats} inner-CV repeats", 2 * many, switch(m, repeats))
           for m in (0.01, 0.02)},
        f"g_se{r}": (f"b if its paired inner-fold gain > 1 SE ({repeats} repeats)", 2 * many,
                     switch_se(repeats)),
        **{f"h_k{k:g}{r}": (f"h_k{k:g} on {repeats} inner-CV repeats (held-out logits "
                            "averaged)", 2 * many, evidence_weight(k, repeats))
           for k in (1.0, 1.5, 2.0, 3.0)},
        f"h_sw2{r}": (f"h_sw2 on {repeats} inner-CV repeats", 2 * many,
                      evidence_switch(2.0, repeats, hedge=False)),
        f"h_hedge2{r}": (f"b if z > 2, mean of the scaled logits if 0 < z <= 2, else a "
                         f"({repeats} repeats)", 2 * many,
                         evidence_switch(2.0, repeats, hedge=True)),
    })
  grid = {float(s) for s in s_grid}
  needs = {"b": {1.0}, "f": set(JOINT_S), "f_ext": set(S_GRID), "f_pos": set(JOINT_S[1:])}
  return {name: value for name, value in found.items()
          if needs.get(name.split("_r")[0], {1.0}) | {0.0} <= grid
          and not (name.startswith("f_s") and float(name[3:]) not in grid)}


def rule_aucs(fits: list[Fit], rule: Rule) -> list[float]:
  from stgnn_jax.eval.metrics import auc_or_none

  aucs = [auc_or_none(fit["y_test"], rule(fit)) for fit in fits]
  return [a for a in aucs if a is not None]


# --- Report -------------------------------------------------------------------------------------

def cell(values: Sequence[float]) -> str:
  return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "n/a"


def build_report(results: dict[str, dict[str, Any]], names: list[str],
                 described: dict[str, tuple[str, int]], header: list[str]
                 ) -> tuple[str, dict[str, Any]]:
  """The markdown report and its JSON: per rule its AUC on each cohort, then its gaps."""
  cohorts = list(results)
  best, readme_marks = {}, {}
  for cohort in cohorts:
    row = results[cohort]
    means = [float(np.mean(row["baselines"][b])) for b in ("logreg_fc", "logreg_change")]
    best[cohort] = max(means)
    readme = row.get("readme") or (None, None, None)
    readme_marks[cohort] = ["" if expected is None or round(m, 3) == expected else
                            f" [{expected:.3f}]"
                            for m, expected in zip(means, readme[1:], strict=True)]
  gaps = {n: {c: float(np.mean(results[c]["rules"][n])) - best[c] for c in cohorts}
          for n in names}
  order = sorted(names, key=lambda n: (-min(gaps[n].values()), -np.mean(list(gaps[n].values()))))
  lines = [*header, "", "Test AUC, mean ± std over the folds, of each rule on each cohort; best = "
           "max(logreg_fc, logreg_change) (README's seed-42 means in brackets where they differ); "
           f"bold: more than {GAP_LIMIT} below best. Rules by their worst gap.", "",
           "| rule | " + " | ".join(cohorts) + " |", "|---|" + "---:|" * len(cohorts)]
  for i, baseline in enumerate(("logreg_fc", "logreg_change")):
    lines.append(f"| {baseline} | " + " | ".join(
        cell(results[c]["baselines"][baseline]) + readme_marks[c][i] for c in cohorts) + " |")
  lines.append("| best | " + " | ".join(f"{best[c]:.3f}" for c in cohorts) + " |")
  for n in order:
    cells = [cell(results[c]["rules"][n]) for c in cohorts]
    lines.append(f"| {n} | " + " | ".join(
        f"**{text}**" if gaps[n][c] < -GAP_LIMIT else text
        for text, c in zip(cells, cohorts, strict=True)) + " |")
  lines += ["", "Gap = the rule's mean AUC minus best, per cohort; grid fits = the logistic "
            f"regressions over the {len(C_GRID)} Cs that the rule needs per fold.", "",
            "| rule | worst gap (cohort) | mean gap | cohorts below −0.03 | worst without null "
            "| grid fits | description |", "|---|---:|---:|---:|---:|---:|---|"]
  summary = {}
  for n in order:
    worst = min(gaps[n], key=lambda c: gaps[n][c])
    real = [g for c, g in gaps[n].items() if c != "null"]
    summary[n] = {"worst_gap": gaps[n][worst], "worst_cohort": worst,
                  "mean_gap": float(np.mean(list(gaps[n].values()))),
                  "below_limit": sum(g < -GAP_LIMIT for g in gaps[n].values()),
                  "worst_without_null": min(real) if real else None,
                  "grid_fits_per_fold": described[n][1], "description": described[n][0],
                  "gaps": gaps[n]}
    lines.append(f"| {n} | {gaps[n][worst]:+.3f} ({worst}) | {summary[n]['mean_gap']:+.3f} | "
                 f"{summary[n]['below_limit']} | "
                 + (f"{min(real):+.3f}" if real else "n/a")
                 + f" | {described[n][1]} | {described[n][0]} |")
  return "\n".join(lines) + "\n", {"cohorts": results, "rules": summary}


# --- Main ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
  suite = list(full_suite())
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--cohorts", default=",".join(suite), help="comma-separated cohort names")
  parser.add_argument("--data_root", default="/work/learn/cohorts",
                      help="folder holding one written cohort per name")
  parser.add_argument("--work_dir", default="/work/learn",
                      help="the cache (linear_path_study/) and the report go here")
  parser.add_argument("--seed", type=int, default=42, help="the runs' --seed: folds, inner CV")
  parser.add_argument("--inputs", default="baseline", choices=("baseline", "model"),
                      help="the baselines' upper-triangle features or the model's own inputs")
  parser.add_argument("--repeats", type=int, default=5, help="inner-CV repeats fitted")
  parser.add_argument("--s_grid", default=",".join(f"{s:g}" for s in S_GRID),
                      help="weights of the change block fitted (0 and 1 needed; fewer: faster, "
                      "and only the rules they allow)")
  parser.add_argument("--rules", default="", help="comma-separated rules to tabulate (all)")
  args = parser.parse_args(argv)
  args.cohorts = [c for c in args.cohorts.split(",") if c]
  unknown = [c for c in args.cohorts if c not in suite]
  if unknown:
    parser.error(f"unknown cohort(s) {unknown}; the suite has {suite}")
  if args.repeats < 1:
    parser.error("--repeats must be at least 1")
  args.s_grid = tuple(sorted({float(s) for s in args.s_grid.split(",") if s}))
  if not {0.0, 1.0} <= set(args.s_grid) or min(args.s_grid) < 0:
    parser.error(f"--s_grid must hold 0 and 1 and no negative weight, got {args.s_grid}")
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  available = rules(args.repeats, args.s_grid)
  names = [n for n in args.rules.split(",") if n] or list(available)
  unknown = [n for n in names if n not in available]
  if unknown:
    raise SystemExit(f"unknown rule(s) {unknown}; with --repeats {args.repeats} and --s_grid "
                     f"{','.join(f'{s:g}' for s in args.s_grid)}: {list(available)}")
  grid_text = "" if args.s_grid == S_GRID else "-s" + "_".join(f"{s:g}" for s in args.s_grid)
  cache_dir = os.path.join(args.work_dir, "linear_path_study",
                           f"{args.inputs}-seed{args.seed}{grid_text}")
  started = time.perf_counter()
  results: dict[str, dict[str, Any]] = {}
  compute_s = 0.0
  for name in args.cohorts:
    fits, cached = cohort_fits(name, os.path.join(args.data_root, name), cache_dir, args.seed,
                               args.inputs, args.repeats, args.s_grid)
    compute_s += cached["wall_s"]
    results[name] = {"baselines": cached["baselines"], "wall_s": cached["wall_s"],
                     "readme": README_SEED42.get(name) if args.seed == 42 else None,
                     "rules": {n: rule_aucs(fits, available[n][2]) for n in names}}
    print(f"{name}: fitted in {cached['wall_s']:.0f} s (cache {cache_dir}); "
          + ", ".join(f"{n} {np.mean(results[name]['rules'][n]):.3f}" for n in names[:4]),
          flush=True)
  stem = ("linear_path_study" + ("" if args.seed == 42 else f"-seed{args.seed}")
          + ("" if args.inputs == "baseline" else f"-{args.inputs}") + grid_text)
  s_text = ",".join(f"{s:g}" for s in args.s_grid)
  header = [f"# Linear-path rules against the baselines (seed {args.seed}, {args.inputs} inputs)",
            "", f"`python -m bench.linear_path_study --seed {args.seed} --inputs {args.inputs} "
            f"--repeats {args.repeats} --s_grid {s_text}`; C grid {sorted(C_GRID)}, "
            f"{INNER_FOLDS}-fold inner CV on the training split. Fitting (the baselines, and "
            f"every s with {args.repeats} inner repeats): {compute_s:.0f} s in all (cached); "
            f"this pass {time.perf_counter() - started:.0f} s; {load_average()}."]
  report, payload = build_report(results, names,
                                 {n: available[n][:2] for n in names}, header)
  print("\n" + report)
  write_text(os.path.join(args.work_dir, stem + ".md"), report)
  write_json(os.path.join(args.work_dir, stem + ".json"), payload)
  print(f"wrote {os.path.join(args.work_dir, stem + '.md')} and .json")
  return 0


if __name__ == "__main__":
  sys.exit(main())
