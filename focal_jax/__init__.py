"""Focal loss for JAX: the STGNN seed's PyTorch ``FocalLoss`` as a pure function.

``focal_loss`` is the loss (jit-, vmap- and grad-safe in every argument);
``FocalLoss`` is a frozen config with the PyTorch class's constructor names;
``cross_entropy`` is PyTorch's weighted, smoothed cross-entropy, the baseline
the seeds compare the focal loss with.
"""

from focal_jax._cross_entropy import cross_entropy
from focal_jax._loss import FocalLoss, focal_loss

__all__ = ["FocalLoss", "cross_entropy", "focal_loss"]
