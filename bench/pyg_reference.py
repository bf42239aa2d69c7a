"""Random graph batches in both layouts: `jraph.GraphsTuple` for JAX, PyG tensors for the reference.

Test and benchmark code only (the parity tests import it from bench/): the packages never
import it. Edges are directed, `senders -> receivers` in jraph
and `edge_index = [source, target]` in PyG (its default `source_to_target` flow).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jraph
import numpy as np
import torch


@dataclasses.dataclass(frozen=True)
class GraphBatch:
  """Graphs concatenated PyG-style: `x [total_nodes, F]`, global `senders`/`receivers [E]`."""

  x: np.ndarray
  senders: np.ndarray
  receivers: np.ndarray
  n_node: np.ndarray
  n_edge: np.ndarray

  @property
  def offsets(self) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(self.n_node)[:-1]])

  def to_jraph(self) -> jraph.GraphsTuple:
    return jraph.GraphsTuple(
        nodes=self.x, edges=None, senders=self.senders, receivers=self.receivers,
        n_node=self.n_node, n_edge=self.n_edge, globals=None)

  def to_pyg(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(x [total_nodes, F], edge_index [2, E], batch [total_nodes])`."""
    edge_index = torch.from_numpy(np.stack([self.senders, self.receivers]).astype(np.int64))
    batch = torch.from_numpy(np.repeat(np.arange(len(self.n_node)), self.n_node))
    return torch.from_numpy(self.x), edge_index, batch

  def node_slices(self) -> list[slice]:
    return [slice(int(o), int(o + n)) for o, n in zip(self.offsets, self.n_node, strict=True)]


def random_graph_batch(
    rng: np.random.Generator, sizes: Sequence[int], features: int, edge_prob: float = 0.2,
) -> GraphBatch:
  """Random directed graphs with the awkward cases a layer must get right.

  Each graph of 4 or more nodes has an isolated node (no edge in or out), a node whose only
  incoming edge is a self loop, a duplicated self loop, and a duplicated ordinary edge; other
  nodes get random self loops too.
  """
  xs, senders, receivers, n_edge = [], [], [], []
  offset = 0
  for n in sizes:
    xs.append(rng.normal(size=(n, features)).astype(np.float32))
    adjacency = rng.random((n, n)) < edge_prob  # adjacency[i, j]: edge j -> i
    if n >= 4:
      adjacency[n - 1, :] = adjacency[:, n - 1] = False  # isolated node
      adjacency[1, :] = False
      adjacency[1, 1] = True  # only a self loop comes in
      adjacency[0, 2] = True
    receiver, sender = np.nonzero(adjacency)
    if n >= 4:  # duplicates: PyG counts every copy
      sender = np.concatenate([sender, [2, 1]])
      receiver = np.concatenate([receiver, [0, 1]])
    order = rng.permutation(len(sender))  # edge order must not matter
    senders.append(sender[order] + offset)
    receivers.append(receiver[order] + offset)
    n_edge.append(len(sender))
    offset += n
  return GraphBatch(
      x=np.concatenate(xs), senders=np.concatenate(senders).astype(np.int32),
      receivers=np.concatenate(receivers).astype(np.int32),
      n_node=np.asarray(sizes, np.int32), n_edge=np.asarray(n_edge, np.int32))


def fc_graph_batch(rng: np.random.Generator, num_graphs: int, regions: int) -> GraphBatch:
  """Atlas FC graphs as the reference builds them: symmetrised random matrices, |A| < 0.2 -> no
  edge, every remaining entry (diagonal included) an edge; identity node features."""
  senders, receivers = [], []
  for g in range(num_graphs):
    matrix = rng.uniform(-0.6, 0.6, size=(regions, regions))
    matrix = (matrix + matrix.T) / 2
    np.fill_diagonal(matrix, 1.0)
    receiver, sender = np.nonzero(np.abs(matrix) >= 0.2)
    senders.append(sender + g * regions)
    receivers.append(receiver + g * regions)
  x = np.tile(np.eye(regions, dtype=np.float32), (num_graphs, 1))
  return GraphBatch(
      x=x, senders=np.concatenate(senders).astype(np.int32),
      receivers=np.concatenate(receivers).astype(np.int32),
      n_node=np.full(num_graphs, regions, np.int32),
      n_edge=np.asarray([len(s) for s in senders], np.int32))


def edge_counts(edge_index: torch.Tensor, num_nodes: int, offset: int = 0) -> np.ndarray:
  """`[num_nodes, num_nodes]` counts, `[i, j]` = edges `j -> i` among nodes `offset..offset+n`."""
  counts = np.zeros((num_nodes, num_nodes), np.float32)
  source, target = edge_index.numpy() - offset
  inside = (source >= 0) & (source < num_nodes) & (target >= 0) & (target < num_nodes)
  np.add.at(counts, (target[inside], source[inside]), 1.0)
  return counts
