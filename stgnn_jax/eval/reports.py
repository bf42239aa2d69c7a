"""A run's reports: training curves and ROC curves (PNG), metrics.csv and the printed summary."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from stgnn_jax import atomic


def _figure_bytes(fig) -> bytes:
  import matplotlib.pyplot as plt

  buffer = io.BytesIO()
  # Figures use the constrained layout: bbox_inches="tight" would render each one twice.
  fig.savefig(buffer, format="png", dpi=110)
  plt.close(fig)
  return buffer.getvalue()


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")  # files only; never needs a display
  import matplotlib.pyplot as plt

  return plt


def plot_training_curves(out_dir: str, histories: Sequence[Sequence[dict[str, Any]]]) -> list[str]:
  """`curves_fold{k}.png`: training loss, validation AUC and balanced accuracy, learning rate."""
  plt = _pyplot()
  paths = []
  for k, history in enumerate(histories):
    if not history:
      continue
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    axes[0].plot(epochs, [row["train_loss"] for row in history], label="train")
    axes[0].plot(epochs, [row["val_loss"] for row in history], label="validation")
    axes[0].set_title("focal loss")
    axes[0].legend()
    auc = [np.nan if row["val_auc"] is None else row["val_auc"] for row in history]
    axes[1].plot(epochs, auc, label="AUC")
    axes[1].plot(epochs, [row["val_balanced_acc"] for row in history], label="balanced acc")
    axes[1].set_title("validation")
    axes[1].set_ylim(0, 1.02)
    axes[1].legend()
    axes[2].plot(epochs, [row["lr"] for row in history])
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    for ax in axes:
      ax.set_xlabel("epoch")
      ax.grid(alpha=0.3)
    fig.suptitle(f"fold {k}")
    path = os.path.join(out_dir, f"curves_fold{k}.png")
    atomic.write_bytes(path, _figure_bytes(fig))
    paths.append(path)
  return paths


def plot_roc_curves(out_dir: str, folds: Sequence[dict[str, Any]], labels: np.ndarray,
                    baselines: dict[str, dict[str, Any]] | None = None) -> str:
  """`roc.png`: each test fold's ROC curve (scikit-learn's `roc_curve`) with its AUC; with
  `baselines` (`baselines.run_baselines`), a second panel of the ROC curves of the test folds'
  pooled predictions, the STGNN beside each baseline."""
  from sklearn.metrics import roc_auc_score, roc_curve

  plt = _pyplot()
  fig, axes = plt.subplots(1, 2 if baselines else 1, figsize=(10 if baselines else 5, 5),
                           layout="constrained", squeeze=False)
  ax = axes[0, 0]
  for fold in folds:
    y = labels[np.asarray(fold["test_subjects"], int)]
    if len(np.unique(y)) < 2 or fold.get("test_p1") is None:
      continue  # ROC undefined with one class, or without (finite) predictions
    fpr, tpr, _ = roc_curve(y, fold["test_p1"])
    ax.plot(fpr, tpr, label=f"fold {fold['fold']} (AUC {fold['test_auc']:.3f})")
  _label_roc_axes(ax, "test ROC per fold")
  if baselines:
    ax = axes[0, 1]
    models = {"STGNN": folds}
    models.update({name: b["folds"] for name, b in baselines.items()})
    for name, model_folds in models.items():
      defined = [f for f in model_folds if f.get("test_p1") is not None]
      if not defined:
        continue
      y = labels[np.concatenate([np.asarray(f["test_subjects"], int) for f in defined])]
      p = np.concatenate([np.asarray(f["test_p1"], float) for f in defined])
      if len(np.unique(y)) < 2:
        continue
      fpr, tpr, _ = roc_curve(y, p)
      ax.plot(fpr, tpr, label=f"{name} (pooled AUC {roc_auc_score(y, p):.3f})")
    _label_roc_axes(ax, "all test folds pooled: STGNN vs baselines")
  path = os.path.join(out_dir, "roc.png")
  atomic.write_bytes(path, _figure_bytes(fig))
  return path


def _label_roc_axes(ax, title: str) -> None:
  ax.plot([0, 1], [0, 1], "k--", lw=0.8)
  ax.set_xlabel("false positive rate")
  ax.set_ylabel("true positive rate")
  ax.set_title(title)
  ax.legend(loc="lower right", fontsize=8)


def plot_reliability(out_dir: str, folds: Sequence[dict[str, Any]], labels: np.ndarray,
                     bins: int = 10) -> str | None:
  """`reliability.png`: the reliability diagram of every fold's test predictions pooled
  (accuracy against mean confidence per confidence bin, `metrics.reliability_bins`), with the
  number of predictions per bin; None when no fold has predictions."""
  from stgnn_jax.eval import metrics as metrics_lib

  defined = [f for f in folds if f.get("test_p1") is not None]
  if not defined:
    return None
  y = labels[np.concatenate([np.asarray(f["test_subjects"], int) for f in defined])]
  p1 = np.concatenate([np.asarray(f["test_p1"], float) for f in defined])
  table = metrics_lib.reliability_bins(y, p1, bins)
  ece = metrics_lib.calibration(y, p1, bins=bins)["ece"]
  plt = _pyplot()
  fig, (ax, counts) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True,
                                   layout="constrained")
  edges = np.linspace(0, 1, bins + 1)
  filled = table["count"] > 0
  ax.bar(edges[:-1][filled], table["accuracy"][filled], width=1 / bins, align="edge",
         edgecolor="black", label="accuracy")
  ax.plot(table["confidence"][filled], table["accuracy"][filled], "o", color="C1",
          label="mean confidence")
  ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
  ax.set_ylabel("accuracy of the predicted class")
  ax.set_title(f"test predictions, all folds (ECE {ece:.3f})")
  ax.legend(loc="upper left", fontsize=8)
  counts.bar(edges[:-1], table["count"], width=1 / bins, align="edge", edgecolor="black")
  counts.set_xlabel("confidence (probability of the predicted class)")
  counts.set_ylabel("predictions")
  path = os.path.join(out_dir, "reliability.png")
  atomic.write_bytes(path, _figure_bytes(fig))
  return path


METRICS_COLUMNS = ("fold", "epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                   "val_balanced_acc", "val_auc", "val_threshold", "lr", "epoch_seconds")


def write_metrics_csv(out_dir: str, histories: Sequence[Sequence[dict[str, Any]]]) -> None:
  """metrics.csv: one row per epoch of each history; a sweep's rows (with a "member" key) lead
  with the member's name."""
  rows = [row for history in histories for row in history]
  columns = (("member",) if rows and "member" in rows[0] else ()) + METRICS_COLUMNS
  atomic.write_text(os.path.join(out_dir, "metrics.csv"), _csv(columns, rows))


