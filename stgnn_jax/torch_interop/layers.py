"""PyG state-dict entries <-> Flax params of the graph layers (`nn.conv`, `nn.norm`,
`nn.pooling`). A PyTorch Linear weight is `[out, in]`, a Flax kernel `[in, out]`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from stgnn_jax.nn.conv import CONV_TYPES
from stgnn_jax.torch_interop.state_dict import StateReader

Params = Mapping[str, Any]


def _check_layer_type(layer_type: str) -> None:
  if layer_type not in CONV_TYPES:
    raise ValueError(f"unknown layer_type {layer_type!r}; expected one of {sorted(CONV_TYPES)}")


def conv_params_from_torch(
    reader: StateReader, prefix: str, layer_type: str, in_dim: int, out_dim: int) -> dict:
  """The params of a `CONV_TYPES[layer_type](out_dim)` module from a PyG state dict.

  Args:
    reader: the state dict; every key and shape is checked.
    prefix: the conv's key prefix, e.g. `"convs.0."`.
    layer_type: `"GraphSAGE"` (`lin_l.weight` `[out, in]`, `lin_l.bias`, `lin_r.weight`), `"GCN"`
      (`lin.weight`, `bias`) or `"GAT"` (`lin.weight`, `att_src`/`att_dst` `[1, 1, out]`, `bias`).
    in_dim, out_dim: the conv's input and output features.

  Returns:
    The module's param tree (what goes under `{"params": ...}`), float32 NumPy arrays.
  """
  _check_layer_type(layer_type)
  p = prefix
  def kernel(key):
    return np.ascontiguousarray(reader.take(p + key, (out_dim, in_dim)).T)
  if layer_type == "GraphSAGE":
    return {
        "lin_l": {"kernel": kernel("lin_l.weight"),
                  "bias": reader.take(p + "lin_l.bias", (out_dim,))},
        "lin_r": {"kernel": kernel("lin_r.weight")},
    }
  params = {
      "lin": {"kernel": kernel("lin.weight")},
      "bias": reader.take(p + "bias", (out_dim,)),
  }
  if layer_type == "GAT":
    params["att_src"] = reader.take(p + "att_src", (1, 1, out_dim)).reshape(out_dim)
    params["att_dst"] = reader.take(p + "att_dst", (1, 1, out_dim)).reshape(out_dim)
  return params


def conv_params_to_torch(params: Params, prefix: str, layer_type: str) -> dict[str, np.ndarray]:
  """The PyG state-dict entries (`prefix + key` -> array) of a conv's param tree."""
  _check_layer_type(layer_type)
  def as_np(value):
    return np.asarray(value, np.float32)
  p = prefix
  if layer_type == "GraphSAGE":
    return {
        p + "lin_l.weight": as_np(params["lin_l"]["kernel"]).T,
        p + "lin_l.bias": as_np(params["lin_l"]["bias"]),
        p + "lin_r.weight": as_np(params["lin_r"]["kernel"]).T,
    }
  state = {p + "lin.weight": as_np(params["lin"]["kernel"]).T}
  if layer_type == "GAT":
    state[p + "att_src"] = as_np(params["att_src"]).reshape(1, 1, -1)
    state[p + "att_dst"] = as_np(params["att_dst"]).reshape(1, 1, -1)
  state[p + "bias"] = as_np(params["bias"])
  return state


def graph_norm_params_from_torch(reader: StateReader, prefix: str, dim: int) -> dict:
  """`GraphNorm` params from `prefix + {weight, bias, mean_scale}` `[dim]`, e.g. `"gns.0."`."""
  return {name: reader.take(prefix + name, (dim,)) for name in ("weight", "bias", "mean_scale")}


def graph_norm_params_to_torch(params: Params, prefix: str) -> dict[str, np.ndarray]:
  """The PyG `GraphNorm` state-dict entries of a `GraphNorm` param tree."""
  return {prefix + name: np.asarray(params[name], np.float32)
          for name in ("weight", "bias", "mean_scale")}


def topk_params_from_torch(reader: StateReader, prefix: str, dim: int) -> dict:
  """`TopKPool` params from `prefix + "weight"` `[1, dim]`; prefix e.g. `"topk_pools.0.select."`."""
  return {"weight": reader.take(prefix + "weight", (1, dim)).reshape(dim)}


def topk_params_to_torch(params: Params, prefix: str) -> dict[str, np.ndarray]:
  """The PyG entry `prefix + "weight"` `[1, F]` of a `TopKPool` param tree."""
  return {prefix + "weight": np.asarray(params["weight"], np.float32).reshape(1, -1)}
