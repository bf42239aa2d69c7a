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

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def _uniform(bound: float) -> nn.initializers.Initializer:
  """U(-bound, bound), PyG's `inits.uniform` / torch's Linear bias."""
  def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


# PyG's `Linear` default, `kaiming_uniform(fan_in, a=sqrt(5))` like torch.nn.Linear: U(±1/sqrt(in)).
_torch_linear_kernel = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


# PyG's `glorot` on a `[out, in]` weight: U(±sqrt(6 / (in + out))), as Flax's on `[in, out]`.
_glorot = nn.initializers.xavier_uniform()
