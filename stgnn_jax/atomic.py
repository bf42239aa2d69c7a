"""Atomic file writes: the one way stgnn-jax writes a file.

Every file of a run is written to a temporary file in the same folder, flushed to disk and moved
over the old one with `os.replace`, so a run killed at any moment (SIGKILL included) leaves either
the old or the new complete file, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import jax
import numpy as np

from stgnn_jax.errors import RunStateError

# The prefix of the temporary files; one left by a killed write can be removed safely.
TEMP_PREFIX = ".tmp-"
# In a run over several processes (`jax.distributed`), every process computes the same values
# and only the first one writes (`set_writer`); the others skip their writes and removals.
_writer = True


def set_writer(writes: bool) -> None:
  """Whether this process writes (and removes) files: False for all but a run's first process."""
  global _writer
  _writer = writes


def writes() -> bool:
  """Whether this process writes the run's files (`set_writer`)."""
  return _writer


def remove(path: str | os.PathLike) -> None:
  """Removes a file of a run (by the writing process only)."""
  if _writer:
    os.remove(path)


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to `path` atomically (temporary file + fsync + rename)."""
  if not _writer:
    return
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX + os.path.basename(path))
  try:
    # mkstemp creates the file private (0600); a file written directly would get 0666 minus the
    # umask (0644 with the usual 022), so give it that.
    os.chmod(tmp, 0o666 & ~_umask())
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_text(path: str | os.PathLike, text: str) -> None:
  """`write_bytes` of UTF-8 text."""
  write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: Any) -> None:
  """`write_text` of `value` as indented JSON (NumPy and JAX scalars and arrays included)."""
  write_text(path, json.dumps(value, indent=2, default=json_default) + "\n")


def json_default(value: Any) -> Any:
  """`json.dumps(default=...)` for NumPy and JAX values."""
  if isinstance(value, (np.generic, jax.Array)):
    return np.asarray(value).item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: str | os.PathLike) -> Any:
  """A JSON file of a run folder; RunStateError naming the file if it cannot be read."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (ValueError, OSError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    raise RunStateError(f"{path}: not readable ({type(error).__name__}: {error}); the file is "
                        "damaged; delete it (or the run folder) to redo that part.") from None
