"""Reading PyTorch state dicts without importing torch in the package.

A reference checkpoint arrives as a mapping from dotted keys to tensors (or NumPy arrays). The
converters read it through `StateReader.take`, which checks every key and shape and names the
culprit when something does not match, and then `StateReader.check_all_used` so that a checkpoint
of another architecture cannot be half-loaded in silence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stgnn_jax.errors import CheckpointMismatchError


def tensor_to_numpy(value: Any) -> np.ndarray:
  """A torch tensor (any device, with or without grad) or array-like as a NumPy array."""
  if hasattr(value, "detach"):  # torch.Tensor, without importing torch
    value = value.detach().cpu().numpy()
  return np.asarray(value)


class StateReader:
  """Checked access to a state dict: `take(key, shape)` returns a float32 NumPy array."""

  def __init__(self, state: Mapping[str, Any], what: str = "state dict"):
    self._state = {str(k): v for k, v in state.items()}
    self._used: set[str] = set()
    self.what = what

  def take(self, key: str, shape: Sequence[int]) -> np.ndarray:
    if key not in self._state:
      raise CheckpointMismatchError(
          f"{self.what}: missing key '{key}' (expected shape {tuple(shape)}); check that the "
          "ModelConfig (layer_type, gnn_num_layers, model_type, lstm_bidirectional, "
          "use_time_features, ...) matches the run that wrote the checkpoint.")
    array = tensor_to_numpy(self._state[key])
    if tuple(array.shape) != tuple(shape):
      raise CheckpointMismatchError(
          f"{self.what}: key '{key}' has shape {tuple(array.shape)}, expected {tuple(shape)}; "
          "check the dimensions in the ModelConfig (input_dim, gnn_hidden_dim, output_dim, "
          "lstm_hidden_dim, lstm_bidirectional, num_classes).")
    self._used.add(key)
    return array.astype(np.float32)

  def check_all_used(self, ignore_prefixes: Sequence[str] = ()) -> None:
    unused = sorted(
        k for k in self._state
        if k not in self._used and not any(k.startswith(p) for p in ignore_prefixes))
    if unused:
      raise CheckpointMismatchError(
          f"{self.what}: {len(unused)} unexpected key(s), first '{unused[0]}' with shape "
          f"{tuple(tensor_to_numpy(self._state[unused[0]]).shape)}; the checkpoint holds layers "
          "this ModelConfig does not have.")


def dense_params_from_torch(reader: StateReader, prefix: str, in_dim: int, out_dim: int, *,
                            bias: bool = True) -> dict:
  """`torch.nn.Linear` (`weight [out, in]`, `bias [out]`) -> `flax.linen.Dense` params."""
  params = {"kernel": reader.take(prefix + "weight", (out_dim, in_dim)).T}
  if bias:
    params["bias"] = reader.take(prefix + "bias", (out_dim,))
  return params


def dense_params_to_torch(params: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
  """`flax.linen.Dense` params -> `torch.nn.Linear` state-dict entries under `prefix`."""
  state = {prefix + "weight": np.asarray(params["kernel"]).T.copy()}
  if "bias" in params:
    state[prefix + "bias"] = np.asarray(params["bias"])
  return state
