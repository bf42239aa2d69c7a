"""Parity of the graph layers of stgnn_jax.nn with PyTorch Geometric 2.8 (max abs error <= 1e-5,
float32).

Each case builds the PyG module with seeded random weights, converts them with the layer
converters, runs both on the same random graphs (jraph -> `dense_graphs_from_jraph` on the JAX
side), and compares real nodes; padding slots must be exactly 0, and `jraph.pad_with_graphs`
padding must not change a real graph's output.
"""

from __future__ import annotations

import functools
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_geometric.nn as pyg_nn
from torch_geometric.nn.pool.select.topk import topk as pyg_topk

from bench.pyg_reference import (
  GraphBatch,
  edge_counts,
  fc_graph_batch,
  random_graph_batch,
)
from stgnn_jax.nn.activations import activation
from stgnn_jax.nn.conv import CONV_TYPES
from stgnn_jax.nn.dropout import HashDropout, _hash_keep
from stgnn_jax.nn.graphs import DenseGraphs, dense_graphs_from_jraph
from stgnn_jax.nn.norm import GraphNorm
from stgnn_jax.nn.pooling import TopKPool, readout, topk_size
from stgnn_jax.torch_interop.layers import (
  conv_params_from_torch,
  conv_params_to_torch,
  graph_norm_params_from_torch,
  graph_norm_params_to_torch,
  topk_params_from_torch,
  topk_params_to_torch,
)
from stgnn_jax.torch_interop.state_dict import CheckpointMismatchError, StateReader

TOL = 1e-5
SIZES = (5, 12, 1, 30)
MAX_NODES = 32  # more slots than the largest graph: real graphs carry padding slots too
LAYER_TYPES = ("GraphSAGE", "GCN", "GAT")


def _seed(*parts: object) -> int:
  return zlib.crc32(repr(parts).encode())


@functools.cache
def _batch(features: int) -> GraphBatch:
  """The shared random batch: one structure for all tests, so the jraph -> dense conversion
  compiles once per feature size (weights differ per test)."""
  return random_graph_batch(np.random.default_rng(0), SIZES, features)


def _with_nodes(batch: GraphBatch, x: np.ndarray) -> GraphBatch:
  return GraphBatch(x.astype(np.float32), batch.senders, batch.receivers, batch.n_node,
                    batch.n_edge)


def _pad(graphs: jraph.GraphsTuple) -> jraph.GraphsTuple:
  """Two padding graphs with 6 padding nodes and 4 padding edges, as a data pipeline would."""
  return jraph.pad_with_graphs(
      graphs, n_node=int(graphs.n_node.sum()) + 6, n_edge=int(graphs.n_edge.sum()) + 4,
      n_graph=len(graphs.n_node) + 2)


@functools.cache
def _to_dense(max_nodes: int, padded: bool):
  """Jitted `dense_graphs_from_jraph`; jit caches one compile per input shape."""
  return jax.jit(functools.partial(dense_graphs_from_jraph, max_nodes=max_nodes, padded=padded))


@functools.cache
def _jit_apply(module: nn.Module):
  """`(variables, DenseGraphs) -> output`, compiled once per module and shape."""
  if isinstance(module, GraphNorm):
    return jax.jit(lambda v, dense: module.apply(v, dense.nodes, dense.node_mask))
  return jax.jit(module.apply)


def _run_both_ways(module: nn.Module, variables, batch: GraphBatch, max_nodes: int = MAX_NODES):
  """The module on the batch as is and padded with `pad_with_graphs`; checks that padding
  changes nothing and that padding graphs come out all 0. Returns the unpadded output."""
  graphs = batch.to_jraph()
  dense = _to_dense(max_nodes, False)(graphs)
  dense_padded = _to_dense(max_nodes, True)(_pad(graphs))
  # Graphs never interact, so both batches go through one call: one compile per module.
  both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), dense, dense_padded)
  out = jax.tree.map(np.asarray, _jit_apply(module)(variables, both))
  num_graphs = len(batch.n_node)
  split = num_graphs + len(dense_padded.node_mask)
  unpadded = jax.tree.map(lambda a: a[:num_graphs], out)
  for a in jax.tree.leaves(out):  # NumPy from here: eager jax indexing compiles per shape
    real, padded = a[:num_graphs], a[num_graphs:split]
    np.testing.assert_allclose(padded[:num_graphs], real, atol=1e-6, rtol=0)
    if a.dtype != np.int32:  # perm is -1 on masked slots
      assert not padded[num_graphs:].any(), "padding graphs must stay 0"
  return unpadded


