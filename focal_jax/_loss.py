"""Softmax focal loss with the STGNN seed's label smoothing, in JAX.

The formula is the seed's ``FocalLoss.forward`` (PyTorch), taken from its
documentation: smoothed targets, softmax cross-entropy, ``pt = exp(-ce)`` and
the modulating factor ``(1 - pt) ** gamma``. It is rewritten so that no one-hot
tensor is built, ``1 - pt`` never cancels, the binary case costs one ``exp``
and one ``log1p`` per sample, and gradients are finite wherever the limit is.
"""

import dataclasses
import functools
import numbers
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = jax.typing.ArrayLike
Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


def focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    alpha: ArrayLike = 0.25,
    gamma: ArrayLike = 2.0,
    smoothing: ArrayLike = 0.0,
    *,
    reduction: Reduction = "mean",
    where: ArrayLike | None = None,
    check_labels: bool = False,
) -> jax.Array:
  r"""Softmax focal loss with label smoothing, as in the STGNN seed.

  For logits :math:`z \in \mathbb{R}^C` of one sample with label :math:`y`,
  smoothing :math:`\varepsilon` and the smoothed target
  :math:`q_c = (1 - \varepsilon)\,[c = y] + \varepsilon / C`:

  .. math::
    \mathrm{ce} = -\sum_c q_c \log \mathrm{softmax}(z)_c
      = \operatorname{logsumexp}(z) - (1 - \varepsilon)\, z_y
        - \varepsilon\, \bar z, \qquad
    p_t = e^{-\mathrm{ce}}, \qquad
    \ell = \alpha_t\, (1 - p_t)^\gamma\, \mathrm{ce},

  where :math:`\bar z` is the mean logit. With :math:`\varepsilon = 0`,
  :math:`\mathrm{ce}` is the plain cross-entropy and :math:`p_t` the predicted
  probability of the true class, :math:`\ell = -\alpha_t (1 - p_t)^\gamma
  \log p_t`. ``reduction`` then takes the mean, the sum, or nothing.

  The class weight :math:`\alpha_t` follows the seed when ``alpha`` is a
  scalar: :math:`\alpha_t = \alpha` for label 1 (the positive, minority class,
  e.g. converters) and :math:`1 - \alpha` for every other label. A length-``C``
  vector gives per-class weights, :math:`\alpha_t = \alpha_y` (an extension).

  Seed guidance: ``alpha`` 0.25 to 0.90 (0.90 with ``gamma=3`` for imbalance of
  10:1 or more, 0.75 with ``gamma=2`` for 3:1 to 10:1, 0.5 when balanced),
  ``gamma`` 2 to 5 (0 is cross-entropy; above 5 training may be unstable),
  ``smoothing`` 0 to 0.1 (start at 0, use 0.05 if the model is overconfident).

  ``alpha``, ``gamma`` and ``smoothing`` may be Python numbers or JAX arrays,
  traced ones included (``jit`` arguments, ``vmap`` axes, ``grad`` inputs). A
  Python-number ``gamma`` with an integer value takes an exact path built on
  integer powers; ``smoothing=0`` as a Python number skips the smoothing terms.

  **One intended difference from PyTorch.** When :math:`p_t` rounds to 1 and
  :math:`0 < \gamma < 1`, PyTorch's ``(1 - pt) ** gamma`` has an infinite
  derivative and its gradient is NaN; here the gradient is its finite limit, 0.
  Values, and gradients everywhere else, are the same.

  **Dtypes.** float16 and bfloat16 logits are computed in float32 and the loss
  is float32 (their gradient comes back in the logits' dtype). float32 logits
  give float32, float64 logits (with x64 enabled) give float64. Hyper-parameters
  are cast to that dtype.

  **Labels.** They must lie in ``[0, C)``, which cannot be checked inside
  ``jit``: an out-of-range label makes that sample's loss NaN (so a ``"mean"``
  or ``"sum"`` is NaN too; its gradient is 0), unless ``where`` masks it out.
  ``check_labels=True`` raises a ``ValueError`` instead: at call time for
  concrete labels, and from a host callback for traced ones, where it surfaces
  as a ``jax.errors.JaxRuntimeError`` carrying the same message.

  Args:
    logits: Unnormalised log-probabilities, shape ``[..., C]`` with ``C >= 2``.
    labels: Integer class indices in ``[0, C)``, shape ``[...]`` (``logits``
      without its last axis).
    alpha: Scalar in ``[0, 1]``, the weight of class 1 (other classes get
      ``1 - alpha``), or a ``[C]`` vector of non-negative per-class weights.
    gamma: Scalar focusing parameter, ``>= 0``; 0 gives weighted cross-entropy.
    smoothing: Scalar label-smoothing factor in ``[0, 1]``.
    reduction: ``"mean"`` (a scalar), ``"sum"`` (a scalar) or ``"none"``
      (shape ``[...]``).
    where: Optional boolean mask, shape ``[...]``. Masked-out entries
      contribute exactly 0 to the value and the gradient whatever their logits
      and labels hold, and ``"mean"`` divides by the number of unmasked
      entries, so a padded batch gives the loss and gradient of the unpadded
      one. With every entry masked out, ``"mean"`` is 0 (without ``where`` it
      is the plain mean, NaN for an empty batch as in PyTorch).
    check_labels: Raise a ``ValueError`` for (unmasked) labels outside
      ``[0, C)``. Costs a host round trip under ``jit``; meant for debugging.

  Returns:
    The loss: a scalar for ``"mean"`` and ``"sum"``, shape ``[...]`` for
    ``"none"``; dtype as described above.

  Raises:
    ValueError, TypeError: at trace time, naming the argument, for an unknown
      ``reduction``, ``gamma`` negative or infinite, ``smoothing`` outside ``[0, 1]``, a scalar
      ``alpha`` outside ``[0, 1]`` (value checks only where the value is
      concrete), non-float logits, non-integer labels, and ``labels``,
      ``where`` or ``alpha`` of the wrong shape.

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import focal_jax
    >>> logits = jnp.array([[2.5, -1.0], [0.5, 0.5], [-1.0, 2.0]])
    >>> labels = jnp.array([0, 1, 1])
    >>> print(f"{focal_jax.focal_loss(logits, labels):.4f}")
    0.0145
    >>> # One vmapped call over hyper-parameter settings.
    >>> def loss(alpha, gamma):
    ...   return focal_jax.focal_loss(logits, labels, alpha, gamma)
    >>> jax.vmap(loss)(jnp.array([0.25, 0.9]), jnp.array([2.0, 3.0])).shape
    (2,)

  References:
    Lin et al., `Focal Loss for Dense Object Detection
    <https://arxiv.org/abs/1708.02002>`_, ICCV 2017.
  """
  logits, labels, where = _check_arrays(logits, labels, where)
  num_classes = logits.shape[-1]
  _check_hyperparameters(alpha, gamma, smoothing, num_classes)
  if reduction not in _REDUCTIONS:
    raise ValueError(
        f"focal_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}"
    )
  if check_labels:
    _check_label_range(labels, num_classes, where)

  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  z = logits.astype(dtype)
  if where is not None:
    # Padding may hold anything, NaN included; zeroed logits keep the padded
    # rows' gradient an exact 0 instead of 0 * NaN.
    z = jnp.where(where[..., None], z, 0)
  # Python numbers with special values select cheaper exact code at trace
  # time; everything else is traced, so that a sweep over values compiles once.
  static_gamma = _static_integer(gamma)
  per_sample = _per_sample_loss(
      z, labels, alpha,
      gamma=None if static_gamma is not None else gamma,
      smoothing=None if _is_static_zero(smoothing) else smoothing,
      static_gamma=static_gamma)
  valid = (labels >= 0) & (labels < num_classes)
  per_sample = jnp.where(valid, per_sample, jnp.nan)
  if where is not None:
    per_sample = jnp.where(where, per_sample, 0)

  if reduction == "none":
    return per_sample
  if reduction == "sum":
    return per_sample.sum()
  if where is None:
    return per_sample.mean()
  return per_sample.sum() / jnp.maximum(where.sum(), 1).astype(dtype)


