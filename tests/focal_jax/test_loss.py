"""Tests for focal_jax against the seed's PyTorch FocalLoss.

The reference is the seed's ``FocalLoss.forward`` transcribed below from its
documentation and run in PyTorch (float64 and float32); it is never imported
from the package. float64 runs use the scoped ``jax.enable_x64`` context, so
other test files in the same worker keep float32 defaults.
"""

import dataclasses
import functools
import itertools
import runpy

import chex
import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from jax.test_util import check_grads

import focal_jax
from bench.torch_reference import SeedFocalLoss
from tests.helpers import ROOT

# ---------------------------------------------------------------------------
# The reference: the seed's formula, in PyTorch.
# ---------------------------------------------------------------------------


REDUCTIONS = ("mean", "sum", "none")
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def traced_loss(labels, z, a, g, s):
  """The mean focal loss with α, γ and smoothing as traced arguments."""
  return focal_jax.focal_loss(z, labels, a, g, s)


def static_loss(labels, z, a, *, gamma, smoothing):
  """The mean focal loss with γ and smoothing as Python numbers (the static paths)."""
  return focal_jax.focal_loss(z, labels, a, gamma, smoothing)


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
      torch.full((n,), 1 / max(n, 1), dtype=tdtype),
      torch.ones(n, dtype=tdtype),
      torch.tensor(cotangent, dtype=tdtype),
  ])
  (grads,) = torch.autograd.grad(per_sample, z, cotangents,
                                 is_grads_batched=True)
  per_sample = per_sample.detach()
  values = (per_sample.mean(), per_sample.sum(), per_sample)
  return {r: (v.numpy(), g.numpy())
          for r, v, g in zip(REDUCTIONS, values, grads, strict=True)}