def _csv(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: ("" if row[k] is None else row[k]) for k in columns})
  return buffer.getvalue()


def format_summary(summary: dict[str, dict[str, Any]],
                   baselines: dict[str, dict[str, Any]] | None = None, *,
                   last_epoch_folds: Sequence[int] = ()) -> str:
  """The STGNN's mean ± std over folds, with the classical baselines' in columns beside it, and
  a note naming the folds whose model is their last epoch's (none could be selected)."""
  columns = {"STGNN": summary}
  columns.update({name: b["summary"] for name, b in (baselines or {}).items()})
  lines = ["cross-validation summary (mean ± std over folds; baselines: logistic regressions on "
           "the last scan, logreg_change also on its change since the first):" if baselines
           else "cross-validation summary (mean ± std over folds):",
           " " * 22 + "".join(f"{name:>17}" for name in columns)]
  for key in summary:
    if summary[key]["n"] == 0 and not any(key in c for c in list(columns.values())[1:]):
      continue  # e.g. the calibrated scores of a run without --calibrate
    cells = []
    for column in columns.values():
      value = column.get(key)
      if value is None:
        cells.append("")
      elif value["mean"] is None:
        cells.append("undefined")
      else:
        cells.append(f"{value['mean']:.4f} ± {value['std']:.4f}")
    lines.append(f"  {key:>20}" + "".join(f"{cell:>17}" for cell in cells))
  if last_epoch_folds:
    lines.append(f"  note: fold(s) {', '.join(map(str, last_epoch_folds))}: no epoch predicted "
                 "both validation classes, so none was selected; the STGNN column counts their "
                 "last epoch's model (tested and checkpointed like the others) in every mean.")
  return "\n".join(lines)


def format_value(value: float | None) -> str:
  """A metric to 3 decimals, or \"undefined\"."""
  return "undefined" if value is None else f"{value:.3f}"


SWEEP_METRICS = ("test_acc", "balanced_acc", "minority_f1", "test_auc", "train_acc",
                 "balanced_train_acc")


