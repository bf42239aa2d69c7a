"""Argument checks shared by the losses: dtypes, shapes, and values where concrete.

Every check runs at trace time and raises a ``ValueError`` or ``TypeError`` that names the
function and the argument. Values are only checked where they are concrete (not traced);
labels, which are usually traced, have an opt-in check through a host callback.
"""

from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from jax.typing import ArrayLike

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[Reduction, ...] = get_args(Reduction)


def check_reduction(reduction: str, name: str) -> None:
  """Raises ValueError unless ``reduction`` is one of :data:`REDUCTIONS`."""
  if reduction not in REDUCTIONS:
    raise ValueError(f"{name}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def concrete(x: npt.ArrayLike) -> np.ndarray | None:
  """x as a NumPy array, or None when it is traced."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError,
          jax.errors.ConcretizationTypeError):
    return None


def check_arrays(
    logits: ArrayLike, labels: ArrayLike, where: ArrayLike | None, name: str = "focal_loss"
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
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


def check_hyperparameters(
    alpha: ArrayLike | tuple[float, ...],
    gamma: ArrayLike,
    smoothing: ArrayLike,
    num_classes: int | None,
) -> None:
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

  alpha_value = concrete(alpha)
  if alpha_value is not None:
    if alpha_value.ndim == 0 and not 0 <= alpha_value <= 1:
      raise ValueError(
          f"focal_loss: scalar alpha must lie in [0, 1], got {alpha_value}")
    if alpha_value.ndim == 1 and not np.all(alpha_value >= 0):
      raise ValueError(
          f"focal_loss: per-class alpha must be >= 0, got {alpha_value}")
  gamma_value = concrete(gamma)
  if gamma_value is not None and not 0 <= gamma_value < np.inf:
    # gamma = inf would give a loss of 0 with an all-NaN gradient.
    raise ValueError(f"focal_loss: gamma must be finite and >= 0, got {gamma_value}")
  smoothing_value = concrete(smoothing)
  if smoothing_value is not None and not 0 <= smoothing_value <= 1:
    raise ValueError(
        f"focal_loss: smoothing must lie in [0, 1], got {smoothing_value}")


def check_label_range(labels: jax.Array, num_classes: int, where: jax.Array | None) -> None:
  """Raises ValueError for unmasked labels outside [0, num_classes).

  At call time where labels (and ``where``) are concrete, else from a host callback.
  """

  def check(labels: ArrayLike, where: ArrayLike | None) -> None:
    labels = np.asarray(labels)
    bad = (labels < 0) | (labels >= num_classes)
    if where is not None:
      bad &= np.asarray(where)
    if bad.any():
      index = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(
          f"focal_loss: {int(bad.sum())} label(s) outside [0, {num_classes}); "
          f"first at index {index}: {labels[index]}")

  labels_value = concrete(labels)
  where_value = None if where is None else concrete(where)
  if labels_value is not None and (where is None or where_value is not None):
    check(labels_value, where_value)
  else:
    jax.debug.callback(check, labels, where)
