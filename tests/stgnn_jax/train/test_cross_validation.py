"""In-process smoke test of `stgnn_jax.train.cross_validation.run_cross_validation` on a tiny
run (as flax's examples test their `train_and_evaluate`); the command line is tested in
tests/test_train.py."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import re

import pytest

from stgnn_jax import atomic
from stgnn_jax.config import ModelConfig, OptimConfig, RunConfig
from stgnn_jax.config.differences import config_differences
from stgnn_jax.errors import ConfigError, RunStateError
from stgnn_jax.train import cross_validation

# The default recipe, smaller, without the linear path, at the reference's learning rate.
MODEL = ModelConfig(gnn_hidden_dim=16, output_dim=16, lstm_hidden_dim=8, linear_path=False)
OPTIM = OptimConfig(lr=1e-3)
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
  assert set(output["baselines"]) == {"logreg_fc", "logreg_edges", "logreg_degree",
                                      "logreg_change"}
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


def test_resume_refuses_a_changed_cohort_and_names_damaged_files(tmp_path):
  from stgnn_jax.data import synthetic

  root = tmp_path / "cohort"
  synthetic.write_synthetic(root, num_subjects=40, num_regions=20, seed=3)
  run = dataclasses.replace(RUN, data_root=str(root))
  out = tmp_path / "run"
  cross_validation.run_cross_validation(MODEL, OPTIM, run, str(out), progress_bar=False)
  assert json.loads((out / "data.json").read_text())["fingerprint"]["labels"]

  # A temporary file of a killed write is removed; a damaged fold result is named.
  stale = out / "fold_0" / (atomic.TEMP_PREFIX + "progress.msgpack1234")
  stale.write_bytes(b"half a file")
  result = out / "fold_1" / "result.json"
  intact = result.read_bytes()
  result.write_text('{"result": ')
  with pytest.raises(RunStateError, match=re.escape(f"{result}: not readable")):
    cross_validation.run_cross_validation(MODEL, OPTIM, run, str(out), progress_bar=False)
  assert not stale.exists()
  result.write_bytes(intact)

  # A stable subject relabelled a converter on disk after the folds were trained: refused,
  # saying what changed.
  table = root / "TADPOLE_TEMPORAL.csv"
  lines = table.read_text().splitlines()
  header = lines[0].split(",")
  label, subject = header.index("Label_CS_Num"), header.index("Subject")
  rows = [line.split(",") for line in lines[1:]]
  stable = next(row[subject] for row in rows
                if all(other[label] == "0" for other in rows if other[subject] == row[subject]))
  relabelled = [lines[0]] + [",".join("1" if i == label and row[subject] == stable else f
                                      for i, f in enumerate(row)) for row in rows]
  table.write_text("\n".join(relabelled) + "\n")
  with pytest.raises(RunStateError, match="the cohort differs from the one this run was trained "
                     r"on \(its labels changed"):
    cross_validation.run_cross_validation(MODEL, OPTIM, run, str(out), progress_bar=False)


def test_the_difference_of_two_configurations_names_each_flag_with_both_values():
  saved = {"model": {"gnn_hidden_dim": 16, "input_dim": 20},
           "optim": {"lr": 0.001, "focal_alpha": "auto"},
           "run": {"sweep": [], "sweep_chunk": 2, "data_root": None}}
  now = {"model": {"gnn_hidden_dim": 16, "input_dim": 30},
         "optim": {"lr": 0.01, "focal_alpha": "auto"},
         "run": {"sweep": ["lr=1,2"], "sweep_chunk": 4, "data_root": "/data"}}
  assert config_differences(saved, now, ("saved", "now"), ignore=("sweep_chunk",)) == [
      "ModelConfig.input_dim: 20 (saved) vs 30 (now)",
      "--lr: 0.001 (saved) vs 0.01 (now)",
      '--sweep: [] (saved) vs ["lr=1,2"] (now)',
      "--data_root: unset (saved) vs /data (now)"]
  # A field one side lacks (a configuration of another version) is named too.
  assert config_differences({"run": {"seed": 1}}, {"run": {}}, ("a", "b")) == [
      "--seed: 1 (a) vs absent (b)"]
  assert config_differences(now, now, ("a", "b")) == []


def test_a_folder_in_progress_refuses_other_settings_naming_each_with_both_values(tmp_path):
  cohort = cross_validation.load_data(RUN)
  swept = dataclasses.replace(RUN, sweep=("focal_gamma=1,2",))  # --sweep_chunk needs a sweep
  cross_validation.prepare_run_dir(str(tmp_path), MODEL, OPTIM, swept, cohort)
  (tmp_path / "fold_0").mkdir()
  (tmp_path / "fold_0" / "progress.msgpack").write_bytes(b"")  # a trained epoch
  with pytest.raises(RunStateError) as refused:
    cross_validation.prepare_run_dir(str(tmp_path), MODEL, dataclasses.replace(OPTIM, lr=0.01),
                                     dataclasses.replace(swept, n_epochs=5), cohort)
  message = str(refused.value)
  assert "holds a different configuration: --lr: 0.001 (saved) vs 0.01 (now), --n_epochs: 3 " \
      "(saved) vs 5 (now);" in message
  assert "\n" not in message  # train.py prints it as one line
  assert json.loads((tmp_path / "config.json").read_text())["optim"]["lr"] == 0.001
  # A setting that does not change the results is taken, and config.json records it...
  cross_validation.prepare_run_dir(str(tmp_path), MODEL, OPTIM,
                                   dataclasses.replace(swept, sweep_chunk=4), cohort)
  assert json.loads((tmp_path / "config.json").read_text())["run"]["sweep_chunk"] == 4
  # ...unless a sweep of an earlier version (no chunks.json) would not find its chunks again.
  chunk = tmp_path / "fold_0" / "sweep" / "chunk_0"
  chunk.mkdir(parents=True)
  (chunk / "progress.msgpack").write_bytes(b"")
  with pytest.raises(RunStateError, match=r"--sweep_chunk: 4 \(saved\) vs 2 \(now\);"):
    cross_validation.prepare_run_dir(str(tmp_path), MODEL, OPTIM,
                                     dataclasses.replace(swept, sweep_chunk=2), cohort)


def test_a_diverging_fold_stops_cleanly_and_the_run_still_reports(tmp_path):
  out = tmp_path / "run"
  out.mkdir()
  # A folder whose set-up failed earlier (config.json, nothing trained) is simply reused.
  (out / "config.json").write_text('{"model": {}, "optim": {}, "run": {}}')
  output = cross_validation.run_cross_validation(
      MODEL, dataclasses.replace(OPTIM, lr=1e30), RUN, str(out), progress_bar=False)
  for fold in output["folds"]:
    assert "non-finite" in fold["stopped"] and fold["epochs_run"] == 0
  assert (out / "results.json").exists() and (out / "roc.png").exists()
  assert json.loads((out / "config.json").read_text())["optim"]["lr"] == 1e30


@pytest.mark.parametrize("schedule", ["gamma_schedule", "smoothing_schedule"])
def test_a_schedule_stage_after_the_last_epoch_is_refused_before_any_file(tmp_path, schedule):
  optim = dataclasses.replace(OPTIM, **{schedule: "0@0,0.1@2,0.2@3"})  # RUN: epochs 0, 1, 2
  with pytest.raises(ConfigError, match=re.escape(
      f"OptimConfig.{schedule}='0@0,0.1@2,0.2@3': its stage at epoch 3 starts after the last "
      "epoch (n_epochs=3 trains epochs 0-2)")):
    cross_validation.run_cross_validation(MODEL, optim, RUN, str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()
  # A stage at the last epoch runs.
  cross_validation.prepare_run(MODEL, dataclasses.replace(OPTIM, **{schedule: "0@0,0.1@2"}), RUN)


def test_slots_are_sized_by_the_data_not_by_a_flag_far_beyond_it():
  from stgnn_jax.data import synthetic

  cohort = synthetic.synthetic_cohort(num_subjects=30, num_regions=10, seed=0)
  longest = max(s.num_visits for s in cohort.subjects)
  run = dataclasses.replace(RUN, max_visits=100_000, batch_size=4096, eval_batch_size=64)
  sized = cross_validation.size_by_data(run, cohort, num_devices=4)
  assert (sized.max_visits, sized.batch_size, sized.eval_batch_size) == (longest, 32, 32)
  fits = dataclasses.replace(RUN, max_visits=longest)
  assert cross_validation.size_by_data(fits, cohort, num_devices=1) == fits


def test_a_fold_without_a_selectable_epoch_is_marked_checkpointed_and_counted(
    tmp_path, caplog, monkeypatch):
  from stgnn_jax.train import loop
  from stgnn_jax.train.checkpoints import load_checkpoint

  # No epoch predicts both validation classes: nothing can be selected in either fold.
  monkeypatch.setattr(loop, "predicts_both_classes", lambda result: False)
  with caplog.at_level(logging.INFO, logger="stgnn_jax"):
    output = cross_validation.run_cross_validation(MODEL, OPTIM, RUN, str(tmp_path),
                                                   progress_bar=False)
  assert output["folds_tested_at_last_epoch"] == [0, 1]
  for fold in output["folds"]:
    assert fold["tested"] == "last_epoch" and fold["best_epoch"] == -1
    _, _, metadata = load_checkpoint(tmp_path / f"fold_{fold['fold']}" / "best.msgpack")
    assert metadata["tested"] == "last_epoch" and metadata["epoch"] == RUN.n_epochs - 1
  # The folds count in the means, and the printed summary says so.
  aucs = [fold["test_auc"] for fold in output["folds"]]
  assert output["summary"]["test_auc"]["mean"] == pytest.approx(sum(aucs) / 2)
  assert "note: fold(s) 0, 1: no epoch predicted both validation classes" in caplog.text
  assert "no epoch selected: the last epoch's model" in caplog.text