@pytest.fixture(autouse=True, scope="module")
def torch_single_thread():
  """The references are small; threads only fight over the 2 shared cores."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def assert_close(actual, expected, rtol, atol_scale, err_msg="", atol=0.0):
  """allclose with an absolute floor of atol_scale * max|expected| (+ atol).

  A relative tolerance alone cannot hold for entries near 0 (a confident
  sample's loss, a mean's tiny gradient entries); the floor scales with the
  array so that it stays meaningful for a mean over 1024 samples.
  """
  actual, expected = np.asarray(actual), np.asarray(expected)
  finite = np.isfinite(expected)
  scale = np.max(np.abs(expected[finite]), initial=0.0)
  np.testing.assert_allclose(actual, expected, rtol=rtol,
                             atol=atol_scale * scale + atol, err_msg=err_msg)


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


def jax_all_reductions(logits, labels, alpha, gamma, smoothing, cotangent,
                       where=None):
  """{reduction: (value, gradient)} as in torch_reference."""
  out = {}
  for reduction in REDUCTIONS:
    loss = functools.partial(focal_jax.focal_loss, labels=labels, alpha=alpha,
                             gamma=gamma, smoothing=smoothing,
                             reduction=reduction, where=where)
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
    def loss(z):
      return focal_jax.focal_loss(z, labels, alpha, gamma, smoothing, reduction="none")
    value, vjp = jax.vjp(loss, logits)
    return {"none": (value, vjp(cotangent)[0])}

  return {(g, s): jax.vmap(functools.partial(per_sample, gamma=g, smoothing=s))(alphas)
          for g in gammas for s in smoothings}


def torch_grid(logits, labels, combos, dtype, cotangent, cache):
  """Seed references stacked over (alpha, gamma, smoothing) rows.

  Returns {reduction: (values [H, ...], gradients [H, N, C])}.
  """
  rows = []
  for combo in combos:
    key = (tuple(combo), dtype)
    if key not in cache:
      cache[key] = torch_reference(logits, labels, *combo, dtype, cotangent)
    rows.append(cache[key])
  return {r: tuple(np.stack([row[r][i] for row in rows]) for i in (0, 1))
          for r in REDUCTIONS}


def assert_rows_close(actual, expected, rtol, atol_scale, combos, err_msg):
  """assert_close row by row of a stacked grid, vectorised.

  Where the reference is NaN (PyTorch's gradient for 0 < gamma < 1 at
  pt == 1) ours must be finite and within the absolute floor of 0: the finite
  limit, that sample's gradient vanishes.
  """
  rows = len(combos)
  actual = np.asarray(actual).reshape(rows, -1)
  expected = np.asarray(expected).reshape(rows, -1)
  finite = np.isfinite(expected)
  target = np.where(finite, expected, 0.0)
  floor = atol_scale * np.max(np.abs(target), axis=1, keepdims=True)
  close = np.abs(actual - target) <= floor + rtol * np.abs(target)
  bad = np.flatnonzero(~np.all(close & np.isfinite(actual), axis=1))
  if bad.size:
    i = bad[0]
    np.testing.assert_allclose(
        actual[i], target[i], rtol=rtol, atol=floor[i, 0],
        err_msg=f"{err_msg} at (alpha, gamma, smoothing) = {combos[i]}, "
        f"{bad.size} of {rows} rows fail")
    raise AssertionError(f"{err_msg}: non-finite at {combos[i]}")


def check_grid(ours, logits, labels, combos, dtype, cotangent, cache):
  """Compares stacked results with the seed in dtype and in float64.

  float32 results are checked against both: the float32 reference is what a
  PyTorch user sees, the float64 one is closer to the truth. Returns the
  number of NaN entries in PyTorch's gradients.
  """
  nan_grads = 0
  for ref_dtype in sorted({"float64", dtype}):
    reference = torch_grid(logits, labels, combos, ref_dtype, cotangent,
                           cache)
    for reduction in ours:
      for i, what in enumerate(("value", "gradient")):
        assert_rows_close(
            ours[reduction][i], reference[reduction][i], *TOLERANCES[dtype],
            combos, f"{dtype} {reduction} {what} vs torch {ref_dtype}")
      nan_grads += np.sum(np.isnan(reference[reduction][1]))
  return nan_grads


@pytest.fixture(scope="module")
def torch_cache():
  return {}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("num_classes", [2, 3, 7])
@pytest.mark.parametrize("batch", [1, 17, 1024])
def test_parity_traced_grid(batch, num_classes, dtype, torch_cache):
  """All 150 grid points in one vmapped, jitted call, every reduction."""
  logits, labels = make_batch(batch, num_classes)
  cotangent = np.random.default_rng(1).standard_normal(batch)
  with jax.enable_x64(dtype == "float64"):
    ours = jax_traced_grid(jnp.asarray(logits, dtype), jnp.asarray(labels),
                           jnp.asarray(GRID, dtype),
                           jnp.asarray(cotangent, dtype))
  nan_grads = check_grid(ours, logits, labels, GRID, dtype, cotangent,
                         torch_cache.setdefault((batch, num_classes), {}))
  if batch >= 17:
    assert nan_grads > 0, "the grid should reach PyTorch's NaN gradient"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("num_classes", [2, 3])  # 7 takes 3's code path.
def test_parity_static_paths(num_classes, dtype, torch_cache):
  """Python-number gamma (integer: the integer-power path) and smoothing."""
  batch = 17
  logits, labels = make_batch(batch, num_classes)
  cotangent = np.random.default_rng(1).standard_normal(batch)
  smoothings = (0.0, 0.1)
  with jax.enable_x64(dtype == "float64"):
    ours = jax_static_grid(jnp.asarray(logits, dtype), jnp.asarray(labels),
                           jnp.asarray(ALPHAS, dtype),
                           jnp.asarray(cotangent, dtype), GAMMAS, smoothings)
  for gamma, smoothing in itertools.product(GAMMAS, smoothings):
    check_grid(ours[gamma, smoothing], logits, labels,
               [(a, gamma, smoothing) for a in ALPHAS], dtype, cotangent,
               torch_cache.setdefault((batch, num_classes), {}))


# ---------------------------------------------------------------------------
# Core cases, each with and without jit.
# ---------------------------------------------------------------------------

SEED_LOGITS = np.array([[2.5, -1.0], [0.5, 0.5], [-1.0, 2.0]])
SEED_TARGETS = np.array([0, 1, 1])


def all_reductions(logits, labels, alpha=0.25, gamma=2.0, smoothing=0.0,
                   where=None):
  """{reduction: (value, gradient)}, "none" pulled back with ones.

  One function for the three reductions keeps each jitted variant to a single
  compilation per shape.
  """
  ones = jnp.ones(jnp.shape(labels), jnp.result_type(logits, jnp.float32))
  return jax_all_reductions(logits, labels, alpha, gamma, smoothing, ones,
                            where)


class FocalLossTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_seed_worked_example(self):
    """The seed's example, with and without smoothing, every reduction.

    Under jit the hyper-parameters are traced; without it they are Python
    numbers and take the static paths.
    """
    loss = self.variant(all_reductions)
    for dtype, smoothing in itertools.product(("float32", "float64"),
                                              (0.0, 0.1)):
      reference = torch_reference(SEED_LOGITS, SEED_TARGETS, 0.25, 2.0,
                                  smoothing, dtype)
      with jax.enable_x64(dtype == "float64"):
        ours = loss(jnp.asarray(SEED_LOGITS, dtype), SEED_TARGETS, 0.25, 2.0,
                    smoothing)
      for reduction in REDUCTIONS:
        value, grad = ours[reduction]
        self.assertEqual(value.dtype, jnp.dtype(dtype))
        msg = f"{dtype} smoothing={smoothing} {reduction}"
        assert_close(value, reference[reduction][0], *TOLERANCES[dtype], msg)
        assert_close(grad, reference[reduction][1], *TOLERANCES[dtype], msg)

  def test_seed_worked_example_by_hand(self):
    """The numbers themselves, so that a wrong reference cannot hide a bug."""
    loss = focal_jax.focal_loss(SEED_LOGITS, SEED_TARGETS, reduction="none")
    # ce = softplus(z_other - z_label); alpha_t = 0.25 for label 1, else 0.75.
    ce = np.log1p(np.exp([-3.5, 0.0, -3.0]))
    expected = np.array([0.75, 0.25, 0.25]) * (1 - np.exp(-ce))**2 * ce
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(focal_jax.focal_loss(SEED_LOGITS, SEED_TARGETS),
                               expected.mean(), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_focal_loss_class(self):
    logits, labels = make_batch(17, 2)
    criterion = focal_jax.FocalLoss(alpha=0.9, gamma=3.0,
                                    label_smoothing=0.05)
    value = self.variant(criterion)(logits, labels)
    reference = torch_reference(logits, labels, 0.9, 3.0, 0.05, "float32")
    assert_close(value, reference["mean"][0], *TOLERANCES["float32"])
    per_sample = focal_jax.FocalLoss(0.9, 3.0, "none", 0.05)(logits, labels)
    assert_close(per_sample, reference["none"][0], *TOLERANCES["float32"])

  def test_focal_loss_class_is_a_frozen_hashable_config(self):
    criterion = focal_jax.FocalLoss(alpha=[0.2, 0.8], reduction="sum")
    self.assertEqual(criterion.alpha, (0.2, 0.8))
    self.assertEqual(
        criterion, focal_jax.FocalLoss(alpha=(0.2, 0.8), reduction="sum"))
    self.assertEqual(focal_jax.FocalLoss(),
                     focal_jax.FocalLoss(0.25, 2.0, "mean", 0.0))
    from_arrays = focal_jax.FocalLoss(alpha=jnp.array([0.2, 0.8]),
                                      gamma=jnp.float32(2.0))
    self.assertIsInstance(hash(from_arrays), int)
    self.assertEqual(from_arrays.alpha, tuple(np.float32([0.2, 0.8]).tolist()))
    self.assertEqual(from_arrays.gamma, 2.0)
    self.assertIsInstance(hash(criterion), int)
    with self.assertRaises(dataclasses.FrozenInstanceError):
      criterion.gamma = 1.0
    step = jax.jit(lambda c, z, y: c(z, y), static_argnums=0)
    logits, labels = make_batch(17, 2)
    np.testing.assert_allclose(
        step(criterion, logits, labels),
        focal_jax.focal_loss(logits, labels, jnp.array([0.2, 0.8]),
                             reduction="sum"), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_where_equals_dropping_rows(self):
    """A padded batch gives the unpadded batch's loss and gradient."""
    loss = self.variant(all_reductions)
    keep = np.random.default_rng(2).random(17) < 0.6
    for num_classes in (2, 3):
      logits, labels = make_batch(17, num_classes)
      # Padding may hold garbage: NaN and inf logits, label -1.
      padded_logits = np.where(keep[:, None], logits, np.nan)
      padded_logits[np.flatnonzero(~keep)[0]] = np.inf
      padded_labels = np.where(keep, labels, -1)
      expected = loss(logits[keep], labels[keep], 0.75, 0.5, 0.1)
      padded = loss(padded_logits, padded_labels, 0.75, 0.5, 0.1, where=keep)
      for reduction in REDUCTIONS:
        msg = f"C={num_classes} {reduction}"
        (value, grad), (ref_value, ref_grad) = (
            padded[reduction], expected[reduction])
        if reduction == "none":
          np.testing.assert_array_equal(value[~keep], 0.0, msg)
          value = value[keep]
        np.testing.assert_allclose(value, ref_value, rtol=1e-6, err_msg=msg)
        np.testing.assert_allclose(grad[keep], ref_grad, rtol=1e-6, atol=1e-9,
                                   err_msg=msg)
        np.testing.assert_array_equal(grad[~keep], 0.0, msg)

  @chex.variants(with_jit=True, without_jit=True)
  def test_where_all_masked_gives_zero(self):
    logits, labels = make_batch(17, 3)
    ours = self.variant(all_reductions)(logits, labels,
                                        where=np.zeros(17, bool))
    for reduction, (value, grad) in ours.items():
      np.testing.assert_array_equal(value, 0.0, reduction)
      np.testing.assert_array_equal(grad, 0.0, reduction)

  @chex.variants(with_jit=True, without_jit=True)
  def test_per_class_alpha(self):
    loss = self.variant(all_reductions)
    for num_classes in (2, 3, 7):
      logits, labels = make_batch(17, num_classes)
      weights = np.linspace(0.1, 2.0, num_classes)
      value, grad = loss(logits, labels, jnp.asarray(weights), 2.0,
                         0.1)["none"]
      # The seed with alpha = 0.5 weighs every sample by 0.5; reweighting by
      # 2 * alpha[label] (also through the cotangent) gives per-class alpha.
      sample_weights = 2 * weights[labels]
      reference = torch_reference(logits, labels, 0.5, 2.0, 0.1, "float32",
                                  cotangent=sample_weights)["none"]
      assert_close(value, sample_weights * reference[0],
                   *TOLERANCES["float32"])
      assert_close(grad, reference[1], *TOLERANCES["float32"])

  def test_scalar_alpha_is_the_seed_binary_weighting(self):
    """Scalar alpha: class 1 gets alpha, every other class 1 - alpha."""
    for num_classes in (2, 3):
      logits, labels = make_batch(17, num_classes)
      vector = np.full(num_classes, 0.1)
      vector[1] = 0.9
      np.testing.assert_allclose(
          focal_jax.focal_loss(logits, labels, 0.9, reduction="none"),
          focal_jax.focal_loss(logits, labels, vector, reduction="none"),
          rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_half_precision_logits_are_computed_in_float32(self):
    logits, labels = make_batch(17, 3)
    loss = self.variant(jax.value_and_grad(focal_jax.focal_loss))
    for dtype in (jnp.bfloat16,):
      half = jnp.asarray(logits, dtype)
      value, grad = loss(half, labels, 0.25, 2.0, 0.05)
      self.assertEqual(value.dtype, jnp.float32)
      self.assertEqual(grad.dtype, dtype)
      upcast = np.asarray(half.astype(jnp.float32))
      reference = torch_reference(upcast, labels, 0.25, 2.0, 0.05,
                                  "float64")["mean"]
      assert_close(value, reference[0], *TOLERANCES["float32"])
      # The float32 gradient, rounded once to the logits' dtype.
      np.testing.assert_array_equal(
          grad, jax.grad(focal_jax.focal_loss)(upcast, labels, 0.25, 2.0,
                                               0.05).astype(dtype))

  @chex.variants(with_jit=True, without_jit=True)
  def test_extreme_logits(self):
    """|logits| up to 1e4 in float32: finite, and equal to the float64 seed."""
    # Python numbers: the static paths (integer gamma, no smoothing).
    configs = [(0.0, 0.0), (0.5, 0.0), (2.0, 0.0), (2.0, 0.1)]

    def losses(logits, labels, traced_gamma):
      out = []
      for gamma, smoothing in configs + [(traced_gamma, 0.0),
                                         (traced_gamma, 0.1)]:
        out.append(jax.value_and_grad(
            lambda z, gamma=gamma, smoothing=smoothing: focal_jax.focal_loss(
                z, labels, 0.25, gamma, smoothing, reduction="sum"))(logits))
      return out

    rng = np.random.default_rng(3)
    for num_classes in (2, 3):
      logits = rng.choice([-1e4, -30.0, 0.0, 30.0, 1e4], (17, num_classes))
      labels = rng.integers(0, num_classes, 17)
      ours = self.variant(losses)(jnp.asarray(logits, jnp.float32), labels,
                                  0.5)
      for (gamma, smoothing), (value, grad) in zip(
          configs + [(0.5, 0.0), (0.5, 0.1)], ours, strict=True):
        msg = f"C={num_classes} gamma={gamma} smoothing={smoothing}"
        self.assertTrue(np.isfinite(value), msg)
        self.assertTrue(np.all(np.isfinite(grad)), msg)
        ref_value, ref_grad = torch_reference(logits, labels, 0.25, gamma,
                                              smoothing, "float64")["sum"]
        assert_close(value, ref_value, *TOLERANCES["float32"], msg)
        finite = np.isfinite(ref_grad)
        assert_close(grad[finite], ref_grad[finite], *TOLERANCES["float32"],
                     msg)

  def test_gamma_below_one_at_pt_one_has_finite_gradient(self):
    """The one intended difference: PyTorch's gradient is NaN here, ours 0."""
    grad_fn = jax.jit(jax.grad(focal_jax.focal_loss))
    for num_classes, smoothing in itertools.product((2, 3), (0.0, 0.1)):
      logits = np.zeros((2, num_classes))
      logits[0, 1] = 40.0  # pt == 1 in float64, without smoothing.
      logits[1, 0] = 1.0  # An ordinary sample.
      labels = np.array([1, 0])
      with jax.enable_x64(True):
        grad = grad_fn(jnp.asarray(logits), labels, 0.25, 0.5, smoothing)
      ref_grad = torch_reference(logits, labels, 0.25, 0.5, smoothing,
                                 "float64")["mean"][1]
      msg = f"C={num_classes} smoothing={smoothing}"
      self.assertTrue(np.all(np.isfinite(grad)), msg)
      if smoothing == 0:
        self.assertTrue(np.all(np.isnan(ref_grad[0])), msg)
        np.testing.assert_allclose(grad[0], 0.0, atol=1e-12, err_msg=msg)
      else:  # Smoothing keeps pt < 1; PyTorch is finite and we agree.
        assert_close(grad[0], ref_grad[0], *TOLERANCES["float64"], msg)
      assert_close(grad[1], ref_grad[1], *TOLERANCES["float64"], msg)

  def test_gradients_wrt_hyperparameters(self):
    """d loss / d (alpha, gamma, smoothing) against PyTorch autograd."""
    grad_fn = jax.jit(jax.grad(focal_jax.focal_loss, argnums=(2, 3, 4)))
    for num_classes, gamma, smoothing in itertools.product(
        (2, 3), (0.5, 2.0), (0.0, 0.1)):
      logits, labels = make_batch(17, num_classes)
      logits, labels = logits[3:], labels[3:]  # Not the NaN rows.
      hyper = [torch.tensor(h, dtype=torch.float64, requires_grad=True)
               for h in (0.3, gamma, smoothing)]
      loss = SeedFocalLoss(*hyper[:2], "mean", hyper[2])(
          torch.tensor(logits), torch.tensor(labels))
      reference = torch.autograd.grad(loss, hyper, allow_unused=True)
      with jax.enable_x64(True):
        ours = grad_fn(jnp.asarray(logits), labels, 0.3, gamma, smoothing)
      msg = f"C={num_classes} gamma={gamma} smoothing={smoothing}"
      # The seed's `if label_smoothing > 0` cuts the smoothing gradient at 0.
      count = 3 if smoothing > 0 else 2
      for i in range(count):
        np.testing.assert_allclose(ours[i], reference[i].numpy(), rtol=1e-6,
                                   err_msg=f"{msg} argument {i}")

  def test_check_grads_float64(self):
    """Numerical against automatic gradients, forward and reverse mode."""
    for num_classes, (gamma, smoothing) in itertools.product(
        (2, 3), (("traced", 0.1), (0.5, 0.0), (2.0, 0.1))):
      if num_classes == 3 and gamma == 0.5:
        continue  # The same code as ("traced", 0.1) there.
      logits, labels = make_batch(17, num_classes)
      with jax.enable_x64(True):
        logits = jnp.asarray(logits[3:])  # Not the rows where pt == 1.
        labels = labels[3:]
        if gamma == "traced":
          args = (logits, 0.3, 1.5, smoothing)
          loss = functools.partial(traced_loss, labels)
        else:  # Python-number gamma and smoothing: the static paths.
          args = (logits, 0.3)
          loss = functools.partial(static_loss, labels, gamma=gamma, smoothing=smoothing)
        check_grads(jax.jit(loss), args, order=1, modes=("fwd", "rev"))


# ---------------------------------------------------------------------------
# Transformations over hyper-parameters and batch axes.
# ---------------------------------------------------------------------------


SEED_SWEEP = tuple(x.ravel() for x in np.meshgrid(
    [0.1, 0.25, 0.5, 0.75], [0.5, 1.0, 2.0, 3.0], [0.0, 0.05, 0.1],
    indexing="ij"))


@functools.cache
def seed_sweep_loop(num_classes):
  """The seed's tuning loop: one FocalLoss per setting, Python numbers."""
  logits, labels = make_batch(17, num_classes)
  return np.array([
      focal_jax.FocalLoss(alpha=float(a), gamma=float(g),
                          label_smoothing=float(s))(logits, labels)
      for a, g, s in zip(*SEED_SWEEP, strict=True)
  ])


@functools.cache
def gradient_loop(rows):
  """jax.grad at each grid row, hyper-parameters as Python numbers."""
  logits, labels = make_batch(17, 3)
  return np.array([
      jax.grad(focal_jax.focal_loss)(logits, labels, *map(float, GRID[i]))
      for i in rows
  ])


class TransformationTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_vmapped_seed_grid_equals_python_loop(self):
    """The seed's tuning grid in one vmapped call, against FocalLoss calls.

    The loop's Python numbers take the static paths (integer gamma, no
    smoothing); the vmapped call traces them.
    """
    for num_classes in (2, 3):
      logits, labels = make_batch(17, num_classes)
      sweep = self.variant(jax.vmap(
          functools.partial(focal_jax.focal_loss, logits, labels)))
      losses = sweep(*SEED_SWEEP)
      chex.assert_shape(losses, (48,))
      np.testing.assert_allclose(losses, seed_sweep_loop(num_classes),
                                 rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_vmapped_gradients_over_hyperparameters(self):
    logits, labels = make_batch(17, 3)
    rows = tuple(range(0, len(GRID), 13))
    grads = self.variant(jax.vmap(
        lambda h: jax.grad(focal_jax.focal_loss)(logits, labels, *h)))(
            GRID[list(rows)])
    np.testing.assert_allclose(grads, gradient_loop(rows), rtol=1e-5,
                               atol=1e-8)

  @chex.variants(with_jit=True, without_jit=True)
  def test_vmap_over_a_leading_axis(self):
    rng = np.random.default_rng(4)
    for num_classes in (2, 3):
      logits = rng.standard_normal((3, 5, num_classes)).astype(np.float32)
      labels = rng.integers(0, num_classes, (3, 5))
      mapped = self.variant(jax.vmap(all_reductions))(logits, labels)
      direct = jax.jit(all_reductions)(logits, labels)
      tolerance = TOLERANCES["float32"]
      assert_close(mapped["none"][0], direct["none"][0], *tolerance)
      assert_close(mapped["sum"][0].sum(), direct["sum"][0], *tolerance)
      assert_close(mapped["mean"][0].mean(), direct["mean"][0], *tolerance)
      assert_close(mapped["sum"][1], direct["sum"][1], *tolerance)
      flat = focal_jax.focal_loss(logits.reshape(-1, num_classes),
                                  labels.reshape(-1), reduction="none")
      assert_close(direct["none"][0].ravel(), flat, *tolerance)

  def test_hyperparameters_as_jit_arguments(self):
    logits, labels = make_batch(17, 3)
    jitted = jax.jit(focal_jax.focal_loss)
    for h in GRID[::11]:
      np.testing.assert_allclose(
          jitted(logits, labels, *h),
          focal_jax.focal_loss(logits, labels, *map(float, h)), rtol=1e-5)


# ---------------------------------------------------------------------------
# Labels out of range, and bad input.
# ---------------------------------------------------------------------------


def test_out_of_range_labels_give_nan_unless_masked():
  logits, labels = make_batch(6, 3)
  labels[2] = 3
  labels[4] = -1
  loss = jax.jit(all_reductions)
  ours = loss(logits, labels)
  per_sample = np.asarray(ours["none"][0])
  assert np.all(np.isnan(per_sample[[2, 4]]))
  assert np.all(np.isfinite(np.delete(per_sample, [2, 4])))
  assert np.isnan(ours["mean"][0]) and np.isnan(ours["sum"][0])
  valid = (labels >= 0) & (labels < 3)
  masked = loss(logits, labels, where=valid)
  assert np.isfinite(masked["mean"][0])
  np.testing.assert_array_equal(masked["none"][0][~valid], 0.0)
  np.testing.assert_array_equal(masked["mean"][1][~valid], 0.0)
  # Their gradient is 0 even unmasked; the NaN value is the signal.
  assert np.all(np.isfinite(ours["mean"][1]))


def test_check_labels_raises():
  logits, labels = make_batch(6, 3)
  labels[4] = 3
  with pytest.raises(ValueError, match=r"outside \[0, 3\).*index \(4,\): 3"):
    focal_jax.focal_loss(logits, labels, check_labels=True)
  # Inside jit the check runs on the host and raises when the step runs.
  checked = jax.jit(functools.partial(focal_jax.focal_loss, check_labels=True))
  with pytest.raises(jax.errors.JaxRuntimeError, match=r"outside \[0, 3\)"):
    jax.block_until_ready(checked(logits, labels))
  # Masked-out labels (padding) are not checked.
  where = np.arange(6) != 4
  assert np.isfinite(checked(logits, labels, where=where))
  assert np.isfinite(focal_jax.focal_loss(logits, labels, where=where,
                                          check_labels=True))
  labels[4] = 2
  assert np.isfinite(checked(logits, labels))


LOGITS, LABELS = make_batch(5, 3)
BAD_INPUT = [
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(gamma=-0.5), ValueError, "gamma"),
    (dict(gamma=np.array([1.0, 2.0])), ValueError, "gamma"),
    (dict(smoothing=1.5), ValueError, "smoothing"),
    (dict(smoothing=-0.1), ValueError, "smoothing"),
    (dict(alpha=1.5), ValueError, "alpha"),
    (dict(alpha=-0.1), ValueError, "alpha"),
    (dict(alpha=np.array([0.5, 0.5])), ValueError, "alpha"),
    (dict(alpha=np.array([0.5, -1.0, 0.5])), ValueError, "alpha"),
    (dict(labels=LABELS[:4]), ValueError, "labels"),
    (dict(labels=LABELS[:, None]), ValueError, "labels"),
    (dict(labels=LABELS.astype(np.float32)), TypeError, "labels"),
    (dict(logits=LOGITS.astype(np.int32)), TypeError, "logits"),
    (dict(logits=LOGITS[:, :1], labels=LABELS * 0), ValueError, "logits"),
    (dict(where=np.ones(4, bool)), ValueError, "where"),
    (dict(where=np.ones(5)), TypeError, "where"),
]


@pytest.mark.parametrize("kwargs, error, name", BAD_INPUT,
                         ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD_INPUT)])
