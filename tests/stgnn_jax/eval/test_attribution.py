"""Tests of `stgnn_jax.eval.attribution`: Integrated Gradients of the converter log-odds and the
helpers that turn feature attributions into subject, region and connection importances.

Compilation dominates the cost, so the model tests share one small model (N = 8 regions,
profile_change features, F = 16), one batch shape and one `steps` / `chunk` setting.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stgnn_jax.config import ModelConfig
from stgnn_jax.data.preprocessing import connection_features, threshold_fc
from stgnn_jax.eval import attribution
from stgnn_jax.input_pipeline import pack_subjects
from stgnn_jax.train.linear_path import with_linear_path
from stgnn_jax.train.state import init_params, input_statistics, with_input_statistics

N = 8
F = 2 * N
VISITS = (1, 3, 2, 3)
# 9 real graphs in 12 slots and 4 subjects in 5 slots: padding graphs and a padding subject.
NUM_GRAPHS, NUM_SUBJECTS = 12, 5
CONFIG = ModelConfig(input_dim=N, gnn_hidden_dim=8, output_dim=8, readout_node_dim=4,
                     lstm_hidden_dim=8, linear_path=True)
# The head's ReLU makes the path integrand piecewise smooth, so the midpoint rule's error falls
# like 1/steps rather than 1/steps^2: 256 points bring the gap under 1% of f(x) - f(x') for every
# subject of this model (64 leave about 5% on the subject whose f moves least). The runtime of
# this small model hardly depends on steps; the compilation does not at all. CHUNK does not
# divide STEPS, so the last chunk is padded with points of weight 0 (the exact linear case
# checks that they count for nothing).
STEPS, CHUNK = 256, 96


def fc_matrices(rng: np.random.Generator, visits: int) -> np.ndarray:
  """A subject's thresholded FC values `[visits, N, N]`: symmetric, unit diagonal."""
  a = rng.uniform(-1, 1, (visits, N, N))
  a = (a + np.swapaxes(a, 1, 2)) / 2
  a[:, np.arange(N), np.arange(N)] = 1.0
  return threshold_fc(a, 0.2)


def batch_of(fcs, **sizes):
  features = [connection_features(f, "profile_change") for f in fcs]
  return features, pack_subjects([f != 0 for f in fcs], features=features, max_visits=3,
                                 **sizes)


@pytest.fixture(scope="module")
def model():
  """(fcs, features, batch, params): a random model whose graph path moves f noticeably, with
  the input statistics of these scans and a random linear path."""
  rng = np.random.default_rng(0)
  fcs = [fc_matrices(rng, v) for v in VISITS]
  features, batch = batch_of(fcs, num_subjects=NUM_SUBJECTS, num_graphs=NUM_GRAPHS)
  params = with_input_statistics(init_params(CONFIG, batch, jax.random.key(0)),
                                 input_statistics(features))
  # Fresh heads are small: scaled up, the graph path moves f by tenths, not hundredths.
  head = params["classifier"]["head_3"]
  params["classifier"] = dict(params["classifier"], head_3=dict(head, kernel=10 * head["kernel"]))
  kernel = 0.05 * rng.normal(size=(N * F, 2))
  params["linear_path"] = {"kernel": jnp.asarray(kernel, jnp.float32),
                           "bias": jnp.asarray([0.1, -0.2], jnp.float32)}
  return fcs, features, batch, params


def baseline_batch(batch, baseline):
  nodes = np.broadcast_to(np.asarray(baseline), batch.graphs.nodes.shape)
  return batch.replace(graphs=batch.graphs.replace(nodes=np.array(nodes)))


@pytest.mark.parametrize("linear_path", [True, False])
def test_attributions_add_up_to_the_change_of_log_odds(model, linear_path):
  _, _, batch, params = model
  config = dataclasses.replace(CONFIG, linear_path=linear_path)
  if not linear_path:
    params = {k: v for k, v in params.items() if k != "linear_path"}
  attr, delta = attribution.integrated_gradients(params, config, batch, steps=STEPS, chunk=CHUNK)
  attr, delta = np.asarray(attr), np.asarray(delta)
  assert attr.shape == (NUM_GRAPHS, N, F) and delta.shape == (NUM_SUBJECTS,)

  # delta is what it claims to be: f(x) and f(baseline) from the model itself, the baseline
  # being the training-scan mean the params carry.
  mean = np.asarray(params["encoder"]["input_standardization"]["mean"])
  assert np.abs(mean).max() > 0.05  # non-trivial statistics
  f_x = np.asarray(attribution.converter_log_odds(params, config, batch))
  f_base = np.asarray(attribution.converter_log_odds(params, config,
                                                     baseline_batch(batch, mean)))
  change = f_x - f_base
  per_subject = attribution.subject_attributions(attr, batch).sum(axis=(1, 2))
  np.testing.assert_allclose(delta, per_subject - change, atol=1e-5)
  # The test has something to explain: f moves by tenths for most subjects.
  assert np.sort(np.abs(change[:4]))[1] > 0.1

  # Completeness: float32 sums of 256 weighted gradients leave ~1e-6 of rounding; the 1e-5
  # floor covers it where f hardly moves.
  assert np.all(np.abs(delta) <= 1e-2 * np.abs(change) + 1e-5), (delta, change)
  # Padding graphs get nothing; the padding subject has nothing to explain.
  assert not attr[sum(VISITS):].any()
  assert delta[4] == 0 and change[4] == 0