def _assert_nodes_match(dense_out, torch_out: torch.Tensor, batch: GraphBatch) -> None:
  """Real nodes equal PyG's rows; padding slots exactly 0."""
  dense_out = np.asarray(dense_out)
  torch_out = torch_out.detach().numpy()
  for g, rows in enumerate(batch.node_slices()):
    n = rows.stop - rows.start
    np.testing.assert_allclose(dense_out[g, :n], torch_out[rows], atol=TOL, rtol=0)
    assert not dense_out[g, n:].any(), "padding slots must be exactly 0"


# --- Conversion of jraph batches ------------------------------------------------------------

def test_dense_graphs_from_jraph_known_graph():
  # Graph 0: 3 nodes, edges 0->1 (twice), 1->2, 2->2; graph 1: 2 nodes, edge 1->0.
  graphs = jraph.GraphsTuple(
      nodes=np.arange(10, dtype=np.float32).reshape(5, 2), edges=None,
      senders=np.array([0, 1, 2, 0, 4]), receivers=np.array([1, 2, 2, 1, 3]),
      n_node=np.array([3, 2]), n_edge=np.array([4, 1]), globals=None)
  dense = jax.jit(dense_graphs_from_jraph, static_argnums=1)(graphs, 4)
  expected_adjacency = np.zeros((2, 4, 4), np.float32)
  expected_adjacency[0, 1, 0] = 2  # adjacency[g, receiver, sender]
  expected_adjacency[0, 2, 1] = 1
  expected_adjacency[0, 2, 2] = 1
  expected_adjacency[1, 0, 1] = 1
  expected_nodes = np.zeros((2, 4, 2), np.float32)
  expected_nodes[0, :3] = [[0, 1], [2, 3], [4, 5]]
  expected_nodes[1, :2] = [[6, 7], [8, 9]]
  np.testing.assert_array_equal(dense.adjacency, expected_adjacency)
  np.testing.assert_array_equal(dense.nodes, expected_nodes)
  np.testing.assert_array_equal(dense.node_mask, [[1, 1, 1, 0], [1, 1, 0, 0]])


# --- Convolutions ---------------------------------------------------------------------------

def _torch_conv(
    layer_type: str, in_dim: int, out_dim: int, seed: int, bias_scale: float = 1.0,
) -> torch.nn.Module:
  torch.manual_seed(seed)
  conv = {"GraphSAGE": pyg_nn.SAGEConv, "GCN": pyg_nn.GCNConv, "GAT": pyg_nn.GATConv}[layer_type]
  module = conv(in_dim, out_dim).eval()
  with torch.no_grad():  # PyG initialises these to 0: make them count
    for name, value in module.named_parameters():
      if name in ("bias", "att_src", "att_dst"):
        value.normal_(0.0, bias_scale)
  return module


