"""In-process smoke test of `stgnn_jax.train.cross_validation.run_cross_validation` on a tiny
run (as flax's examples test their `train_and_evaluate`); the command line is tested in
test_train_cli.py."""

from __future__ import annotations

import csv
import json
import logging

from stgnn_jax.config import ModelConfig, OptimConfig, RunConfig
from stgnn_jax.train import cross_validation

MODEL = ModelConfig(node_features="profile_change", gnn_num_layers=1, graph_norm=False,
                    use_topk_pooling=False, readout="concat", gnn_hidden_dim=16, output_dim=16,
                    lstm_hidden_dim=8, input_dropout=0.5)
OPTIM = OptimConfig(focal_alpha="auto", weight_decay=1e-2, plateau_metric="auc")
RUN = RunConfig(synthetic_subjects=40, synthetic_regions=20, n_epochs=3, num_folds=2,
                batch_size=8, graph_multiple=8, eval_batch_size=8)


def test_run_cross_validation_writes_every_output_and_reads_finished_folds_back(
    tmp_path, caplog, monkeypatch):
  with caplog.at_level(logging.INFO, logger="stgnn_jax"):
    output = cross_validation.run_cross_validation(MODEL, OPTIM, RUN, str(tmp_path),
                                                   progress_bar=False)
  assert {"config.json", "metrics.csv", "results.json", "roc.png", "curves_fold0.png",
          "curves_fold1.png"} <= {p.name for p in tmp_path.iterdir()}
  for k in range(2):
    assert (tmp_path / f"fold_{k}" / "best.msgpack").exists() or \
        output["folds"][k]["best_epoch"] < 0
  assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(output))
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["model"]["input_dim"] == 20  # the atlas size, from the cohort
  with open(tmp_path / "metrics.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == sum(fold["epochs_run"] for fold in output["folds"])
  assert set(output["baselines"]) == {"logreg_fc", "logreg_edges", "logreg_degree"}
  tested = sorted(s for fold in output["folds"] for s in fold["test_subjects"])
  assert tested == list(range(40))  # every subject is tested exactly once
  assert all(0 < fold["focal_alpha"] < 1 for fold in output["folds"])
  assert "fold 1: test acc" in caplog.text and "cross-validation summary" in caplog.text

  # A finished fold is read back, never trained again: the same results.
  def no_training(*args, **kwargs):
    raise AssertionError("a finished fold was trained again")

  monkeypatch.setattr(cross_validation, "train_fold", no_training)
  again = cross_validation.run_cross_validation(MODEL, OPTIM, RUN, str(tmp_path),
                                                progress_bar=False)
  assert json.loads(json.dumps(again)) == json.loads(json.dumps(output))
