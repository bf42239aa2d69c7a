"""Data parallelism: batches sharded over a 1-D `data` mesh, parameters replicated."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from stgnn_jax.errors import ConfigError
from stgnn_jax.input_pipeline import SubjectBatch


class Placement:
  """Puts batches on a 1-D `data` mesh (sharded on their leading axis), params replicated."""

  def __init__(self, num_devices: int | None, batch_size: int, eval_batch_size: int,
               graph_multiple: int):
    available = jax.devices()
    n = len(available) if num_devices is None else num_devices
    if n > len(available):
      raise ConfigError(f"--num_devices {n} but only {len(available)} JAX device(s) are present.")
    for name, size in (("batch_size", batch_size), ("eval batch size", eval_batch_size),
                       ("graph_multiple", graph_multiple)):
      if size % n:
        raise ConfigError(f"{name}={size} is not divisible by the {n} devices used; pick "
                         "--num_devices that divides it.")
    self.num_devices = n
    mesh = Mesh(np.array(available[:n]), ("data",))
    self.batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    self.replicated = NamedSharding(mesh, PartitionSpec())

  def batch(self, batch: SubjectBatch) -> SubjectBatch:
    return jax.device_put(batch, self.batch_sharding)

  def replicate(self, tree: Any) -> Any:
    return jax.device_put(tree, self.replicated)