def _conv_variables(module: torch.nn.Module, layer_type: str, in_dim: int, out_dim: int) -> dict:
  reader = StateReader(module.state_dict())
  params = conv_params_from_torch(reader, "", layer_type, in_dim, out_dim)
  reader.check_all_used()
  return {"params": params}


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("in_dim,out_dim", [(7, 6), (4, 9)])  # both aggregation orders
def test_conv_matches_pyg(layer_type, in_dim, out_dim):
  batch = _batch(in_dim)
  torch_conv = _torch_conv(layer_type, in_dim, out_dim, _seed(layer_type, in_dim, out_dim))
  x, edge_index, _ = batch.to_pyg()
  expected = torch_conv(x, edge_index)

  module = CONV_TYPES[layer_type](out_dim)
  out = _run_both_ways(module, _conv_variables(torch_conv, layer_type, in_dim, out_dim), batch)
  _assert_nodes_match(out, expected, batch)


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_conv_params_round_trip(layer_type):
  torch_conv = _torch_conv(layer_type, 5, 3, seed=0)
  variables = _conv_variables(torch_conv, layer_type, 5, 3)
  # The converted tree is exactly the tree the module initialises.
  graphs = DenseGraphs(nodes=jnp.zeros((1, 4, 5)), adjacency=jnp.zeros((1, 4, 4)),
                       node_mask=jnp.ones((1, 4), bool))
  init = jax.eval_shape(CONV_TYPES[layer_type](3).init, jax.random.PRNGKey(0), graphs)
  assert jax.tree.map(np.shape, init) == jax.tree.map(np.shape, variables)
  state = conv_params_to_torch(variables["params"], "convs.1.", layer_type)
  expected = {"convs.1." + k: v.numpy() for k, v in torch_conv.state_dict().items()}
  assert state.keys() == expected.keys()
  for key, value in expected.items():
    np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_init_mirrors_pyg_bounds():
  in_dim, out_dim = 100, 256
  dense = DenseGraphs(nodes=jnp.zeros((1, 2, in_dim)), adjacency=jnp.zeros((1, 2, 2)),
                      node_mask=jnp.ones((1, 2), bool))
  modules = {name: CONV_TYPES[name](out_dim) for name in LAYER_TYPES}
  modules["TopK"] = TopKPool(0.5)

  @jax.jit
  def init_all(key):
    return {name: m.init(key, dense)["params"] for name, m in modules.items()}

  params = jax.tree.map(np.asarray, init_all(jax.random.PRNGKey(0)))
  torch_linear = 1 / np.sqrt(in_dim)  # kaiming_uniform(a=sqrt(5)) and torch's bias bound
  glorot = np.sqrt(6 / (in_dim + out_dim))
  att = np.sqrt(6 / (1 + out_dim))  # glorot of PyG's [1, 1, out]
  expected = {
      ("GraphSAGE", "lin_l", "kernel"): torch_linear, ("GraphSAGE", "lin_l", "bias"): torch_linear,
      ("GraphSAGE", "lin_r", "kernel"): torch_linear,
      ("GCN", "lin", "kernel"): glorot, ("GCN", "bias"): 0.0,
      ("GAT", "lin", "kernel"): glorot, ("GAT", "att_src"): att, ("GAT", "att_dst"): att,
      ("GAT", "bias"): 0.0, ("TopK", "weight"): 1 / np.sqrt(in_dim),
  }
  for path, value in jax.tree_util.tree_leaves_with_path(params):
    key = tuple(k.key for k in path)
    bound = expected.pop(key)
    # Uniform samples: none beyond the bound, the largest close to it (seeded, so stable).
    assert np.abs(value).max() <= bound, key
    np.testing.assert_allclose(np.abs(value).max(), bound, rtol=0.05, atol=0, err_msg=str(key))
  assert not expected, f"params not created: {sorted(expected)}"


# --- GraphNorm ------------------------------------------------------------------------------

def test_graph_norm_matches_pyg():
  features = 7
  batch = _with_nodes(_batch(features), _batch(features).x * 3 + 1)
  torch.manual_seed(1)
  torch_norm = pyg_nn.GraphNorm(features)
  with torch.no_grad():
    for value in torch_norm.parameters():
      value.normal_()
  x, _, graph_index = batch.to_pyg()
  expected = torch_norm(x, graph_index)

  reader = StateReader(torch_norm.state_dict())
  variables = {"params": graph_norm_params_from_torch(reader, "", features)}
  reader.check_all_used()
  out = _run_both_ways(GraphNorm(), variables, batch)
  _assert_nodes_match(out, expected, batch)

  state = graph_norm_params_to_torch(variables["params"], "gns.0.")
  for key, value in torch_norm.state_dict().items():
    np.testing.assert_array_equal(state["gns.0." + key], value.numpy())


def test_graph_norm_empty_graph_is_zero():
  x = jnp.ones((2, 3, 4))
  node_mask = jnp.array([[True, True, False], [False, False, False]])
  module = GraphNorm()
  variables = {"params": {name: jnp.full((4,), 2.0) for name in ("weight", "bias", "mean_scale")}}
  out = np.asarray(jax.jit(module.apply)(variables, x, node_mask))
  assert np.isfinite(out).all()
  assert not out[0, 2].any() and not out[1].any()


