"""Temperature scaling (`eval.calibration`) against the likelihood it minimises."""

import numpy as np
import pytest

from stgnn_jax.eval import calibration


def _logits(z):
  return np.stack([np.zeros_like(z), z], axis=-1)


def _nll(labels, logits, temperature):
  p = calibration.calibrated_p1(logits, temperature)
  return -np.mean(np.where(labels == 1, np.log(p), np.log1p(-p)))


@pytest.mark.parametrize("true_temperature", [0.25, 1.0, 3.0])
def test_recovers_the_temperature_that_generated_the_labels(true_temperature):
  rng = np.random.default_rng(0)
  z = rng.normal(0, 3 * true_temperature, 20000)  # log-odds z / T of the same spread
  labels = (rng.random(z.size) < 1 / (1 + np.exp(-z / true_temperature))).astype(int)
  fitted = calibration.fit_temperature(labels, _logits(z))
  assert fitted == pytest.approx(true_temperature, rel=0.05)


def test_the_fit_is_the_likelihoods_minimum():
  rng = np.random.default_rng(1)
  z = rng.normal(0.5, 0.4, 40)  # under-confident log-odds, like a focal model's
  labels = (z + rng.normal(0, 0.3, 40) > 0.5).astype(int)
  logits = _logits(z)
  fitted = calibration.fit_temperature(labels, logits)
  assert fitted is not None and fitted < 1  # the model is made more confident
  for other in (fitted * 0.9, fitted * 1.1, 1.0):
    assert _nll(labels, logits, fitted) < _nll(labels, logits, other)


def test_bounded_on_separable_or_signal_free_splits_and_none_for_one_class():
  z = np.array([-2.0, -1.0, 1.0, 2.0])
  assert calibration.fit_temperature(np.array([0, 0, 1, 1]), _logits(z)) == pytest.approx(
      1 / calibration.BETA_RANGE[1])
  assert calibration.fit_temperature(np.array([1, 1, 0, 0]), _logits(z)) == pytest.approx(
      1 / calibration.BETA_RANGE[0])
  assert calibration.fit_temperature(np.array([1, 1, 1, 1]), _logits(z)) is None


def test_calibration_keeps_the_order_and_the_decisions():
  rng = np.random.default_rng(2)
  logits = rng.normal(0, 2, (50, 2))
  p = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
  for temperature in (0.3, 2.5):
    calibrated = calibration.calibrated_p1(logits, temperature)
    np.testing.assert_array_equal(np.argsort(calibrated), np.argsort(p))
    for threshold in (0.1, 0.37, 0.8):
      mapped = calibration.calibrated_threshold(threshold, temperature)
      np.testing.assert_array_equal(calibrated >= mapped, p >= threshold)
  assert calibration.calibrated_threshold(None, 2.0) is None
  np.testing.assert_allclose(calibration.calibrated_p1(logits, 1.0), p, rtol=1e-12)
