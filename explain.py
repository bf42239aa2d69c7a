"""Which regions and connections drive a finished train.py run's predictions.

  python explain.py RUN_DIR --data_root DIR [--out_dir DIR] [--steps 128]
                    [--atlas_coords FILE] [--overwrite]

For each fold, the subjects under --data_root are read and preprocessed as the run did
(`stgnn_jax.trained_run`), and integrated gradients of each subject's converter log-odds with
respect to the model's node features (its FC values, and with profile_change their change since
the first visit) are computed from the fold's training-scan mean (`stgnn_jax.eval.attribution`).
A connection's score is the mean over subjects of |its attribution| (both directions, value and
change), a region's the mean over subjects of |the sum of its row's attributions|. Written to
--out_dir (default RUN_DIR/explain_<data folder name>):

  importance_regions.csv  region, name, score per fold, mean, rank, and the coefficient mass of
                          a logistic regression on the last scans' FC (sum of |weight| of the
                          region's connections, standardised features) when labels are present
  importance_edges.npy    [folds, N, N] connection scores
  importance.json         the folds' rank agreement (Spearman of region scores), the
                          completeness gaps, the settings
  importance.png          top regions (mean and each fold) and the mean connection matrix
  glass_brain.png         with --atlas_coords (CSV: region, x, y, z in MNI mm): the strongest
                          connections and the regions on nilearn's glass brain
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from stgnn_jax import atomic
from stgnn_jax.command import run_command
from stgnn_jax.errors import InputError

logger = logging.getLogger("stgnn_jax")

TOP_REGIONS = 20
# Connections drawn on the glass brain: the strongest of the mean connection scores.
GLASS_BRAIN_EDGES = 30


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out_dir of a finished train.py run")
  parser.add_argument("--data_root", required=True,
                      help="the subjects to explain (e.g. the run's own --data_root)")
  parser.add_argument("--input", choices=("fc", "timeseries"), default=None,
                      help="the scans to read when --data_root holds both folders")
  parser.add_argument("--out_dir", default=None,
                      help="default: RUN_DIR/explain_<data folder name>")
  parser.add_argument("--steps", type=int, default=128,
                      help="integration points of integrated gradients (the completeness gap "
                      "is reported: raise it if the gap is large)")
  parser.add_argument("--atlas_coords", default=None, metavar="FILE",
                      help="CSV with columns region, x, y, z (MNI mm), one row per region in "
                      "atlas order, for the glass-brain figure")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace the files of an earlier explain.py in --out_dir")
  return parser


def read_coords(path: str, num_regions: int) -> np.ndarray:
  """`[regions, 3]` MNI coordinates from a CSV with columns region, x, y, z."""
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      rows = list(csv.DictReader(f))
  except OSError as error:
    raise InputError(f"--atlas_coords {path}: cannot read it ({error})") from None
  if not rows or not {"x", "y", "z"} <= set(rows[0]):
    raise InputError(f"--atlas_coords {path}: needs a header with columns region, x, y, z")
  if len(rows) != num_regions:
    raise InputError(f"--atlas_coords {path}: {len(rows)} rows for {num_regions} regions; give "
                     "one row per region, in atlas order")
  try:
    return np.array([[float(r[c]) for c in ("x", "y", "z")] for r in rows])
  except ValueError:
    raise InputError(f"--atlas_coords {path}: x, y, z must be numbers (mm)") from None


def fold_importance(fold, run, cohort, steps: int) -> tuple[np.ndarray, np.ndarray, float]:
  """One fold's region scores `[N]`, connection scores `[N, N]` (means over subjects of the
  absolute values) and its largest relative completeness gap."""
  from stgnn_jax.eval import attribution
  from stgnn_jax.input_pipeline import Subjects
  from stgnn_jax.trained_run import eval_batches

  config, settings = run.model_config, run.run
  subjects = Subjects(cohort if fold.fitted is None else fold.fitted.apply(cohort), settings,
                      config)
  indices = np.arange(len(cohort.subjects))
  regions, connections, gap = [], [], 0.0
  for batch, count in eval_batches(subjects, indices, settings):
    ig, delta = attribution.integrated_gradients(fold.params, config, batch, steps=steps,
                                                 chunk=min(steps, 16))
    per_subject = attribution.subject_attributions(ig, batch)[:count]
    total = np.abs(per_subject.sum(axis=(1, 2))) + 1e-6
    gap = max(gap, float(np.max(np.abs(np.asarray(delta)[:count]) / total)))
    regions.append(attribution.region_importance(per_subject))
    connections.append(attribution.connection_importance(
        per_subject, cohort.num_nodes, node_features=config.node_features))
  return (attribution.mean_absolute_importance(np.concatenate(regions)),
          attribution.mean_absolute_importance(np.concatenate(connections)), gap)


def logistic_mass(cohort, results: dict[str, Any]) -> np.ndarray | None:
  """Per region, the sum of |weight| of its connections in an L2 logistic regression on the
  labelled subjects' last scans (upper triangle, standardised; C the median of the run's
  `logreg_fc` folds' choices); None without both classes."""
  from stgnn_jax.eval.baselines import DEFAULT_C, fit_logistic_grid

  labels = cohort.labels()
  labelled = labels >= 0
  if len(np.unique(labels[labelled])) < 2:
    return None
  n = cohort.num_nodes
  rows, cols = np.triu_indices(n, k=1)
  x = np.stack([s.fc[-1][rows, cols] for s, keep in zip(cohort.subjects, labelled, strict=True)
                if keep])
  chosen = [f["C"] for f in results.get("baselines", {}).get("logreg_fc", {}).get("folds", [])
            if f.get("C") is not None]
  [model] = fit_logistic_grid(x, labels[labelled], [float(np.median(chosen)) if chosen
                                                     else DEFAULT_C])
  weights = np.zeros((n, n))
  weights[rows, cols] = np.abs(model.w)
  return (weights + weights.T).sum(axis=1)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  """Spearman's rank correlation (average ranks for ties)."""
  def ranks(v):
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(len(v))
    for value in np.unique(v):  # ties share their mean rank
      tied = v == value
      r[tied] = r[tied].mean()
    return r
  return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def regions_csv(scores: np.ndarray, names: tuple[str, ...], mass: np.ndarray | None) -> str:
  mean = scores.mean(axis=0)
  rank = np.empty(len(mean), int)
  rank[np.argsort(-mean, kind="stable")] = np.arange(1, len(mean) + 1)
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["region", "name", *(f"score_fold{k}" for k in range(len(scores))), "mean",
                   "rank", "logreg_fc_mass"])
  for i in range(len(mean)):
    writer.writerow([i, names[i] if names else "", *(f"{s:.6g}" for s in scores[:, i]),
                     f"{mean[i]:.6g}", int(rank[i]), "" if mass is None else f"{mass[i]:.6g}"])
  return out.getvalue()