def write_sweep_csv(out_dir: str, sweep: dict[str, Any]) -> str:
  """sweep.csv: one row per member: its overrides, mean validation AUC and balanced accuracy
  (what selects), the mean and std over folds of the summary metrics (test metrics: context,
  not used to select)."""
  members = sweep["members"]
  names = list(members[0]["overrides"])
  columns = (["member", *names, "selected", "mean_val_auc", "mean_val_balanced_acc"]
             + [f"{key}_{stat}" for key in SWEEP_METRICS for stat in ("mean", "std")])
  rows = []
  for member in members:
    row = {"member": member["name"], **member["overrides"],
           "selected": member["name"] == sweep["selected"]["name"],
           "mean_val_auc": member["mean_val_auc"],
           "mean_val_balanced_acc": member["mean_val_balanced_acc"]}
    for key in SWEEP_METRICS:
      for stat in ("mean", "std"):
        row[f"{key}_{stat}"] = member["summary"][key][stat]
    rows.append(row)
  path = os.path.join(out_dir, "sweep.csv")
  atomic.write_text(path, _csv(columns, rows))
  return path


def plot_sweep_heatmap(out_dir: str, sweep: dict[str, Any],
                       axes: Sequence[tuple[str, Sequence[Any]]]) -> str:
  """sweep_heatmap.png: mean validation AUC (top row, what selects) and mean test AUC (bottom
  row) over the first two swept settings (α × γ when both are swept), one panel per value of
  a third; members that differ only in further settings are averaged."""
  plt = _pyplot()
  axes = list(axes)
  preferred = [a for a in axes if a[0] in ("focal_alpha", "focal_gamma")]
  axes = preferred + [a for a in axes if a not in preferred]
  (row_name, row_values), (col_name, col_values) = (axes + [("", (None,))] * 2)[:2]
  panel_name, panel_values = axes[2] if len(axes) > 2 else ("", (None,))
  grids: dict[str, list[np.ndarray]] = {"mean_val_auc": [], "test_auc": []}
  for panel in panel_values:
    for key, grid in grids.items():
      table = np.full((len(row_values), len(col_values)), np.nan)
      for i, r in enumerate(row_values):
        for j, c in enumerate(col_values):
          wanted = {row_name: r, col_name: c, panel_name: panel}
          member_values = [_member_value(m, key) for m in sweep["members"]
                           if all(m["overrides"].get(n) == v for n, v in wanted.items() if n)]
          values = [v for v in member_values if v is not None]
          table[i, j] = np.mean(values) if values else np.nan
      grid.append(table)
  # The colours span this grid's range (an easy cohort puts every member near 1); the numbers
  # in the cells are the values.
  finite = [v for g in grids.values() for t in g for v in t.ravel() if not np.isnan(v)] or [0.5]
  low, high = min(finite), max(max(finite), min(finite) + 1e-3)
  fig, panels = plt.subplots(2, len(panel_values), squeeze=False, layout="constrained",
                             figsize=(3.2 * len(panel_values) + 1, 6))
  for p, panel in enumerate(panel_values):
    for row, (key, label) in enumerate((("mean_val_auc", "validation AUC (selects)"),
                                        ("test_auc", "test AUC (not used to select)"))):
      ax = panels[row][p]
      image = ax.imshow(grids[key][p], vmin=low, vmax=high, cmap="viridis", aspect="auto")
      for (i, j), value in np.ndenumerate(grids[key][p]):
        if not np.isnan(value):
          ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7,
                  color="white" if value < (low + high) / 2 else "black")
      ax.set_xticks(range(len(col_values)), [str(v) for v in col_values])
      ax.set_yticks(range(len(row_values)), [str(v) for v in row_values])
      ax.set_xlabel(col_name)
      ax.set_ylabel(row_name)
      ax.set_title(f"{label}" + (f"\n{panel_name}={panel}" if panel_name else ""), fontsize=9)
  fig.colorbar(image, ax=panels, shrink=0.6, label="mean AUC over folds")
  fig.suptitle(f"sweep: {len(sweep['members'])} members; selected {sweep['selected']['name']}",
               fontsize=9)
  path = os.path.join(out_dir, "sweep_heatmap.png")
  atomic.write_bytes(path, _figure_bytes(fig))
  return path


def _member_value(member: dict[str, Any], key: str) -> float | None:
  return member[key] if key == "mean_val_auc" else member["summary"][key]["mean"]
