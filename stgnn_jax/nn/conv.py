"""Graph convolutions on `DenseGraphs`: PyG's `SAGEConv`, `GCNConv` and `GATConv`.

Each reproduces PyTorch Geometric 2.8's numbers for real nodes and keeps padding node slots at
exactly 0. Aggregations are batched matmuls over the dense adjacency (`adjacency[g, i, j]` =
number of edges `j -> i`); multi-edges count with their multiplicity, as in a PyG edge list.
Parameter names and initialisers mirror PyG's, so a reference state dict converts key by key
(`torch_interop.layers`; a PyTorch Linear weight is `[out, in]`, a Flax kernel `[in, out]`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from stgnn_jax.nn.graphs import BatchArray, DenseGraphs
from stgnn_jax.nn.initializers import glorot, torch_linear_kernel, uniform

Array = jax.Array


Params = Mapping[str, Any]


def _masked_nodes(values: Array, node_mask: BatchArray) -> Array:
  """Zeroes the rows of padding slots: `[G, N, F]`, `[G, N]` -> `[G, N, F]`."""
  return jnp.where(node_mask[..., None], values, 0)


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


def _matmul_rows(x: BatchArray, kernel: Array) -> Array:
  """`x [..., in] @ kernel [in, out]` computed on `x` flattened to 2-D rows.

  Same numbers as `x @ kernel`, but on a 3-D `x` XLA's CPU backend computes the kernel gradient
  by first transposing the whole upstream gradient (re-running the fused GraphNorm/activation
  backward in a strided order), the largest op of the encoder's backward. On 2-D rows the kernel
  gradient is a plain matmul (bench/model_bench.py measures the encoder).
  """
  return jnp.matmul(x.reshape(-1, x.shape[-1]), kernel).reshape(x.shape[:-1] + (kernel.shape[-1],))


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
    w_l, b_l = _LinearParams(in_dim, self.features, True, torch_linear_kernel, uniform(bound),
                             name="lin_l")()
    w_r, _ = _LinearParams(in_dim, self.features, False, torch_linear_kernel, name="lin_r")()
    assert b_l is not None  # use_bias=True

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
    kernel, _ = _LinearParams(n if x is None else x.shape[-1], self.features, False, glorot,
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
    kernel, _ = _LinearParams(n if x is None else x.shape[-1], self.features, False, glorot,
                              name="lin")()
    # One-hot features: h = I W = W, the same [N, features] for every graph.
    h = kernel if x is None else _matmul_rows(x, kernel)
    att_src = self.param("att_src", uniform(att_bound), (self.features,))
    att_dst = self.param("att_dst", uniform(att_bound), (self.features,))
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
