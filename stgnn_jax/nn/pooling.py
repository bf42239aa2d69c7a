"""PyG's `TopKPooling` on dense graphs (the kept nodes form a smaller dense batch) and the
graph readout, `global_mean_pool` ‖ `global_max_pool` over the real nodes."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stgnn_jax.nn.graphs import DenseGraphs
from stgnn_jax.nn.initializers import uniform

Array = jax.Array


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
    assert x is not None, "TopKPool needs node features (it follows a convolution)"
    features = x.shape[-1]
    k_static = topk_size(self.ratio, graphs.max_nodes)
    weight = self.param("weight", uniform(1 / math.sqrt(features)), (features,))

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


def readout(graphs: DenseGraphs) -> Array:
  """Per-graph mean ‖ max over real nodes (PyG `global_mean_pool` ‖ `global_max_pool`).

  Args:
    graphs: `nodes [G, N, F]`, `node_mask [G, N]`.

  Returns:
    `[G, 2F]`; a graph without real nodes gives 0 (never NaN or -inf).
  """
  x, node_mask = graphs.nodes, graphs.node_mask
  assert x is not None, "readout needs node features (it follows a convolution)"
  mask = node_mask[..., None]
  count = mask.sum(axis=1)  # [G, 1]
  mean = jnp.where(mask, x, 0).sum(axis=1) / jnp.maximum(count, 1).astype(x.dtype)
  maximum = jnp.where(count > 0, jnp.max(jnp.where(mask, x, -jnp.inf), axis=1), 0)
  return jnp.concatenate([mean, maximum], axis=-1)
