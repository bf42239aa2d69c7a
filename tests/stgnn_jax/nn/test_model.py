"""Full-model parity: STGNN (JAX) vs the PyTorch + PyG reference with converted weights."""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest
import torch

from bench.torch_reference import (
  SMALL,
  TorchSTGNN,
  checkpoint_of,
  params_for,
  pyg_batch,
  torch_model,
)
from stgnn_jax.config import ModelConfig
from stgnn_jax.data.preprocessing import threshold_fc
from stgnn_jax.errors import InputError
from stgnn_jax.inference import apply_model, predict
from stgnn_jax.input_pipeline import pack_subjects
from stgnn_jax.nn.graphs import dense_graphs_from_jraph
from stgnn_jax.nn.model import STGNN, GraphEncoder
from stgnn_jax.torch_interop.convert import params_from_torch, params_to_torch
from stgnn_jax.torch_interop.state_dict import CheckpointMismatchError
from stgnn_jax.train.checkpoints import save_checkpoint
from stgnn_jax.train.state import TrainState, input_statistics, with_input_statistics
from stgnn_jax.train.step import train_step
from tests.helpers import reference_model, reference_optim

# Small dimensions keep the 36-configuration sweep fast; the defaults get their own test.
LENGTHS = (3, 1, 4, 2, 1)


def random_fc(rng: np.random.Generator, n: int, visits: int) -> list[np.ndarray]:
  mats = []
  for _ in range(visits):
    a = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    np.fill_diagonal(a, 1.0)
    mats.append(a)
  return mats


def random_adjacency(rng: np.random.Generator, n: int, visits: int) -> np.ndarray:
  fc = np.stack(random_fc(rng, n, visits))
  sym = (fc + np.swapaxes(fc, 1, 2)) / 2
  return np.abs(sym) >= 0.4


def both_logits(config: ModelConfig, adjacency, time=None, seed=0):
  model = torch_model(config, seed)
  with torch.no_grad():
    expected = model(**pyg_batch(adjacency, time)).numpy()
  params = params_from_torch(checkpoint_of(model), config)
  got = np.asarray(apply_model(params, config, pack_subjects(adjacency, time=time)))
  return got, expected


# Every conv type with every (TopK, time features) combination, the RNN type cycling so that each
# conv type also meets each RNN type: 12 compiled models instead of 36 (compilation dominates).
CONVS, RNNS = ("GraphSAGE", "GCN", "GAT"), ("LSTM", "GRU", "RNN")
CASES = [(conv, RNNS[(c + j) % 3], topk, time)
         for c, conv in enumerate(CONVS)
         for j, (topk, time) in enumerate(itertools.product((True, False), (False, True)))]
assert {(conv, rnn) for conv, rnn, _, _ in CASES} == set(itertools.product(CONVS, RNNS))


@pytest.mark.parametrize("layer_type,model_type,topk,time_features", CASES)
def test_logits_match_reference(layer_type, model_type, topk, time_features):
  config = reference_model(**SMALL, layer_type=layer_type, model_type=model_type,
                       use_topk_pooling=topk, use_time_features=time_features)
  rng = np.random.default_rng(hash((layer_type, model_type, topk, time_features)) % 2**32)
  adjacency = [random_adjacency(rng, config.input_dim, n) for n in LENGTHS]
  time = rng.uniform(0, 2, len(LENGTHS)).astype(np.float32) if time_features else None
  got, expected = both_logits(config, adjacency, time)
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("overrides", [
    dict(),  # the reference defaults: 100 -> 256 -> 256, GraphSAGE, elu, TopK 0.3, BiLSTM
    dict(gnn_num_layers=3, gnn_activation="gelu", topk_ratio=0.5, model_type="GRU",
         lstm_num_layers=2, lstm_bidirectional=True),
])
def test_reference_sized_models(overrides):
  config = reference_model(**overrides)
  rng = np.random.default_rng(7)
  adjacency = [random_adjacency(rng, 100, n) for n in (2, 1, 3)]
  got, expected = both_logits(config, adjacency)
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_checkpoint_file_round_trip(tmp_path):
  config = reference_model(**SMALL, use_time_features=True)
  model = torch_model(config, seed=3)
  path = tmp_path / "best_model_fold1.pth"
  torch.save(checkpoint_of(model), path)
  rng = np.random.default_rng(3)
  adjacency = [random_adjacency(rng, config.input_dim, n) for n in LENGTHS]
  time = rng.uniform(0, 2, len(LENGTHS)).astype(np.float32)
  with torch.no_grad():
    expected = model(**pyg_batch(adjacency, time)).numpy()
  got = apply_model(params_from_torch(path, config), config, pack_subjects(adjacency, time=time))
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4)

  # A bare pretrained-encoder state dict converts to encoder params only.
  torch.save(model.encoder.state_dict(), tmp_path / "pretrained_gnn_encoder.pth")
  encoder_only = params_from_torch(tmp_path / "pretrained_gnn_encoder.pth", config)
  assert set(encoder_only) == {"encoder"}
  jax.tree.map(np.testing.assert_array_equal, encoder_only["encoder"],
               params_from_torch(path, config)["encoder"])


