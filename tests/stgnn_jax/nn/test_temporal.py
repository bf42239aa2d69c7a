"""Tests of `stgnn_jax.nn.temporal` (and its converter, `torch_interop.temporal`) against
PyTorch's nn.LSTM / nn.GRU / nn.RNN with packed sequences."""

from __future__ import annotations

import functools
import itertools

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from stgnn_jax.nn.temporal import StackedRNN, TemporalClassifier
from stgnn_jax.torch_interop.state_dict import CheckpointMismatchError, StateReader
from stgnn_jax.torch_interop.temporal import (
    temporal_params_from_torch,
    temporal_params_to_torch,
)

torch.set_num_threads(1)  # the test machine's cores are shared


def _key(seed: int) -> jax.Array:
  # The module is agnostic to the PRNG implementation; "rbg" keys compile several times faster
  # than threefry on CPU, which keeps this file quick. A typed key carries its implementation,
  # so no global config changes.
  return jax.random.key(seed, impl="rbg")

SUBJECTS, VISITS, FEATURES, HIDDEN, CLASSES = 5, 6, 7, 8, 3
# Full length, length 1 and everything between, in no particular order (enforce_sorted=False).
LENGTHS = np.array([3, 6, 1, 4, 6])


class TorchTemporal(nn.Module):
  """The reference's temporal classifier, written from its documented behaviour."""

  def __init__(self, model_type: str, input_dim: int, hidden_dim: int, num_layers: int,
               bidirectional: bool, num_classes: int, dropout: float = 0.45):
    super().__init__()
    rnn_class = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}[model_type]
    self.model_type = model_type
    self.bidirectional = bidirectional
    # Registered under the reference's attribute name, so the keys are lstm.* / gru.* / rnn.*.
    setattr(self, model_type.lower(), rnn_class(
        input_dim, hidden_dim, num_layers=num_layers, batch_first=True,
        bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0))
    self.classifier = nn.Sequential(
        nn.Linear(hidden_dim * (2 if bidirectional else 1), 64), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(64, num_classes))

  def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    _, h_n = getattr(self, self.model_type.lower())(packed)
    if self.model_type == "LSTM":
      h_n = h_n[0]
    # h_n: [layers·dirs, subjects, H], already back in the input order.
    feature = torch.cat([h_n[-2], h_n[-1]], dim=-1) if self.bidirectional else h_n[-1]
    return self.classifier(feature)


def _torch_model(model_type, num_layers, bidirectional, seed=0):
  torch.manual_seed(seed)
  return TorchTemporal(model_type, FEATURES, HIDDEN, num_layers, bidirectional, CLASSES).eval()


def _jax_model(model_type, num_layers, bidirectional):
  return TemporalClassifier(
      model_type=model_type, hidden_dim=HIDDEN, num_layers=num_layers,
      bidirectional=bidirectional, num_classes=CLASSES)


def _convert(torch_state, model_type, num_layers, bidirectional):
  reader = StateReader(torch_state, "temporal classifier")
  params = temporal_params_from_torch(
      reader, model_type=model_type, hidden_dim=HIDDEN, num_layers=num_layers,
      bidirectional=bidirectional, input_dim=FEATURES, num_classes=CLASSES)
  reader.check_all_used()
  return params


def _inputs(seed=0):
  x = np.random.default_rng(seed).normal(size=(SUBJECTS, VISITS, FEATURES)).astype(np.float32)
  return x, LENGTHS.copy()


CONFIGS = list(itertools.product(("LSTM", "GRU", "RNN"), (1, 2), (False, True)))


@pytest.mark.parametrize("model_type,num_layers,bidirectional", CONFIGS)
def test_logits_match_torch(model_type, num_layers, bidirectional):
  torch_model = _torch_model(model_type, num_layers, bidirectional)
  params = _convert(torch_model.state_dict(), model_type, num_layers, bidirectional)
  x, lengths = _inputs()
  with torch.no_grad():
    expected = torch_model(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
  model = _jax_model(model_type, num_layers, bidirectional)
  apply = jax.jit(lambda p, x, n: model.apply({"params": p}, x, n, deterministic=True))
  actual = np.asarray(apply(params, x, lengths))
  np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)


