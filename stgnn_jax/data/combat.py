"""ComBat site harmonisation, fitted on one set of scans and applied to any other.

The model (Johnson, Li & Rabinovic 2007, for imaging Fortin et al. 2017/2018): each feature v of
scan j at site i is y = alpha_v + X_j beta_v + gamma_iv + delta_iv * e, e ~ N(0, sigma_v^2).
`fit_combat` estimates, on the training scans only: beta (covariate effects) and the site
intercepts by least squares on [site one-hot | covariates]; the grand mean alpha (the sites'
intercepts weighted by their scan counts) and the pooled variance sigma^2; then, on the
standardised data, each site's location gamma and scale delta shrunk towards their across-feature
priors by the parametric empirical Bayes iteration. `ComBatFit.apply` maps any scan of a site the
fit has seen:

    y* = (y - alpha - X beta - sigma * gamma_site) / sqrt(delta_site) + alpha + X beta

On the training scans this is exactly neuroCombat's output (`tests/.../test_combat.py` compares
with neuroCombat 0.2.12); unlike neuroCombat's `neuroCombatFromTraining` it keeps each new
scan's own covariate effects. Covariates are numeric columns, or categorical ones (any value that
is not a number), one-hot coded without their first level as neuroCombat does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from stgnn_jax.errors import CohortError

# The empirical Bayes iteration stops when no estimate changes by more than this, relatively.
_EB_TOLERANCE = 1e-4


def _is_number(text: str) -> bool:
  try:
    return math.isfinite(float(text))
  except ValueError:
    return False


@dataclasses.dataclass(frozen=True)
class Covariate:
  """One covariate column: numeric (its values as floats) or categorical (its levels, sorted; the
  first is the reference level, as in neuroCombat)."""

  name: str
  levels: tuple[str, ...] = ()  # empty: numeric

  def design(self, values: Sequence[str]) -> np.ndarray:
    """The column(s) of the design matrix for `values` (one per scan)."""
    if not self.levels:
      return np.array([[float(v)] for v in values], np.float64)
    unknown = sorted(set(values) - set(self.levels))
    if unknown:
      raise CohortError(f"covariate {self.name!r}: value(s) {', '.join(map(repr, unknown))} that "
                        "no training scan has; ComBat cannot place them")
    codes = np.array([self.levels.index(v) for v in values])
    return np.eye(len(self.levels))[codes][:, 1:]


def covariates_of(names: Sequence[str], values: Sequence[Sequence[str]]) -> list[Covariate]:
  """Each named column's kind from the training scans' `values` ([scans][columns]): numeric when
  every value is a finite number, categorical otherwise."""
  columns = list(zip(*values, strict=True)) if values else [() for _ in names]
  out = []
  for name, column in zip(names, columns, strict=True):
    if all(_is_number(v) for v in column):
      out.append(Covariate(name))
    else:
      out.append(Covariate(name, tuple(sorted(set(column)))))
  return out


def covariate_design(columns: Sequence[Covariate], values: Sequence[Sequence[str]]) -> np.ndarray:
  """`[scans, C]` the covariates' part of the design matrix (`values`: [scans][columns])."""
  parts = [c.design([row[i] for row in values]) for i, c in enumerate(columns)]
  return np.hstack(parts) if parts else np.zeros((len(values), 0))


@dataclasses.dataclass(frozen=True)
class ComBatFit:
  """ComBat's estimates from a set of training scans (`fit_combat`).

  Attributes:
    sites: the training sites, sorted (rows of `gamma` and `delta`).
    covariates: the covariate columns (`Covariate`).
    grand_mean: `[F]` alpha.
    beta: `[C, F]` the covariates' effects (C design columns, 0 when none).
    sigma: `[F]` the pooled standard deviation.
    gamma, delta: `[sites, F]` the empirical Bayes site locations and scales (standardised units).
  """

  sites: tuple[str, ...]
  covariates: tuple[Covariate, ...]
  grand_mean: np.ndarray
  beta: np.ndarray
  sigma: np.ndarray
  gamma: np.ndarray
  delta: np.ndarray

  def site_rows(self, sites: Sequence[str]) -> np.ndarray:
    unseen = sorted(set(sites) - set(self.sites))
    if unseen:
      raise CohortError(f"site(s) {', '.join(map(repr, unseen))} of held-out scans: no training "
                        f"scan comes from them (training sites: {', '.join(self.sites)}), so "
                        "ComBat cannot harmonise them; add training subjects from that site or "
                        "drop --harmonize")
    return np.array([self.sites.index(s) for s in sites], np.intp)

  def apply(self, features: np.ndarray, sites: Sequence[str],
            covariates: Sequence[Sequence[str]] = ()) -> np.ndarray:
    """`features` `[scans, F]` of scans from `sites` (with their covariate values, [scans][C])
    harmonised; float64."""
    features = np.asarray(features, np.float64)
    rows = self.site_rows(sites)
    values = list(covariates) if self.covariates else [()] * len(features)
    expected = self.grand_mean + covariate_design(self.covariates, values) @ self.beta
    standardized = (features - expected) / self.sigma
    adjusted = (standardized - self.gamma[rows]) / np.sqrt(self.delta[rows])
    return adjusted * self.sigma + expected

  def arrays(self) -> dict[str, np.ndarray]:
    """The fit as named arrays (to store it; `from_arrays` reads them back)."""
    return {"grand_mean": self.grand_mean, "beta": self.beta, "sigma": self.sigma,
            "gamma": self.gamma, "delta": self.delta,
            "sites": np.array(self.sites, dtype=str),
            "covariate_names": np.array([c.name for c in self.covariates], dtype=str),
            "covariate_levels": np.array(["\x1f".join(c.levels) for c in self.covariates],
                                         dtype=str)}

  @classmethod
  def from_arrays(cls, arrays) -> ComBatFit:
    covariates = tuple(Covariate(str(name), tuple(str(levels).split("\x1f")) if levels else ())
                       for name, levels in zip(arrays["covariate_names"],
                                               arrays["covariate_levels"], strict=True))
    return cls(sites=tuple(str(s) for s in arrays["sites"]), covariates=covariates,
               **{k: np.asarray(arrays[k], np.float64)
                  for k in ("grand_mean", "beta", "sigma", "gamma", "delta")})


