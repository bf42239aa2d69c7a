"""PyG's `GraphNorm` over the real nodes of each graph, fused with the activation and dropout
that follow it in the encoder's block (one call, a hand-written backward)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from stgnn_jax.nn.conv import _masked_nodes
from stgnn_jax.nn.dropout import _hash_keep
from stgnn_jax.nn.graphs import BatchArray

Array = jax.Array


class GraphNorm(nn.Module):
  """Per-graph normalisation over real nodes, PyG's `GraphNorm` (Cai et al. 2021).

  With `mu` and `var` taken over the real nodes of each graph, per feature:
  `out = x - mean_scale * mu`, `var = mean(out^2)`, `y = weight * out / sqrt(var + eps) + bias`.

  The encoder's block GraphNorm -> activation -> dropout runs as one call (`activation`,
  `dropout_rate`, `dropout_seed`): the same numbers as the three layers applied in turn, with a
  hand-written backward (`norm_act_dropout`).

  Params `weight` (ones), `bias` (zeros), `mean_scale` (ones), each `[features]`.
  """

  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: Array, node_mask: BatchArray, *,
               activation: Callable[[Array], Array] | None = None, dropout_rate: float = 0.0,
               dropout_seed: Array | None = None) -> Array:
    """`x [G, N, F]`, `node_mask [G, N]` -> `[G, N, F]`, padding slots 0 (empty graphs: all 0).

    Args:
      x: node features.
      node_mask: True for real nodes.
      activation: applied after the normalisation (None: none).
      dropout_rate: inverted dropout after the activation, with `HashDropout`'s mask for
        `dropout_seed`; needs a seed when positive.
      dropout_seed: `uint32[2]` from `HashDropout.draw_seed`, or None for no dropout.
    """
    features = x.shape[-1]
    weight = self.param("weight", nn.initializers.ones_init(), (features,))
    bias = self.param("bias", nn.initializers.zeros_init(), (features,))
    mean_scale = self.param("mean_scale", nn.initializers.ones_init(), (features,))
    if dropout_seed is None:
      dropout_rate = 0.0
    elif not 0 < dropout_rate < 1:
      raise ValueError(f"a dropout seed needs a dropout rate in (0, 1), got {dropout_rate}.")
    return norm_act_dropout(x, node_mask, weight, bias, mean_scale, dropout_seed,
                            activation or _identity, dropout_rate, self.eps)


def _identity(x: Array) -> Array:
  return x


def _graph_stats(x: Array, node_mask: Array, mean_scale: Array, eps: float):
  """Real-node count `[G, 1, 1]`, mean and `1 / sqrt(var + eps)` `[G, 1, F]` of GraphNorm."""
  count = jnp.maximum(node_mask.sum(axis=1), 1)[:, None, None].astype(x.dtype)  # empty: no NaN
  # where, not a multiplication by the mask: no full-size broadcast mask is written to memory.
  mean = _masked_nodes(x, node_mask).sum(axis=1, keepdims=True) / count
  # Var of the shifted values, as PyG; the shifted values themselves are never stored.
  squares = _masked_nodes(jnp.square(x - mean_scale * mean), node_mask)
  var = squares.sum(axis=1, keepdims=True) / count
  return count, mean, jax.lax.rsqrt(var + eps)


def _keep_real(x: Array, node_mask: Array, seed: Array | None, rate: float) -> Array:
  """Where dropout keeps an element of a real node (all real nodes without dropout)."""
  keep = node_mask[..., None]
  return keep if seed is None else keep & _hash_keep(x.shape, seed, rate)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def norm_act_dropout(x: Array, node_mask: Array, weight: Array, bias: Array, mean_scale: Array,
                     seed: Array | None, activation: Callable[[Array], Array], rate: float,
                     eps: float) -> Array:
  """`dropout(activation(GraphNorm(x)))`, padding slots 0, with a hand-written backward.

  Left to autodiff, XLA recomputed the normalisation -> activation -> dropout-hash chain in
  every consumer of every intermediate (about ten passes over `[G, N, F]` in forward +
  backward). Here the forward keeps only `x` and the per-graph statistics, and the backward
  recomputes the chain for two per-graph sums and the input gradient (GraphNorm's closed-form
  backward); bench/train_bench.py measures the train step.
  """
  return _norm_act_dropout_fwd(x, node_mask, weight, bias, mean_scale, seed, activation, rate,
                               eps)[0]


def _norm_act_dropout_fwd(x, node_mask, weight, bias, mean_scale, seed, activation, rate, eps):
  count, mean, rstd = _graph_stats(x, node_mask, mean_scale, eps)
  z = (x - mean_scale * mean) * (weight * rstd) + bias
  y = jnp.where(_keep_real(x, node_mask, seed, rate), activation(z) / (1.0 - rate), 0)
  return y, (x, node_mask, weight, bias, mean_scale, seed, count, mean, rstd)


def _norm_act_dropout_bwd(activation, rate, eps, residuals, dy):
  x, node_mask, weight, bias, mean_scale, seed, count, mean, rstd = residuals
  x_hat = (x - mean_scale * mean) * rstd
  z = x_hat * weight + bias
  _, act_grad = jax.jvp(activation, (z,), (jnp.ones_like(z),))
  dz = jnp.where(_keep_real(x, node_mask, seed, rate), dy * act_grad / (1.0 - rate), 0)
  sum_dz = dz.sum(axis=1, keepdims=True)  # [G, 1, F]
  sum_dz_xhat = (dz * x_hat).sum(axis=1, keepdims=True)
  # With g = dz * weight: d out = rstd * (g - x_hat * mean(g * x_hat)) over real nodes, and
  # out = x - mean_scale * mean(x) gives dx = d out - mean_scale * mean(d out).
  g_xhat_mean = weight * sum_dz_xhat / count
  sum_xhat = count * mean * (1 - mean_scale) * rstd  # sum of x_hat over real nodes
  sum_dout = rstd * (weight * sum_dz - sum_xhat * g_xhat_mean)
  dx = _masked_nodes(rstd * (dz * weight - x_hat * g_xhat_mean) - mean_scale * sum_dout / count,
                     node_mask)
  return (dx, None, sum_dz_xhat.sum(axis=(0, 1)), sum_dz.sum(axis=(0, 1)),
          -(mean * sum_dout).sum(axis=(0, 1)), None)
norm_act_dropout.defvjp(_norm_act_dropout_fwd, _norm_act_dropout_bwd)
