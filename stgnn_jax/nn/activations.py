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

from collections.abc import Callable

import jax

Array = jax.Array

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
