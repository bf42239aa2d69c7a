"""Graph layers on `DenseGraphs`: convolutions, GraphNorm, TopK pooling, readout, activations.

Every layer reproduces PyTorch Geometric 2.8's numbers for real nodes (`SAGEConv`, `GCNConv`,
`GATConv`, `GraphNorm`, `TopKPooling`, `global_mean_pool` / `global_max_pool`) and keeps padding
node slots at exactly 0, so padding never leaks into a real graph. Aggregations are batched
matmuls over the dense adjacency (`adjacency[g, i, j]` = number of edges `j -> i`); multi-edges
count with their multiplicity, as they do in a PyG edge list.

Parameter names and initialisers mirror PyG's, so a reference state dict converts key by key
(`conv_params_from_torch` and friends at the end of this file; PyTorch stores a Linear weight as
`[out, in]`, a Flax `Dense` kernel is `[in, out]`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stgnn_jax.graphs import DenseGraphs
from stgnn_jax.torch_state import StateReader

Array = jax.Array
Params = Mapping[str, Any]


# --- Initialisers mirroring torch_geometric.nn.inits / nn.dense.Linear -----------------------

def _uniform(bound: float) -> nn.initializers.Initializer:
  """U(-bound, bound), PyG's `inits.uniform` / torch's Linear bias."""
  def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


# PyG's `Linear` default, `kaiming_uniform(fan_in, a=sqrt(5))` like torch.nn.Linear: U(±1/sqrt(in)).
_torch_linear_kernel = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
# PyG's `glorot` on a `[out, in]` weight: U(±sqrt(6 / (in + out))), as Flax's on `[in, out]`.
_glorot = nn.initializers.xavier_uniform()


def _masked_nodes(values: Array, node_mask: Array) -> Array:
  """Zeroes the rows of padding slots: `[G, N, F]`, `[G, N]` -> `[G, N, F]`."""
  return jnp.where(node_mask[..., None], values, 0)


# --- Convolutions ---------------------------------------------------------------------------

class _LinearParams(nn.Module):
  """The params of a linear layer, as `nn.Dense` names and initialises them (`kernel [in, out]`,
  optional `bias [out]`), returned instead of applied: a layer that needs the raw kernel (to
  reorder or fuse its matmuls) keeps `nn.Dense`'s param tree and init values."""

  in_dim: int
  features: int
  use_bias: bool
  kernel_init: nn.initializers.Initializer
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self) -> tuple[Array, Array | None]:
    kernel = self.param("kernel", self.kernel_init, (self.in_dim, self.features), jnp.float32)
    if not self.use_bias:
      return kernel, None
    return kernel, self.param("bias", self.bias_init, (self.features,), jnp.float32)


def _matmul_rows(x: Array, kernel: Array) -> Array:
  """`x [..., in] @ kernel [in, out]` computed on `x` flattened to 2-D rows.

  Same numbers as `x @ kernel`, but on a 3-D `x` XLA's CPU backend computes the kernel gradient
  by first transposing the whole upstream gradient (re-running the fused GraphNorm/activation
  backward in a strided order): that one op took ~45% of the encoder's backward. On 2-D rows the
  kernel gradient is a plain matmul (forward + backward measured 2x faster).
  """
  return (x.reshape(-1, x.shape[-1]) @ kernel).reshape(x.shape[:-1] + (kernel.shape[-1],))


