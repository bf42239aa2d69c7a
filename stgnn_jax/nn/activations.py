"""The reference's `--activation` choices, with torch.nn.functional's defaults."""

from __future__ import annotations

from collections.abc import Callable

import jax

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, negative_slope=0.01),  # torch's default slope
    "elu": lambda x: jax.nn.elu(x, alpha=1.0),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # torch's default: the exact erf form
}
"""The reference's `--activation` values, with torch.nn.functional's defaults."""


def activation(name: str) -> Callable[[Array], Array]:
  """The activation function called `name`; raises ValueError naming the valid ones."""
  try:
    return ACTIVATIONS[name]
  except KeyError:
    raise ValueError(
        f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None