@dataclasses.dataclass(frozen=True)
class FocalLoss:
  """The seed's ``FocalLoss`` module as a frozen, hashable config.

  Same constructor names and defaults as the PyTorch class, so ported training
  loops read the same::

    criterion = FocalLoss(alpha=0.90, gamma=3.0, label_smoothing=0.05)
    loss = criterion(logits, labels)

  Being hashable, it can be a static argument of ``jax.jit``. Hyper-parameters
  that are swept or learned are better passed to :func:`focal_loss` directly.

  Attributes:
    alpha: Weight of class 1 (others get ``1 - alpha``), or a tuple of ``C``
      per-class weights (a list or array is stored as a tuple).
    gamma: Focusing parameter, ``>= 0``.
    reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    label_smoothing: Label-smoothing factor in ``[0, 1]``.
  """

  alpha: float | tuple[float, ...] = 0.25
  gamma: float = 2.0
  reduction: Reduction = "mean"
  label_smoothing: float = 0.0

  def __post_init__(self):
    # Stored as Python numbers, so that the config stays hashable.
    for name in ("alpha", "gamma", "label_smoothing"):
      value = getattr(self, name)
      if isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) == 0:
        object.__setattr__(self, name, float(value))
    if isinstance(self.alpha, (list, tuple, np.ndarray, jax.Array)):
      object.__setattr__(self, "alpha", tuple(float(a) for a in self.alpha))
    if self.reduction not in _REDUCTIONS:
      raise ValueError(
          f"FocalLoss: reduction must be one of {_REDUCTIONS}, "
          f"got {self.reduction!r}"
      )
    num_classes = len(self.alpha) if isinstance(self.alpha, tuple) else None
    _check_hyperparameters(
        self.alpha, self.gamma, self.label_smoothing, num_classes
    )

  def __call__(
      self,
      logits: ArrayLike,
      labels: ArrayLike,
      *,
      where: ArrayLike | None = None,
  ) -> jax.Array:
    """Returns ``focal_loss(logits, labels, ...)`` with this configuration."""
    alpha = jnp.asarray(self.alpha) if isinstance(self.alpha, tuple) else (
        self.alpha)
    return focal_loss(
        logits,
        labels,
        alpha,
        self.gamma,
        self.label_smoothing,
        reduction=self.reduction,
        where=where,
    )


