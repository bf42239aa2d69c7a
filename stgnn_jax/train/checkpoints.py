"""Flax-serialised checkpoints (params with their `ModelConfig`) and the fold's resume state,
written atomically (`stgnn_jax.atomic`)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import flax.serialization
import flax.traverse_util
import jax
import numpy as np

from stgnn_jax import atomic
from stgnn_jax.config import ModelConfig
from stgnn_jax.errors import InputError, RunStateError

CHECKPOINT_FORMAT = "stgnn-jax/2"
STATE_FORMAT = "stgnn-jax-state/1"
# Checkpoints written before the checksum (format 1) are still read, unverified.
_UNSEALED_CHECKPOINT_FORMAT = "stgnn-jax/1"


def _seal(format_name: str, body: bytes) -> bytes:
  """`body` with its SHA-256, so that a file damaged after writing is detected when read."""
  return flax.serialization.msgpack_serialize(
      {"format": format_name, "sha256": hashlib.sha256(body).hexdigest(), "body": body})


def _read_msgpack(path: str, what: str) -> Any:
  try:
    with open(path, "rb") as f:
      return flax.serialization.msgpack_restore(f.read())
  except (ValueError, TypeError, UnicodeDecodeError) as error:  # msgpack's errors are ValueErrors
    raise InputError(f"{path}: not a readable {what} ({type(error).__name__}: {error}); the file "
                     "is damaged or of another kind.") from None


def _unseal(path: str, raw: Any, what: str) -> Any:
  """The body of a sealed file, its checksum verified."""
  body = raw.get("body") if isinstance(raw, dict) else None
  if not isinstance(body, bytes) or hashlib.sha256(body).hexdigest() != raw.get("sha256"):
    raise InputError(f"{path}: the {what}'s checksum does not match its contents: the file is "
                     "damaged; restore it from a copy (or delete it to start that part again).")
  return flax.serialization.msgpack_restore(body)


def save_checkpoint(path: str | os.PathLike, params: Any, config: ModelConfig,
                    **metadata: Any) -> None:
  """Saves model params with their `ModelConfig` (and JSON-able metadata) in one msgpack file,
  with a SHA-256 of its contents that `load_checkpoint` verifies."""
  payload = {
      "model_config": json.dumps(config.to_dict()),
      "metadata": json.dumps(metadata, default=atomic.json_default),
      "params": jax.tree.map(np.asarray, flax.serialization.to_state_dict(params)),
  }
  atomic.write_bytes(path, _seal(CHECKPOINT_FORMAT,
                                 flax.serialization.msgpack_serialize(payload)))


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], ModelConfig, dict[str, Any]]:
  """Reads a checkpoint written by `save_checkpoint` (e.g. a fold's `best.msgpack`).

  Returns:
    `(params, model_config, metadata)`: params for `STGNN(model_config).apply({"params": ...})`
    (or `{"encoder": ...}` for a pretrained encoder).

  Raises:
    InputError: the file is missing, not a stgnn-jax checkpoint, or damaged (checksum).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise InputError(f"checkpoint {path!r} does not exist.")
  raw = _read_msgpack(path, "stgnn-jax checkpoint")
  format_name = raw.get("format") if isinstance(raw, dict) else None
  if format_name == CHECKPOINT_FORMAT:
    payload = _unseal(path, raw, "checkpoint")
  elif format_name == _UNSEALED_CHECKPOINT_FORMAT:
    payload = raw
  else:
    raise InputError(
        f"{path!r} is not a stgnn-jax checkpoint (format {CHECKPOINT_FORMAT!r}); for a PyTorch "
        "reference checkpoint (.pth) use stgnn_jax.params_from_torch.")
  config = ModelConfig.from_dict(json.loads(payload["model_config"]))
  return payload["params"], config, json.loads(payload["metadata"])


def save_state(path: str | os.PathLike, tree: Any) -> None:
  """Saves any pytree of arrays/scalars (e.g. a fold's progress) atomically, with a checksum."""
  atomic.write_bytes(path, _seal(STATE_FORMAT, flax.serialization.msgpack_serialize(
      flax.serialization.to_state_dict(tree))))


def first_difference(expected: Any, found: Any
                     ) -> tuple[str, tuple | None, tuple | None] | None:
  """The first entry (by "/"-joined path) where two nested dicts of arrays (or
  `jax.ShapeDtypeStruct`s) differ in name or shape: `(key, found shape, expected shape)`, a
  shape None where that side lacks the entry; None when they agree."""
  want = flax.traverse_util.flatten_dict(expected, sep="/") if isinstance(expected, dict) else {}
  have = flax.traverse_util.flatten_dict(found, sep="/") if isinstance(found, dict) else {}
  for key in sorted(set(want) | set(have)):
    found_shape = tuple(np.shape(have[key])) if key in have else None
    expected_shape = tuple(np.shape(want[key])) if key in want else None
    if found_shape != expected_shape:
      return key, found_shape, expected_shape
  return None


def restore_state(path: str | os.PathLike, template: Any) -> Any:
  """Restores a pytree saved by `save_state` into the structure of `template`.

  Raises:
    RunStateError: the file is damaged (checksum), or its tree or a shape differs from
      `template`'s (a state of another model), naming the first differing entry.
  """
  path = os.fspath(path)
  try:
    raw = _read_msgpack(path, "saved run state")
    # States written before the checksum are the bare tree.
    state = (_unseal(path, raw, "saved state")
             if isinstance(raw, dict) and raw.get("format") == STATE_FORMAT else raw)
  except InputError as error:
    raise RunStateError(str(error)) from None
  expected = flax.serialization.to_state_dict(template)
  difference = first_difference(expected, state)
  if difference is not None:
    key, found_shape, expected_shape = difference
    if found_shape is not None and expected_shape is not None:
      raise RunStateError(
          f"{path}: entry {key!r} has shape {found_shape} but this run's model needs "
          f"{expected_shape}; the file was saved by a run of another configuration.")
    problem = "is missing" if found_shape is None else "is not part of this run's state"
    raise RunStateError(f"{path}: entry {key!r} {problem}; the file was saved by a run of "
                        "another configuration, or is damaged.")
  return flax.serialization.from_state_dict(template, state)


def copy_checkpoint(source: str | os.PathLike, destination: str | os.PathLike) -> None:
  """Copies a checkpoint file atomically (a reader never sees half of it), in the process that
  writes the run's files."""
  if not atomic.writes():
    return
  with open(source, "rb") as f:
    atomic.write_bytes(destination, f.read())