class SAGEConv(nn.Module):
  """GraphSAGE with mean aggregation, PyG's `SAGEConv(in, features)` defaults.

  `out_i = lin_l(mean_{j -> i} x_j) + lin_r(x_i)` (PyG `SAGEConv`, Hamilton et al. 2017), the mean
  over incoming edges with multiplicity; a node without incoming edges gets mean 0, so `lin_l`
  contributes its bias only.

  Params: `lin_l` (kernel `[in, features]`, bias `[features]`), `lin_r` (kernel
  `[in, features]`, no bias): `nn.Dense`'s tree. Initialised like PyG (torch Linear): kernels and
  bias U(±1/sqrt(in)).
  """

  features: int

  @nn.compact
  def __call__(self, graphs: DenseGraphs) -> Array:
    """`graphs.nodes [G, N, in]` (or one-hot, `None`) -> `[G, N, features]`, padding slots 0."""
    x = graphs.nodes
    in_dim = graphs.max_nodes if x is None else x.shape[-1]
    bound = 1 / math.sqrt(in_dim)
    w_l, b_l = _LinearParams(in_dim, self.features, True, _torch_linear_kernel, _uniform(bound),
                             name="lin_l")()
    w_r, _ = _LinearParams(in_dim, self.features, False, _torch_linear_kernel, name="lin_r")()

    adjacency = graphs.adjacency
    in_degree = adjacency.sum(axis=-1, keepdims=True)  # [G, N, 1]
    # A node without incoming edges gets mean 0. The barrier keeps this a [G, N, 1] array:
    # without it XLA fuses the degree reduction with a broadcast to [G, N, features] and writes
    # that to memory (≈5% of the end-to-end step).
    inv_degree = jax.lax.optimization_barrier(1 / jnp.maximum(in_degree, 1))
    if x is None:
      # One-hot features: mean_j e_j @ W_l = (adjacency @ W_l) / in_degree and x_i @ W_r is row i
      # of W_r. The matmul reads the adjacency as it is (no normalised [G, N, N] copy) and the
      # row scaling rides on the output pass.
      summed = _matmul_rows(adjacency, w_l)
      return _masked_nodes(summed * inv_degree + (w_r + b_l), graphs.node_mask)
    # lin_l is affine, so aggregating before or after it is the same; aggregate in the smaller
    # dimension. Transforming first drops lin_l's bias on nodes without incoming edges, so the
    # bias is added after the mean either way, as in PyG.
    if in_dim <= self.features:
      neighbours = _matmul_rows((adjacency @ x) * inv_degree, w_l)
    else:
      neighbours = (adjacency @ _matmul_rows(x, w_l)) * inv_degree
    return _masked_nodes(neighbours + b_l + _matmul_rows(x, w_r), graphs.node_mask)


class GCNConv(nn.Module):
  """Graph convolution, PyG's `GCNConv(in, features)` defaults (self loops, symmetric norm).

  `X' = D^-1/2 Â D^-1/2 X W + b` (PyG `GCNConv` / `gcn_norm`, Kipf & Welling 2017) with
  `Â = A` whose diagonal is set to 1 (`add_remaining_self_loops`, fill value 1: an existing self
  loop, even a repeated one, becomes exactly one) and `D_ii = sum_j Â_ij` (in-degree over
  targets). Off-diagonal multi-edges keep their multiplicity.

  Params: `lin` (`Dense` without bias: kernel `[in, features]`, glorot), `bias` `[features]`
  (zeros).
  """

  features: int

  @nn.compact
  def __call__(self, graphs: DenseGraphs) -> Array:
    """`graphs.nodes [G, N, in]` (or one-hot, `None`) -> `[G, N, features]`, padding slots 0."""
    x = graphs.nodes
    n = graphs.max_nodes
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    kernel, _ = _LinearParams(n if x is None else x.shape[-1], self.features, False, _glorot,
                              name="lin")()

    eye = jnp.eye(n, dtype=bool)
    # Only real nodes get a self loop, so padding slots keep degree 0 and stay isolated.
    self_loops = eye & graphs.node_mask[:, :, None]
    a_hat = jnp.where(eye, self_loops.astype(graphs.adjacency.dtype), graphs.adjacency)
    degree = a_hat.sum(axis=-1)
    inv_sqrt = jnp.where(degree > 0, jax.lax.rsqrt(jnp.maximum(degree, 1e-30)), 0)
    norm_adjacency = inv_sqrt[:, :, None] * a_hat * inv_sqrt[:, None, :]
    if x is None:  # one-hot features: norm_adjacency @ I W = norm_adjacency @ W
      out = _matmul_rows(norm_adjacency, kernel)
    elif x.shape[-1] <= self.features:
      out = _matmul_rows(norm_adjacency @ x, kernel)
    else:
      out = norm_adjacency @ _matmul_rows(x, kernel)
    return _masked_nodes(out + bias, graphs.node_mask)


