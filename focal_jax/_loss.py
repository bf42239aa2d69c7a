"""Softmax focal loss with the STGNN seed's label smoothing, in JAX: the public API.

The formula is the seed's ``FocalLoss.forward`` (PyTorch), taken from its
documentation: smoothed targets, softmax cross-entropy, ``pt = exp(-ce)`` and
the modulating factor ``(1 - pt) ** gamma``. :func:`focal_loss` checks its
arguments (``_validation``), picks the exact code path at trace time, and
reduces the per-sample loss that ``_numerics`` computes; :class:`FocalLoss` is
the PyTorch class's configuration.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from focal_jax._numerics import is_static_zero, per_sample_loss, static_integer
from focal_jax._validation import (
    Reduction,
    check_arrays,
    check_hyperparameters,
    check_label_range,
    check_reduction,
)


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
  logits, labels, where = check_arrays(logits, labels, where)
  num_classes = logits.shape[-1]
  check_hyperparameters(alpha, gamma, smoothing, num_classes)
  check_reduction(reduction, "focal_loss")
  if check_labels:
    check_label_range(labels, num_classes, where)

  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  z = logits.astype(dtype)
  if where is not None:
    # Padding may hold anything, NaN included; zeroed logits keep the padded
    # rows' gradient an exact 0 instead of 0 * NaN.
    z = jnp.where(where[..., None], z, 0)
  # Python numbers with special values select cheaper exact code at trace
  # time; everything else is traced, so that a sweep over values compiles once.
  static_gamma = static_integer(gamma)
  per_sample = per_sample_loss(
      z, labels, alpha,
      gamma=None if static_gamma is not None else gamma,
      smoothing=None if is_static_zero(smoothing) else smoothing,
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

  def __post_init__(self) -> None:
    # Stored as Python numbers, so that the config stays hashable.
    for name in ("alpha", "gamma", "label_smoothing"):
      value = getattr(self, name)
      if isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) == 0:
        object.__setattr__(self, name, float(value))
    if isinstance(self.alpha, (list, tuple, np.ndarray, jax.Array)):
      object.__setattr__(self, "alpha", tuple(float(a) for a in self.alpha))
    check_reduction(self.reduction, "FocalLoss")
    num_classes = len(self.alpha) if isinstance(self.alpha, tuple) else None
    check_hyperparameters(
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