class ApplyVariantsTest(chex.TestCase):
  """The same numbers with and without jit, on one configuration (the reference default)."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_default_lstm_matches_torch(self):
    torch_model = _torch_model("LSTM", 1, True, seed=3)
    params = _convert(torch_model.state_dict(), "LSTM", 1, True)
    x, lengths = _inputs(seed=3)
    with torch.no_grad():
      expected = torch_model(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
    model = _jax_model("LSTM", 1, True)
    apply = self.variant(lambda p, x, n: model.apply({"params": p}, x, n, deterministic=True))
    np.testing.assert_allclose(apply(params, x, lengths), expected, rtol=0, atol=1e-5)


def test_init_is_torch_like_and_round_trip_is_exact():
  """Fresh params -> torch state dict (loads strictly into torch) -> params, bit for bit."""
  model = _jax_model("LSTM", 2, True)
  x, lengths = _inputs()
  # Jitted: eager init of the scan is several times slower than compiling it.
  init = jax.jit(lambda key: model.init(key, x, lengths, deterministic=True)["params"])
  params = init(_key(1))

  bound = 1.0 / np.sqrt(HIDDEN)  # PyTorch's U(-1/sqrt(H), 1/sqrt(H)) for every RNN array
  for leaf in jax.tree.leaves(params["rnn"]):
    assert 0.5 * bound < np.abs(leaf).max() <= bound
  for name, fan_in in (("head_0", 2 * HIDDEN), ("head_3", 64)):  # nn.Linear's U(-1/sqrt(in), .)
    for leaf in jax.tree.leaves(params[name]):
      assert np.abs(leaf).max() <= 1.0 / np.sqrt(fan_in)

  state = temporal_params_to_torch(params, model_type="LSTM", num_layers=2, bidirectional=True)
  torch_model = _torch_model("LSTM", 2, True)
  torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
  assert list(state) == list(torch_model.state_dict())
  back = _convert(state, "LSTM", 2, True)
  chex.assert_trees_all_equal(back, params)
  chex.assert_trees_all_equal_shapes_and_dtypes(back, params)


@pytest.mark.parametrize("model_type,num_layers,bidirectional",
                         [("GRU", 2, False), ("RNN", 1, True)])
def test_round_trip_from_torch_is_exact(model_type, num_layers, bidirectional):
  torch_state = _torch_model(model_type, num_layers, bidirectional).state_dict()
  params = _convert(torch_state, model_type, num_layers, bidirectional)
  state = temporal_params_to_torch(
      params, model_type=model_type, num_layers=num_layers, bidirectional=bidirectional)
  assert list(state) == list(torch_state)
  for key, value in torch_state.items():
    np.testing.assert_array_equal(state[key], value.numpy(), err_msg=key)
  chex.assert_trees_all_equal(_convert(state, model_type, num_layers, bidirectional), params)


def test_unknown_model_type_names_the_valid_ones():
  model = TemporalClassifier(model_type="LSTMX")
  x, lengths = _inputs()
  with pytest.raises(ValueError, match=r"'LSTMX'.*'GRU', 'LSTM', 'RNN'"):
    model.init(jax.random.key(0), x, lengths, deterministic=True)
  with pytest.raises(ValueError, match="LSTMX"):
    temporal_params_to_torch({}, model_type="LSTMX", num_layers=1, bidirectional=True)
  with pytest.raises(ValueError, match="LSTMX"):
    _convert(_lstm_state(), "LSTMX", 1, True)


# The remaining tests share one 2-layer bidirectional LSTM with torch-initialised weights.
@pytest.fixture(scope="module")
def lstm():
  model = TemporalClassifier(hidden_dim=HIDDEN, num_layers=2, num_classes=CLASSES)
  params = _convert(_torch_model("LSTM", 2, True, seed=2).state_dict(), "LSTM", 2, True)
  return model, params


@pytest.fixture(scope="module")
def eval_apply(lstm):
  """The jitted eval-mode apply; compiled once per input shape for the whole module."""
  model, params = lstm
  traces = []

  @jax.jit
  def apply(x, lengths):
    traces.append(x.shape)  # a Python side effect: runs only while tracing
    return model.apply({"params": params}, x, lengths, deterministic=True)

  apply.traces = traces
  return apply


@hypothesis.settings(max_examples=15, deadline=None, derandomize=True)
@hypothesis.given(
    lengths=st.lists(st.integers(0, VISITS), min_size=SUBJECTS, max_size=SUBJECTS),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([1.0, 1e3, 1e30, np.inf, np.nan]))
def test_visits_beyond_length_change_nothing(eval_apply, lengths, seed, scale):
  lengths = np.array(lengths)
  x, _ = _inputs()
  # Beyond NaN-free garbage, also inf and NaN: padded visits are zeroed before any arithmetic.
  garbage = (scale * np.random.default_rng(seed).normal(size=x.shape)).astype(np.float32)
  beyond = np.arange(VISITS)[None, :, None] >= lengths[:, None, None]
  clean = np.asarray(eval_apply(x, lengths))
  dirty = np.asarray(eval_apply(np.where(beyond, garbage, x), lengths))
  np.testing.assert_array_equal(dirty, clean)
  assert np.isfinite(dirty).all()


def test_length_zero_subject_is_finite_and_isolated(eval_apply):
  x, lengths = _inputs()
  lengths[2] = 0
  x[2] = np.nan
  logits = np.asarray(eval_apply(x, lengths))
  assert np.isfinite(logits).all()
  x[2] = 0.0
  np.testing.assert_array_equal(np.asarray(eval_apply(x, lengths)), logits)


def test_jit_compiles_once_per_shape(eval_apply):
  x, _ = _inputs()
  rng = np.random.default_rng(0)
  before = len(eval_apply.traces)
  for _ in range(3):  # new values and new lengths, same shapes
    eval_apply(rng.normal(size=x.shape).astype(np.float32),
               rng.integers(0, VISITS + 1, size=SUBJECTS))
  assert len(eval_apply.traces) - before <= 1  # 0 when an earlier test compiled this shape
  assert eval_apply.traces.count(x.shape) == 1
  longer = (SUBJECTS, VISITS + 2, FEATURES)
  for fill in (0.0, 1.0):
    eval_apply(np.full(longer, fill, np.float32), LENGTHS)
  assert eval_apply.traces.count(longer) == 1
  assert eval_apply._cache_size() == len(set(eval_apply.traces)) == len(eval_apply.traces)


def test_dropout_uses_the_rng_only_when_not_deterministic(lstm, eval_apply):
  model, params = lstm
  x, lengths = _inputs()

  @functools.partial(jax.jit, static_argnums=1)
  def apply(key, deterministic):
    # Also capture the recurrent stack's output, to see the between-layer dropout on its own.
    logits, state = model.apply(
        {"params": params}, x, lengths, deterministic=deterministic, rngs={"dropout": key},
        capture_intermediates=lambda module, _: isinstance(module, StackedRNN),
        mutable=["intermediates"])
    return logits, state["intermediates"]["rnn"]["__call__"][0]

  (a, rnn_a), (b, rnn_b) = apply(_key(1), False), apply(_key(2), False)
  assert not np.allclose(a, b)
  assert not np.allclose(rnn_a, rnn_b)  # nn.LSTM(dropout=...) between the two layers
  chex.assert_trees_all_equal(apply(_key(1), False), (a, rnn_a))  # same key, same mask
  det_1, det_2 = apply(_key(1), True), apply(_key(2), True)
  chex.assert_trees_all_equal(det_1, det_2)
  np.testing.assert_array_equal(det_1[0], eval_apply(x, lengths))  # needs no rng at all


def test_gradients_match_torch_autograd():
  """2-layer bidirectional LSTM; JAX's batch carries one extra padding subject (length 0,
  infinite inputs, zero loss weight), which must neither change nor poison any gradient."""
  model_type, num_layers, bidirectional = "LSTM", 2, True
  torch_model = _torch_model(model_type, num_layers, bidirectional, seed=5)
  params = _convert(torch_model.state_dict(), model_type, num_layers, bidirectional)
  x, lengths = _inputs(seed=5)
  weights = np.random.default_rng(6).normal(size=(SUBJECTS, CLASSES)).astype(np.float32)

  x_torch = torch.from_numpy(x).requires_grad_(True)
  loss = (torch_model(x_torch, torch.from_numpy(lengths)) * torch.from_numpy(weights)).sum()
  loss.backward()
  # Parameter gradients have the parameters' layout, so the converter maps them too.
  torch_grads = _convert(
      {name: p.grad for name, p in torch_model.named_parameters()},
      model_type, num_layers, bidirectional)

  x_pad = np.concatenate([x, np.full((1, VISITS, FEATURES), np.inf, np.float32)])
  lengths_pad = np.append(lengths, 0)
  weights_pad = np.concatenate([weights, np.zeros((1, CLASSES), np.float32)])
  model = _jax_model(model_type, num_layers, bidirectional)
  def scalar(params, x):
    logits = model.apply({"params": params}, x, lengths_pad, deterministic=True)
    return (logits * weights_pad).sum()
  jax_loss, (param_grads, x_grad) = jax.jit(
      jax.value_and_grad(scalar, argnums=(0, 1)))(params, x_pad)

  np.testing.assert_allclose(jax_loss, loss.item(), rtol=1e-5)
  def check(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert np.isfinite(actual).all()
    scale = np.abs(expected).max()
    assert scale > 0
    assert np.abs(actual - expected).max() <= 1e-4 * scale
  check(x_grad[:SUBJECTS], x_torch.grad.numpy())
  jax.tree.map(check, param_grads, torch_grads)
  # Packing gives padded visits (and the padding subject) no gradient at all.
  np.testing.assert_array_equal(x_grad[SUBJECTS], 0.0)
  beyond = np.arange(VISITS)[None, :] >= lengths[:, None]
  np.testing.assert_array_equal(np.asarray(x_grad)[:SUBJECTS][beyond], 0.0)


def _lstm_state():
  return dict(_torch_model("LSTM", 1, True).state_dict())


def test_converter_names_a_missing_key():
  state = _lstm_state()
  del state["lstm.weight_hh_l0_reverse"]
  with pytest.raises(CheckpointMismatchError, match=r"missing key 'lstm\.weight_hh_l0_reverse'"):
    _convert(state, "LSTM", 1, True)


def test_converter_names_a_wrong_shape():
  state = _lstm_state()
  state["classifier.0.weight"] = torch.zeros(64, HIDDEN)  # a unidirectional head
  with pytest.raises(CheckpointMismatchError, match=r"'classifier\.0\.weight' has shape \(64, 8\)"):
    _convert(state, "LSTM", 1, True)


def test_converter_rejects_another_cell_type():
  # An LSTM checkpoint read as a GRU: the gru.* keys are missing.
  with pytest.raises(CheckpointMismatchError, match=r"'gru\.weight_ih_l0'"):
    _convert(_lstm_state(), "GRU", 1, True)


def test_converter_names_a_layer_the_config_lacks():
  state = dict(_torch_model("LSTM", 2, True).state_dict())
  with pytest.raises(CheckpointMismatchError, match=r"'lstm\.\w+_l1"):
    _convert(state, "LSTM", 1, True)  # check_all_used finds the second layer


def test_to_torch_names_a_missing_layer():
  params = _convert(_lstm_state(), "LSTM", 1, True)
  with pytest.raises(KeyError, match="l1"):
    temporal_params_to_torch(params, model_type="LSTM", num_layers=2, bidirectional=True)