class GATConv(nn.Module):
  """Single-head graph attention, PyG's `GATConv(in, features)` defaults.

  With `h = x W` (PyG `GATConv`, Veličković et al. 2018):
  `e_ij = LeakyReLU_0.2(att_dst · h_i + att_src · h_j)` for each edge `j -> i`,
  `alpha_ij = softmax_j(e_ij)` over the incoming edges of `i` (a repeated edge counts once per
  copy), `out_i = sum_j alpha_ij h_j + bias`. As in PyG, existing self loops are removed and
  exactly one self loop per real node is added. Dropout on the attention is 0 (the reference's).

  Params: `lin` (`Dense` without bias: kernel `[in, features]`, glorot), `att_src`, `att_dst`
  `[features]` (glorot of PyG's `[1, 1, features]`: U(±sqrt(6 / (1 + features)))), `bias`
  `[features]` (zeros).
  """

  features: int
  negative_slope: float = 0.2

  @nn.compact
  def __call__(self, graphs: DenseGraphs) -> Array:
    """`graphs.nodes [G, N, in]` (or one-hot, `None`) -> `[G, N, features]`, padding slots 0."""
    att_bound = math.sqrt(6 / (1 + self.features))
    n = graphs.max_nodes
    x = graphs.nodes
    kernel, _ = _LinearParams(n if x is None else x.shape[-1], self.features, False, _glorot,
                              name="lin")()
    # One-hot features: h = I W = W, the same [N, features] for every graph.
    h = kernel if x is None else _matmul_rows(x, kernel)
    att_src = self.param("att_src", _uniform(att_bound), (self.features,))
    att_dst = self.param("att_dst", _uniform(att_bound), (self.features,))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))

    eye = jnp.eye(n, dtype=bool)
    self_loops = eye & graphs.node_mask[:, :, None]
    edge_count = jnp.where(eye, self_loops.astype(h.dtype), graphs.adjacency)  # [G, N, N]
    has_edge = edge_count > 0

    logits = (h @ att_dst)[..., :, None] + (h @ att_src)[..., None, :]  # [G, N(dst), N(src)]
    logits = jax.nn.leaky_relu(logits, self.negative_slope)
    # Stable masked softmax: subtract each row's max over its existing edges; rows without any
    # edge (padding slots) get max 0 and weight 0 everywhere instead of NaN. Non-edges are masked
    # before exp (exp(-inf) = 0), so no inf reaches the gradient of a discarded branch.
    row_max = jnp.max(jnp.where(has_edge, logits, -jnp.inf), axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0)
    weights = edge_count * jnp.exp(jnp.where(has_edge, logits - row_max, -jnp.inf))
    total = weights.sum(axis=-1, keepdims=True)
    alpha = weights / jnp.where(total > 0, total, 1)
    return _masked_nodes(alpha @ h + bias, graphs.node_mask)


CONV_TYPES: dict[str, type[nn.Module]] = {
    "GraphSAGE": SAGEConv,
    "GCN": GCNConv,
    "GAT": GATConv,
}
"""The reference's `--layer_type` values and their modules."""


# --- Normalisation --------------------------------------------------------------------------

class GraphNorm(nn.Module):
  """Per-graph normalisation over real nodes, PyG's `GraphNorm` (Cai et al. 2021).

  With `mu` and `var` taken over the real nodes of each graph, per feature:
  `out = x - mean_scale * mu`, `var = mean(out^2)`, `y = weight * out / sqrt(var + eps) + bias`.

  The encoder's block GraphNorm -> activation -> dropout runs as one call (`activation`,
  `dropout_rate`, `dropout_seed`): the same numbers as the three layers applied in turn, with a
  hand-written backward (`norm_act_dropout`).

  Params `weight` (ones), `bias` (zeros), `mean_scale` (ones), each `[features]`.
  """

  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: Array, node_mask: Array, *,
               activation: Callable[[Array], Array] | None = None, dropout_rate: float = 0.0,
               dropout_seed: Array | None = None) -> Array:
    """`x [G, N, F]`, `node_mask [G, N]` -> `[G, N, F]`, padding slots 0 (empty graphs: all 0).

    Args:
      x: node features.
      node_mask: True for real nodes.
      activation: applied after the normalisation (None: none).
      dropout_rate: inverted dropout after the activation, with `HashDropout`'s mask for
        `dropout_seed`; needs a seed when positive.
      dropout_seed: `uint32[2]` from `HashDropout.draw_seed`, or None for no dropout.
    """
    features = x.shape[-1]
    weight = self.param("weight", nn.initializers.ones_init(), (features,))
    bias = self.param("bias", nn.initializers.zeros_init(), (features,))
    mean_scale = self.param("mean_scale", nn.initializers.ones_init(), (features,))
    if dropout_seed is None:
      dropout_rate = 0.0
    elif not 0 < dropout_rate < 1:
      raise ValueError(f"a dropout seed needs a dropout rate in (0, 1), got {dropout_rate}.")
    return norm_act_dropout(x, node_mask, weight, bias, mean_scale, dropout_seed,
                            activation or _identity, dropout_rate, self.eps)