def plot_importance(path: Path, scores: np.ndarray, edges: np.ndarray,
                    names: tuple[str, ...]) -> None:
  from stgnn_jax.eval.reports import _figure_bytes, _pyplot

  plt = _pyplot()
  mean = scores.mean(axis=0)
  top = np.argsort(-mean, kind="stable")[:TOP_REGIONS][::-1]
  labels = [names[i] if names else f"region {i}" for i in top]
  fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), layout="constrained")
  axes[0].barh(range(len(top)), mean[top], color="tab:blue", alpha=0.6, label="mean of folds")
  for k, fold_scores in enumerate(scores):
    axes[0].plot(fold_scores[top], range(len(top)), "o", ms=3, color="black",
                 label="each fold" if k == 0 else None)
  axes[0].set_yticks(range(len(top)), labels, fontsize=7)
  axes[0].set_xlabel("mean |integrated gradients| per subject (converter log-odds)")
  axes[0].set_title(f"top {len(top)} regions")
  axes[0].legend(loc="lower right")
  image = axes[1].imshow(edges.mean(axis=0), cmap="viridis")
  axes[1].set_title("connections (mean of folds)")
  axes[1].set_xlabel("region")
  axes[1].set_ylabel("region")
  fig.colorbar(image, ax=axes[1], shrink=0.8)
  atomic.write_bytes(path, _figure_bytes(fig))