# --- TopK pooling ---------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.7, 0.99, 1.0, 2.0, 7.0])
def test_topk_size_matches_pyg(ratio):
  sizes = np.arange(1, 151)
  scores = torch.from_numpy(np.random.default_rng(0).random(sizes.sum()).astype(np.float32))
  graph_index = torch.from_numpy(np.repeat(np.arange(len(sizes)), sizes))
  kept = np.bincount(graph_index[pyg_topk(scores, ratio, graph_index)].numpy(),
                     minlength=len(sizes))
  np.testing.assert_array_equal([topk_size(ratio, int(n)) for n in sizes], kept)


def test_topk_size_pyg_quirks():
  assert topk_size(0.3, 100) == 31  # float32 ceil, not 30
  assert topk_size(0.3, 31) == 10
  assert topk_size(1.0, 100) == 1  # ratio >= 1 is an absolute count
  with pytest.raises(ValueError, match="positive"):
    topk_size(0.0, 100)


def _assert_pool_matches(pooled: DenseGraphs, perm, score, torch_out, batch: GraphBatch) -> None:
  """Same kept nodes in the same order, same features, scores and pooled edges (with counts)."""
  x_out, edge_index_out, _, graph_out, perm_out, score_out = torch_out
  graph_out = graph_out.numpy()
  new_offset = 0
  for g, offset in enumerate(batch.offsets):
    rows = graph_out == g
    k = int(rows.sum())
    assert pooled.node_mask[g].sum() == k
    assert not pooled.node_mask[g, k:].any()
    np.testing.assert_array_equal(perm[g, :k], perm_out.numpy()[rows] - offset)
    np.testing.assert_allclose(score[g, :k], score_out.detach().numpy()[rows], atol=TOL, rtol=0)
    np.testing.assert_allclose(pooled.nodes[g, :k], x_out.detach().numpy()[rows], atol=TOL, rtol=0)
    assert not pooled.nodes[g, k:].any()
    expected_edges = np.zeros(pooled.adjacency.shape[1:], np.float32)
    expected_edges[:k, :k] = edge_counts(edge_index_out, k, new_offset)
    np.testing.assert_array_equal(pooled.adjacency[g], expected_edges)
    new_offset += k


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.99, 1.0, 7.0])
def test_topk_matches_pyg(ratio):
  features = 7
  batch = _batch(features)
  torch.manual_seed(_seed("topk", ratio))
  torch_pool = pyg_nn.TopKPooling(features, ratio)
  x, edge_index, graph_index = batch.to_pyg()
  expected = torch_pool(x, edge_index, batch=graph_index)

  reader = StateReader(torch_pool.state_dict())
  variables = {"params": topk_params_from_torch(reader, "select.", features)}
  reader.check_all_used()
  pooled, perm, score = _run_both_ways(TopKPool(ratio), variables, batch)
  assert pooled.max_nodes == topk_size(ratio, MAX_NODES)
  _assert_pool_matches(pooled, perm, score, expected, batch)

  state = topk_params_to_torch(variables["params"], "topk_pools.0.select.")
  np.testing.assert_array_equal(
      state["topk_pools.0.select.weight"], torch_pool.state_dict()["select.weight"].numpy())


# --- Readout --------------------------------------------------------------------------------

class _Readout(nn.Module):
  @nn.compact
  def __call__(self, graphs: DenseGraphs) -> jax.Array:
    return readout(graphs)


def test_readout_matches_pyg():
  batch = _with_nodes(_batch(7), _batch(7).x - 5)  # all negative: a max over padding 0s would show
  x, _, graph_index = batch.to_pyg()
  expected = torch.cat(
      [pyg_nn.global_mean_pool(x, graph_index), pyg_nn.global_max_pool(x, graph_index)], dim=-1)
  out = _run_both_ways(_Readout(), {}, batch)
  np.testing.assert_allclose(out, expected.numpy(), atol=TOL, rtol=0)


