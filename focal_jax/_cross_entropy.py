"""Softmax cross-entropy with class weights and label smoothing, PyTorch's semantics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from focal_jax._validation import Reduction, check_arrays, check_reduction, concrete


def cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    weights: ArrayLike | None = None,
    smoothing: ArrayLike = 0.0,
    *,
    reduction: Reduction = "mean",
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""``torch.nn.CrossEntropyLoss(weight=w, label_smoothing=ε)``, the seeds' baselines.

  For one sample with log-probabilities :math:`\log p = \operatorname{log\_softmax}(z)`,
  label :math:`y` and class weights :math:`w` (all 1 without ``weights``):

  .. math::
    \ell = -(1 - \varepsilon)\, w_y \log p_y
      - \frac{\varepsilon}{C} \sum_c w_c \log p_c .

  ``"mean"`` divides the sum of :math:`\ell` over the (unmasked) samples by the sum of their
  weights :math:`\sum w_y`, as PyTorch does (with unit weights: by their count), so a weighted
  mean is not the plain mean of the weighted losses.

  Args:
    logits: ``[..., C]`` float logits.
    labels: ``[...]`` integer class indices.
    weights: ``[C]`` non-negative class weights (PyTorch's ``weight``), or None.
    smoothing: label smoothing :math:`\varepsilon \in [0, 1]`.
    reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[...]``).
    where: ``[...]`` boolean mask; masked samples (padding) count nowhere and get a zero
      gradient, whatever their logits hold.

  Returns:
    The loss: a scalar, or ``[...]`` for ``"none"``.
  """
  logits, labels, where = check_arrays(logits, labels, where, name="cross_entropy")
  num_classes = logits.shape[-1]
  check_reduction(reduction, "cross_entropy")
  smoothing_value = concrete(smoothing)
  if smoothing_value is not None and not 0 <= smoothing_value <= 1:
    raise ValueError(f"cross_entropy: smoothing must lie in [0, 1], got {smoothing_value}")
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  if weights is None:
    weights = jnp.ones((num_classes,), dtype)
  weights = jnp.asarray(weights, dtype)
  if weights.shape != (num_classes,):
    raise ValueError(
        f"cross_entropy: weights must have shape (C,) = ({num_classes},), got {weights.shape}")
  weights_value = concrete(weights)
  if weights_value is not None and not (weights_value >= 0).all():
    raise ValueError(f"cross_entropy: weights must be >= 0, got {weights_value}")

  z = logits.astype(dtype)
  if where is not None:
    z = jnp.where(where[..., None], z, 0)  # padding may hold NaN: keep its gradient an exact 0
  log_p = jax.nn.log_softmax(z, axis=-1)
  label_weight = weights[labels]
  label_log_p = jnp.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]
  per_sample = label_weight * -(1 - smoothing) * label_log_p
  per_sample = per_sample - smoothing / num_classes * (log_p * weights).sum(axis=-1)
  if where is not None:
    per_sample = jnp.where(where, per_sample, 0)
    label_weight = jnp.where(where, label_weight, 0)
  if reduction == "none":
    return per_sample
  if reduction == "sum":
    return per_sample.sum()
  return per_sample.sum() / label_weight.sum()
