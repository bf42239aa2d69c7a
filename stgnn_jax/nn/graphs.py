"""Graph batches: `jraph.GraphsTuple` in, a dense per-graph layout for the layers.

Brain functional-connectivity graphs are small and dense (one node per atlas region, 100-400
regions, 20-50% of all pairs connected). For them a batched adjacency `[graphs, N, N]` turns every
neighbourhood aggregation into one batched matmul, which is far faster on CPU, GPU and TPU than
gather/scatter over hundreds of thousands of edges, and it gives TopK pooling static shapes: after
pooling, the kept nodes form a smaller dense batch `[graphs, K, K]`, so later layers really run on
the kept subgraph only (100 -> 31 -> 10 nodes with the reference's defaults: PyTorch Geometric
computes ceil(0.3 * n) in float32).

Users hand the model a `jraph.GraphsTuple` (padded with `jraph.pad_with_graphs` or not);
`dense_graphs_from_jraph` converts it once, inside the jitted call. Data pipelines that start from
FC matrices can build `DenseGraphs` directly and skip the edge list altogether.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import jraph
import numpy as np

BatchArray = jax.Array | np.ndarray
"""An array field of a batch: NumPy as the host pipeline packs it, a `jax.Array` once placed on
the devices or traced under `jax.jit`."""


@flax.struct.dataclass
class DenseGraphs:
  """A batch of graphs, each padded to `N` node slots.

  Attributes:
    nodes: `[graphs, N, features]` node features, rows of padding slots zero; or None for one-hot
      region features (`x_i = e_i`, the reference's FC-graph features), which the first layer
      handles without materialising the `[graphs, N, N]` identity.
    adjacency: `[graphs, N, N]` edge counts, `adjacency[g, i, j]` = number of edges `j -> i`
      (sender `j`, receiver `i`), so `adjacency @ x` sums each node's incoming messages.
      Multi-edges count with their multiplicity, as in PyTorch Geometric's edge lists.
    node_mask: `[graphs, N]` True for real nodes. A graph with no real node is a padding graph.
  """

  nodes: BatchArray | None
  adjacency: BatchArray
  node_mask: BatchArray

  @property
  def max_nodes(self) -> int:
    return self.node_mask.shape[1]

def dense_graphs_from_jraph(
    graphs: jraph.GraphsTuple, max_nodes: int, *, padded: bool = False) -> DenseGraphs:
  """Converts a `GraphsTuple` to `DenseGraphs` with `max_nodes` node slots per graph.

  Works under `jax.jit` (`max_nodes` and `padded` are static). Graphs never interact, so padding
  cannot change a real graph's output; with `padded=True` the graphs that
  `jraph.get_graph_padding_mask` marks as padding (the batch came from `jraph.pad_with_graphs`)
  are also emptied, so they cost nothing downstream. A real graph with more than `max_nodes`
  nodes cannot be represented: concrete inputs are checked (`check_fits` raises ValueError);
  under `jax.jit` the sizes are unknown, so call `check_fits` on the host first.

  Args:
    graphs: `nodes [total_nodes, F]`, `senders`/`receivers [total_edges]`, `n_node`/`n_edge
      [graphs]`. Edge features are ignored: the reference's convolutions see only the edge index.
    max_nodes: node slots per graph (the atlas size for FC graphs).
    padded: whether the last graphs are `jraph.pad_with_graphs` padding.

  Returns:
    `DenseGraphs` with `nodes [graphs, max_nodes, F]`.
  """
  if not isinstance(graphs.n_node, jax.core.Tracer):
    check_fits(graphs, max_nodes, padded=padded)
  n_graph = graphs.n_node.shape[0]
  total_nodes = graphs.nodes.shape[0]
  if padded:
    graph_is_real = jraph.get_graph_padding_mask(graphs)
  else:
    graph_is_real = jnp.ones((n_graph,), bool)
  node_graph = jnp.repeat(
      jnp.arange(n_graph), graphs.n_node, total_repeat_length=total_nodes)
  offsets = jnp.cumsum(graphs.n_node) - graphs.n_node
  node_slot = jnp.arange(total_nodes) - offsets[node_graph]
  node_kept = graph_is_real[node_graph] & (node_slot < max_nodes)
  # Nodes that are not kept are sent to an out-of-range slot and dropped by the scatter.
  slot = jnp.where(node_kept, node_slot, max_nodes)
  nodes = jnp.zeros((n_graph, max_nodes) + graphs.nodes.shape[1:], graphs.nodes.dtype)
  nodes = nodes.at[node_graph, slot].set(graphs.nodes, mode="drop")
  node_mask = jnp.zeros((n_graph, max_nodes), bool).at[node_graph, slot].set(True, mode="drop")

  edge_graph = node_graph[graphs.receivers]
  edge_kept = node_kept[graphs.receivers] & node_kept[graphs.senders]
  receiver_slot = jnp.where(edge_kept, slot[graphs.receivers], max_nodes)
  sender_slot = jnp.where(edge_kept, slot[graphs.senders], max_nodes)
  adjacency = jnp.zeros((n_graph, max_nodes, max_nodes), jnp.float32)
  adjacency = adjacency.at[edge_graph, receiver_slot, sender_slot].add(1.0, mode="drop")
  return DenseGraphs(nodes=nodes, adjacency=adjacency.astype(nodes.dtype), node_mask=node_mask)


def check_fits(graphs: jraph.GraphsTuple, max_nodes: int, *, padded: bool = False) -> None:
  """Raises ValueError on the host if a real graph has more than `max_nodes` nodes."""
  n_node = np.asarray(graphs.n_node)
  if padded:  # the padding graph may hold any number of padding nodes
    n_node = np.where(np.asarray(jraph.get_graph_padding_mask(graphs)), n_node, 0)
  too_big = np.flatnonzero(n_node > max_nodes)
  if too_big.size:
    raise ValueError(
        f"graph {int(too_big[0])} has {int(n_node[too_big[0]])} nodes but only {max_nodes} node "
        "slots are available; raise max_nodes (ModelConfig.max_nodes) to the largest graph size.")
