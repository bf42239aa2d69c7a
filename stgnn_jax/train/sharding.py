"""Where arrays live: a 2-D (`members`, `data`) mesh over the devices of every process.

A single run uses the `data` axis only: batches sharded on their leading (subject or graph) axis,
parameters replicated. A sweep (`train.sweep`) puts its members on the `members` axis: the
stacked parameters, optimiser and plateau states are split along their leading member axis (one
member's arrays stay on one device) and the batches are replicated, since every member of a
chunk trains on the same batches.
"""

from __future__ import annotations

from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from stgnn_jax.errors import ConfigError

Tree = TypeVar("Tree")


class Placement:
  """The mesh of a run: `member_devices` x (devices / member_devices) for `data`.

  `num_devices` (default: every device of every process) must be a multiple of
  `member_devices`; the batch sizes must divide over the `data` devices.
  """

  def __init__(self, num_devices: int | None, batch_size: int, eval_batch_size: int,
               graph_multiple: int, *, member_devices: int = 1):
    available = jax.devices()
    n = len(available) if num_devices is None else num_devices
    if n > len(available):
      raise ConfigError(f"--num_devices {n} but only {len(available)} JAX device(s) are present.")
    if jax.process_count() > 1 and n != len(available):
      raise ConfigError(f"--num_devices {n}: a run over {jax.process_count()} processes uses "
                        f"every device ({len(available)}); leave --num_devices unset.")
    member_devices = min(member_devices, n)
    data = n // member_devices
    if n % member_devices:
      raise ConfigError(f"{n} devices do not split into {member_devices} member devices.")
    for name, size in (("batch_size", batch_size), ("eval batch size", eval_batch_size),
                       ("graph_multiple", graph_multiple)):
      if size % data:
        raise ConfigError(f"{name}={size} is not divisible by the {data} devices used; pick "
                          "--num_devices that divides it.")
    self.num_devices = n
    self.data_devices = data
    self.member_devices = member_devices
    self.mesh = Mesh(np.array(available[:n]).reshape(member_devices, data), ("members", "data"))
    self.batch_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
    self.member_sharding = NamedSharding(self.mesh, PartitionSpec("members"))
    self.replicated = NamedSharding(self.mesh, PartitionSpec())

  def batch(self, batch: Tree) -> Tree:
    """`batch`'s arrays (a `SubjectBatch`, an `EmbeddedBatch`, a chunk of graphs) sharded on
    their leading axis over the `data` devices."""
    return _put(batch, self.batch_sharding)

  def replicate(self, tree: Any) -> Any:
    return _put(tree, self.replicated)

  def members(self, tree: Any) -> Any:
    """`tree`'s arrays split along their leading (member) axis over the `members` devices."""
    return _put(tree, self.member_sharding)


def _put(tree: Any, sharding: NamedSharding) -> Any:
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  # Several processes: every process holds the same host values (the same program on the same
  # data); each puts the shards of its own devices, which together make the global arrays.
  def put(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding)  # a global array already: reshard it
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)),
                                      impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
  """NumPy copies of `tree`'s arrays, gathered from every process when they span several."""
  def get(x):
    if not isinstance(x, (jax.Array, np.ndarray, np.generic)):
      return x  # e.g. a JSON string beside the arrays
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree.map(get, tree)