def _per_sample_loss(
    z: jax.Array,
    labels: jax.Array,
    alpha: ArrayLike,
    *,
    gamma: ArrayLike | None,
    smoothing: ArrayLike | None,
    static_gamma: int | None,
) -> jax.Array:
  """alpha_t * (1 - pt)^gamma * ce, shape ``[...]``, for logits ``[..., C]``.

  gamma is None when static_gamma (an int) replaces it; smoothing is None
  when it is 0.
  """
  dtype = z.dtype
  num_classes = z.shape[-1]
  no_smoothing = smoothing is None
  alpha = jnp.asarray(alpha, dtype)
  if gamma is not None:
    gamma = jnp.asarray(gamma, dtype)
  if smoothing is not None:
    smoothing = jnp.asarray(smoothing, dtype)

  if num_classes == 2:
    # Everything is a function of the margin d = z_other - z_label:
    # ce|_{eps=0} = softplus(d) and 1 - pt = sigmoid(d), which one exp and one
    # log1p give without cancellation.
    positive = labels == 1
    z0, z1 = z[..., 0], z[..., 1]
    d = jnp.where(positive, z0 - z1, z1 - z0)
    softplus_d, log_sigmoid_d, sigmoid_d = _softplus_terms(d)
    if alpha.ndim == 0:
      alpha_t = jnp.where(positive, alpha, 1 - alpha)
    else:
      alpha_t = jnp.where(positive, alpha[1], alpha[0])
    if no_smoothing:
      if static_gamma is not None:
        modulation = jax.lax.integer_pow(sigmoid_d, static_gamma)
      else:
        modulation = jnp.exp(gamma * log_sigmoid_d)
      return alpha_t * modulation * softplus_d
    # logsumexp(z) - mean(z) = softplus(d) - d / 2.
    ce = softplus_d - 0.5 * smoothing * d
  else:
    is_label = labels[..., None] == jnp.arange(num_classes)
    if no_smoothing:
      smoothing = jnp.zeros((), dtype)
    ce = _softmax_cross_entropy(z, is_label, smoothing, not no_smoothing)
    if alpha.ndim == 0:
      alpha_t = jnp.where(labels == 1, alpha, 1 - alpha)
    else:
      alpha_t = jnp.where(is_label, alpha, 0).sum(axis=-1)

  if static_gamma is not None:
    one_minus_pt = -jnp.expm1(-ce)
    return alpha_t * jax.lax.integer_pow(one_minus_pt, static_gamma) * ce
  return alpha_t * _modulated_ce(ce, gamma)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _softmax_cross_entropy(
    z: jax.Array, is_label: jax.Array, smoothing: jax.Array, smoothed: bool
) -> jax.Array:
  """-sum_c q_c log softmax(z)_c per row of z [..., C], shape [...].

  q = (1 - smoothing) one_hot + smoothing / C, with is_label the one-hot mask
  [..., C]; smoothed=False skips the smoothing terms.
  """
  return _softmax_cross_entropy_parts(z, is_label, smoothing, smoothed)[0]


