"""Tests for focal_jax against the seed's PyTorch FocalLoss.

The reference is the seed's ``FocalLoss.forward`` transcribed below from its
documentation and run in PyTorch (float64 and float32); it is never imported
from the package. float64 runs use the scoped ``jax.enable_x64`` context, so
other test files in the same worker keep float32 defaults.
"""

import dataclasses
import functools
import itertools

import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import focal_jax


# ---------------------------------------------------------------------------
# The reference: the seed's formula, in PyTorch.
# ---------------------------------------------------------------------------


class SeedFocalLoss(torch.nn.Module):
  """FocalLoss from the seed documentation (FocalLoss.py lines 5-32)."""

  def __init__(self, alpha=0.25, gamma=2.0, reduction="mean",
               label_smoothing=0.0):
    super().__init__()
    self.alpha = alpha
    self.gamma = gamma
    self.reduction = reduction
    self.label_smoothing = label_smoothing

  def forward(self, inputs, targets):
    if self.label_smoothing > 0:
      # The seed has .float(); the same in float32, and it keeps the float64
      # reference in float64.
      targets_one_hot = F.one_hot(
          targets, num_classes=inputs.size(1)).to(inputs.dtype)
      targets_one_hot = (targets_one_hot * (1 - self.label_smoothing)
                         + self.label_smoothing / inputs.size(1))
      ce_loss = -torch.sum(targets_one_hot * F.log_softmax(inputs, dim=1),
                           dim=1)
    else:
      ce_loss = F.cross_entropy(inputs, targets, reduction="none")
    pt = torch.exp(-ce_loss)
    alpha_t = torch.where(targets == 1, self.alpha, 1 - self.alpha)
    focal_loss = alpha_t * (1 - pt) ** self.gamma * ce_loss
    if self.reduction == "mean":
      return focal_loss.mean()
    if self.reduction == "sum":
      return focal_loss.sum()
    return focal_loss


REDUCTIONS = ("mean", "sum", "none")
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def torch_reference(logits, labels, alpha, gamma, smoothing, dtype,
                    cotangent=None):
  """Seed loss for every reduction: {reduction: (value, d value / d logits)}.

  ``logits`` is ``[N, C]`` (NumPy). The gradient of ``"none"`` is the
  vector-Jacobian product with ``cotangent`` (ones by default). The
  hyper-parameters go in as 0-d tensors of ``dtype`` so that ``alpha_t`` is
  not rounded to PyTorch's float32 default in the float64 reference.
  """
  tdtype = TORCH_DTYPES[dtype]
  z = torch.tensor(np.asarray(logits), dtype=tdtype, requires_grad=True)
  y = torch.tensor(np.asarray(labels), dtype=torch.long)
  hyper = [torch.tensor(float(h), dtype=tdtype)
           for h in (alpha, gamma, smoothing)]
  per_sample = SeedFocalLoss(hyper[0], hyper[1], "none", hyper[2])(z, y)
  n = per_sample.shape[0]
  if cotangent is None:
    cotangent = np.ones(n)
  # One batched backward for the three reductions: d mean = d sum / n.
  cotangents = torch.stack([
      torch.full((n,), 1 / n, dtype=tdtype),
      torch.ones(n, dtype=tdtype),
      torch.tensor(cotangent, dtype=tdtype),
  ])
  (grads,) = torch.autograd.grad(per_sample, z, cotangents,
                                 is_grads_batched=True)
  per_sample = per_sample.detach()
  values = (per_sample.mean(), per_sample.sum(), per_sample)
  return {r: (v.numpy(), g.numpy())
          for r, v, g in zip(REDUCTIONS, values, grads)}


