"""Reference PyTorch checkpoints <-> Flax params.

The reference writes `best_model_fold{k}.pth`, a dict with an `encoder` and a `classifier` state
dict (plus `epoch` and `val_results`), and `pretrained_gnn_encoder.pth`, a bare encoder state dict.
Key layout (reference page, "Checkpoint layout"): `convs.{i}.*`, `gns.{i}.*`,
`topk_pools.{i}.select.weight`, `time_projection.{0,3}.*`, `fusion_layer.0.*` for the encoder;
`lstm.*` / `gru.*` / `rnn.*` and `classifier.{0,3}.*` for the classifier. Every key and shape is
checked against the `ModelConfig`; a mismatch names the key, the expected and the found shape.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import Any

import flax.serialization
import numpy as np

from stgnn_jax.config import ModelConfig
from stgnn_jax.errors import InputError
from stgnn_jax.nn.model import TIME_EMBEDDING_DIM, TIME_HIDDEN_DIM
from stgnn_jax.torch_interop.layers import (
    conv_params_from_torch,
    conv_params_to_torch,
    graph_norm_params_from_torch,
    graph_norm_params_to_torch,
    topk_params_from_torch,
    topk_params_to_torch,
)
from stgnn_jax.torch_interop.state_dict import (
    StateReader,
    dense_params_from_torch,
    dense_params_to_torch,
)
from stgnn_jax.torch_interop.temporal import (
    temporal_params_from_torch,
    temporal_params_to_torch,
)

Params = dict[str, Any]


def _not_a_torch_checkpoint(path: str) -> str | None:
  """What the file at `path` is when it cannot be a `torch.save` file (which is a zip archive,
  or a pickle in the legacy format), with what to call instead; None when it may be one."""
  with open(path, "rb") as f:
    head = f.read(4096)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
      return None
    if not head:
      return "is empty, not a PyTorch checkpoint"
    whole = head + f.read()  # a msgpack file is read whole; a torch.save file never is
  try:
    stored = flax.serialization.msgpack_restore(whole)
  except Exception:  # msgpack raises several kinds of error on other bytes
    stored = None
  if isinstance(stored, dict) and str(stored.get("format", "")).startswith("stgnn-jax/"):
    return ("is a stgnn-jax checkpoint, not a PyTorch one; read it with "
            "stgnn_jax.train.checkpoints.load_checkpoint (or pass a train.py run folder to "
            "stgnn_jax.inference.load_run)")
  if isinstance(stored, dict):
    return "is a Flax msgpack file, not a PyTorch checkpoint; read it with flax.serialization"
  try:
    head.decode("utf-8")
  except UnicodeDecodeError:
    return ("is not a PyTorch checkpoint (neither the zip archive nor the pickle that torch.save "
            "writes)")
  return "is a text file, not a PyTorch checkpoint (a .pth file written by torch.save)"


def load_torch_checkpoint(path: str | os.PathLike, *, trust_checkpoint: bool = False) -> Any:
  """Reads a `.pth` file with PyTorch (needed only here: `pip install torch`).

  Only tensors and plain containers are unpickled unless `trust_checkpoint=True`, which runs the
  full pickle machinery (do that only for files you trust). A file PyTorch cannot read is named
  for what it is (a folder, a text file, a stgnn-jax checkpoint), so that the message never
  suggests `trust_checkpoint` for a file that no unpickling would read.
  """
  try:
    import torch
  except ImportError as error:
    raise ImportError(
        f"reading the PyTorch checkpoint {os.fspath(path)!r} needs PyTorch; install it with "
        "`pip install torch` (the CPU build is enough).") from error
  name = os.fspath(path)
  if os.path.isdir(name):
    raise InputError(f"checkpoint {name!r} is a folder, not a checkpoint file; pass the .pth "
                     "file itself.")
  if not os.path.isfile(name):
    raise InputError(f"checkpoint {name!r} does not exist.")
  try:
    return torch.load(name, map_location="cpu", weights_only=not trust_checkpoint)
  except Exception as error:  # torch raises UnpicklingError or RuntimeError with its own text
    kind = _not_a_torch_checkpoint(name)
    if kind is not None:
      raise InputError(f"checkpoint {name!r} {kind}.") from None
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    # weights_only=True refuses an object it does not know with an UnpicklingError; anything
    # else is a damaged file, which full unpickling would not read either.
    if trust_checkpoint or not isinstance(error, pickle.UnpicklingError):
      raise InputError(f"could not read {name!r} with PyTorch ({type(error).__name__}: "
                       f"{first_line}); the file is damaged or was not written by torch.save."
                       ) from error
    raise InputError(
        f"could not read {name!r} with weights_only=True ({first_line}); if you trust "
        "the file, let it be unpickled fully: --trust_checkpoint (trust_checkpoint=True in "
        "Python).") from error


def _time_layers(config: ModelConfig) -> dict[str, tuple[str, int, int]]:
  """Flax name -> (torch prefix, in, out) of the time projection and fusion Linear layers."""
  emb = config.embedding_dim
  return {
      "time_projection_0": ("time_projection.0.", 1, TIME_HIDDEN_DIM),
      "time_projection_3": ("time_projection.3.", TIME_HIDDEN_DIM, TIME_EMBEDDING_DIM),
      "fusion_layer_0": ("fusion_layer.0.", emb + TIME_EMBEDDING_DIM, emb),
  }


def _check_reference_encoder(config: ModelConfig) -> None:
  if config.readout != "meanmax":
    raise ValueError(f"ModelConfig.readout={config.readout!r} has no counterpart in the "
                     "reference's encoder (mean ‖ max readout); convert a meanmax model.")
  if not config.graph_norm:
    raise ValueError("ModelConfig.graph_norm=False has no counterpart in the reference's encoder "
                     "(it always has GraphNorm layers); convert a model trained with graph_norm.")


def encoder_params_from_torch(state: Mapping[str, Any], config: ModelConfig) -> Params:
  """The reference encoder's state dict -> `GraphEncoder` params."""
  _check_reference_encoder(config)
  reader = StateReader(state, "encoder state dict")
  params: Params = {}
  for i, (in_dim, out_dim) in enumerate(config.layer_dims()):
    params[f"convs_{i}"] = conv_params_from_torch(
        reader, f"convs.{i}.", config.layer_type, in_dim, out_dim)
    params[f"gns_{i}"] = graph_norm_params_from_torch(reader, f"gns.{i}.", out_dim)
    if config.use_topk_pooling:
      params[f"topk_pools_{i}"] = topk_params_from_torch(
          reader, f"topk_pools.{i}.select.", out_dim)
  if config.use_time_features:
    for name, (prefix, in_dim, out_dim) in _time_layers(config).items():
      params[name] = dense_params_from_torch(reader, prefix, in_dim, out_dim)
  reader.check_all_used()
  return params