def test_a_file_that_is_not_a_pytorch_checkpoint_is_named_for_what_it_is(tmp_path):
  config = reference_model(**SMALL)
  folder = tmp_path / "fold1"
  folder.mkdir()
  with pytest.raises(InputError, match=r"'.*fold1' is a folder, not a checkpoint file"):
    params_from_torch(folder, config)
  text = tmp_path / "notes.pth"
  text.write_text("subject,label\n1,0\n")
  with pytest.raises(InputError, match=r"'.*notes.pth' is a text file, not a PyTorch checkpoint"
                     ) as refused:
    params_from_torch(text, config)
  assert "trust_checkpoint" not in str(refused.value)
  flax_checkpoint = tmp_path / "best.msgpack"
  save_checkpoint(flax_checkpoint, params_for(config), config)
  with pytest.raises(InputError, match=r"'.*best.msgpack' is a stgnn-jax checkpoint, not a "
                     r"PyTorch one; read it with stgnn_jax.train.checkpoints.load_checkpoint"
                     ) as refused:
    params_from_torch(flax_checkpoint, config)
  assert "weights_only" not in str(refused.value)
  assert "trust_checkpoint" not in str(refused.value)
  with pytest.raises(InputError, match=r"'.*absent.pth' does not exist"):
    params_from_torch(tmp_path / "absent.pth", config)


def test_params_to_torch_loads_strictly_and_gives_same_logits():
  config = reference_model(**SMALL, layer_type="GAT", model_type="GRU", lstm_num_layers=2,
                       lstm_bidirectional=True, use_time_features=True)
  rng = np.random.default_rng(11)
  adjacency = [random_adjacency(rng, config.input_dim, n) for n in LENGTHS]
  time = rng.uniform(0, 2, len(LENGTHS)).astype(np.float32)
  batch = pack_subjects(adjacency, time=time)
  params = jax.jit(STGNN(config).init, static_argnames="max_visits")(
      jax.random.key(0), batch.graphs, batch.visit_slot, batch.lengths, batch.time,
      max_visits=batch.max_visits)["params"]  # Flax's own initialisers, not torch's
  state = params_to_torch(params, config)
  model = TorchSTGNN(config).eval()
  model.encoder.load_state_dict({k: torch.from_numpy(v) for k, v in state["encoder"].items()})
  model.classifier.load_state_dict(
      {k: torch.from_numpy(v) for k, v in state["classifier"].items()})
  with torch.no_grad():
    expected = model(**pyg_batch(adjacency, time)).numpy()
  np.testing.assert_allclose(np.asarray(apply_model(params, config, batch)), expected, atol=1e-4)
  back = params_from_torch(state, config)
  jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, dict(params)))


def test_converter_names_mismatched_keys():
  config = reference_model(**SMALL)
  checkpoint = checkpoint_of(torch_model(config))
  with pytest.raises(CheckpointMismatchError, match=r"convs\.0\.lin_l\.weight.*\(16, 24\)"):
    params_from_torch(checkpoint, dataclasses.replace(config, gnn_hidden_dim=32))
  with pytest.raises(CheckpointMismatchError, match=r"missing key 'convs\.0\.lin\.weight'"):
    params_from_torch(checkpoint, dataclasses.replace(config, layer_type="GCN"))
  with pytest.raises(CheckpointMismatchError, match=r"unexpected key.*topk_pools\.0"):
    params_from_torch(checkpoint, dataclasses.replace(config, use_topk_pooling=False))
  with pytest.raises(CheckpointMismatchError,
                     match=r"classifier\.0\.weight.*\(64, 16\), expected \(64, 8\)"):
    params_from_torch(checkpoint, dataclasses.replace(config, lstm_bidirectional=False))


