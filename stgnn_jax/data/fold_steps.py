"""Preprocessing fitted inside each fold, on its training subjects only: the tangent-space
connectivity and ComBat site harmonisation.

Both learn from a group of scans: the tangent space its reference point (the geometric mean of
the covariances), ComBat each site's location and scale. Fitted on the whole cohort before the
folds are cut, they would carry the test subjects' scans into the training inputs, the leak that
nilearn's connectome examples and ComBat's users warn about. Here a fold's fit sees the input
scans of its training subjects only and is then applied, unchanged, to every subject (training,
validation, test): `FoldSteps.fit` -> `FittedSteps`, `FittedSteps.apply(cohort)`.

Order: the scan's measure (`Subject.measure`) -> tangent (when `--connectivity tangent`) ->
ComBat on its connection values (the upper triangle; the diagonal stays as it is) -> the graph
(`connectivity.measure_graph` / `tangent_graph` / `threshold_fc`, `--threshold` as for the
kind). A fit is stored in the fold's folder (`FittedSteps.save`, `preprocessing.npz`) so that a
resumed run and a later prediction use the same one.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stgnn_jax import atomic
from stgnn_jax.data import combat as combat_lib
from stgnn_jax.data.cohort import Cohort, CohortError
from stgnn_jax.data.connectivity import measure_graph, tangent_graph
from stgnn_jax.data.preprocessing import threshold_fc

FIT_FILE = "preprocessing.npz"
# The geometric mean's iterations (nilearn's ConnectivityMeasure uses these for `tangent`).
_GEOMETRIC_MEAN_ITERATIONS = 30


def _map_eigenvalues(function, matrix: np.ndarray) -> np.ndarray:
  """f(M) of symmetric matrices `[..., N, N]` through their eigendecomposition."""
  values, vectors = np.linalg.eigh(matrix)
  return (vectors * function(values)[..., None, :]) @ np.swapaxes(vectors, -1, -2)


class _GivenCovariance:
  """A covariance 'estimator' for nilearn's ConnectivityMeasure whose input is the covariance
  itself, so that the tangent fit runs on each scan's stored covariance."""

  def get_params(self, deep: bool = True) -> dict:
    return {}

  def set_params(self, **params) -> _GivenCovariance:
    return self

  def fit(self, covariance: np.ndarray) -> _GivenCovariance:
    self.covariance_ = covariance
    return self