def _identity(x: Array) -> Array:
  return x


def _graph_stats(x: Array, node_mask: Array, mean_scale: Array, eps: float):
  """Real-node count `[G, 1, 1]`, mean and `1 / sqrt(var + eps)` `[G, 1, F]` of GraphNorm."""
  count = jnp.maximum(node_mask.sum(axis=1), 1)[:, None, None].astype(x.dtype)  # empty: no NaN
  # where, not a multiplication by the mask: no full-size broadcast mask is written to memory.
  mean = _masked_nodes(x, node_mask).sum(axis=1, keepdims=True) / count
  # Var of the shifted values, as PyG; the shifted values themselves are never stored.
  squares = _masked_nodes(jnp.square(x - mean_scale * mean), node_mask)
  var = squares.sum(axis=1, keepdims=True) / count
  return count, mean, jax.lax.rsqrt(var + eps)


def _keep_real(x: Array, node_mask: Array, seed: Array | None, rate: float) -> Array:
  """Where dropout keeps an element of a real node (all real nodes without dropout)."""
  keep = node_mask[..., None]
  return keep if seed is None else keep & _hash_keep(x.shape, seed, rate)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def norm_act_dropout(x: Array, node_mask: Array, weight: Array, bias: Array, mean_scale: Array,
                     seed: Array | None, activation: Callable[[Array], Array], rate: float,
                     eps: float) -> Array:
  """`dropout(activation(GraphNorm(x)))`, padding slots 0, with a hand-written backward.

  Left to autodiff, XLA recomputed the normalisation -> activation -> dropout-hash chain in
  every consumer of every intermediate (about ten passes over `[G, N, F]` in forward +
  backward). Here the forward keeps only `x` and the per-graph statistics, and the backward
  recomputes the chain for two per-graph sums and the input gradient (GraphNorm's closed-form
  backward). The end-to-end train step of 64 graphs got ≈30% faster on a 2-core CPU.
  """
  return _norm_act_dropout_fwd(x, node_mask, weight, bias, mean_scale, seed, activation, rate,
                               eps)[0]


def _norm_act_dropout_fwd(x, node_mask, weight, bias, mean_scale, seed, activation, rate, eps):
  count, mean, rstd = _graph_stats(x, node_mask, mean_scale, eps)
  z = (x - mean_scale * mean) * (weight * rstd) + bias
  y = jnp.where(_keep_real(x, node_mask, seed, rate), activation(z) / (1.0 - rate), 0)
  return y, (x, node_mask, weight, bias, mean_scale, seed, count, mean, rstd)


def _norm_act_dropout_bwd(activation, rate, eps, residuals, dy):
  x, node_mask, weight, bias, mean_scale, seed, count, mean, rstd = residuals
  x_hat = (x - mean_scale * mean) * rstd
  z = x_hat * weight + bias
  _, act_grad = jax.jvp(activation, (z,), (jnp.ones_like(z),))
  dz = jnp.where(_keep_real(x, node_mask, seed, rate), dy * act_grad / (1.0 - rate), 0)
  sum_dz = dz.sum(axis=1, keepdims=True)  # [G, 1, F]
  sum_dz_xhat = (dz * x_hat).sum(axis=1, keepdims=True)
  # With g = dz * weight: d out = rstd * (g - x_hat * mean(g * x_hat)) over real nodes, and
  # out = x - mean_scale * mean(x) gives dx = d out - mean_scale * mean(d out).
  g_xhat_mean = weight * sum_dz_xhat / count
  sum_xhat = count * mean * (1 - mean_scale) * rstd  # sum of x_hat over real nodes
  sum_dout = rstd * (weight * sum_dz - sum_xhat * g_xhat_mean)
  dx = _masked_nodes(rstd * (dz * weight - x_hat * g_xhat_mean) - mean_scale * sum_dout / count,
                     node_mask)
  return (dx, None, sum_dz_xhat.sum(axis=(0, 1)), sum_dz.sum(axis=(0, 1)),
          -(mean * sum_dout).sum(axis=(0, 1)), None)


