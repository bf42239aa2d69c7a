"""Helpers shared by the tests (never imported by the packages or by bench/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from stgnn_jax.config import ModelConfig, OptimConfig

# The repository's root: train.py, README.md, docs/.
ROOT = Path(__file__).resolve().parents[1]


def reference_model(**changes: Any) -> ModelConfig:
  """The reference's architecture with its encoder trainable (`freeze_encoder=False`, unless
  `changes` say otherwise): the models the parity tests build, with `changes`."""
  return ModelConfig.reference(**{"freeze_encoder": False, **changes})


def reference_optim(**changes: Any) -> OptimConfig:
  """The reference's loss and optimiser, with `changes`."""
  return OptimConfig.reference(**changes)


def train_command(*args: str) -> list[str]:
  """The command line that runs the repository's train.py with `args`."""
  return [sys.executable, str(ROOT / "train.py"), *args]


def run_train(args, cache, env=None, timeout=600) -> subprocess.CompletedProcess:
  """Runs train.py with `args` and the compilation cache `cache`; asserts it succeeded."""
  full_env = dict(os.environ, **(env or {}))
  result = subprocess.run(train_command(*args, "--compile_cache", cache), cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result


def results_of(out_dir: Path) -> dict:
  """A run folder's results.json."""
  return json.loads((out_dir / "results.json").read_text())