def plot_glass_brain(path: Path, scores: np.ndarray, edges: np.ndarray,
                     coords: np.ndarray) -> None:
  from nilearn import plotting

  from stgnn_jax.eval.reports import _figure_bytes, _pyplot

  plt = _pyplot()
  matrix = edges.mean(axis=0)
  upper = np.sort(matrix[np.triu_indices(len(matrix), k=1)])
  cut = upper[-min(GLASS_BRAIN_EDGES, len(upper))]
  shown = np.where(matrix >= cut, matrix, 0.0)
  np.fill_diagonal(shown, 0.0)
  mean = scores.mean(axis=0)
  fig = plt.figure(figsize=(10, 4))
  plotting.plot_connectome(shown, coords, node_size=10 + 90 * mean / max(mean.max(), 1e-12),
                           node_color="tab:red", edge_cmap="viridis", figure=fig,
                           title=f"{GLASS_BRAIN_EDGES} strongest connections")
  atomic.write_bytes(path, _figure_bytes(fig))


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  return run_command(parser.prog, lambda: explain(args))


def explain(args: argparse.Namespace) -> int:
  from stgnn_jax.trained_run import RESULTS_FILE, load_run

  if args.steps < 1:
    raise InputError(f"--steps {args.steps}: give at least 1 integration point")
  run = load_run(args.run_dir)
  out_dir = Path(args.out_dir or os.path.join(
      args.run_dir, f"explain_{Path(args.data_root).resolve().name}"))
  if (out_dir / "importance_regions.csv").exists() and not args.overwrite:
    raise InputError(f"--out_dir {out_dir}: holds an earlier explain.py's files; pass "
                     "--overwrite to replace them, or another --out_dir.")
  if not run.model_config.explicit_node_features:
    raise InputError(f"{args.run_dir}: the model's node features are "
                     f"{run.model_config.node_features!r} (no connection values to attribute); "
                     "explain.py needs connection_profile or profile_change.")
  cohort = run.read_cohort(args.data_root, input=args.input)
  coords = None if args.atlas_coords is None else read_coords(args.atlas_coords,
                                                              cohort.num_nodes)
  logger.info("%s", cohort.summary())
  scores, edges, gaps = [], [], []
  for fold in run.folds:
    region, connection, gap = fold_importance(fold, run, cohort, args.steps)
    scores.append(region)
    edges.append(connection)
    gaps.append(gap)
    logger.info("fold %d: largest completeness gap %.2g of |f(x) - f(baseline)|", fold.index, gap)
  scores_array, edges_array = np.stack(scores), np.stack(edges)
  results = json.loads((Path(args.run_dir) / RESULTS_FILE).read_text(encoding="utf-8"))
  mass = logistic_mass(cohort, results)
  folds = len(run.folds)
  pairs = [spearman(scores_array[a], scores_array[b])
           for a in range(folds) for b in range(a + 1, folds)]
  names = cohort.region_names
  os.makedirs(out_dir, exist_ok=True)
  atomic.write_text(out_dir / "importance_regions.csv", regions_csv(scores_array, names, mass))
  buffer = io.BytesIO()
  np.save(buffer, edges_array.astype(np.float32))
  atomic.write_bytes(out_dir / "importance_edges.npy", buffer.getvalue())
  top = np.argsort(-scores_array.mean(axis=0), kind="stable")[:10]
  summary = {
      "subjects": len(cohort.subjects), "steps": args.steps,
      "fold_rank_agreement": {"spearman_mean": float(np.mean(pairs)) if pairs else None,
                              "spearman_min": float(np.min(pairs)) if pairs else None},
      "completeness_gap_max": gaps,
      "top_regions": [names[i] if names else int(i) for i in top],
      "logreg_fc_mass_spearman": (None if mass is None else
                                  spearman(scores_array.mean(axis=0), mass)),
  }
  atomic.write_json(out_dir / "importance.json", summary)
  plot_importance(out_dir / "importance.png", scores_array, edges_array, names)
  if coords is not None:
    plot_glass_brain(out_dir / "glass_brain.png", scores_array, edges_array, coords)
  agreement = summary["fold_rank_agreement"]["spearman_mean"]
  logger.info("wrote %s: top regions %s; the folds' rank agreement (Spearman) %s", out_dir,
              ", ".join(map(str, summary["top_regions"][:5])),
              "undefined" if agreement is None else f"{agreement:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
