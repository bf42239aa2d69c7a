"""Helpers shared by the tests (never imported by the packages or by bench/)."""

from __future__ import annotations

from typing import Any

from stgnn_jax.config import ModelConfig, OptimConfig


def reference_model(**changes: Any) -> ModelConfig:
  """The reference's architecture with its encoder trainable (`freeze_encoder=False`, unless
  `changes` say otherwise): the models the parity tests build, with `changes`."""
  return ModelConfig.reference(**{"freeze_encoder": False, **changes})


def reference_optim(**changes: Any) -> OptimConfig:
  """The reference's loss and optimiser, with `changes`."""
  return OptimConfig.reference(**changes)
