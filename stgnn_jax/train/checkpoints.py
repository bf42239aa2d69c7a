"""Flax-serialised checkpoints (params with their `ModelConfig`) and the fold's resume state,
written atomically (`stgnn_jax.atomic`)."""

from __future__ import annotations

import json
import os
from typing import Any

import flax.serialization
import jax
import numpy as np

from stgnn_jax import atomic
from stgnn_jax.config import ModelConfig

CHECKPOINT_FORMAT = "stgnn-jax/1"


def save_checkpoint(path: str | os.PathLike, params: Any, config: ModelConfig,
                    **metadata: Any) -> None:
  """Saves model params with their `ModelConfig` (and JSON-able metadata) in one msgpack file."""
  payload = {
      "format": CHECKPOINT_FORMAT,
      "model_config": json.dumps(config.to_dict()),
      "metadata": json.dumps(metadata, default=atomic.json_default),
      "params": jax.tree.map(np.asarray, flax.serialization.to_state_dict(params)),
  }
  atomic.write_bytes(path, flax.serialization.msgpack_serialize(payload))


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], ModelConfig, dict[str, Any]]:
  """Reads a checkpoint written by `save_checkpoint` (e.g. a fold's `best.msgpack`).

  Returns:
    `(params, model_config, metadata)`: params for `STGNN(model_config).apply({"params": ...})`
    (or `{"encoder": ...}` for a pretrained encoder).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint {path!r} does not exist.")
  with open(path, "rb") as f:
    try:
      payload = flax.serialization.msgpack_restore(f.read())
    except Exception as error:
      raise ValueError(f"{path!r} is not a stgnn-jax checkpoint ({error}).") from error
  if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
    raise ValueError(
        f"{path!r} is not a stgnn-jax checkpoint (format {CHECKPOINT_FORMAT!r}); for a PyTorch "
        "reference checkpoint (.pth) use stgnn_jax.params_from_torch.")
  config = ModelConfig.from_dict(json.loads(payload["model_config"]))
  return payload["params"], config, json.loads(payload["metadata"])


def save_state(path: str | os.PathLike, tree: Any) -> None:
  """Saves any pytree of arrays/scalars (e.g. a training run's progress) atomically."""
  atomic.write_bytes(path, flax.serialization.msgpack_serialize(
      flax.serialization.to_state_dict(tree)))


def restore_state(path: str | os.PathLike, template: Any) -> Any:
  """Restores a pytree saved by `save_state` into the structure of `template`."""
  with open(path, "rb") as f:
    raw = flax.serialization.msgpack_restore(f.read())
  return flax.serialization.from_state_dict(template, raw)


def copy_checkpoint(source: str | os.PathLike, destination: str | os.PathLike) -> None:
  """Copies a checkpoint file atomically (a reader never sees half of it)."""
  with open(source, "rb") as f:
    atomic.write_bytes(destination, f.read())
