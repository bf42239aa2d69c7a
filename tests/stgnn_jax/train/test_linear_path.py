"""The linear path (`nn.model.LinearPath`, `train.linear_path`): its logit is the fitted
regression's on the last visit's standardised features, its offsets are cross-fitted, it never
trains, and configurations without a counterpart are refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from stgnn_jax import params_to_torch
from stgnn_jax.config import ModelConfig
from stgnn_jax.data.preprocessing import connection_features
from stgnn_jax.errors import ConfigError
from stgnn_jax.eval.metrics import paired_auc_z
from stgnn_jax.input_pipeline import pack_subjects
from stgnn_jax.nn.model import STGNN
from stgnn_jax.train import linear_path
from stgnn_jax.train.state import TrainState, input_statistics, with_input_statistics
from stgnn_jax.train.step import train_step
from tests.helpers import reference_model, reference_optim

N = 12
CONFIG = ModelConfig(input_dim=N, node_features="profile_change", gnn_num_layers=1,
                     gnn_hidden_dim=16, graph_norm=False, use_topk_pooling=False,
                     readout="concat", input_dropout=0.5, lstm_hidden_dim=8, linear_path=True)


def cohort(seed=0, subjects=24):
  """Per subject `[visits, N, N]` symmetric FC-like matrices and labels (converters shifted)."""
  rng = np.random.default_rng(seed)
  fcs, labels = [], []
  for s in range(subjects):
    visits = int(rng.integers(1, 4))
    y = int(s % 3 == 0)
    a = rng.uniform(-0.6, 0.6, (visits, N, N)) + 0.3 * y * np.arange(visits)[:, None, None]
    a = np.clip((a + np.swapaxes(a, 1, 2)) / 2, -1, 1)
    a[:, np.arange(N), np.arange(N)] = 1.0
    fcs.append(a.astype(np.float32))
    labels.append(y)
  return fcs, np.array(labels)


def batch_of(fcs, labels, offsets=None):
  features = [connection_features(f, "profile_change") for f in fcs]
  return features, pack_subjects([f != 0 for f in fcs], labels=labels, features=features,
                                 offsets=offsets)


def test_logit_is_the_fitted_regression_on_the_last_visit():
  fcs, labels = cohort()
  features, batch = batch_of(fcs, labels)
  model = STGNN(CONFIG)
  params = model.init(jax.random.key(0), batch.graphs, batch.visit_slot, batch.lengths,
                      max_visits=batch.max_visits)["params"]
  stats = input_statistics(features)
  params = with_input_statistics(params, stats)
  rng = np.random.default_rng(1)
  fitted = {"w": rng.normal(size=N * 2 * N).astype(np.float32), "b": 0.7}
  with_path = linear_path.with_linear_path(params, fitted)

  def logits(p):
    return np.asarray(model.apply({"params": p}, batch.graphs, batch.visit_slot, batch.lengths,
                                  max_visits=batch.max_visits))

  # Independently: standardise each subject's LAST visit in NumPy, flatten, w . x + b.
  last = np.stack([((f[-1] - stats["mean"]) * stats["scale"]).ravel() for f in features])
  z = last.astype(np.float64) @ fitted["w"] + fitted["b"]
  # The network's last layer starts at zero, so the model starts as the regression exactly.
  out = logits(with_path)
  assert np.any(logits(params) != 0)
  np.testing.assert_allclose(out[:, 1] - out[:, 0], z, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(out.sum(axis=1), 0.0, atol=1e-4)


def reference_fit(x, y, c):
  """scikit-learn's regression on all of x's columns, converged far beyond the default tol."""
  return LogisticRegression(C=c, class_weight="balanced", max_iter=100000, tol=1e-12).fit(x, y)


def test_fit_chooses_c_by_inner_cv_and_offsets_are_cross_fitted():
  rng = np.random.default_rng(2)
  # More inputs than subjects, as on FC: the fit is solved in the span of the subjects' rows,
  # which must give scikit-learn's regression on all 120 inputs.
  x = rng.normal(size=(40, 120))
  y = (x[:, 0] + x[:, 1] + 0.8 * rng.normal(size=40) > 0.3).astype(int)
  fitted = linear_path.fit_linear_path(x, y, seed=7)
  assert fitted["C"] in linear_path.C_GRID
  assert fitted["inner_auc"][f"{fitted['C']:g}"] == max(fitted["inner_auc"].values())
  # The offsets make each subject's path logit the one of the inner model that did not see it.
  final = reference_fit(x, y, fitted["C"])
  np.testing.assert_allclose(fitted["w"], final.coef_[0], rtol=1e-3, atol=1e-4)
  held_out = np.empty(40)
  folds = StratifiedKFold(linear_path.INNER_FOLDS, shuffle=True, random_state=7)
  for train, held in folds.split(x, y):
    held_out[held] = reference_fit(x[train], y[train], fitted["C"]).decision_function(x[held])
  np.testing.assert_allclose(fitted["offsets"] + final.decision_function(x), held_out,
                             rtol=1e-3, atol=1e-3)
  # With profile_change inputs only the profile columns enter the regression.
  columns = linear_path.path_columns("profile_change", 3)
  assert columns.reshape(3, 6)[:, :3].all() and not columns.reshape(3, 6)[:, 3:].any()
  masked = linear_path.fit_linear_path(x[:, :18], y, seed=7, columns=columns, change="never")
  assert np.all(masked["w"][~columns] == 0) and np.any(masked["w"][columns] != 0)
  with pytest.raises(ValueError, match="both classes"):
    linear_path.fit_linear_path(x, np.zeros(40, int), seed=0)


def reference_cv_fit(x, y, splits):
  """C by the inner folds' mean AUC (ties: the smaller C), held-out logits at that C, and the
  refit: scikit-learn on the columns of x."""
  grid = sorted(linear_path.C_GRID)
  held = np.zeros((len(grid), len(y)))
  aucs = np.zeros((len(grid), len(splits)))
  for k, (train, test) in enumerate(splits):
    for i, c in enumerate(grid):
      held[i, test] = reference_fit(x[train], y[train], c).decision_function(x[test])
      aucs[i, k] = roc_auc_score(y[test], held[i, test])
  best = int(np.argmax(aucs.mean(axis=1)))
  return held[best], reference_fit(x, y, grid[best]), grid[best]


@pytest.mark.parametrize("signal", ["change", "last"])
def test_the_change_enters_the_path_by_the_evidence_that_it_ranks_better(signal):
  # profile_change inputs of 4 nodes: 4 profile then 4 change columns per node.
  rng = np.random.default_rng(5)
  subjects, n = 90, 4
  x = rng.normal(size=(subjects, n * 2 * n))
  columns = linear_path.path_columns("profile_change", n)
  y = (np.arange(subjects) % 3 == 0).astype(int)
  # The label shifts three columns of one block: the change block, or the last scan's.
  carrier = np.flatnonzero(~columns if signal == "change" else columns)[:3]
  x[:, carrier] += 1.2 * y[:, None]
  fitted = linear_path.fit_linear_path(x, y, seed=3, columns=columns)
  # The independent reconstruction: both regressions with scikit-learn on the same inner
  # splits, DeLong's z from the rank formula, the weight Phi(z / 2), the spread-scaled mix.
  splits = list(StratifiedKFold(linear_path.INNER_FOLDS, shuffle=True,
                                random_state=3).split(x, y))
  held_a, model_a, c_a = reference_cv_fit(x[:, columns], y, splits)
  held_b, model_b, c_b = reference_cv_fit(x, y, splits)
  z = delong_z(y, held_a, held_b)
  weight = float(scipy.stats.norm.cdf(z / 2))
  assert fitted["C"] == c_a and fitted["C_change"] == c_b
  np.testing.assert_allclose(fitted["change_z"], z, rtol=1e-6)
  np.testing.assert_allclose(fitted["change_weight"], weight, rtol=1e-6)
  sa, sb = held_a.std(), held_b.std()
  scale = (1 - weight) * sa + weight * sb
  w_a = np.zeros(x.shape[1])
  w_a[columns] = model_a.coef_[0]
  expected_w = scale * ((1 - weight) * w_a / sa + weight * model_b.coef_[0] / sb)
  np.testing.assert_allclose(fitted["w"], expected_w, rtol=2e-3, atol=2e-4)
  held = scale * ((1 - weight) * held_a / sa + weight * held_b / sb)
  final = scale * ((1 - weight) * model_a.decision_function(x[:, columns]) / sa
                   + weight * model_b.decision_function(x) / sb)
  np.testing.assert_allclose(fitted["offsets"] + final, held, rtol=2e-3, atol=2e-3)
  if signal == "change":  # the change carries the signal: the path takes it almost whole
    assert z > 3 and fitted["change_weight"] > 0.9
  else:  # the change is noise: the last scan's regression leads
    assert z < 0 and fitted["change_weight"] < 0.5
  # "never" is the last scan's regression alone, "always" the regression on every column.
  never = linear_path.fit_linear_path(x, y, seed=3, columns=columns, change="never")
  np.testing.assert_allclose(never["w"], w_a, rtol=2e-3, atol=2e-4)
  assert "change_weight" not in never
  always = linear_path.fit_linear_path(x, y, seed=3, columns=columns, change="always")
  np.testing.assert_allclose(always["w"], model_b.coef_[0], rtol=2e-3, atol=2e-4)


def delong_z(y, first, second):
  """DeLong's paired z from midranks (Sun & Xu 2014's formulation): each positive's placement
  is (its rank among all - its rank among the positives) / negatives, and likewise."""
  pos, neg = first[y == 1].size, first[y == 0].size
  v, w, a = [], [], []
  for scores in (first, second):
    everything = scipy.stats.rankdata(scores)
    among_pos = scipy.stats.rankdata(scores[y == 1])
    among_neg = scipy.stats.rankdata(scores[y == 0])
    v.append((everything[y == 1] - among_pos) / neg)
    w.append(1 - (everything[y == 0] - among_neg) / pos)
    a.append((everything[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))
  cov = np.cov(v) / pos + np.cov(w) / neg
  return (a[1] - a[0]) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])


def test_paired_auc_z_is_delongs_statistic():
  rng = np.random.default_rng(0)
  y = (rng.uniform(size=60) < 0.3).astype(int)
  first = y + rng.normal(size=60)
  second = np.round(2 * y + rng.normal(size=60), 1)  # ties within and across classes
  np.testing.assert_allclose(paired_auc_z(y, first, second), delong_z(y, first, second),
                             rtol=1e-10)
  np.testing.assert_allclose(paired_auc_z(y, second, first), -delong_z(y, first, second),
                             rtol=1e-10)


def model_with_path(subjects: int, path: dict):
  """A freshly initialised model of `subjects` generated subjects, with their input statistics
  and the linear path `path` ({"w", "b"}); their batch, scans and labels."""
  fcs, labels = cohort(subjects=subjects)
  features, batch = batch_of(fcs, labels)
  params = STGNN(CONFIG).init(jax.random.key(0), batch.graphs, batch.visit_slot, batch.lengths,
                              max_visits=batch.max_visits)["params"]
  params = with_input_statistics(params, input_statistics(features))
  return linear_path.with_linear_path(params, path), batch, fcs, labels


def test_the_path_never_trains_and_the_offset_enters_the_training_loss():
  params, batch, fcs, labels = model_with_path(
      16, {"w": np.full(N * 2 * N, 0.01, np.float32), "b": 0.1})
  state = TrainState.create(params, CONFIG, reference_optim(), focal_alpha=0.75)
  key = jax.random.key(3)
  after, metrics = train_step(state, batch, key)
  for name in ("kernel", "bias"):
    np.testing.assert_array_equal(after.params["linear_path"][name],
                                  params["linear_path"][name])
  moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                       after.params["classifier"], params["classifier"])
  assert any(jax.tree.leaves(moved))  # the network itself trains
  zero = batch_of(fcs, labels, offsets=np.zeros(len(fcs)))[1]
  shifted = batch_of(fcs, labels, offsets=np.linspace(-2, 2, len(fcs)))[1]
  same = train_step(state, zero, key)[1]
  other = train_step(state, shifted, key)[1]
  np.testing.assert_allclose(same["loss"], metrics["loss"], rtol=1e-6)
  assert abs(float(other["loss"]) - float(metrics["loss"])) > 1e-4


def test_configurations_without_a_linear_path_counterpart_are_refused():
  with pytest.raises(ConfigError, match="linear_path"):
    ModelConfig(node_features="onehot", input_dropout=0.0)  # the default linear path
  with pytest.raises(ConfigError, match="linear_path"):
    ModelConfig(node_features="connection_profile", linear_path=True, freeze_encoder=True)
  reference_like = reference_model(input_dim=N, node_features="connection_profile",
                                   linear_path=True)
  fcs, labels = cohort(subjects=4)
  features = [f for f in fcs]
  batch = pack_subjects([f != 0 for f in fcs], labels=labels, features=features)
  params = STGNN(reference_like).init(jax.random.key(0), batch.graphs, batch.visit_slot,
                                      batch.lengths, max_visits=batch.max_visits)["params"]
  with pytest.raises(ValueError, match="linear_path=True has no counterpart"):
    params_to_torch(jax.tree.map(np.asarray, params), reference_like)
  assert jnp.all(params["linear_path"]["kernel"] == 0)


def balanced_accuracy_at(y, p, threshold):
  predicted = p >= threshold
  return (predicted[y == 1].mean() + (~predicted[y == 0]).mean()) / 2


@pytest.mark.parametrize("gain, rule, tested", [
    (1.0, "evidence", "network"), (0.05, "evidence", "path_alone"),
    (0.05, "always", "network"), (1.0, "never", "path_alone")])
def test_the_network_is_tested_only_on_evidence_that_it_ranks_better(gain, rule, tested):
  rng = np.random.default_rng(1)
  y = np.array([1] * 8 + [0] * 40)
  path = 0.8 * y + rng.normal(size=y.size)
  network = path + gain * y + 0.3 * rng.normal(size=y.size)
  as_logits = lambda margin: np.stack([-margin / 2, margin / 2], axis=1)  # noqa: E731
  gate = linear_path.gate_network(rule, y, as_logits(network), as_logits(path),
                                  choose_threshold=True)
  z = delong_z(y, path, network)
  assert gate["tested"] == tested and gate["rule"] == rule
  np.testing.assert_allclose(gate["z"], z, rtol=1e-9)
  # The example's two sides of the threshold: a clear gain, and noise far below it.
  assert z > linear_path.NETWORK_MIN_Z if gain > 0.5 else z < 1
  np.testing.assert_allclose(gate["val_auc_network"], roc_auc_score(y, network), rtol=1e-12)
  np.testing.assert_allclose(gate["val_auc_path"], roc_auc_score(y, path), rtol=1e-12)
  # The path's own threshold on p(converter): the best balanced accuracy of any cut.
  p = 1 / (1 + np.exp(-path))
  best = max(balanced_accuracy_at(y, p, t) for t in p)
  assert balanced_accuracy_at(y, p, gate["path_threshold"]) == pytest.approx(best)
  no_threshold = linear_path.gate_network(rule, y, as_logits(network), as_logits(path),
                                          choose_threshold=False)
  assert no_threshold["path_threshold"] is None


def test_without_two_converters_there_is_no_evidence_for_the_network():
  y = np.array([1] + [0] * 20)
  network = np.stack([np.zeros(21), 5.0 * y], axis=1)
  path = np.stack([np.zeros(21), np.linspace(0, 1, 21)], axis=1)
  gate = linear_path.gate_network("evidence", y, network, path, choose_threshold=False)
  assert gate["z"] is None and gate["tested"] == "path_alone"
  assert gate["val_auc_network"] == 1.0


def test_the_path_alone_is_the_model_without_its_last_layer():
  params, batch, _, _ = model_with_path(8, {"w": np.linspace(-0.05, 0.05, N * 2 * N),
                                            "b": 0.2})
  trained = dict(params, classifier=jax.tree.map(lambda x: x + 0.1, params["classifier"]))
  alone = linear_path.path_alone(trained)
  apply = lambda p: STGNN(CONFIG).apply(  # noqa: E731
      {"params": p}, batch.graphs, batch.visit_slot, batch.lengths, max_visits=batch.max_visits)
  only_path = STGNN(CONFIG).apply({"params": alone}, batch.graphs, batch.visit_slot,
                                  batch.lengths, max_visits=batch.max_visits,
                                  method=lambda m, *a, **k: m.linear_path(
                                      m.encoder(a[0], None, return_inputs=True)[1], *a[1:], **k))
  np.testing.assert_allclose(apply(alone), only_path, rtol=1e-6, atol=1e-6)
  assert np.abs(np.asarray(apply(trained) - apply(alone))).max() > 1e-3
  for name in ("encoder", "linear_path"):
    chex_equal = jax.tree.map(np.array_equal, alone[name], trained[name])
    assert all(jax.tree.leaves(chex_equal))