norm_act_dropout.defvjp(_norm_act_dropout_fwd, _norm_act_dropout_bwd)


# --- Pooling --------------------------------------------------------------------------------

def topk_size(ratio: float, num_nodes: int) -> int:
  """Nodes that `TopKPool(ratio)` keeps of a graph with `num_nodes` nodes (PyG's rule).

  `ratio >= 1` is an absolute count `int(ratio)` (at most `num_nodes`); otherwise
  `ceil(ratio * num_nodes)` in float32, as PyG computes it in the score dtype: 0.3 of 100 is 31.
  """
  if ratio <= 0:
    raise ValueError(f"TopK ratio must be positive, got {ratio}.")
  if ratio >= 1:
    return min(int(ratio), num_nodes)
  return int(np.ceil(np.float32(ratio) * np.float32(num_nodes)))


class TopKPool(nn.Module):
  """TopK pooling, PyG's `TopKPooling(F, ratio)` (tanh, `min_score=None`, multiplier 1).

  `score = tanh(x · w / ||w||)`; each graph keeps its top `k_g` real nodes in descending score
  order, their features multiplied by their score; edges touching a removed node are dropped
  (PyG `TopKPooling` / `SelectTopK`, Gao & Ji 2019; Cangea et al. 2018). Ties are broken towards
  the lower node slot.

  PyG quirks reproduced on purpose (torch_geometric/nn/pool/select/topk.py):
  - `k_g = ceil(float(ratio) * n_g)` is computed in float32, so ratio 0.3 keeps 31 of 100 nodes
    and then 10 of 31 (not 30 and 9).
  - `ratio >= 1` means an absolute count `k = int(ratio)`: ratio 1.0 keeps ONE node per graph.
  The reference clamps its `--topk_ratio` to [0.3, 1.0] before it reaches the layer.

  Shapes are static: the output has `K = topk_size(ratio, N)` node slots, and a graph with fewer
  real nodes keeps its own `k_g <= K` and masks the rest. When every graph fills its `N` slots
  (the atlas case), later layers run on the `K` kept nodes only.

  Param `weight` `[F]` (PyG's `select.weight` `[1, F]`), initialised U(±1/sqrt(F)) like PyG.
  """

  ratio: float

  @nn.compact
  def __call__(self, graphs: DenseGraphs) -> tuple[DenseGraphs, Array, Array]:
    """Pools each graph to its top-scoring nodes.

    Args:
      graphs: `nodes [G, N, F]`, `adjacency [G, N, N]`, `node_mask [G, N]`.

    Returns:
      `(pooled, perm, score)`: `pooled` is `DenseGraphs` with `K` slots (`nodes [G, K, F]`,
      `adjacency [G, K, K]`, `node_mask [G, K]`, kept nodes first); `perm [G, K]` int32 is the
      input slot of each kept node (-1 on masked slots); `score [G, K]` its tanh score (0 on
      masked slots).
    """
    x, node_mask = graphs.nodes, graphs.node_mask
    features = x.shape[-1]
    k_static = topk_size(self.ratio, graphs.max_nodes)
    weight = self.param("weight", _uniform(1 / math.sqrt(features)), (features,))

    score = jnp.tanh((x @ weight) / jnp.linalg.norm(weight))  # [G, N]
    n_real = node_mask.sum(axis=-1)
    if self.ratio >= 1:
      k = jnp.minimum(int(self.ratio), n_real)
    else:
      # float32 on purpose: the same rounding as PyG (see the class docstring).
      k = jnp.ceil(jnp.float32(self.ratio) * n_real.astype(jnp.float32)).astype(jnp.int32)
    _, perm = jax.lax.top_k(jnp.where(node_mask, score, -jnp.inf), k_static)  # [G, K]
    kept = jnp.arange(k_static) < k[:, None]

    kept_score = jnp.where(kept, jnp.take_along_axis(score, perm, axis=1), 0)
    nodes = jnp.take_along_axis(x, perm[:, :, None], axis=1) * kept_score[:, :, None]
    rows = jnp.take_along_axis(graphs.adjacency, perm[:, :, None], axis=1)  # [G, K, N]
    adjacency = jnp.take_along_axis(rows, perm[:, None, :], axis=2)  # [G, K, K]
    adjacency = jnp.where(kept[:, :, None] & kept[:, None, :], adjacency, 0)
    pooled = DenseGraphs(nodes=nodes, adjacency=adjacency, node_mask=kept)
    return pooled, jnp.where(kept, perm, -1).astype(jnp.int32), kept_score


