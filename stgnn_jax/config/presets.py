"""Named recipes: the reference's (`--preset reference`, `reference_preset()`).

Every setting has one default, train.py's (the recipe of the README); the reference's value of a
setting is declared beside it (`setting(reference=...)`) wherever it differs, and the
reference's recipe is read from there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from stgnn_jax.config.fields import flag_fields, reference_value
from stgnn_jax.config.model import ModelConfig
from stgnn_jax.config.optim import OptimConfig
from stgnn_jax.config.run import CONFIGS, RunConfig


class Preset(NamedTuple):
  """The three configurations of a run."""

  model: ModelConfig
  optim: OptimConfig
  run: RunConfig


def reference_preset() -> Preset:
  """The reference's recipe: its architecture (a frozen, never-trained encoder on one-hot
  nodes), its optimiser and its protocol (README, "Differences from the reference")."""
  return Preset(ModelConfig.reference(), OptimConfig.reference(), RunConfig.reference())


def reference_overrides() -> dict[str, Any]:
  """{flag: the reference's value} for every flag whose default is not the reference's:
  `train.py` with these flags runs the reference's recipe.

  >>> overrides = reference_overrides()
  >>> overrides["focal_alpha"], overrides["freeze_encoder"], "lr" in overrides
  (0.9, True, True)
  """
  return {f.name: reference_value(f) for config_class in CONFIGS
          for f in flag_fields(config_class) if reference_value(f) != f.default}


def reference_flags() -> list[str]:
  """`reference_overrides()` as train.py arguments: `--preset reference` spelled out."""
  args = []
  for name, value in reference_overrides().items():
    args += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
  return args


# `--preset NAME`: the flags' values a preset sets (explicit flags still win).
PRESETS: dict[str, Callable[[], dict[str, Any]]] = {"reference": reference_overrides}
