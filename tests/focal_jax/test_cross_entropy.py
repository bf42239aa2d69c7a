"""Tests of `focal_jax.cross_entropy` against `torch.nn.functional.cross_entropy`: values and
gradients, with and without class weights and label smoothing, on padded batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import focal_jax


def torch_loss(logits, labels, weights, smoothing, reduction):
  z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
  w = None if weights is None else torch.tensor(weights, dtype=torch.float64)
  loss = torch.nn.functional.cross_entropy(z, torch.tensor(labels), weight=w,
                                           label_smoothing=smoothing, reduction=reduction)
  loss.sum().backward()
  return loss.detach().numpy(), z.grad.numpy()


@pytest.mark.parametrize("weights", [None, (1.0, 3.0), (0.2, 0.0, 2.5)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(weights, smoothing, reduction):
  classes = 2 if weights is None or len(weights) == 2 else 3
  rng = np.random.default_rng(classes * 10 + int(smoothing * 10))
  logits = rng.normal(size=(9, classes)) * 2
  labels = rng.integers(0, classes, size=9)
  expected, expected_grad = torch_loss(logits, labels, weights, smoothing, reduction)

  def loss(z):
    return focal_jax.cross_entropy(z, jnp.asarray(labels), weights, smoothing,
                                   reduction=reduction)

  with jax.enable_x64(True):
    got = loss(jnp.asarray(logits))
    grad = jax.grad(lambda z: loss(z).sum())(jnp.asarray(logits))
  np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_padding_counts_nowhere_and_gets_no_gradient():
  rng = np.random.default_rng(7)
  logits = rng.normal(size=(6, 2)).astype(np.float32)
  labels = np.array([0, 1, 1, 0, 1, 0])
  where = np.array([True, True, True, True, False, False])
  padded = logits.copy()
  padded[4:] = np.nan  # padding may hold anything
  weights, smoothing = (1.0, 4.0), 0.05
  expected, expected_grad = torch_loss(logits[:4].astype(np.float64), labels[:4], weights,
                                       smoothing, "mean")

  def loss(z):
    return focal_jax.cross_entropy(z, jnp.asarray(labels), jnp.asarray(weights), smoothing,
                                   where=jnp.asarray(where))

  np.testing.assert_allclose(jax.jit(loss)(padded), expected, rtol=1e-5)
  grad = jax.grad(loss)(jnp.asarray(padded))
  np.testing.assert_allclose(grad[:4], expected_grad, rtol=1e-4, atol=1e-7)
  assert np.all(np.asarray(grad[4:]) == 0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(weights=(1.0, 2.0, 3.0)), r"weights must have shape \(C,\) = \(2,\)"),
    (dict(weights=(-1.0, 2.0)), "weights must be >= 0"),
    (dict(smoothing=1.5), "smoothing must lie in"),
    (dict(reduction="avg"), "reduction"),
])
def test_bad_arguments_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    focal_jax.cross_entropy(jnp.zeros((3, 2)), jnp.array([0, 1, 0]), **kwargs)
