"""Dropout with hash-based masks: `flax.linen.Dropout`'s contract at a fraction of its cost on a
CPU, and a mask the fused GraphNorm block can recompute in its backward."""

from __future__ import annotations

import math
from typing import overload

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _lowbias32(x: Array) -> Array:
  """A 32-bit integer mixing hash (Chris Wellons' "lowbias32"), elementwise on uint32."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def _hash_keep(shape: tuple[int, ...], seed: Array, rate: float) -> Array:
  """`HashDropout`'s keep mask (bool, `shape`) for `seed` (`uint32[2]`): P(keep) = 1 - rate."""
  index = jnp.arange(math.prod(shape), dtype=jnp.uint32).reshape(shape)
  bits = _lowbias32(_lowbias32(index * jnp.uint32(0x9E3779B9) + seed[0]) ^ seed[1])
  threshold = jnp.uint32(min(int(round((1.0 - rate) * 2.0**32)), 2**32 - 1))
  return bits < threshold


class HashDropout(nn.Module):
  """Inverted dropout whose mask is a counter hash, seeded from the "dropout" rng stream.

  Same contract as `flax.linen.Dropout` (keep with probability `1 - rate`, scale kept values by
  `1 / (1 - rate)`, identity when `deterministic`), but the per-element bits come from two rounds
  of an integer hash over the element index, keyed by 64 bits drawn once per call with
  `jax.random.bits` (`draw_seed`). On a CPU, drawing a threefry word per element cost more than
  the rest of the encoder's forward pass; the hash is a handful of integer ops per element.
  Masks of different calls are independent through their keys; the keep probability is exact to
  2^-32.
  """

  rate: float

  def draw_seed(self) -> Array:
    """The `uint32[2]` key of this module's mask (what `__call__` draws), for fused layers."""
    if not 0 <= self.rate < 1:
      raise ValueError(f"dropout rate must lie in [0, 1), got {self.rate}.")
    return jax.random.bits(self.make_rng("dropout"), (2,), jnp.uint32)

  @overload
  def __call__(self, x: Array, *, deterministic: bool) -> Array: ...
  @overload
  def __call__(self, x: np.ndarray, *, deterministic: bool) -> Array | np.ndarray: ...

  @nn.compact
  def __call__(self, x: Array | np.ndarray, *, deterministic: bool) -> Array | np.ndarray:
    """`x` with dropout; `x` itself when `deterministic` or the rate is 0."""
    if deterministic or self.rate == 0:
      return x
    keep = _hash_keep(x.shape, self.draw_seed(), self.rate)
    return jnp.where(keep, x / (1.0 - self.rate), 0).astype(x.dtype)