def encoder_params_to_torch(params: Mapping[str, Any], config: ModelConfig
                            ) -> dict[str, np.ndarray]:
  """`GraphEncoder` params -> a state dict with the reference encoder's keys."""
  _check_reference_encoder(config)
  state: dict[str, np.ndarray] = {}
  for i in range(config.gnn_num_layers):
    state.update(conv_params_to_torch(params[f"convs_{i}"], f"convs.{i}.", config.layer_type))
    state.update(graph_norm_params_to_torch(params[f"gns_{i}"], f"gns.{i}."))
    if config.use_topk_pooling:
      state.update(topk_params_to_torch(params[f"topk_pools_{i}"], f"topk_pools.{i}.select."))
  if config.use_time_features:
    for name, (prefix, _, _) in _time_layers(config).items():
      state.update(dense_params_to_torch(params[name], prefix))
  return state


def _check_reference_model(config: ModelConfig) -> None:
  if config.linear_path:
    raise ValueError("ModelConfig.linear_path=True has no counterpart in the reference's model "
                     "(its logits come from the classifier alone); convert a model trained with "
                     "--no-linear_path.")


def _classifier_kwargs(config: ModelConfig) -> dict:
  return dict(model_type=config.model_type, hidden_dim=config.lstm_hidden_dim,
              num_layers=config.lstm_num_layers, bidirectional=config.bidirectional,
              input_dim=config.embedding_dim, num_classes=config.num_classes)


def classifier_params_from_torch(state: Mapping[str, Any], config: ModelConfig) -> Params:
  """The reference classifier's state dict -> `TemporalClassifier` params."""
  reader = StateReader(state, "classifier state dict")
  params = temporal_params_from_torch(reader, **_classifier_kwargs(config))
  reader.check_all_used()
  return params


def classifier_params_to_torch(params: Mapping[str, Any], config: ModelConfig
                               ) -> dict[str, np.ndarray]:
  """`TemporalClassifier` params -> a state dict with the reference classifier's keys."""
  return temporal_params_to_torch(
      params, model_type=config.model_type, num_layers=config.lstm_num_layers,
      bidirectional=config.bidirectional)


def params_from_torch(checkpoint: str | os.PathLike | Mapping[str, Any], config: ModelConfig, *,
                      trust_checkpoint: bool = False) -> Params:
  """Converts a reference checkpoint to Flax params for `STGNN(config)`.

  Args:
    checkpoint: a path to a `.pth` file, or the loaded object: either the reference's fold
      checkpoint (a dict with `encoder` and `classifier` state dicts) or a bare encoder state
      dict (a pretrained encoder).
    config: the architecture the checkpoint was trained with.
    trust_checkpoint: allow full unpickling of a `.pth` file (see `load_torch_checkpoint`).

  Returns:
    `{"encoder": ..., "classifier": ...}`, to be used as `STGNN(config).apply({"params": p}, ...)`;
    only `{"encoder": ...}` for a bare encoder state dict.
  """
  if isinstance(checkpoint, (str, os.PathLike)):
    checkpoint = load_torch_checkpoint(checkpoint, trust_checkpoint=trust_checkpoint)
  if not isinstance(checkpoint, Mapping):
    raise TypeError(
        f"expected a checkpoint dict or a state dict, got {type(checkpoint).__name__}.")
  if "encoder" in checkpoint or "classifier" in checkpoint:
    missing = [k for k in ("encoder", "classifier") if k not in checkpoint]
    if missing:
      raise ValueError(
          f"fold checkpoint without the {missing[0]!r} state dict; the reference writes both "
          "'encoder' and 'classifier' in best_model_fold{k}.pth.")
    _check_reference_model(config)
    return {
        "encoder": encoder_params_from_torch(checkpoint["encoder"], config),
        "classifier": classifier_params_from_torch(checkpoint["classifier"], config),
    }
  return {"encoder": encoder_params_from_torch(checkpoint, config)}


def params_to_torch(params: Mapping[str, Any], config: ModelConfig) -> dict[str, Any]:
  """Flax params -> the reference's fold-checkpoint layout (NumPy arrays; wrap with
  `torch.from_numpy` before `load_state_dict`). Params with only an encoder give a bare encoder
  state dict."""
  encoder = encoder_params_to_torch(params["encoder"], config)
  if "classifier" not in params:
    return encoder
  _check_reference_model(config)
  return {"encoder": encoder,
          "classifier": classifier_params_to_torch(params["classifier"], config)}