def test_readout_empty_graph_is_zero():
  graphs = DenseGraphs(nodes=jnp.zeros((1, 3, 2)), adjacency=jnp.zeros((1, 3, 3)),
                       node_mask=jnp.zeros((1, 3), bool))
  np.testing.assert_array_equal(jax.jit(readout)(graphs), np.zeros((1, 4)))


# --- The atlas case: conv -> GraphNorm -> elu -> TopK, twice --------------------------------

@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_atlas_stack_matches_pyg(layer_type):
  regions, hidden, ratio = 100, 32, 0.3
  seed = _seed("atlas", layer_type)
  batch = fc_graph_batch(np.random.default_rng(0), num_graphs=4, regions=regions)
  dims = [(regions, hidden), (hidden, hidden)]
  torch.manual_seed(seed)
  # Small biases: a bias far above a feature's spread across nodes makes GraphNorm (x - mean) / std
  # amplify float32 rounding in PyG and JAX alike (1e-7 * 100x), which is no parity signal.
  convs = [_torch_conv(layer_type, i, o, seed + n, bias_scale=0.1)
           for n, (i, o) in enumerate(dims)]
  norms = [pyg_nn.GraphNorm(hidden) for _ in dims]
  pools = [pyg_nn.TopKPooling(hidden, ratio) for _ in dims]
  with torch.no_grad():
    for norm in norms:
      for value in norm.parameters():
        value.normal_(1.0, 0.3)

  x, edge_index, graph_index = batch.to_pyg()
  perms = []
  for conv, norm, pool in zip(convs, norms, pools, strict=True):
    x = F.elu(norm(conv(x, edge_index), graph_index))
    x, edge_index, _, graph_index, perm, score = pool(x, edge_index, batch=graph_index)
    perms.append(perm)
  expected = (x, edge_index, None, graph_index, perms[-1], score)

  variables = {
      "convs": [_conv_variables(c, layer_type, i, o)
                for c, (i, o) in zip(convs, dims, strict=True)],
      "gns": [{"params": graph_norm_params_from_torch(StateReader(n.state_dict()), "",
                                                             hidden)} for n in norms],
      "pools": [{"params": topk_params_from_torch(StateReader(p.state_dict()), "select.",
                                                         hidden)} for p in pools],
  }
  conv = CONV_TYPES[layer_type](hidden)
  norm, pool = GraphNorm(), TopKPool(ratio)

  @jax.jit
  def encoder(variables, dense):
    perms = []
    for i in range(2):
      h = conv.apply(variables["convs"][i], dense)
      h = activation("elu")(norm.apply(variables["gns"][i], h, dense.node_mask))
      dense, perm, score = pool.apply(variables["pools"][i], dense.replace(nodes=h))
      perms.append(perm)
    return dense, perms[0], perms[1], score

  dense = _to_dense(regions, False)(batch.to_jraph())
  pooled, first_perm, perm, score = jax.tree.map(np.asarray, encoder(variables, dense))
  assert pooled.nodes.shape == (4, 10, hidden)  # 100 -> 31 -> 10, PyG's float32 ceil
  np.testing.assert_array_equal(
      first_perm, perms[0].numpy().reshape(4, 31) - regions * np.arange(4)[:, None])
  pooled_batch = GraphBatch(np.zeros((124, 1)), np.zeros(0), np.zeros(0),
                            np.full(4, 31), np.zeros(4))  # offsets of the first pooled level
  _assert_pool_matches(pooled, perm, score, expected, pooled_batch)


# --- Gradients ------------------------------------------------------------------------------

@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_gradients_finite_with_padding(layer_type):
  conv, norm, pool = CONV_TYPES[layer_type](4), GraphNorm(), TopKPool(0.5)
  dense = _to_dense(MAX_NODES, True)(_pad(_batch(7).to_jraph()))
  # Random values in the initialised shapes; eval_shape traces init without compiling it.
  key = jax.random.PRNGKey(0)
  h = jax.ShapeDtypeStruct(dense.nodes.shape[:2] + (4,), jnp.float32)
  shapes = {
      "conv": jax.eval_shape(conv.init, key, dense),
      "norm": jax.eval_shape(norm.init, key, h, dense.node_mask),
      "pool": jax.eval_shape(pool.init, key, dense.replace(nodes=h)),
  }
  rng = np.random.default_rng(5)
  variables = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)

  @jax.jit
  @jax.grad
  def grad(variables):
    h = conv.apply(variables["conv"], dense)
    h = jax.nn.elu(norm.apply(variables["norm"], h, dense.node_mask))
    pooled, _, _ = pool.apply(variables["pool"], dense.replace(nodes=h))
    return readout(pooled).sum()

  for path, leaf in jax.tree_util.tree_leaves_with_path(grad(variables)):
    assert np.isfinite(leaf).all(), jax.tree_util.keystr(path)
    assert np.abs(leaf).sum() > 0, jax.tree_util.keystr(path)