def _eb_site(data: np.ndarray, gamma_hat: np.ndarray, delta_hat: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
  """Parametric empirical Bayes: the site's (gamma*, delta*) [F] from its standardised scans
  `data` [n, F] and least-squares estimates, shrunk towards priors fitted across features."""
  gamma_bar, tau2 = gamma_hat.mean(), gamma_hat.var(ddof=1)
  m, s2 = delta_hat.mean(), delta_hat.var(ddof=1)
  a, b = (2 * s2 + m ** 2) / s2, (m * s2 + m ** 3) / s2  # inverse-gamma prior of delta
  n = data.shape[0]
  gamma, delta = gamma_hat, delta_hat
  while True:
    new_gamma = (tau2 * n * gamma_hat + delta * gamma_bar) / (tau2 * n + delta)
    squares = ((data - new_gamma) ** 2).sum(axis=0)
    new_delta = (0.5 * squares + b) / (n / 2.0 + a - 1.0)
    # The original R code's and neuroCombat's criterion, kept as it is (the gamma change is
    # divided by the signed gamma) so that the estimates are theirs.
    change = max(np.max(np.abs(new_gamma - gamma) / gamma),
                 np.max(np.abs(new_delta - delta) / delta))
    gamma, delta = new_gamma, new_delta
    if not change > _EB_TOLERANCE:
      return gamma, delta


def fit_combat(features: np.ndarray, sites: Sequence[str], covariate_names: Sequence[str] = (),
               covariates: Sequence[Sequence[str]] = ()) -> ComBatFit:
  """ComBat's estimates from training scans: `features` `[scans, F]`, each scan's site, and its
  values of the covariate columns `covariate_names` (`[scans][C]`, strings as in the visit table).

  Raises CohortError for what cannot be fitted: fewer than two scans of a site, a feature
  constant over the scans, covariates confounded with the sites.
  """
  features = np.asarray(features, np.float64)
  n, num_features = features.shape
  site_names = tuple(sorted(set(sites)))
  counts = {s: 0 for s in site_names}
  for s in sites:
    counts[s] += 1
  few = [s for s, c in counts.items() if c < 2]
  if few:
    raise CohortError(f"ComBat needs at least two training scans per site; site(s) "
                      f"{', '.join(map(repr, few))} have one: merge or drop those scans, or drop "
                      "--harmonize")
  rows = np.array([site_names.index(s) for s in sites])
  site_design = np.eye(len(site_names))[rows]
  columns = covariates_of(covariate_names, covariates)
  covariate_part = covariate_design(columns, list(covariates) if columns else [()] * n)
  design = np.hstack([site_design, covariate_part])
  if np.linalg.matrix_rank(design) < design.shape[1]:
    raise CohortError(f"ComBat: the covariates {', '.join(covariate_names)} are confounded with "
                      "the sites (or constant) in the training scans, so site effects cannot be "
                      "told from theirs; drop the covariate from --harmonize_covariates")
  coefficients = np.linalg.lstsq(design, features, rcond=None)[0]
  site_means, beta = coefficients[:len(site_names)], coefficients[len(site_names):]
  weights = np.array([counts[s] for s in site_names], np.float64) / n
  grand_mean = weights @ site_means
  variance = ((features - design @ coefficients) ** 2).mean(axis=0)
  if np.any(variance <= 0):
    raise CohortError(f"ComBat: {int(np.sum(variance <= 0))} of {num_features} connection(s) "
                      "have no variance left within the sites of the training scans; they cannot "
                      "be harmonised")
  sigma = np.sqrt(variance)
  standardized = (features - grand_mean - covariate_part @ beta) / sigma
  gamma = np.empty((len(site_names), num_features))
  delta = np.empty((len(site_names), num_features))
  for i in range(len(site_names)):
    data = standardized[rows == i]
    gamma_hat = data.mean(axis=0)
    delta_hat = data.var(axis=0, ddof=1)
    delta_hat[delta_hat == 0] = 1.0  # as neuroCombat: a feature without spread is not scaled
    gamma[i], delta[i] = _eb_site(data, gamma_hat, delta_hat)
  return ComBatFit(site_names, tuple(columns), grand_mean, beta, sigma, gamma, delta)