def test_gradients_match_torch_autograd():
  config = reference_model(**SMALL, layer_type="GraphSAGE", model_type="LSTM",
                       use_time_features=True, lstm_num_layers=2)
  model = torch_model(config, seed=5)
  rng = np.random.default_rng(5)
  adjacency = [random_adjacency(rng, config.input_dim, n) for n in LENGTHS]
  time = rng.uniform(0, 2, len(LENGTHS)).astype(np.float32)
  weights = rng.normal(size=(len(LENGTHS), 2)).astype(np.float32)

  inputs = pyg_batch(adjacency, time)
  inputs["x"].requires_grad_(True)
  (model(**inputs) * torch.from_numpy(weights)).sum().backward()
  torch_grads = {"encoder": {k: p.grad.numpy() for k, p in model.encoder.named_parameters()},
                 "classifier": {k: p.grad.numpy() for k, p in model.classifier.named_parameters()}}

  params = params_from_torch(checkpoint_of(model), config)
  batch = pack_subjects(adjacency, time=time)

  def scalar(params, nodes):
    graphs = batch.graphs.replace(nodes=nodes)
    logits = STGNN(config).apply({"params": params}, graphs, batch.visit_slot, batch.lengths,
                                 batch.time, max_visits=batch.max_visits)
    return jnp.sum(logits * weights)

  one_hot = np.broadcast_to(np.eye(config.input_dim, dtype=np.float32),
                            batch.graphs.adjacency.shape)  # explicit features, to differentiate
  param_grads, node_grads = jax.grad(scalar, argnums=(0, 1))(params, one_hot)
  ours = params_to_torch(jax.tree.map(np.asarray, param_grads), config)
  for part in ("encoder", "classifier"):
    assert set(ours[part]) == set(torch_grads[part])
    for key, expected in torch_grads[part].items():
      scale = max(np.abs(expected).max(), 1e-6)
      np.testing.assert_allclose(ours[part][key], expected, atol=1e-4 * scale, rtol=1e-4,
                                 err_msg=key)
  expected_x = inputs["x"].grad.numpy()
  got_x = np.asarray(node_grads).reshape(-1, config.input_dim)  # every graph is full
  np.testing.assert_allclose(got_x, expected_x, atol=1e-4 * np.abs(expected_x).max(), rtol=1e-4)


def test_graphs_tuple_input_equals_dense_input():
  config = reference_model(**SMALL, layer_type="GCN")
  rng = np.random.default_rng(2)
  adjacency = [random_adjacency(rng, config.input_dim, n) for n in LENGTHS]
  batch = pack_subjects(adjacency)
  params = params_for(config, 1)
  dense_logits = apply_model(params, config, batch)

  graphs = [a for stack in adjacency for a in stack]
  receivers, senders = zip(*(np.nonzero(a) for a in graphs), strict=True)
  n = config.input_dim
  graphs_tuple = jraph.batch_np([
      jraph.GraphsTuple(nodes=np.eye(n, dtype=np.float32), edges=None, senders=s, receivers=r,
                        n_node=np.array([n]), n_edge=np.array([len(s)]), globals=None)
      for s, r in zip(senders, receivers, strict=True)])
  padded = jraph.pad_with_graphs(graphs_tuple, n_node=len(graphs) * n + 7,
                                 n_edge=int(graphs_tuple.n_edge.sum()) + 5,
                                 n_graph=len(graphs) + 3)
  slot = np.concatenate([batch.visit_slot[:len(graphs)],
                         np.full(3, batch.num_subjects * batch.max_visits)])
  logits = STGNN(config).apply({"params": params}, padded, slot, batch.lengths,
                               max_visits=batch.max_visits)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(dense_logits), atol=1e-5)


def test_padding_subjects_and_graphs_do_not_change_real_logits():
  config = reference_model(**SMALL)
  rng = np.random.default_rng(4)
  adjacency = [random_adjacency(rng, config.input_dim, n) for n in LENGTHS]
  tight = pack_subjects(adjacency)
  padded = pack_subjects(adjacency, num_subjects=8, max_visits=6, num_graphs=20)
  params = params_for(config, 2)
  got = np.asarray(apply_model(params, config, padded))
  assert np.isfinite(got).all()
  np.testing.assert_allclose(got[:len(LENGTHS)], np.asarray(apply_model(params, config, tight)),
                             atol=1e-5)