def _softmax_cross_entropy_parts(z, is_label, smoothing, smoothed):
  num_classes = z.shape[-1]
  z_max = z.max(axis=-1)
  # The row sums in one variadic reduction: one pass over z instead of one per
  # sum; XLA:CPU does not fuse separate row reductions into one.
  operands = [jnp.exp(z - z_max[..., None]), jnp.where(is_label, z, 0)]
  if smoothed:
    operands.append(z)
  sums = jax.lax.reduce(
      tuple(operands), tuple(jnp.zeros((), z.dtype) for _ in operands),
      lambda a, b: tuple(x + y for x, y in zip(a, b)), (z.ndim - 1,))
  log_sum = jnp.log(sums[0])
  z_label = sums[1]
  # ce = lse - (1 - eps) z_y - eps mean(z) with lse = z_max + log_sum, written
  # as sums of non-negative terms so that it never rounds below 0.
  ce = (z_max - z_label) + log_sum
  z_mean = None
  if smoothed:
    z_mean = sums[2] / num_classes
    ce = (1 - smoothing) * ce + smoothing * ((z_max - z_mean) + log_sum)
  return ce, z_max, log_sum, z_label, z_mean


@_softmax_cross_entropy.defjvp
def _softmax_cross_entropy_jvp(smoothed, primals, tangents):
  z, is_label, smoothing = primals
  z_dot, _, smoothing_dot = tangents
  ce, z_max, log_sum, z_label, z_mean = _softmax_cross_entropy_parts(
      z, is_label, smoothing, smoothed)
  # d ce / dz = softmax(z) - q, recomputed from z in the gradient's own pass.
  # (z - z_max) - log_sum, not z - lse: lse = z_max + log_sum would round at
  # the scale of z_max (1e-3 at |z| = 1e4 in float32).
  target = is_label.astype(z.dtype)
  if smoothed:
    target = (1 - smoothing) * target + smoothing / z.shape[-1]
  d_z = jnp.exp((z - z_max[..., None]) - log_sum[..., None]) - target
  tangent = (d_z * z_dot).sum(axis=-1)
  if smoothed:
    tangent += (z_label - z_mean) * smoothing_dot
  return ce, tangent