@pytest.mark.parametrize("name", ["elu", "gelu", "relu", "leaky_relu"])
@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_fused_norm_activation_dropout_matches_pyg_in_float64(name, rate):
  """GraphNorm -> activation -> dropout in one call (hand-written backward) against PyG's
  GraphNorm, torch's activation and the same dropout mask, autograd in float64: outputs and
  every gradient, with real nodes of uneven graphs, padding slots and an empty graph."""
  rng = np.random.default_rng(_seed("fused", name, rate))
  sizes, slots, features = (9, 4, 0, 7), 10, 6
  node_mask = np.arange(slots) < np.array(sizes)[:, None]  # [G, N]
  # A feature with a tiny spread around a large mean (as the one-hot GAT layer gives) makes
  # the backward's cancellations bite.
  x = rng.normal(size=(len(sizes), slots, features)) * np.array([1, 1, 1, 1, 1, 0.02])
  x = np.where(node_mask[..., None], x + rng.normal(size=features), 0).astype(np.float32)
  params = {"weight": 1 + 0.5 * rng.normal(size=features), "bias": 0.5 * rng.normal(size=features),
            "mean_scale": 1 + 0.3 * rng.normal(size=features)}
  params = {k: v.astype(np.float32) for k, v in params.items()}
  dy = rng.normal(size=x.shape).astype(np.float32)
  seed = jnp.array([1234, 5678], jnp.uint32) if rate else None

  def fused(x, params):
    return GraphNorm().apply(
        {"params": params}, x, jnp.asarray(node_mask), activation=activation(name),
        dropout_rate=rate, dropout_seed=seed)

  out, vjp = jax.vjp(fused, jnp.asarray(x), params)
  dx, dparams = vjp(jnp.asarray(dy))

  keep = np.ones(x.shape, bool) if seed is None else np.asarray(
      _hash_keep(x.shape, seed, rate))
  real = node_mask.reshape(-1)
  norm = pyg_nn.GraphNorm(features).double()
  with torch.no_grad():
    for key, value in params.items():
      getattr(norm, key).copy_(torch.from_numpy(value.astype(np.float64)))
  x_t = torch.tensor(x.reshape(-1, features)[real], dtype=torch.float64, requires_grad=True)
  batch = torch.from_numpy(np.repeat(np.arange(len(sizes)), sizes))
  torch_act = {"relu": F.relu, "leaky_relu": F.leaky_relu, "elu": F.elu, "gelu": F.gelu}
  keep_t = torch.from_numpy(keep.reshape(-1, features)[real])
  expected = torch_act[name](norm(x_t, batch)) * keep_t / (1 - rate)
  expected.backward(torch.from_numpy(dy.reshape(-1, features)[real].astype(np.float64)))

  out = np.asarray(out).reshape(-1, features)
  np.testing.assert_allclose(out[real], expected.detach().numpy(), atol=1e-5, rtol=1e-5)
  assert not out[~real].any()
  grad_x = np.asarray(dx).reshape(-1, features)
  np.testing.assert_allclose(grad_x[real], x_t.grad.numpy(), atol=1e-4, rtol=1e-4)
  assert not grad_x[~real].any()
  for name in params:
    np.testing.assert_allclose(dparams[name], getattr(norm, name).grad.numpy(), atol=1e-4,
                               rtol=1e-4, err_msg=name)