def test_predict_matches_reference_on_raw_fc_matrices():
  config = reference_model(use_time_features=True)
  model = torch_model(config, seed=9)
  rng = np.random.default_rng(9)
  subjects = [random_fc(rng, 100, n) for n in (2, 1, 3)]
  time = [0.5, 0.1, 1.2]
  adjacency = []
  for visits in subjects:  # the reference preprocessing, written out here
    stack = np.stack(visits)
    sym = (stack + np.swapaxes(stack, 1, 2)) / 2
    adjacency.append(np.abs(sym) >= 0.2)
  with torch.no_grad():
    expected = model(**pyg_batch(adjacency, time)).numpy()
  params = params_from_torch(checkpoint_of(model), config)
  got = predict(params, config, subjects, time_gaps=time, threshold=0.2)
  assert isinstance(got, np.ndarray) and got.shape == (3, 2)
  np.testing.assert_allclose(got, expected, atol=1e-4)


def test_predict_rejects_bad_input():
  config = reference_model(**SMALL)
  params = {"encoder": {}, "classifier": {}}
  with pytest.raises(ValueError, match="expects 24x24"):
    predict(params, config, [[np.eye(10)]])
  with pytest.raises(ValueError, match="subject 0 has no visit"):
    predict(params, config, [[]])
  with pytest.raises(ValueError, match="time_gaps"):
    predict(params, dataclasses.replace(config, use_time_features=True), [[np.eye(24)]])
  # Each malformed subject is named, with its visit (these used to fail inside NumPy).
  with pytest.raises(ValueError, match="visit 1 of subject 1 is a 20x20 matrix but the model "
                     "expects 24x24"):
    predict(params, config, [[np.eye(24)], [np.eye(24), np.eye(20)]])
  with pytest.raises(ValueError, match=r"visit 0 of subject 0 has shape \(24,\), not an N x N "
                     "matrix; pass, per subject, a list"):
    predict(params, config, [np.eye(24), np.eye(24)])  # a flat list of matrices
  with pytest.raises(ValueError, match="visit 0 of subject 0 holds complex128 values"):
    predict(params, config, [[np.eye(24) * (1 + 1j)]])
  with_nan = np.eye(24)
  with_nan[3, 5] = np.nan
  with pytest.raises(ValueError, match=r"visit 1 of subject 2 has 1 entry that is NaN or "
                     "infinite"):
    predict(params, config, [[np.eye(24)], [np.eye(24)], [np.eye(24), with_nan]])
  beyond_float32 = np.eye(24)
  beyond_float32[0, 1] = 1e39  # finite in float64, infinite once rounded to the model's float32
  with pytest.raises(ValueError, match=r"visit 0 of subject 0 has 1 entry that is NaN or "
                     r"infinite \(or beyond float32's range\)"):
    predict(params, config, [[beyond_float32]])


def test_jit_compiles_once_per_batch_shape_and_dropout_uses_rng():
  config = reference_model(**SMALL)
  rng = np.random.default_rng(6)
  def make():
    return pack_subjects([random_adjacency(rng, config.input_dim, n) for n in LENGTHS],
                         num_subjects=6, max_visits=4, num_graphs=16)
  batch = make()
  params = params_for(config, 3)
  apply_model.clear_cache()
  for _ in range(3):
    apply_model(params, config, make())
  assert apply_model._cache_size() == 1

  a = apply_model(params, config, batch, jax.random.key(1), deterministic=False)
  b = apply_model(params, config, batch, jax.random.key(2), deterministic=False)
  c = apply_model(params, config, batch, jax.random.key(1), deterministic=False)
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(a, c)
  np.testing.assert_array_equal(apply_model(params, config, batch),
                                apply_model(params, config, batch, jax.random.key(5)))


def test_frozen_encoder_gets_no_gradient():
  rng = np.random.default_rng(8)
  batch = pack_subjects([random_adjacency(rng, SMALL["input_dim"], n) for n in LENGTHS],
                        labels=[0, 1, 0, 1, 1])
  grads = {}
  for freeze in (False, True):
    config = reference_model(**SMALL, freeze_encoder=freeze)
    params = params_for(config, 4)
    grads[freeze] = jax.grad(lambda p, c=config: apply_model(p, c, batch).sum())(params)

  def enc_norm(g):
    return sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(g["encoder"]))
  assert enc_norm(grads[False]) > 0
  assert enc_norm(grads[True]) == 0
  assert sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(grads[True]["classifier"])) > 0


