"""Cross-validated training: the reference's protocol around the jitted `train_step`.

Per fold (stratified K-fold over subjects, seed `seed`): a stratified 80/20 train/validation split
of the training subjects (seed `seed + fold`), `n_epochs` epochs of shuffled batches (a different,
seeded order every epoch), validation after each epoch, the plateau scheduler on a validation
metric, and the best state by validation AUC among epochs that predict both classes, evaluated on
the held-out fold. With `decision_threshold="val"` each epoch's validation predictions also choose
the decision threshold (`metrics.balanced_threshold`) that the selected epoch then applies to the
test fold; "argmax" is the reference's. Early stopping ends a fold `early_stop_patience` epochs
after its last selected epoch. Classical baselines (`baselines.run_baselines`) are fitted on the
same folds. Everything a run writes goes under `out_dir` atomically, and the run can be resumed
after a kill at any point with identical results.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from stgnn_jax.input_pipeline import SubjectBatch


class Placement:
  """Puts batches on a 1-D `data` mesh (sharded on their leading axis), params replicated."""

  def __init__(self, num_devices: int | None, batch_size: int, eval_batch_size: int,
               graph_multiple: int):
    available = jax.devices()
    n = len(available) if num_devices is None else num_devices
    if n > len(available):
      raise ValueError(f"--num_devices {n} but only {len(available)} JAX device(s) are present.")
    for name, size in (("batch_size", batch_size), ("eval batch size", eval_batch_size),
                       ("graph_multiple", graph_multiple)):
      if size % n:
        raise ValueError(f"{name}={size} is not divisible by the {n} devices used; pick "
                         "--num_devices that divides it.")
    self.num_devices = n
    mesh = Mesh(np.array(available[:n]), ("data",))
    self.batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    self.replicated = NamedSharding(mesh, PartitionSpec())

  def batch(self, batch: SubjectBatch) -> SubjectBatch:
    return jax.device_put(batch, self.batch_sharding)

  def replicate(self, tree: Any) -> Any:
    return jax.device_put(tree, self.replicated)