@jax.custom_jvp
def _softplus_terms(d: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """softplus(d), log_sigmoid(d) and sigmoid(d) from one exp and one log1p."""
  return _softplus_parts(d)[:3]


def _softplus_parts(d):
  e = jnp.exp(-jnp.abs(d))
  log1p_e = jnp.log1p(e)
  sigmoid_d = jnp.where(d >= 0, 1, e) / (1 + e)
  sigmoid_minus_d = jnp.where(d >= 0, e, 1) / (1 + e)
  return (jnp.maximum(d, 0) + log1p_e, jnp.minimum(d, 0) - log1p_e,
          sigmoid_d, sigmoid_minus_d)


@_softplus_terms.defjvp
def _softplus_terms_jvp(primals, tangents):
  # Written out because AD of |d| and max(d, 0) is wrong at the tie d = 0
  # (which the seed's worked example hits with logits [0.5, 0.5]).
  (d,), (d_dot,) = primals, tangents
  softplus_d, log_sigmoid_d, sigmoid_d, sigmoid_minus_d = _softplus_parts(d)
  return ((softplus_d, log_sigmoid_d, sigmoid_d),
          (sigmoid_d * d_dot, sigmoid_minus_d * d_dot,
           sigmoid_d * sigmoid_minus_d * d_dot))


@jax.custom_jvp
def _modulated_ce(ce: jax.Array, gamma: jax.Array) -> jax.Array:
  """(1 - exp(-ce))^gamma * ce, elementwise, for ce >= 0 and gamma >= 0."""
  return _modulated_ce_parts(ce, gamma)[0]


def _modulated_ce_parts(ce, gamma):
  # 1 - pt as -expm1(-ce): no cancellation when pt -> 1.
  one_minus_pt = -jnp.expm1(-ce)
  positive = one_minus_pt > 0
  safe = jnp.where(positive, one_minus_pt, 1)
  log_one_minus_pt = jnp.where(positive, jnp.log(safe), -jnp.inf)
  # 0 ** 0 = 1, as in PyTorch; exp(0 * -inf) alone would be NaN.
  modulation = jnp.where(gamma == 0, 1, jnp.exp(gamma * log_one_minus_pt))
  return modulation * ce, modulation, one_minus_pt, safe, log_one_minus_pt


@_modulated_ce.defjvp
def _modulated_ce_jvp(primals, tangents):
  ce, gamma = primals
  ce_dot, gamma_dot = tangents
  out, modulation, one_minus_pt, safe, log_one_minus_pt = (
      _modulated_ce_parts(ce, gamma))
  # d/dce [(1 - pt)^g ce] = (1 - pt)^g (1 + g * ce pt / (1 - pt)), and
  # ce pt / (1 - pt) = ce / expm1(ce) -> 1 as ce -> 0. Written this way the
  # derivative stays finite (its limit is 0 for g > 0) where the seed's
  # g (1 - pt)^(g - 1) is infinite for g < 1 and its gradient NaN.
  ratio = jnp.where(one_minus_pt > 0, ce * (1 - safe) / safe, 1)
  d_ce = modulation * (1 + gamma * ratio)
  # d/dg = out * log(1 - pt), whose limit at pt = 1 is 0.
  d_gamma = jnp.where(one_minus_pt > 0, out * log_one_minus_pt, 0)
  return out, d_ce * ce_dot + d_gamma * gamma_dot


def _static_integer(gamma: ArrayLike) -> int | None:
  """gamma as an int if it is a Python (or NumPy) number with integer value."""
  if isinstance(gamma, numbers.Real) and not isinstance(gamma, bool):
    if float(gamma).is_integer() and gamma >= 0:
      return int(gamma)
  return None


def _is_static_zero(x: ArrayLike) -> bool:
  return isinstance(x, numbers.Real) and x == 0


def _concrete(x: ArrayLike) -> np.ndarray | None:
  """x as a NumPy array, or None when it is traced."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError,
          jax.errors.ConcretizationTypeError):
    return None


def _check_arrays(logits, labels, where, name="focal_loss"):
  """Checks dtypes and shapes; returns the three as JAX arrays."""
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise TypeError(
        f"{name}: logits must be floating point, got {logits.dtype}")
  if logits.ndim < 1 or logits.shape[-1] < 2:
    raise ValueError(
        f"{name}: logits must have shape [..., C] with C >= 2 classes, got "
        f"shape {logits.shape}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(
        f"{name}: labels must be integer class indices, got dtype "
        f"{labels.dtype}")
  if labels.shape != logits.shape[:-1]:
    raise ValueError(
        f"{name}: labels must have shape logits.shape[:-1] = "
        f"{logits.shape[:-1]}, got {labels.shape}")
  if where is not None:
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
      raise TypeError(f"{name}: where must be boolean, got {where.dtype}")
    if where.shape != labels.shape:
      raise ValueError(
          f"{name}: where must have the labels' shape {labels.shape}, got "
          f"{where.shape}")
  return logits, labels, where


def _check_hyperparameters(alpha, gamma, smoothing, num_classes):
  """Checks shapes, and values where they are concrete (not traced)."""
  alpha_shape = np.shape(alpha)
  if alpha_shape not in ((), (num_classes,)) and not (
      num_classes is None and len(alpha_shape) == 1):
    raise ValueError(
        "focal_loss: alpha must be a scalar or have shape (C,) = "
        f"({num_classes},), got shape {alpha_shape}")
  for name, value in (("gamma", gamma), ("smoothing", smoothing)):
    if np.shape(value) != ():
      raise ValueError(
          f"focal_loss: {name} must be a scalar, got shape {np.shape(value)}")

  alpha_value = _concrete(alpha)
  if alpha_value is not None:
    if alpha_value.ndim == 0 and not 0 <= alpha_value <= 1:
      raise ValueError(
          f"focal_loss: scalar alpha must lie in [0, 1], got {alpha_value}")
    if alpha_value.ndim == 1 and not np.all(alpha_value >= 0):
      raise ValueError(
          f"focal_loss: per-class alpha must be >= 0, got {alpha_value}")
  gamma_value = _concrete(gamma)
  if gamma_value is not None and not 0 <= gamma_value < np.inf:
    # gamma = inf would give a loss of 0 with an all-NaN gradient.
    raise ValueError(f"focal_loss: gamma must be finite and >= 0, got {gamma_value}")
  smoothing_value = _concrete(smoothing)
  if smoothing_value is not None and not 0 <= smoothing_value <= 1:
    raise ValueError(
        f"focal_loss: smoothing must lie in [0, 1], got {smoothing_value}")


def _check_label_range(labels, num_classes, where):
  """Raises ValueError for unmasked labels outside [0, num_classes)."""

  def check(labels, where):
    labels = np.asarray(labels)
    bad = (labels < 0) | (labels >= num_classes)
    if where is not None:
      bad &= np.asarray(where)
    if bad.any():
      index = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(
          f"focal_loss: {int(bad.sum())} label(s) outside [0, {num_classes}); "
          f"first at index {index}: {labels[index]}")

  labels_value = _concrete(labels)
  where_value = None if where is None else _concrete(where)
  if labels_value is not None and (where is None or where_value is not None):
    check(labels_value, where_value)
  else:
    jax.debug.callback(check, labels, where)