@pytest.mark.parametrize("layer_type", ["GraphSAGE", "GCN", "GAT"])
def test_one_hot_fast_path_equals_explicit_identity_features(layer_type):
  config = reference_model(**SMALL, layer_type=layer_type)
  rng = np.random.default_rng(12)
  batch = pack_subjects([random_adjacency(rng, config.input_dim, n) for n in LENGTHS],
                        num_graphs=14)  # two padding graphs
  assert batch.graphs.nodes is None
  explicit = batch.graphs.replace(nodes=np.broadcast_to(
      np.eye(config.input_dim, dtype=np.float32), batch.graphs.adjacency.shape)
      * batch.graphs.node_mask[..., None])
  params = params_for(config, 12)["encoder"]

  @jax.jit
  def both(params):
    def embed(params, graphs):
      out = GraphEncoder(config).apply({"params": params}, graphs)
      return jnp.sum(out * jnp.arange(out.size).reshape(out.shape) % 7), out
    return (jax.value_and_grad(embed, has_aux=True)(params, batch.graphs),
            jax.value_and_grad(embed, has_aux=True)(params, explicit))

  ((_, fast), fast_grads), ((_, slow), slow_grads) = both(params)
  np.testing.assert_allclose(fast, slow, atol=1e-5)
  # float32 sums of terms up to ~1e3: compare at the scale of each gradient leaf.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-5 * np.abs(b).max()),
               fast_grads, slow_grads)


def test_connection_profile_encoder_matches_pyg_sage_without_norm_with_concat_readout():
  """The learning recipe's encoder (standardised connection profiles -> SAGEConv -> elu, no
  GraphNorm or TopK, concatenation readout), written independently with PyG's SAGEConv."""
  from torch_geometric.nn import SAGEConv

  config = reference_model(input_dim=10, gnn_hidden_dim=6, output_dim=6, gnn_num_layers=1,
                       node_features="connection_profile", graph_norm=False,
                       use_topk_pooling=False, readout="concat", readout_node_dim=3,
                       lstm_hidden_dim=4)
  rng = np.random.default_rng(13)
  fc = [np.stack(random_fc(rng, 10, n)) for n in (2, 1, 3)]
  values = [threshold_fc(f, 0.4) for f in fc]
  batch = pack_subjects([v != 0 for v in values], features=values, num_graphs=8)
  stats = input_statistics(values)
  params = with_input_statistics(
      STGNN(config).init(jax.random.key(0), batch.graphs, batch.visit_slot, batch.lengths,
                         max_visits=3)["params"], stats)
  got = np.asarray(STGNN(config).apply({"params": params}, batch.graphs, method=STGNN.encode))

  scans = np.concatenate(values).astype(np.float64)
  np.testing.assert_allclose(stats["mean"], scans.mean(0), rtol=1e-5, atol=1e-6)
  std = scans.std(0)
  np.testing.assert_allclose(stats["scale"], np.where(std > 1e-6, 1 / np.maximum(std, 1e-6), 0),
                             rtol=1e-5)
  encoder = params["encoder"]
  conv = SAGEConv(10, 6).double()
  with torch.no_grad():
    conv.lin_l.weight.copy_(torch.from_numpy(np.array(encoder["convs_0"]["lin_l"]["kernel"]).T))
    conv.lin_l.bias.copy_(torch.from_numpy(np.array(encoder["convs_0"]["lin_l"]["bias"])))
    conv.lin_r.weight.copy_(torch.from_numpy(np.array(encoder["convs_0"]["lin_r"]["kernel"]).T))
  projection = encoder["readout_projection"]
  for g, scan in enumerate(scans):
    x = torch.from_numpy((scan - stats["mean"]) * stats["scale"])
    receivers, senders = np.nonzero(scan != 0)
    edge_index = torch.from_numpy(np.stack([senders, receivers]))
    with torch.no_grad():
      h = torch.nn.functional.elu(conv(x, edge_index)).numpy()
    expected = (h @ np.asarray(projection["kernel"]) + np.asarray(projection["bias"])).reshape(-1)
    np.testing.assert_allclose(got[g], expected, rtol=1e-4, atol=1e-5)
  assert not got[6:].any()  # padding graphs embed to 0
  assert config.embedding_dim == 30 and got.shape == (8, 30)