def test_fused_dropout_draws_the_hash_dropout_mask():
  """`HashDropout.draw_seed` + the fused block drop exactly what `HashDropout` would."""
  x = jnp.asarray(np.random.default_rng(3).normal(size=(3, 8, 5)), jnp.float32)
  node_mask = jnp.ones((3, 8), bool)
  rngs = {"dropout": jax.random.key(9)}
  norm_vars = {"params": {"weight": jnp.ones(5), "bias": jnp.zeros(5),
                          "mean_scale": jnp.ones(5)}}
  normed = GraphNorm().apply(norm_vars, x, node_mask)
  expected = HashDropout(0.4).apply({}, normed, deterministic=False, rngs=rngs)
  seed = HashDropout(0.4).apply({}, rngs=rngs, method=HashDropout.draw_seed)
  fused = GraphNorm().apply(norm_vars, x, node_mask, dropout_rate=0.4, dropout_seed=seed)
  np.testing.assert_array_equal(fused, expected)
  assert 0 < float((np.asarray(fused) == 0).mean()) < 1


# --- Activations ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,torch_fn", [
    ("relu", F.relu), ("leaky_relu", F.leaky_relu), ("elu", F.elu), ("gelu", F.gelu)])
def test_activation_matches_torch(name, torch_fn):
  x = np.linspace(-8, 8, 1001, dtype=np.float32)
  np.testing.assert_allclose(
      activation(name)(jnp.asarray(x)), torch_fn(torch.from_numpy(x)).numpy(),
      atol=TOL, rtol=0)


def test_unknown_activation_lists_valid_names():
  with pytest.raises(ValueError, match="'elu', 'gelu', 'leaky_relu', 'relu'"):
    activation("swish")


# --- Converter errors -----------------------------------------------------------------------

def test_converter_errors_name_the_key():
  state = {"convs.0." + k: v for k, v in _torch_conv("GCN", 5, 3, seed=0).state_dict().items()}
  with pytest.raises(CheckpointMismatchError, match=r"'convs\.0\.lin\.weight' has shape \(3, 5\)"):
    conv_params_from_torch(StateReader(state), "convs.0.", "GCN", 4, 3)
  with pytest.raises(CheckpointMismatchError, match=r"missing key 'convs\.0\.lin_l\.weight'"):
    conv_params_from_torch(StateReader(state), "convs.0.", "GraphSAGE", 5, 3)
  with pytest.raises(ValueError, match="unknown layer_type 'GIN'"):
    conv_params_from_torch(StateReader(state), "", "GIN", 5, 3)
  with pytest.raises(CheckpointMismatchError, match=r"missing key 'gns\.0\.weight'"):
    graph_norm_params_from_torch(StateReader(state), "gns.0.", 3)
  with pytest.raises(CheckpointMismatchError, match=r"'select\.weight' has shape \(1, 6\)"):
    topk_params_from_torch(
        StateReader(pyg_nn.TopKPooling(6).state_dict()), "select.", 5)


def test_hash_dropout_statistics_and_determinism():
  x = jnp.ones((64, 100, 32))
  drop = HashDropout(0.2)
  apply = jax.jit(lambda key: drop.apply({}, x, deterministic=False, rngs={"dropout": key}))
  a, b, a_again = apply(jax.random.key(0)), apply(jax.random.key(1)), apply(jax.random.key(0))
  np.testing.assert_array_equal(a, a_again)
  kept_a, kept_b = np.asarray(a) > 0, np.asarray(b) > 0
  n = kept_a.size
  # Keep rate 0.8 within 5 standard deviations; kept values scaled by 1 / 0.8.
  assert abs(kept_a.mean() - 0.8) < 5 * np.sqrt(0.16 / n)
  np.testing.assert_allclose(np.asarray(a)[kept_a], 1.25, rtol=1e-6)
  # Independent across keys and across neighbouring elements: P(both kept) = 0.64.
  for both in (kept_a & kept_b, kept_a.ravel()[1:] & kept_a.ravel()[:-1],
               kept_a[:, 1:] & kept_a[:, :-1]):
    assert abs(both.mean() - 0.64) < 5 * np.sqrt(0.64 * 0.36 / both.size)
  np.testing.assert_array_equal(drop.apply({}, x, deterministic=True), x)
  assert float(HashDropout(0.0).apply({}, x, deterministic=False).sum()) == x.size
