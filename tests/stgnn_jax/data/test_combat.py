"""ComBat (`data.combat`) against neuroCombat 0.2.12 (the maintained reference implementation),
and the fit/apply split that keeps held-out scans out of the fit."""

import contextlib
import io

import numpy as np
import pytest

from stgnn_jax.data import combat
from stgnn_jax.errors import CohortError


def _case(seed=0, scans=60, features=40):
  """Scans from three sites with site shifts and scales, an age and a sex effect."""
  rng = np.random.default_rng(seed)
  sites = np.array(["A", "B", "C"])[rng.integers(0, 3, scans)]
  sites[:3] = ["A", "B", "C"]
  age = rng.integers(55, 90, scans)  # whole years: exact in neuroCombat's float32 design
  sex = np.array(["F", "M"])[rng.integers(0, 2, scans)]
  shift = {"A": 0.0, "B": 0.6, "C": -0.4}
  scale = {"A": 1.0, "B": 1.8, "C": 0.6}
  base = rng.normal(size=features)
  noise = rng.normal(size=(scans, features))
  data = np.stack([
      base + 0.02 * (a - 70) + 0.3 * (s == "M") + shift[site] + scale[site] * e
      for site, a, s, e in zip(sites, age, sex, noise, strict=True)])
  covariates = [(str(a), s) for a, s in zip(age, sex, strict=True)]
  return data, sites, covariates


def _neurocombat(data, sites, covariates):
  pd = pytest.importorskip("pandas")
  neuro = pytest.importorskip("neuroCombat")
  frame = pd.DataFrame({"site": sites, "age": [float(a) for a, _ in covariates],
                        "sex": [s for _, s in covariates]})
  with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
    out = neuro.neuroCombat(dat=data.T, covars=frame, batch_col="site", categorical_cols=["sex"],
                            continuous_cols=["age"])
  return out["data"].T


def test_fit_then_apply_on_the_training_scans_equals_neurocombat():
  data, sites, covariates = _case()
  fit = combat.fit_combat(data, sites, ["age", "sex"], covariates)
  ours = fit.apply(data, sites, covariates)
  theirs = _neurocombat(data, sites, covariates)
  # Same estimates, same empirical Bayes iteration and stopping rule: equal to rounding.
  np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9)
  assert fit.covariates[0].levels == () and fit.covariates[1].levels == ("F", "M")


def test_without_covariates_equals_neurocombat_and_removes_site_means():
  data, sites, _ = _case(seed=1)
  pd = pytest.importorskip("pandas")
  neuro = pytest.importorskip("neuroCombat")
  with contextlib.redirect_stdout(io.StringIO()):
    theirs = neuro.neuroCombat(dat=data.T, covars=pd.DataFrame({"site": sites}),
                               batch_col="site")["data"].T
  ours = combat.fit_combat(data, sites).apply(data, sites)
  np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9)
  raw_spread = np.ptp([data[sites == s].mean(0) for s in "ABC"], axis=0).mean()
  harmonised_spread = np.ptp([ours[sites == s].mean(0) for s in "ABC"], axis=0).mean()
  assert harmonised_spread < 0.3 * raw_spread  # 0.25 of it: the shrunk estimates


def test_held_out_scans_do_not_change_the_fit_and_keep_their_covariates():
  data, sites, covariates = _case(seed=2, scans=80)
  train, held = np.arange(60), np.arange(60, 80)
  fit = combat.fit_combat(data[train], sites[train], ["age", "sex"],
                          [covariates[i] for i in train])
  changed = data.copy()
  changed[held] += 5.0  # the held-out scans change: the fit cannot
  refit = combat.fit_combat(changed[train], sites[train], ["age", "sex"],
                            [covariates[i] for i in train])
  for name, array in fit.arrays().items():
    np.testing.assert_array_equal(array, refit.arrays()[name], err_msg=name)
  # Applying is per scan: a held-out scan's result depends only on it and the fit.
  one = fit.apply(data[held[:1]], sites[held[:1]], [covariates[held[0]]])
  all_held = fit.apply(data[held], sites[held], [covariates[i] for i in held])
  np.testing.assert_allclose(one[0], all_held[0], rtol=1e-12)
  # A scan's own covariates count: 10 years older, its expected value moves by 10 beta_age,
  # and y* = (y - expected - sigma gamma) / sqrt(delta) + expected moves by that times
  # (1 - 1 / sqrt(delta)).
  older = [(str(int(covariates[held[0]][0]) + 10), covariates[held[0]][1])]
  moved = fit.apply(data[held[:1]], sites[held[:1]], older)[0] - one[0]
  delta = fit.delta[fit.sites.index(sites[held[0]])]
  np.testing.assert_allclose(moved, 10 * fit.beta[0] * (1 - 1 / np.sqrt(delta)), rtol=1e-9,
                             atol=1e-12)


def test_the_fit_round_trips_through_its_arrays():
  data, sites, covariates = _case(seed=3)
  fit = combat.fit_combat(data, sites, ["age", "sex"], covariates)
  back = combat.ComBatFit.from_arrays(fit.arrays())
  np.testing.assert_array_equal(back.apply(data, sites, covariates),
                                fit.apply(data, sites, covariates))


def test_what_cannot_be_fitted_or_applied_is_one_line():
  data, sites, covariates = _case(seed=4)
  fit = combat.fit_combat(data, sites)
  with pytest.raises(CohortError, match=r"site\(s\) 'D' of held-out.*sites: A, B, C"):
    fit.apply(data[:2], ["A", "D"])
  lonely = sites.copy()
  lonely[0] = "E"
  with pytest.raises(CohortError, match="at least two training scans per site.*'E'"):
    combat.fit_combat(data, lonely)
  confounded = [(s, s) for s in sites]  # a covariate equal to the site
  with pytest.raises(CohortError, match="confounded with the sites"):
    combat.fit_combat(data, sites, ["scanner", "scanner2"], confounded)
  sexes = combat.fit_combat(data, sites, ["age", "sex"], covariates)
  with pytest.raises(CohortError, match="covariate 'sex'.*'X'"):
    sexes.apply(data[:1], sites[:1], [("70", "X")])
