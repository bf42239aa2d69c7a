"""Tests of the synthetic cohort family (`synthetic_family`: `CohortSpec`, `make_cohort`,
`write_cohort`) and that the built-in cohort (`synthetic.make_synthetic_cohort`) did not change."""

import dataclasses

import numpy as np
import pytest

from stgnn_jax import data
from stgnn_jax.data import synthetic
from stgnn_jax.data.synthetic_family import SIGNALS, CohortSpec, make_cohort, write_cohort
from stgnn_jax.data.synthetic_scans import cohort_from_scans

SMALL = dict(num_subjects=60, num_regions=30, seed=3)
GENERATED = [s for s in SIGNALS if s != "rewiring"]  # made by make_cohort itself


def small(signal: str, **changes) -> CohortSpec:
  return CohortSpec(f"small-{signal}", signal, **{**SMALL, **changes})


def upper(fc: np.ndarray) -> np.ndarray:
  """`[..., N, N]` -> `[..., pairs]`."""
  iu, ju = np.triu_indices(fc.shape[-1], k=1)
  return fc[..., iu, ju]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Mann-Whitney AUC of `scores` for label 1 (ties count half)."""
  pos, neg = scores[labels == 1], scores[labels == 0]
  return float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])))


# ---------------------------------------------------------------------------------------------
# The built-in cohort is unchanged.


def test_make_synthetic_cohort_is_pinned():
  """Values recorded from make_synthetic_cohort before the family was added: the draw order,
  the density scale and the rewiring are as they were."""
  scans = synthetic.make_synthetic_cohort(num_subjects=14, num_regions=20, seed=3)
  assert scans.subject_ids[:3] == ("003_S_1334", "016_S_9042", "041_S_8896")
  np.testing.assert_array_equal(scans.labels, [0, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0])
  assert [len(f) for f in scans.fc] == [3, 2, 4, 2, 3, 3, 1, 5, 3, 2, 1, 6, 3, 3]
  np.testing.assert_array_equal(scans.module, [0, 3, 4, 6, 9])
  np.testing.assert_array_equal(scans.months[5], [0.0, 12.74, 24.86])
  fc = np.concatenate(scans.fc).astype(np.float64)
  # Tolerance, not equality: tanh may differ in the last bit between CPUs' vector paths.
  np.testing.assert_allclose([fc.sum(), (fc ** 2).sum(), fc[7, 2, 5], fc[-1, 11, 17]],
                             [2475.5926500082314, 1451.0535818964058, 0.18063576519489288,
                              0.17831137776374817], rtol=1e-6)


def test_rewiring_is_make_synthetic_cohort():
  spec = small("rewiring", effect_size=0.6, edge_density=0.25, min_visits=2)
  a = make_cohort(spec)
  b = synthetic.make_synthetic_cohort(num_subjects=60, num_regions=30, seed=3, effect_size=0.6,
                                      edge_density=0.25, min_visits=2)
  assert a.subject_ids == b.subject_ids
  np.testing.assert_array_equal(a.labels, b.labels)
  for x, y in zip(a.fc, b.fc, strict=True):
    np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------------------------------
# Every signal.


@pytest.mark.parametrize("signal", SIGNALS)
def test_deterministic_per_seed(signal):
  a, b = make_cohort(small(signal)), make_cohort(small(signal))
  c = make_cohort(small(signal, seed=4))
  assert a.subject_ids == b.subject_ids != c.subject_ids
  for x, y in zip(a.fc, b.fc, strict=True):
    np.testing.assert_array_equal(x, y)
  for field in ("visit_labels", "months", "months_to_next"):
    for x, y in zip(getattr(a, field), getattr(b, field), strict=True):
      np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(a.module, b.module)


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("shape", [dict(edge_density=0.15, converter_fraction=0.15),
                                   dict(edge_density=0.45, converter_fraction=0.35,
                                        min_visits=2, max_visits=4)])
def test_cohort_is_shaped_as_specified(signal, shape):
  spec = small(signal, num_subjects=80, **shape)
  scans = make_cohort(spec)
  n = spec.num_regions
  assert len(scans.subject_ids) == 80 == len(set(scans.subject_ids))
  assert scans.labels.sum() == round(spec.converter_fraction * 80)
  assert scans.threshold == spec.threshold
  visits = np.array([len(f) for f in scans.fc])
  assert visits.min() >= spec.min_visits and visits.max() <= spec.max_visits
  for fc, labels, months, groups, y in zip(scans.fc, scans.visit_labels, scans.months,
                                           scans.groups, scans.labels, strict=True):
    assert fc.dtype == np.float32 and fc.shape[1:] == (n, n)
    np.testing.assert_array_equal(fc, np.swapaxes(fc, 1, 2))
    np.testing.assert_array_equal(fc[:, np.arange(n), np.arange(n)], 1.0)
    assert np.all(np.abs(upper(fc)) < 1)
    assert len(labels) == len(months) == len(groups) == len(fc)
    assert labels[:-1].sum() == 0 and labels[-1] == y
    assert months[0] == 0 and np.all(np.diff(months) > 3)
  stable = np.concatenate([upper(f) for f, y in zip(scans.fc, scans.labels, strict=True) if y == 0])
  assert np.mean(np.abs(stable) >= spec.threshold) == pytest.approx(spec.edge_density, abs=0.03)


@pytest.mark.parametrize("signal", GENERATED)
def test_effect_starts_at_zero_and_spares_stable_subjects(signal):
  """The effect draws nothing from the generator, so the same spec without effect gives the same
  stable subjects and the same first visits (the effect is 0 at baseline)."""
  scans = make_cohort(small(signal, effect_size=0.7, min_visits=2))
  without = make_cohort(small(signal, effect_size=0.0, min_visits=2))
  changed = []
  for a, b, y in zip(scans.fc, without.fc, scans.labels, strict=True):
    np.testing.assert_array_equal(a[0], b[0])
    if y == 0:
      np.testing.assert_array_equal(a, b)
    else:
      changed.append(not np.array_equal(a[-1], b[-1]))
  if signal == "null":
    assert not any(changed)
  else:
    assert all(changed)


def test_null_cohort_labels_are_independent_of_the_scans():
  """The null cohort is the density cohort without effect (its scans are drawn the same way
  whatever the label); no summary of the scans separates the classes."""
  spec = small("null", num_subjects=200, num_regions=40, effect_size=0.9)
  scans = make_cohort(spec)
  density = make_cohort(dataclasses.replace(spec, signal="density", effect_size=0.0))
  for a, b in zip(scans.fc, density.fc, strict=True):
    np.testing.assert_array_equal(a, b)
  module = scans.module
  last = [f[-1] for f in scans.fc]
  summaries = {
      "module strength": np.array([m[np.ix_(module, module)].mean() for m in last]),
      "edge count": np.array([(np.abs(upper(m)) >= spec.threshold).sum() for m in last]),
      "visits": np.array([len(f) for f in scans.fc]),
      "change": np.array([upper(f[-1] - f[0]).mean() for f in scans.fc]),
  }
  for name, values in summaries.items():
    assert 0.35 < auc(values, scans.labels) < 0.65, name
  # The same summary does separate the density cohort with its effect.
  signal = make_cohort(dataclasses.replace(spec, signal="density", effect_size=0.6))
  strength = np.array([f[-1][np.ix_(module, module)].mean() for f in signal.fc])
  assert auc(-strength, signal.labels) > 0.8


def test_strength_signal_is_in_the_values_not_the_edges():
  spec = small("strength", num_subjects=120, effect_size=1.0, min_visits=2)
  scans = make_cohort(spec)
  without = make_cohort(dataclasses.replace(spec, effect_size=0.0))
  for a, b in zip(scans.fc, without.fc, strict=True):  # not one edge gained or lost
    np.testing.assert_array_equal(np.abs(a) >= spec.threshold, np.abs(b) >= spec.threshold)
  module = scans.module
  last = np.array([f[-1][np.ix_(module, module)][np.triu_indices(len(module), 1)]
                   for f in scans.fc])
  y = scans.labels
  assert (last >= spec.threshold).all()
  assert auc(-last.mean(1), y) > 0.95
  assert last[y == 0].mean() == pytest.approx(np.tanh(np.arctanh(0.2) + 0.65), abs=0.03)
  assert last[y == 1].mean() < last[y == 0].mean() - 0.15


def test_trajectory_signal_is_in_the_change():
  spec = small("trajectory", num_subjects=200, effect_size=0.8, min_visits=2)
  scans = make_cohort(spec)
  module = np.ix_(scans.module, scans.module)
  first = np.array([f[0][module].mean() for f in scans.fc])
  last = np.array([f[-1][module].mean() for f in scans.fc])
  assert auc(first - last, scans.labels) > 0.85
  assert auc(-last, scans.labels) < 0.75
  # One visit: no signal at all.
  single = small("trajectory", max_visits=1, effect_size=1.0)
  without = make_cohort(dataclasses.replace(single, effect_size=0))
  for a, b in zip(make_cohort(single).fc, without.fc, strict=True):
    np.testing.assert_array_equal(a, b)


def test_regions_signal_is_in_the_hubs():
  spec = small("regions", num_subjects=120, effect_size=0.8, min_visits=2)
  scans = make_cohort(spec)
  assert len(scans.module) == 4
  degree = np.array([(np.abs(f[-1]) >= spec.threshold).sum(1) - 1 for f in scans.fc])
  others = np.setdiff1d(np.arange(spec.num_regions), scans.module)
  assert auc(-degree[:, scans.module].sum(1), scans.labels) > 0.85
  without = make_cohort(dataclasses.replace(spec, effect_size=0.0))
  for a, b in zip(scans.fc, without.fc, strict=True):  # pairs between non-hub regions are untouched
    np.testing.assert_array_equal(a[-1][np.ix_(others, others)], b[-1][np.ix_(others, others)])


def test_write_cohort_round_trip(tmp_path):
  spec = small("trajectory", num_subjects=14, num_regions=20)
  scans = write_cohort(tmp_path, spec)
  assert data.load_cohort(tmp_path, use_cache=False) == cohort_from_scans(scans)
  with pytest.raises(FileExistsError):
    write_cohort(tmp_path, spec)
  other = write_cohort(tmp_path, dataclasses.replace(spec, seed=4), overwrite=True, var_name="fc")
  assert data.load_cohort(tmp_path, var_name="fc", use_cache=False) == cohort_from_scans(other)


def test_bad_specs_raise():
  with pytest.raises(ValueError, match="signal"):
    CohortSpec("x", "noise", 50)
  with pytest.raises(ValueError, match="both classes"):
    make_cohort(CohortSpec("x", "density", 3, converter_fraction=0.1))
  with pytest.raises(ValueError, match="hubs"):
    make_cohort(small("regions", module_size=20))


# ---------------------------------------------------------------------------------------------
# Onset.


def test_baseline_onset_puts_the_whole_effect_in_every_visit():
  """With onset="baseline" a converter's first visit already carries the effect it has at the
  last, so the change over visits carries nothing: the first scans alone separate the classes
  about as well as the last, and the first-to-last change does not."""
  spec = small("strength", num_subjects=120, effect_size=0.6, min_visits=2, onset="baseline")
  scans = make_cohort(spec)
  module = np.zeros((spec.num_regions,) * 2, bool)
  module[np.ix_(scans.module, scans.module)] = True
  strength = lambda fc: upper(np.where(module, fc, 0)).sum(-1)  # noqa: E731
  first = np.array([strength(f[0]) for f in scans.fc])
  last = np.array([strength(f[-1]) for f in scans.fc])
  labels = scans.labels
  assert auc(-first, labels) > 0.9 and auc(-last, labels) > 0.9
  assert abs(auc(last - first, labels) - 0.5) < 0.15
  progressive = make_cohort(dataclasses.replace(spec, onset="progressive"))
  first = np.array([strength(f[0]) for f in progressive.fc])
  assert abs(auc(-first, progressive.labels) - 0.5) < 0.15
  with pytest.raises(ValueError, match="onset"):
    CohortSpec("x", "density", 50, onset="sudden")
  with pytest.raises(ValueError, match="progressive only"):
    CohortSpec("x", "rewiring", 50, onset="baseline")


@pytest.mark.parametrize("num_subjects", [150, 9000, 9001, 20000])
def test_subject_ids_are_unique_at_any_cohort_size(num_subjects):
  """ADNI-style four-digit numbers (1000-9999) hold 9,000 subjects; a larger cohort (the memory
  benchmark's 20,000) takes more digits, and a cohort that fits keeps the ids it always had."""
  from stgnn_jax.data.population import draw_subjects

  is_converter, ids = draw_subjects(np.random.default_rng(5), num_subjects, num_subjects // 4)
  assert len(set(ids)) == num_subjects and is_converter.sum() == num_subjects // 4
  numbers = [int(i.split("_S_")[1]) for i in ids]
  assert min(numbers) >= 1000
  if num_subjects <= 9000:
    rng = np.random.default_rng(5)
    rng.permutation(num_subjects)
    assert numbers == sorted(rng.choice(9000, num_subjects, replace=False) + 1000)
  else:
    assert max(numbers) > 9999
