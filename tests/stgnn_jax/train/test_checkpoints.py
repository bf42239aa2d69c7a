"""Tests of `stgnn_jax.train.checkpoints` and `stgnn_jax.atomic`: files that are damaged, of
another model or of an older version are named, never loaded in silence."""

from __future__ import annotations

import json
import os

import flax.serialization
import numpy as np
import pytest

from stgnn_jax import atomic
from stgnn_jax.config import ModelConfig
from stgnn_jax.errors import InputError, RunStateError
from stgnn_jax.train.checkpoints import (
    load_checkpoint,
    restore_state,
    save_checkpoint,
    save_state,
)

PARAMS = {"encoder": {"w": np.arange(4000, dtype=np.float32).reshape(40, 100)},
          "classifier": {"b": np.ones(3, np.float32)}}


def test_checkpoint_round_trip_and_damage_in_the_middle_is_detected(tmp_path):
  path = tmp_path / "best.msgpack"
  save_checkpoint(path, PARAMS, ModelConfig(), fold=2)
  params, config, metadata = load_checkpoint(path)
  np.testing.assert_array_equal(params["encoder"]["w"], PARAMS["encoder"]["w"])
  assert config == ModelConfig() and metadata == {"fold": 2}
  raw = bytearray(path.read_bytes())
  middle = len(raw) // 2
  raw[middle:middle + 8] = b"\x7f" * 8  # inside the weights: still valid msgpack
  path.write_bytes(bytes(raw))
  with pytest.raises(InputError, match="checksum does not match"):
    load_checkpoint(path)


def test_checkpoints_of_the_first_format_still_load(tmp_path):
  path = tmp_path / "old.msgpack"
  path.write_bytes(flax.serialization.msgpack_serialize({
      "format": "stgnn-jax/1", "model_config": json.dumps(ModelConfig().to_dict()),
      "metadata": "{}", "params": PARAMS}))
  params, config, _ = load_checkpoint(path)
  assert config == ModelConfig() and params["classifier"]["b"].shape == (3,)


def test_garbage_is_named_as_such(tmp_path):
  path = tmp_path / "progress.msgpack"
  path.write_bytes(b"\xc1 not msgpack at all")
  with pytest.raises(RunStateError, match=f"{path}: not a readable saved run state"):
    restore_state(path, {"a": np.zeros(2)})
  with pytest.raises(InputError, match="not a readable stgnn-jax checkpoint"):
    load_checkpoint(path)


def test_a_state_of_another_model_is_refused_before_restoring(tmp_path):
  path = tmp_path / "progress.msgpack"
  save_state(path, {"params": {"w": np.zeros((3, 4))}, "step": np.int32(5)})
  restored = restore_state(path, {"params": {"w": np.ones((3, 4))}, "step": np.int32(0)})
  assert int(restored["step"]) == 5
  with pytest.raises(RunStateError, match=r"entry 'params/w' has shape \(3, 4\) but this run's "
                     r"model needs \(3, 8\)"):
    restore_state(path, {"params": {"w": np.ones((3, 8))}, "step": np.int32(0)})
  with pytest.raises(RunStateError, match="entry 'params/v' is missing"):
    restore_state(path, {"params": {"v": np.ones((3, 4)), "w": np.ones((3, 4))},
                         "step": np.int32(0)})
  raw = bytearray(path.read_bytes())
  raw[raw.index(b"\x00" * 8) + 4] = 1  # one of the zeros of `w`, inside the checksummed body
  path.write_bytes(bytes(raw))
  with pytest.raises(RunStateError, match="checksum does not match"):
    restore_state(path, {"params": {"w": np.ones((3, 4))}, "step": np.int32(0)})


def test_atomic_files_get_the_umasks_permissions(tmp_path):
  old = os.umask(0o027)
  try:
    atomic.write_text(tmp_path / "a.txt", "x")
  finally:
    os.umask(old)
  assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(atomic.TEMP_PREFIX)]
