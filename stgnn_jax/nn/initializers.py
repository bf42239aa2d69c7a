"""The initialisers of PyTorch and PyTorch Geometric, so that fresh params draw from the same
distributions as the reference's (the values differ: the generators do)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def uniform(bound: float) -> nn.initializers.Initializer:
  """U(-bound, bound): PyG's `inits.uniform`, torch's Linear bias and every weight of torch's
  recurrent layers (bound 1/sqrt(fan_in) or 1/sqrt(hidden))."""
  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


# PyG's `Linear` default, `kaiming_uniform(fan_in, a=sqrt(5))` like torch.nn.Linear: U(±1/sqrt(in)).
torch_linear_kernel = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")

# PyG's `glorot` on a `[out, in]` weight: U(±sqrt(6 / (in + out))), as Flax's on `[in, out]`.
glorot = nn.initializers.xavier_uniform()