def test_bad_input_raises_at_trace_time(kwargs, error, name):
  args = dict(logits=LOGITS, labels=LABELS) | kwargs
  with pytest.raises(error, match=name):
    focal_jax.focal_loss(**args)
  # Under jit the arrays are traced; hyper-parameter values are checked where
  # they are Python numbers or concrete arrays, so here they stay static.
  arrays = ("logits", "labels", "where")
  static = {k: v for k, v in args.items() if k not in arrays}
  traced = {k: v for k, v in args.items() if k in arrays}
  with pytest.raises(error, match=name):
    jax.jit(functools.partial(focal_jax.focal_loss, **static))(**traced)


@pytest.mark.parametrize("kwargs, name", [
    (dict(reduction="avg"), "reduction"), (dict(gamma=-1.0), "gamma"),
    (dict(label_smoothing=2.0), "smoothing"), (dict(alpha=1.5), "alpha"),
])
def test_focal_loss_class_checks_its_config(kwargs, name):
  with pytest.raises(ValueError, match=name):
    focal_jax.FocalLoss(**kwargs)


# ---------------------------------------------------------------------------
# Properties: random shapes and hyper-parameters against the seed.
# ---------------------------------------------------------------------------


_jitted_all_reductions = jax.jit(all_reductions)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(
    # A few shapes, so that compilations are reused across examples.
    shape=st.sampled_from([(), (7,), (2, 3)]),
    num_classes=st.sampled_from([2, 3]),
    alpha=st.floats(0, 1, allow_subnormal=False),
    gamma=st.floats(0, 6, allow_subnormal=False),
    smoothing=st.just(0.0) | st.floats(0, 1, allow_subnormal=False),
    scale=st.sampled_from([0.1, 3.0, 30.0]),
    seed=st.integers(0, 2**16),
)
def test_matches_seed_on_random_inputs(shape, num_classes, alpha, gamma,
                                       smoothing, scale, seed):
  """Traced hyper-parameters, random shapes and masks, against the seed."""
  rng = np.random.default_rng(seed)
  logits = scale * rng.standard_normal(shape + (num_classes,))
  labels = rng.integers(0, num_classes, shape)
  where = rng.random(shape) < 0.7
  with jax.enable_x64(True):
    ours = _jitted_all_reductions(logits, labels, alpha, gamma, smoothing,
                                  where)
  # The seed on the unmasked entries only; the masked ones must be 0.
  flat_where = where.reshape(-1)
  reference = torch_reference(logits.reshape(-1, num_classes)[flat_where],
                              labels.reshape(-1)[flat_where], alpha, gamma,
                              smoothing, "float64")
  for reduction in REDUCTIONS:
    value, grad = (np.asarray(x) for x in ours[reduction])
    ref_value, ref_grad = reference[reduction]
    assert value.shape == (shape if reduction == "none" else ())
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    grad = grad.reshape(-1, num_classes)
    np.testing.assert_array_equal(grad[~flat_where], 0.0)
    grad = grad[flat_where]
    if reduction == "none":
      value = value.reshape(-1)
      np.testing.assert_array_equal(value[~flat_where], 0.0)
      value = value[flat_where]
    elif reduction == "mean" and not flat_where.any():
      ref_value, ref_grad = np.zeros(()), ref_grad * 0  # Ours: 0, not NaN.
    # With only a few samples, all of them very confident, every entry can be
    # tiny (1e-60), and the seed's formula loses relative precision there:
    # 1 - exp(-ce) for the value, p_y - 1 in the gradient. An absolute
    # 1e-13 * (1 + gamma), about 500 ulps of d loss / d ce, covers it.
    floor = 1e-13 * (1 + gamma)
    assert_close(value, ref_value, *TOLERANCES["float64"], reduction,
                 atol=floor)
    finite = np.isfinite(ref_grad)
    assert_close(grad[finite], ref_grad[finite], *TOLERANCES["float64"],
                 reduction, atol=floor)


@pytest.mark.parametrize("gamma", [np.inf, float("nan")])
def test_a_concrete_infinite_or_nan_gamma_is_refused(gamma):
  """gamma = inf used to give a loss of 0 with an all-NaN gradient."""
  logits = jnp.array([[1.0, -1.0], [0.5, 0.2]])
  with pytest.raises(ValueError, match="gamma must be finite and >= 0"):
    focal_jax.focal_loss(logits, jnp.array([0, 1]), gamma=gamma)
  with pytest.raises(ValueError, match="gamma"):
    focal_jax.FocalLoss(gamma=gamma)


def test_the_behaviour_plot_script_draws_from_focal_jax(tmp_path):
  script = runpy.run_path(str(ROOT / "docs" / "plot_focal_behaviour.py"))
  script["main"](str(tmp_path / "behaviour.png"))
  assert (tmp_path / "behaviour.png").stat().st_size > 10_000