# --- Readout --------------------------------------------------------------------------------

def readout(graphs: DenseGraphs) -> Array:
  """Per-graph mean ‖ max over real nodes (PyG `global_mean_pool` ‖ `global_max_pool`).

  Args:
    graphs: `nodes [G, N, F]`, `node_mask [G, N]`.

  Returns:
    `[G, 2F]`; a graph without real nodes gives 0 (never NaN or -inf).
  """
  x, node_mask = graphs.nodes, graphs.node_mask
  mask = node_mask[..., None]
  count = mask.sum(axis=1)  # [G, 1]
  mean = jnp.where(mask, x, 0).sum(axis=1) / jnp.maximum(count, 1).astype(x.dtype)
  maximum = jnp.where(count > 0, jnp.max(jnp.where(mask, x, -jnp.inf), axis=1), 0)
  return jnp.concatenate([mean, maximum], axis=-1)


# --- Dropout --------------------------------------------------------------------------------

def _lowbias32(x: Array) -> Array:
  """A 32-bit integer mixing hash (Chris Wellons' "lowbias32"), elementwise on uint32."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def _hash_keep(shape: tuple[int, ...], seed: Array, rate: float) -> Array:
  """`HashDropout`'s keep mask (bool, `shape`) for `seed` (`uint32[2]`): P(keep) = 1 - rate."""
  index = jnp.arange(math.prod(shape), dtype=jnp.uint32).reshape(shape)
  bits = _lowbias32(_lowbias32(index * jnp.uint32(0x9E3779B9) + seed[0]) ^ seed[1])
  threshold = jnp.uint32(min(int(round((1.0 - rate) * 2.0**32)), 2**32 - 1))
  return bits < threshold


class HashDropout(nn.Module):
  """Inverted dropout whose mask is a counter hash, seeded from the "dropout" rng stream.

  Same contract as `flax.linen.Dropout` (keep with probability `1 - rate`, scale kept values by
  `1 / (1 - rate)`, identity when `deterministic`), but the per-element bits come from two rounds
  of an integer hash over the element index, keyed by 64 bits drawn once per call with
  `jax.random.bits` (`draw_seed`). On a CPU, drawing a threefry word per element cost more than
  the rest of the encoder's forward pass (≈90 ms for the 2M activations of a 64-graph batch); the
  hash costs a few ms. Masks of different calls are independent through their keys; the keep
  probability is exact to 2^-32.
  """

  rate: float

  def draw_seed(self) -> Array:
    """The `uint32[2]` key of this module's mask (what `__call__` draws), for fused layers."""
    if not 0 <= self.rate < 1:
      raise ValueError(f"dropout rate must lie in [0, 1), got {self.rate}.")
    return jax.random.bits(self.make_rng("dropout"), (2,), jnp.uint32)

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    if deterministic or self.rate == 0:
      return x
    keep = _hash_keep(x.shape, self.draw_seed(), self.rate)
    return jnp.where(keep, x / (1.0 - self.rate), 0).astype(x.dtype)


# --- Activations ----------------------------------------------------------------------------

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, negative_slope=0.01),  # torch's default slope
    "elu": lambda x: jax.nn.elu(x, alpha=1.0),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # torch's default: the exact erf form
}
"""The reference's `--activation` values, with torch.nn.functional's defaults."""


