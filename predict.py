"""Predictions of a finished train.py run for the subjects of a data folder.

  python predict.py RUN_DIR --data_root DIR [--out FILE.csv] [--overwrite]

The folder is read as the run read its own data (same input kind, cleaning, connectivity and
threshold; Label_CS_Num may be blank or absent), each fold replays its fitted preprocessing and
its selected model (`stgnn_jax.trained_run`), and one CSV row per subject is written:

  subject, visits, label (blank when unknown), p_fold<k> (each fold's calibrated p(converter)),
  decision_fold<k> (at that fold's validation threshold), p_mean, p_std, decision (the folds'
  majority; a tie goes to the side of p_mean against the folds' mean threshold), agreement (share
  of folds with that decision), in_run (whether the subject was part of the run's cohort),
  oof_fold and oof_p (for a subject of the run: the fold where it was a test subject and that
  fold's probability, the only honest one for it: the other folds trained on it).

With labels, the metrics of the ensemble are printed: for new subjects, and separately the
out-of-fold ones for the run's own subjects.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
from pathlib import Path

import numpy as np

from stgnn_jax import atomic
from stgnn_jax.command import run_command
from stgnn_jax.errors import InputError

logger = logging.getLogger("stgnn_jax")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out_dir of a finished train.py run")
  parser.add_argument("--data_root", required=True,
                      help="folder with the subjects to predict, in any input format the run "
                      "reads (FC_Matrices/ or TimeSeries/, and TADPOLE_TEMPORAL.csv)")
  parser.add_argument("--input", choices=("fc", "timeseries"), default=None,
                      help="the scans to read when --data_root holds both folders")
  parser.add_argument("--out", default=None,
                      help="CSV to write (default: RUN_DIR/predictions_<data folder name>.csv)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
  return parser


def table(predictions) -> str:
  """The CSV text of `trained_run.Predictions`."""
  folds = range(predictions.p1.shape[0])
  columns = ["subject", "visits", "label", *(f"p_fold{k}" for k in folds),
             *(f"decision_fold{k}" for k in folds), "p_mean", "p_std", "decision", "agreement",
             "in_run", "oof_fold", "oof_p"]
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(columns)
  for i, subject in enumerate(predictions.subject_ids):
    label = int(predictions.labels[i])
    in_run = predictions.out_of_fold[i] >= 0
    writer.writerow([
        subject, int(predictions.visits[i]), label if label >= 0 else "",
        *(f"{p:.6f}" for p in predictions.p1[:, i]),
        *(int(d) for d in predictions.decisions[:, i]),
        f"{predictions.p1_mean[i]:.6f}", f"{predictions.p1_std[i]:.6f}",
        int(predictions.ensemble[i]), f"{predictions.agreement[i]:.2f}",
        "yes" if in_run else "no", int(predictions.out_of_fold[i]) if in_run else "",
        f"{predictions.oof_p1[i]:.6f}" if in_run else ""])
  return out.getvalue()


def report_metrics(predictions) -> list[str]:
  """Lines with the ensemble's metrics on the labelled subjects: the run's own subjects
  (out-of-fold) and the new ones, each where both classes are present."""
  from stgnn_jax.eval import metrics as metrics_lib

  lines = []
  labelled = predictions.labels >= 0
  in_run = predictions.out_of_fold >= 0
  for name, mask, scores in (
      ("new subjects (fold ensemble)", labelled & ~in_run, predictions.p1_mean),
      ("the run's own subjects (out-of-fold)", labelled & in_run, predictions.oof_p1)):
    if not mask.any():
      continue
    labels = predictions.labels[mask]
    auc = metrics_lib.auc_or_none(labels, scores[mask])
    decided = (predictions.ensemble[mask] if name.startswith("new") else
               np.array([predictions.decisions[k, i] for k, i in zip(
                   predictions.out_of_fold[mask], np.flatnonzero(mask), strict=True)]))
    recall = [float((decided[labels == c] == c).mean()) for c in (0, 1) if (labels == c).any()]
    lines.append(f"{name}: {int(mask.sum())} labelled ({int(labels.sum())} converters), AUC "
                 f"{'undefined (one class)' if auc is None else f'{auc:.3f}'}, balanced accuracy "
                 f"{np.mean(recall):.3f}")
  return lines


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  return run_command(parser.prog, lambda: predict(args))


def predict(args: argparse.Namespace) -> int:
  from stgnn_jax.trained_run import load_run

  run = load_run(args.run_dir)
  out = Path(args.out or os.path.join(
      args.run_dir, f"predictions_{Path(args.data_root).resolve().name}.csv"))
  if out.exists() and not args.overwrite:
    raise InputError(f"--out {out}: the file exists; pass --overwrite to replace it, or "
                     "another --out.")
  if not out.parent.is_dir():
    raise InputError(f"--out {out}: folder {out.parent} does not exist.")
  cohort = run.read_cohort(args.data_root, input=args.input)
  logger.info("%s", cohort.summary())
  predictions = run.predict_cohort(cohort)
  atomic.write_text(out, table(predictions))
  members = int((predictions.out_of_fold >= 0).sum())
  logger.info("wrote %s: %d subjects (%d of them in the run's cohort), %d folds", out,
              len(predictions.subject_ids), members, len(run.folds))
  if run.subject_ids is None:
    logger.warning("the run's results.json does not list its subjects (an older version): "
                   "no subject is marked as part of its cohort")
  for line in report_metrics(predictions):
    logger.info("%s", line)
  return 0


if __name__ == "__main__":
  sys.exit(main())