def test_a_linear_model_is_attributed_exactly(model):
  """With the classifier's last layer zeroed the graph path adds a constant, f is the linear
  path's w . ((x_last - mean) * scale) + b, and IG is (x - x') * scale * w on each subject's
  last visit, 0 on the earlier ones."""
  _, _, batch, params = model
  rng = np.random.default_rng(3)
  w = rng.normal(size=N * F).astype(np.float32)
  params = with_linear_path(params, {"w": w, "b": 0.3})
  assert not np.asarray(params["classifier"]["head_3"]["kernel"]).any()
  scale = np.asarray(params["encoder"]["input_standardization"]["scale"])
  mean = np.asarray(params["encoder"]["input_standardization"]["mean"])
  nodes = np.asarray(batch.graphs.nodes)
  last = np.cumsum(VISITS) - 1
  for baseline, x0 in ((None, mean), (np.full((N, F), 0.25, np.float32), 0.25)):
    attr, delta = attribution.integrated_gradients(params, CONFIG, batch, baseline, steps=STEPS,
                                                   chunk=CHUNK)
    expected = np.zeros_like(nodes)
    expected[last] = (nodes[last] - x0) * scale * w.reshape(N, F)
    np.testing.assert_allclose(np.asarray(attr), expected, rtol=1e-5, atol=1e-5)
    # f sums N * F = 128 float32 products: the gap is rounding, relative to their magnitude.
    magnitude = attribution.subject_attributions(np.abs(expected), batch).sum(axis=(1, 2))
    assert np.all(np.abs(np.asarray(delta)) <= 1e-6 * magnitude + 1e-6)


def test_a_subject_is_explained_alike_in_any_batch(model):
  fcs, _, batch, params = model
  attr, delta = attribution.integrated_gradients(params, CONFIG, batch, steps=STEPS, chunk=CHUNK)
  # Subjects 3 and 1 alone, in another order, with other padding.
  _, small = batch_of([fcs[3], fcs[1]], num_graphs=7)
  small_attr, small_delta = attribution.integrated_gradients(params, CONFIG, small, steps=STEPS,
                                                             chunk=CHUNK)
  full = attribution.subject_attributions(attr, batch)
  alone = attribution.subject_attributions(small_attr, small)
  np.testing.assert_allclose(alone, full[[3, 1]], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(small_delta), np.asarray(delta)[[3, 1]], atol=1e-6)
  assert not np.asarray(small_attr)[6:].any()
  assert np.abs(full[[3, 1]]).max() > 1e-3


def test_bad_inputs_are_refused(model):
  fcs, _, batch, params = model
  with pytest.raises(ValueError, match="no node features"):
    attribution.integrated_gradients(params, CONFIG, pack_subjects([f != 0 for f in fcs]))
  with pytest.raises(ValueError, match="baseline of shape"):
    attribution.integrated_gradients(params, CONFIG, batch, np.zeros((N, N)))
  with pytest.raises(ValueError, match="chunk"):
    attribution.integrated_gradients(params, CONFIG, batch, steps=4, chunk=8)
  with pytest.raises(ValueError, match="num_classes=3"):
    attribution.integrated_gradients(params, dataclasses.replace(CONFIG, num_classes=3), batch)


def test_subject_attributions_sum_visits_and_skip_padding_graphs():
  adjacency = [np.ones((2, 2, 2), bool), np.ones((1, 2, 2), bool)]
  batch = pack_subjects(adjacency, num_subjects=3, num_graphs=4, max_visits=2)
  attr = np.arange(4 * 2 * 1, dtype=np.float32).reshape(4, 2, 1)  # graph g: [2g, 2g + 1]
  got = attribution.subject_attributions(attr, batch)
  np.testing.assert_array_equal(got[..., 0], [[2, 4], [4, 5], [0, 0]])


def test_connection_and_region_importance_by_hand():
  # Two regions, profile_change: features [value to 0, value to 1, change to 0, change to 1].
  attr = np.array([[1.0, 2.0, 10.0, 20.0],
                   [3.0, 4.0, 30.0, 40.0]])
  # Rows before symmetrising: [[11, 22], [33, 44]].
  np.testing.assert_array_equal(attribution.connection_importance(attr, 2),
                                [[11, 27.5], [27.5, 44]])
  np.testing.assert_array_equal(attribution.region_importance(attr), [33, 77])
  # connection_profile, with a leading subjects axis and signs.
  profile = np.array([[[1.0, -2.0], [4.0, 3.0]], [[0.0, 1.0], [-1.0, 0.0]]])
  np.testing.assert_array_equal(
      attribution.connection_importance(profile, 2, node_features="connection_profile"),
      [[[1, 1], [1, 3]], [[0, 0], [0, 0]]])
  np.testing.assert_array_equal(attribution.region_importance(profile), [[-1, 7], [1, -1]])
  # The summary over subjects is the mean of absolute values, padding subjects left out.
  regions = np.array([[-1.0, 7.0], [1.0, -3.0], [100.0, 100.0]])
  np.testing.assert_array_equal(
      attribution.mean_absolute_importance(regions, [True, True, False]), [1, 5])
  # The total is kept: the symmetric matrix sums to the sum of every feature.
  assert attribution.connection_importance(attr, 2).sum() == attr.sum()

  with pytest.raises(ValueError, match="neither connection_profile .* nor profile_change"):
    attribution.connection_importance(np.zeros((2, 3)), 2)
  with pytest.raises(ValueError, match="'onehot' carry no connection values"):
    attribution.connection_importance(np.zeros((2, 2)), 2, node_features="onehot")
  with pytest.raises(ValueError, match="'profile_change' but the attributions have 2"):
    attribution.connection_importance(np.zeros((2, 2)), 2, node_features="profile_change")
  with pytest.raises(ValueError, match="no subject"):
    attribution.mean_absolute_importance(regions, [False, False, False])