@pytest.fixture(autouse=True, scope="module")
def torch_single_thread():
  """The references are small; threads only fight over the 2 shared cores."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def assert_close(actual, expected, rtol, atol_scale, err_msg=""):
  """allclose with an absolute floor of atol_scale * max|expected|.

  A relative tolerance alone cannot hold for entries near 0 (a confident
  sample's loss, a mean's tiny gradient entries); the floor scales with the
  array so that it stays meaningful for a mean over 1024 samples.
  """
  actual, expected = np.asarray(actual), np.asarray(expected)
  finite = np.isfinite(expected)
  scale = np.max(np.abs(expected[finite]), initial=0.0)
  np.testing.assert_allclose(actual, expected, rtol=rtol,
                             atol=atol_scale * scale, err_msg=err_msg)


# Tolerances: 1e-6 relative in float64, 1e-5 in float32, each with an absolute
# floor of a few units in the last place of the array's largest entry, for
# entries that are differences of nearly equal numbers (p_c - q_c).
TOLERANCES = {"float64": (1e-6, 1e-12), "float32": (1e-5, 1e-6)}


def make_batch(batch, num_classes, seed=0):
  """Random logits [batch, C] (scale 3) and labels, with extreme rows.

  For batch >= 17 rows 0 and 1 are very confident and right (label margin 20
  and 40: pt rounds to 1 in float32, and for the second in float64), row 2
  very confident and wrong. Those make PyTorch's gradient NaN for 0 < gamma <
  1 and test the stable 1 - pt.
  """
  rng = np.random.default_rng(seed)
  logits = 3 * rng.standard_normal((batch, num_classes))
  labels = rng.integers(0, num_classes, batch)
  if batch >= 17:
    labels[:4] = [1, 0, 1, 0]  # Both alpha_t branches for the binary case.
    for row, margin in ((0, 20.0), (1, 40.0), (2, -20.0)):
      logits[row] = 0.0
      logits[row, labels[row]] = margin
  return logits, labels


# ---------------------------------------------------------------------------
# Parity with PyTorch over the hyper-parameter grid.
# ---------------------------------------------------------------------------

ALPHAS = (0.0, 0.25, 0.5, 0.9, 1.0)
GAMMAS = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0)
SMOOTHINGS = (0.0, 0.05, 0.1, 0.2, 1.0)
GRID = np.array(list(itertools.product(ALPHAS, GAMMAS, SMOOTHINGS)))


def jax_all_reductions(logits, labels, alpha, gamma, smoothing, cotangent):
  """{reduction: (value, gradient)} as in torch_reference."""
  out = {}
  for reduction in REDUCTIONS:
    loss = functools.partial(focal_jax.focal_loss, labels=labels, alpha=alpha,
                             gamma=gamma, smoothing=smoothing,
                             reduction=reduction)
    value, vjp = jax.vjp(loss, logits)
    ct = cotangent if reduction == "none" else jnp.ones((), value.dtype)
    out[reduction] = (value, vjp(ct)[0])
  return out


@jax.jit
def jax_traced_grid(logits, labels, grid, cotangent):
  """All grid rows in one vmapped call: every hyper-parameter traced."""
  return jax.vmap(
      lambda h: jax_all_reductions(logits, labels, h[0], h[1], h[2], cotangent)
  )(grid)


@functools.partial(jax.jit, static_argnames=("gammas", "smoothings"))
def jax_static_grid(logits, labels, alphas, cotangent, gammas, smoothings):
  """Python-number gamma and smoothing (the static paths), traced alpha.

  Reduction "none" only: the reductions follow the per-sample loss whatever
  path computed it, and the traced grid covers them.
  """
  def per_sample(alpha, gamma, smoothing):
    loss = lambda z: focal_jax.focal_loss(z, labels, alpha, gamma, smoothing,
                                          reduction="none")
    value, vjp = jax.vjp(loss, logits)
    return {"none": (value, vjp(cotangent)[0])}

  return {(g, s): jax.vmap(lambda a: per_sample(a, g, s))(alphas)  # pylint: disable=cell-var-from-loop
          for g in gammas for s in smoothings}


def compare_with_torch(ours, logits, labels, alpha, gamma, smoothing, dtype,
                       cotangent, reference_cache):
  """Checks values and gradients of one grid point against PyTorch."""
  rtol, atol = TOLERANCES[dtype]
  references = {}
  for ref_dtype in sorted({"float64", dtype}):
    key = (alpha, gamma, smoothing, ref_dtype)
    if key not in reference_cache:
      reference_cache[key] = torch_reference(
          logits, labels, alpha, gamma, smoothing, ref_dtype, cotangent)
    references[ref_dtype] = reference_cache[key]
  nan_grads = 0
  for reduction in ours:
    value, grad = (np.asarray(x) for x in ours[reduction])
    msg = f"{dtype} {reduction} alpha={alpha} gamma={gamma} eps={smoothing}"
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad)), msg
    # Against the reference in the same dtype, and (float32) against the more
    # accurate float64 one.
    for ref_dtype, reference in references.items():
      ref_value, ref_grad = reference[reduction]
      msg_ref = f"{msg} vs torch {ref_dtype}"
      ref_finite = np.isfinite(ref_grad)
      nan_grads += np.sum(~ref_finite)
      assert_close(value, ref_value, rtol, atol, msg_ref)
      assert_close(grad[ref_finite], ref_grad[ref_finite], rtol, atol, msg_ref)
      # Where PyTorch's gradient is NaN (0 < gamma < 1, pt == 1) ours is the
      # finite limit: that sample's gradient vanishes.
      np.testing.assert_allclose(grad[~ref_finite], 0,
                                 atol=atol * np.max(np.abs(grad)),
                                 err_msg=msg_ref)
  return nan_grads


@pytest.fixture(scope="module")
def torch_cache():
  return {}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("num_classes", [2, 3, 7])
@pytest.mark.parametrize("batch", [1, 17, 1024])
def test_parity_traced_grid(batch, num_classes, dtype, torch_cache):
  logits, labels = make_batch(batch, num_classes)
  cotangent = np.random.default_rng(1).standard_normal(batch)
  cache = torch_cache.setdefault((batch, num_classes), {})
  with jax.enable_x64(dtype == "float64"):
    ours = jax_traced_grid(jnp.asarray(logits, dtype), jnp.asarray(labels),
                           jnp.asarray(GRID, dtype),
                           jnp.asarray(cotangent, dtype))
    ours = jax.tree.map(np.asarray, ours)
  nan_grads = 0
  for i, (alpha, gamma, smoothing) in enumerate(GRID):
    nan_grads += compare_with_torch(
        jax.tree.map(lambda x: x[i], ours), logits, labels, alpha, gamma,  # pylint: disable=cell-var-from-loop
        smoothing, dtype, cotangent, cache)
  if batch >= 17:
    assert nan_grads > 0, "the grid should reach PyTorch's NaN gradient"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("num_classes", [2, 3, 7])
def test_parity_static_paths(num_classes, dtype, torch_cache):
  """Python-number gamma (integer: the integer-power path) and smoothing."""
  batch = 17
  logits, labels = make_batch(batch, num_classes)
  cotangent = np.random.default_rng(1).standard_normal(batch)
  cache = torch_cache.setdefault((batch, num_classes), {})
  smoothings = (0.0, 0.1)
  with jax.enable_x64(dtype == "float64"):
    ours = jax_static_grid(jnp.asarray(logits, dtype), jnp.asarray(labels),
                           jnp.asarray(ALPHAS, dtype),
                           jnp.asarray(cotangent, dtype), GAMMAS, smoothings)
    ours = jax.tree.map(np.asarray, ours)
  for gamma, smoothing in itertools.product(GAMMAS, smoothings):
    for i, alpha in enumerate(ALPHAS):
      compare_with_torch(
          jax.tree.map(lambda x: x[i], ours[gamma, smoothing]),  # pylint: disable=cell-var-from-loop
          logits, labels, alpha, gamma, smoothing, dtype, cotangent, cache)