def fit_tangent(covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(geometric mean, whitening = mean^(-1/2)) of training covariances `[scans, N, N]`, fitted by
  nilearn's `ConnectivityMeasure(kind="tangent")`."""
  from nilearn.connectome import ConnectivityMeasure

  measure = ConnectivityMeasure(kind="tangent", cov_estimator=_GivenCovariance(),
                                standardize=False)
  measure.fit([np.asarray(c, np.float64) for c in covariances])
  return np.asarray(measure.mean_), np.asarray(measure.whitening_)


def tangent_matrices(covariances: np.ndarray, whitening: np.ndarray) -> np.ndarray:
  """logm(W C W) of each covariance `[..., N, N]`: nilearn's tangent transform with a stored W."""
  whitened = whitening @ np.asarray(covariances, np.float64) @ whitening
  return _map_eigenvalues(np.log, (whitened + np.swapaxes(whitened, -1, -2)) / 2)


@dataclasses.dataclass(frozen=True)
class FoldSteps:
  """The steps a run fits inside each fold.

  Attributes:
    kind: what the cohort's measures are (`Cohort.measure_kind`: "fc" or a `--connectivity`).
    threshold: `--threshold`, applied after the steps.
    fisher_z: `--fisher_z` (correlations), applied after ComBat.
    harmonize: "none" or "combat".
    covariates: ComBat's covariate columns.
  """

  kind: str
  threshold: float
  fisher_z: bool = False
  harmonize: str = "none"
  covariates: tuple[str, ...] = ()

  @staticmethod
  def for_cohort(cohort: Cohort, *, threshold: float, fisher_z: bool, harmonize: str,
                 covariates: Sequence[str] = ()) -> FoldSteps | None:
    """The steps `cohort` needs (its measures say which kind), None when it fits nothing."""
    if cohort.measure_kind != "tangent" and harmonize == "none":
      return None
    if not cohort.measure_kind:
      raise ValueError("the cohort keeps no measures: load it with the harmonisation columns")
    if harmonize != "none" and not all(s.sites for s in cohort.subjects):
      raise CohortError("--harmonize needs each scan's site: add a Site column to the visit "
                        "table")
    return FoldSteps(cohort.measure_kind, float(threshold), bool(fisher_z), harmonize,
                     tuple(covariates))

  def check_folds(self, cohort: Cohort, folds: Sequence[tuple[np.ndarray, ...]]) -> None:
    """Raises CohortError, before anything is trained, for a fold whose held-out subjects come
    from a site that none of its training subjects comes from (ComBat cannot place them), or
    whose training scans hold a site once (ComBat cannot estimate its spread)."""
    if self.harmonize == "none":
      return
    for k, (train, *held_out) in enumerate(folds):
      training_sites = [x for i in train for x in cohort.subjects[i].sites]
      once = sorted(x for x in set(training_sites) if training_sites.count(x) < 2)
      if once:
        raise CohortError(f"site {once[0]!r} has a single training scan in fold {k}: ComBat needs "
                          "at least two per site; add scans from it, or drop them or --harmonize")
      seen = set(training_sites)
      for i in np.concatenate(held_out):
        subject = cohort.subjects[i]
        unseen = sorted(set(subject.sites) - seen)
        if unseen:
          raise CohortError(
              f"site {unseen[0]!r} (subject {subject.subject_id}) is held out in fold {k} but no "
              f"training subject of that fold comes from it, so ComBat cannot harmonise it: add "
              f"subjects from {unseen[0]!r}, or drop its subjects or --harmonize")

  def fit(self, cohort: Cohort, train_idx: Sequence[int] | np.ndarray) -> FittedSteps:
    """The steps fitted on the input scans of the subjects `train_idx` only."""
    train = [cohort.subjects[i] for i in train_idx]
    measures = np.concatenate([s.measure for s in train if s.measure is not None])
    mean = whitening = None
    if self.kind == "tangent":
      mean, whitening = fit_tangent(measures)
      measures = tangent_matrices(measures, whitening)
    fit = None
    if self.harmonize == "combat":
      fit = combat_lib.fit_combat(
          _connections(measures), [x for s in train for x in s.sites], self.covariates,
          [c for s in train for c in s.covariates] if self.covariates else ())
    return FittedSteps(self, tuple(cohort.subjects[i].subject_id for i in train_idx), mean,
                       whitening, fit)


def _connections(matrices: np.ndarray) -> np.ndarray:
  """`[scans, N (N - 1) / 2]` the upper triangles (ComBat's features)."""
  rows, cols = np.triu_indices(matrices.shape[-1], k=1)
  return matrices[:, rows, cols]


@dataclasses.dataclass(frozen=True)
class FittedSteps:
  """A fold's fitted steps (`FoldSteps.fit`): the tangent reference (`mean`, `whitening`) and
  the ComBat estimates, each None when not used; `train_ids` are the subjects fitted on."""

  steps: FoldSteps
  train_ids: tuple[str, ...]
  mean: np.ndarray | None = None
  whitening: np.ndarray | None = None
  combat: combat_lib.ComBatFit | None = None

  def graphs(self, measure: np.ndarray, sites: Sequence[str] = (),
             covariates: Sequence[Sequence[str]] = ()) -> np.ndarray:
    """A subject's `[visits, N, N]` graph values from its measures (and its visits' sites and
    covariate values)."""
    steps = self.steps
    values = np.asarray(measure, np.float64)
    if self.whitening is not None:
      values = tangent_matrices(values, self.whitening)
    if self.combat is not None:
      rows, cols = np.triu_indices(values.shape[-1], k=1)
      harmonised = self.combat.apply(values[:, rows, cols], sites,
                                     covariates if steps.covariates else ())
      values = values.copy()
      values[:, rows, cols] = harmonised
      values[:, cols, rows] = harmonised
    if steps.kind == "fc":
      return threshold_fc(values, steps.threshold)
    if steps.kind == "tangent":
      return np.stack([tangent_graph(c, t, steps.threshold) for c, t in zip(
          measure, values, strict=True)])
    return np.stack([measure_graph(m, steps.kind, steps.threshold, use_fisher_z=steps.fisher_z,
                                   values=v) for m, v in zip(measure, values, strict=True)])

  def apply(self, cohort: Cohort) -> Cohort:
    """`cohort` with every subject's graphs rebuilt through the fitted steps."""
    subjects = []
    for s in cohort.subjects:
      assert s.measure is not None, "a cohort with fold steps keeps its measures"
      fc = self.graphs(s.measure, s.sites, s.covariates)
      subjects.append(dataclasses.replace(s, adjacency=fc != 0, fc=fc))
    return dataclasses.replace(cohort, subjects=tuple(subjects))

  def save(self, path: str | Path) -> None:
    """Writes the fit atomically as an `.npz` (`load` reads it back)."""
    arrays = {"steps": np.array(json.dumps(dataclasses.asdict(self.steps))),
              "train_ids": np.array(self.train_ids, dtype=str)}
    if self.mean is not None and self.whitening is not None:
      arrays.update(tangent_mean=self.mean, tangent_whitening=self.whitening)
    if self.combat is not None:
      arrays.update({f"combat_{k}": v for k, v in self.combat.arrays().items()})
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    atomic.write_bytes(Path(path), buffer.getvalue())

  @classmethod
  def load(cls, path: str | Path) -> FittedSteps:
    """The fit stored at `path`."""
    with np.load(path, allow_pickle=False) as archive:
      steps = json.loads(str(archive["steps"]))
      steps["covariates"] = tuple(steps["covariates"])
      combat = None
      if "combat_sites" in archive.files:
        combat = combat_lib.ComBatFit.from_arrays(
            {k.removeprefix("combat_"): archive[k] for k in archive.files
             if k.startswith("combat_")})
      tangent = ("tangent_mean" in archive.files)
      return cls(FoldSteps(**steps), tuple(str(x) for x in archive["train_ids"]),
                 archive["tangent_mean"] if tangent else None,
                 archive["tangent_whitening"] if tangent else None, combat)
