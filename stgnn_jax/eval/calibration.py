"""Temperature scaling of a fold's converter probabilities (Guo et al. 2017).

A model trained with the focal loss (and a class-balancing α) ranks subjects well but its
probabilities are not frequencies: the focal term flattens them towards 0.5. One temperature T
per fold rescales the converter log-odds z = logit_1 - logit_0 to z / T, chosen to minimise the
negative log-likelihood of the fold's validation subjects at its selected epoch (never the test
subjects). Dividing by T > 0 keeps the order of the subjects, so the AUC and every decision at
the (equally mapped) threshold stay what they were; only the probabilities change.

The likelihood is convex in beta = 1 / T, so the fit is a bisection on its derivative over
`BETA_RANGE`; the range bounds the fit where a small validation split is separable (the optimum
would be T -> 0, probabilities of exactly 0 or 1) or carries no signal (T -> infinity).
"""

from __future__ import annotations

import numpy as np

# 1 / T between 0.01 and 100: from "squash every probability to about 0.5" to "a hundred times
# more confident".
BETA_RANGE = (1e-2, 1e2)
_BISECTIONS = 100


def log_odds(logits: np.ndarray) -> np.ndarray:
  """The converter log-odds `logit_1 - logit_0` of two-class logits `[..., 2]`, float64."""
  logits = np.asarray(logits, np.float64)
  return logits[..., 1] - logits[..., 0]


def _nll_slope(beta: float, signed: np.ndarray) -> float:
  """d/d beta of mean(softplus(-beta * signed)), `signed` = (2 y - 1) z."""
  return float(np.mean(-signed / (1 + np.exp(np.clip(beta * signed, -700, 700)))))


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float | None:
  """The temperature T that minimises the NLL of `labels` (0/1) under softmax(logits / T).

  Returns None when the labels hold one class (no likelihood to fit a scale to: the split
  says nothing about how confident the model should be).
  """
  labels = np.asarray(labels)
  if len(np.unique(labels)) < 2:
    return None
  signed = np.where(labels == 1, 1.0, -1.0) * log_odds(logits)
  low, high = np.log(BETA_RANGE[0]), np.log(BETA_RANGE[1])
  if _nll_slope(np.exp(low), signed) >= 0:
    return 1 / BETA_RANGE[0]
  if _nll_slope(np.exp(high), signed) <= 0:
    return 1 / BETA_RANGE[1]
  for _ in range(_BISECTIONS):
    middle = (low + high) / 2
    if _nll_slope(np.exp(middle), signed) < 0:
      low = middle
    else:
      high = middle
  return float(1 / np.exp((low + high) / 2))


def calibrated_p1(logits: np.ndarray, temperature: float) -> np.ndarray:
  """p(converter) = sigmoid(z / T) of two-class logits `[..., 2]`."""
  z = log_odds(logits) / temperature
  return np.exp(-np.logaddexp(0.0, -z))


def calibrated_threshold(threshold: float | None, temperature: float) -> float | None:
  """The threshold on calibrated probabilities that makes the decisions of `threshold` on the
  model's own probabilities: sigmoid(logit(t) / T). None stays None (argmax, which T keeps)."""
  if threshold is None:
    return None
  t = float(np.clip(threshold, 1e-300, 1 - 1e-16))
  z = np.log(t) - np.log1p(-t)
  return float(np.exp(-np.logaddexp(0.0, -z / temperature)))
