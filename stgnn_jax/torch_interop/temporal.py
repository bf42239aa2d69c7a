"""The reference's recurrent classifier state dict (`lstm.weight_ih_l0`, ..., `classifier.3.bias`)
<-> the param tree of `nn.temporal.TemporalClassifier` (see that module for its layout)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from stgnn_jax.nn.temporal import (
    GATES_PER_CELL,
    HEAD_HIDDEN_DIM,
    check_model_type,
    layer_name,
)
from stgnn_jax.torch_interop.state_dict import StateReader

Params = Mapping[str, Any]


def temporal_params_from_torch(
    reader: StateReader,
    *,
    model_type: str,
    hidden_dim: int,
    num_layers: int,
    bidirectional: bool,
    input_dim: int,
    num_classes: int,
) -> dict[str, Any]:
  """`TemporalClassifier` params from the reference classifier's state dict.

  Reads `{lstm,gru,rnn}.weight_ih_l{k}[_reverse]` `[G·H, in]`, `weight_hh_...` `[G·H, H]`,
  `bias_ih_...`, `bias_hh_...` `[G·H]` and the head `classifier.0.weight` `[64, H·dirs]`,
  `classifier.0.bias`, `classifier.3.weight` `[num_classes, 64]`, `classifier.3.bias`, each through
  `reader.take` (a missing key or a wrong shape raises `CheckpointMismatchError` naming it). It does
  not call `reader.check_all_used`: the same state dict may hold other modules' keys, so the caller
  checks once everything is read.

  Args:
    reader: the state dict.
    model_type: "LSTM", "GRU" or "RNN"; picks the key prefix `lstm.`, `gru.` or `rnn.`.
    hidden_dim, num_layers, bidirectional, input_dim, num_classes: the architecture, as in
      `TemporalClassifier` (`input_dim` = visit-embedding features, 512 in the reference).

  Returns:
    The params tree (the value under "params" of `TemporalClassifier`'s variables), float32.
  """
  check_model_type(model_type)
  prefix = model_type.lower()
  width = GATES_PER_CELL[model_type] * hidden_dim
  num_dirs = 2 if bidirectional else 1
  rnn: dict[str, Any] = {}
  for layer in range(num_layers):
    layer_in = input_dim if layer == 0 else hidden_dim * num_dirs
    for reverse in (False, True)[:num_dirs]:
      suffix = f"_l{layer}" + ("_reverse" if reverse else "")
      def take(name: str, shape: tuple[int, ...], suffix: str = suffix) -> np.ndarray:
        return reader.take(f"{prefix}.{name}{suffix}", shape)

      rnn[layer_name(layer, reverse)] = {
          "weight_ih": jnp.asarray(take("weight_ih", (width, layer_in)).T),
          "weight_hh": jnp.asarray(take("weight_hh", (width, hidden_dim)).T),
          "bias_ih": jnp.asarray(take("bias_ih", (width,))),
          "bias_hh": jnp.asarray(take("bias_hh", (width,))),
      }
  feature_dim = hidden_dim * num_dirs
  return {
      "rnn": rnn,
      "head_0": {
          "kernel": jnp.asarray(
              reader.take("classifier.0.weight", (HEAD_HIDDEN_DIM, feature_dim)).T),
          "bias": jnp.asarray(reader.take("classifier.0.bias", (HEAD_HIDDEN_DIM,))),
      },
      "head_3": {
          "kernel": jnp.asarray(
              reader.take("classifier.3.weight", (num_classes, HEAD_HIDDEN_DIM)).T),
          "bias": jnp.asarray(reader.take("classifier.3.bias", (num_classes,))),
      },
  }


def temporal_params_to_torch(
    params: Params, *, model_type: str, num_layers: int, bidirectional: bool,
) -> dict[str, np.ndarray]:
  """The reference classifier's state dict (NumPy arrays) from `TemporalClassifier` params.

  The inverse of `temporal_params_from_torch`: weights go back to PyTorch's `[out, in]`, keys to
  `{lstm,gru,rnn}.weight_ih_l{k}[_reverse]`, ..., `classifier.{0,3}.{weight,bias}`. Wrap the values
  in `torch.from_numpy` for `load_state_dict`.

  Args:
    params: the params tree (without the outer "params" key).
    model_type, num_layers, bidirectional: the architecture; a layer missing from `params` raises
      KeyError naming it.

  Returns:
    `dict[str, np.ndarray]` in float32, in the order `nn.Module.state_dict` lists them.
  """
  check_model_type(model_type)
  prefix = model_type.lower()
  state: dict[str, np.ndarray] = {}
  for layer in range(num_layers):
    for reverse in (False, True)[: 2 if bidirectional else 1]:
      name = layer_name(layer, reverse)
      if name not in params["rnn"]:
        raise KeyError(f"params['rnn'] has no layer '{name}' (has {sorted(params['rnn'])}).")
      weights = params["rnn"][name]
      suffix = f"_l{layer}" + ("_reverse" if reverse else "")
      state[f"{prefix}.weight_ih{suffix}"] = np.asarray(weights["weight_ih"], np.float32).T
      state[f"{prefix}.weight_hh{suffix}"] = np.asarray(weights["weight_hh"], np.float32).T
      state[f"{prefix}.bias_ih{suffix}"] = np.asarray(weights["bias_ih"], np.float32)
      state[f"{prefix}.bias_hh{suffix}"] = np.asarray(weights["bias_hh"], np.float32)
  for index in (0, 3):
    dense = params[f"head_{index}"]
    state[f"classifier.{index}.weight"] = np.asarray(dense["kernel"], np.float32).T
    state[f"classifier.{index}.bias"] = np.asarray(dense["bias"], np.float32)
  # Writable, C-ordered copies: views of JAX buffers are read-only (torch.from_numpy warns on
  # them) and the transposes would otherwise be non-contiguous views.
  return {k: np.array(v, dtype=np.float32, order="C") for k, v in state.items()}