def test_input_statistics_never_move_and_non_reference_encoders_do_not_convert():
  config = reference_model(input_dim=8, gnn_hidden_dim=6, output_dim=6, gnn_num_layers=1,
                       node_features="connection_profile", graph_norm=False,
                       use_topk_pooling=False, readout="concat", lstm_hidden_dim=4)
  rng = np.random.default_rng(14)
  values = [threshold_fc(np.stack(random_fc(rng, 8, n)), 0.4) for n in (2, 3, 1, 2)]
  batch = pack_subjects([v != 0 for v in values], features=values, labels=[0, 1, 0, 1])
  params = with_input_statistics(
      STGNN(config).init(jax.random.key(1), batch.graphs, batch.visit_slot, batch.lengths,
                         max_visits=3)["params"], input_statistics(values))
  state = TrainState.create(params, config, reference_optim(lr=1e-2, weight_decay=0.1))
  for i in range(3):
    state, _ = train_step(state, batch, jax.random.key(i))
  jax.tree.map(np.testing.assert_array_equal, state.params["encoder"]["input_standardization"],
               params["encoder"]["input_standardization"])
  assert np.any(state.params["encoder"]["convs_0"]["lin_r"]["kernel"]
                != params["encoder"]["convs_0"]["lin_r"]["kernel"])
  with pytest.raises(ValueError, match="readout='concat' has no counterpart"):
    params_to_torch(state.params, config)
  with pytest.raises(ValueError, match="graph_norm=False has no counterpart"):
    params_to_torch(state.params, dataclasses.replace(config, readout="meanmax"))
  with pytest.raises(ValueError, match="use_topk_pooling=False"):
    reference_model(readout="concat")
  with pytest.raises(ValueError, match="no node features"):
    STGNN(config).init(jax.random.key(1), pack_subjects([v != 0 for v in values]).graphs,
                       batch.visit_slot, batch.lengths, max_visits=3)


def test_predict_feeds_connection_profiles_with_the_checkpoints_statistics():
  config = reference_model(input_dim=8, gnn_hidden_dim=6, output_dim=6, gnn_num_layers=1,
                       node_features="connection_profile", graph_norm=False,
                       use_topk_pooling=False, readout="concat", lstm_hidden_dim=4)
  rng = np.random.default_rng(15)
  raw = [random_fc(rng, 8, n) for n in (2, 1, 3)]
  values = [threshold_fc(np.stack(r), 0.3) for r in raw]
  batch = pack_subjects([v != 0 for v in values], features=values)
  params = with_input_statistics(
      STGNN(config).init(jax.random.key(2), batch.graphs, batch.visit_slot, batch.lengths,
                         max_visits=3)["params"], input_statistics(values[:2]))
  expected = STGNN(config).apply({"params": params}, batch.graphs, batch.visit_slot,
                                 batch.lengths, max_visits=3)
  np.testing.assert_allclose(predict(params, config, raw, threshold=0.3), expected, rtol=1e-5,
                             atol=1e-6)
  # The statistics matter: the identity standardisation gives other logits.
  identity = with_input_statistics(params, {"mean": np.zeros((8, 8)), "scale": np.ones((8, 8))})
  assert not np.allclose(predict(identity, config, raw, threshold=0.3), expected, atol=1e-4)


def test_graphs_tuple_that_does_not_fit_its_node_slots_is_refused():
  """5 nodes into 3 slots used to keep 3 nodes and 1 of 5 edges in silence."""
  graphs = jraph.GraphsTuple(
      nodes=jnp.ones((5, 2)), edges=None, senders=jnp.array([0, 1, 2, 3, 4]),
      receivers=jnp.array([1, 2, 3, 4, 0]), n_node=jnp.array([5]), n_edge=jnp.array([5]),
      globals=None)
  with pytest.raises(ValueError, match="graph 0 has 5 nodes but only 3 node slots"):
    dense_graphs_from_jraph(graphs, max_nodes=3)
  dense = dense_graphs_from_jraph(graphs, max_nodes=5)
  assert int(dense.node_mask.sum()) == 5 and float(dense.adjacency.sum()) == 5.0