def activation(name: str) -> Callable[[Array], Array]:
  """The activation function called `name`; raises ValueError naming the valid ones."""
  try:
    return ACTIVATIONS[name]
  except KeyError:
    raise ValueError(
        f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


# --- PyTorch state dict <-> Flax params -----------------------------------------------------
# PyTorch Linear weights are [out, in]; Flax Dense kernels are [in, out].

def _check_layer_type(layer_type: str) -> None:
  if layer_type not in CONV_TYPES:
    raise ValueError(f"unknown layer_type {layer_type!r}; expected one of {sorted(CONV_TYPES)}")


def conv_params_from_torch(
    reader: StateReader, prefix: str, layer_type: str, in_dim: int, out_dim: int) -> dict:
  """The params of a `CONV_TYPES[layer_type](out_dim)` module from a PyG state dict.

  Args:
    reader: the state dict; every key and shape is checked.
    prefix: the conv's key prefix, e.g. `"convs.0."`.
    layer_type: `"GraphSAGE"` (`lin_l.weight` `[out, in]`, `lin_l.bias`, `lin_r.weight`), `"GCN"`
      (`lin.weight`, `bias`) or `"GAT"` (`lin.weight`, `att_src`/`att_dst` `[1, 1, out]`, `bias`).
    in_dim, out_dim: the conv's input and output features.

  Returns:
    The module's param tree (what goes under `{"params": ...}`), float32 NumPy arrays.
  """
  _check_layer_type(layer_type)
  p = prefix
  kernel = lambda key: np.ascontiguousarray(reader.take(p + key, (out_dim, in_dim)).T)
  if layer_type == "GraphSAGE":
    return {
        "lin_l": {"kernel": kernel("lin_l.weight"),
                  "bias": reader.take(p + "lin_l.bias", (out_dim,))},
        "lin_r": {"kernel": kernel("lin_r.weight")},
    }
  params = {
      "lin": {"kernel": kernel("lin.weight")},
      "bias": reader.take(p + "bias", (out_dim,)),
  }
  if layer_type == "GAT":
    params["att_src"] = reader.take(p + "att_src", (1, 1, out_dim)).reshape(out_dim)
    params["att_dst"] = reader.take(p + "att_dst", (1, 1, out_dim)).reshape(out_dim)
  return params


def conv_params_to_torch(params: Params, prefix: str, layer_type: str) -> dict[str, np.ndarray]:
  """The PyG state-dict entries (`prefix + key` -> array) of a conv's param tree."""
  _check_layer_type(layer_type)
  as_np = lambda value: np.asarray(value, np.float32)
  p = prefix
  if layer_type == "GraphSAGE":
    return {
        p + "lin_l.weight": as_np(params["lin_l"]["kernel"]).T,
        p + "lin_l.bias": as_np(params["lin_l"]["bias"]),
        p + "lin_r.weight": as_np(params["lin_r"]["kernel"]).T,
    }
  state = {p + "lin.weight": as_np(params["lin"]["kernel"]).T}
  if layer_type == "GAT":
    state[p + "att_src"] = as_np(params["att_src"]).reshape(1, 1, -1)
    state[p + "att_dst"] = as_np(params["att_dst"]).reshape(1, 1, -1)
  state[p + "bias"] = as_np(params["bias"])
  return state


def graph_norm_params_from_torch(reader: StateReader, prefix: str, dim: int) -> dict:
  """`GraphNorm` params from `prefix + {weight, bias, mean_scale}` `[dim]`, e.g. `"gns.0."`."""
  return {name: reader.take(prefix + name, (dim,)) for name in ("weight", "bias", "mean_scale")}


def graph_norm_params_to_torch(params: Params, prefix: str) -> dict[str, np.ndarray]:
  """The PyG `GraphNorm` state-dict entries of a `GraphNorm` param tree."""
  return {prefix + name: np.asarray(params[name], np.float32)
          for name in ("weight", "bias", "mean_scale")}


def topk_params_from_torch(reader: StateReader, prefix: str, dim: int) -> dict:
  """`TopKPool` params from `prefix + "weight"` `[1, dim]`; prefix e.g. `"topk_pools.0.select."`."""
  return {"weight": reader.take(prefix + "weight", (1, dim)).reshape(dim)}


def topk_params_to_torch(params: Params, prefix: str) -> dict[str, np.ndarray]:
  """The PyG entry `prefix + "weight"` `[1, F]` of a `TopKPool` param tree."""
  return {prefix + "weight": np.asarray(params["weight"], np.float32).reshape(1, -1)}
