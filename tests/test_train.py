"""train.py end to end, in subprocesses: outputs, determinism, resume after SIGKILL, devices."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from bench.torch_reference import SMALL, params_for
from stgnn_jax.data import synthetic
from stgnn_jax.eval.baselines import C_GRID
from stgnn_jax.train.checkpoints import load_checkpoint, save_checkpoint
from tests.helpers import ROOT, reference_model, results_of, run_train, train_command

# A tiny but complete run: one graph bucket and one eval shape keep compilations to a minimum.
SMALL_RUN = ["--synthetic_subjects", "40", "--synthetic_regions", "20", "--gnn_hidden_dim", "16",
             "--lstm_hidden_dim", "8", "--n_epochs", "3", "--num_folds", "2", "--batch_size", "8",
             "--graph_multiple", "48", "--eval_batch_size", "8", "--no_progress"]
SUMMARY = ("test_acc", "balanced_acc", "minority_f1", "test_auc", "train_acc",
           "balanced_train_acc", "ece", "brier", "confidence_mean", "overconfident",
           "ece_calibrated", "brier_calibrated")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, compile_cache):
  out = tmp_path_factory.mktemp("run") / "out"
  save = tmp_path_factory.mktemp("save")
  run_train([*SMALL_RUN, "--out_dir", str(out), "--save_path", str(save)], compile_cache)
  return out, save


def test_outputs_of_a_run(reference_run):
  out, save = reference_run
  config = json.loads((out / "config.json").read_text())
  assert config["model"]["gnn_hidden_dim"] == 16 and config["model"]["input_dim"] == 20
  assert config["optim"]["focal_alpha"] == "auto" and config["run"]["n_epochs"] == 3
  assert config["model"]["node_features"] == "profile_change"

  with open(out / "metrics.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 2 * 3
  for key in ("fold", "epoch", "train_loss", "val_auc", "val_balanced_acc", "lr", "epoch_seconds"):
    assert key in rows[0]
  assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 0, 1, 2]
  assert all(float(r["epoch_seconds"]) > 0 and float(r["lr"]) > 0 for r in rows)

  results = results_of(out)
  assert len(results["folds"]) == 2
  for fold in results["folds"]:
    for key in ("test_acc", "balanced_acc", "minority_f1", "test_auc", "train_acc",
                "balanced_train_acc", "best_epoch", "classification_report",
                "prediction_counts"):
      assert key in fold
    assert 0 <= fold["test_acc"] <= 1
    # auto alpha: the share of stable subjects among the fold's 80% training split
    assert 0.6 < fold["focal_alpha"] < 0.8
    assert fold["decision_threshold"] is None or 0 < fold["decision_threshold"] < 1
    assert set(fold["argmax"]) >= {"test_acc", "balanced_acc", "minority_f1"}
    # The fold's linear path: its C chosen by inner CV on the training subjects.
    path = fold["linear_path"]
    assert path["C"] in C_GRID and len(path["inner_auc"]) == len(C_GRID)
    assert path["inner_auc"][f"{path['C']:g}"] == max(path["inner_auc"].values())
    # With the change since the first visit mixed in by its evidence (the default).
    assert path["C_change"] in C_GRID and 0 < path["change_weight"] < 1
    assert (path["change_weight"] > 0.5) == (path["change_z"] > 0)
    # The gate (--network_gate evidence, the default): the network is tested only on DeLong
    # evidence over the path alone; a split with under two of a class has none.
    gate = fold["network_gate"]
    assert gate["rule"] == "evidence" and gate["tested"] in ("network", "path_alone")
    assert (gate["tested"] == "network") == (gate["z"] is not None and gate["z"] >= 1.645)
    assert (fold["tested"] == "path_alone") == (gate["tested"] == "path_alone")
  assert results["folds_tested_on_the_path_alone"] == [
      f["fold"] for f in results["folds"] if f["tested"] == "path_alone"]
  assert set(results["summary"]) == set(SUMMARY)
  assert (out / "reliability.png").stat().st_size > 0
  for fold in results["folds"]:
    assert 0.5 <= fold["confidence_min"] <= fold["confidence_mean"] <= fold["confidence_max"] <= 1
    assert 0 <= fold["ece"] <= 1 and 0 <= fold["brier"] <= 1 and fold["class_weights"] is None
    # The temperature fitted on the validation subjects (--calibrate temperature, the default).
    assert fold["temperature"] > 0 and 0 <= fold["ece_calibrated"] <= 1
  # The classical baselines ran on exactly the STGNN's test folds.
  assert set(results["baselines"]) == {"logreg_fc", "logreg_edges", "logreg_degree",
                                       "logreg_change"}
  for baseline in results["baselines"].values():
    assert [f["test_subjects"] for f in baseline["folds"]] == [
        f["test_subjects"] for f in results["folds"]]
    assert set(baseline["summary"]) >= {"test_auc", "balanced_acc", "test_acc", "minority_f1"}
  assert all({"mean", "std"} <= set(v) for v in results["summary"].values())

  for k in range(2):
    best = out / f"fold_{k}" / "best.msgpack"
    if results["folds"][k]["best_epoch"] >= 0:
      params, model_config, meta = load_checkpoint(best)
      assert model_config.gnn_hidden_dim == 16 and meta["fold"] == k
      assert set(params) == {"encoder", "classifier", "linear_path"}  # the default's path
      # A fold that tests the path alone saves it: the network's last layer at zero.
      head = [np.asarray(x) for x in jax.tree.leaves(params["classifier"]["head_3"])]
      assert all(not x.any() for x in head) == (results["folds"][k]["tested"] == "path_alone")
      assert (save / f"best_model_fold{k}.msgpack").exists()
    assert (out / f"curves_fold{k}.png").stat().st_size > 1000
  assert (out / "roc.png").stat().st_size > 1000
  assert not list(out.rglob(".tmp-*"))  # atomic writes leave no temporaries


def test_resume_after_sigkill_gives_identical_results(reference_run, tmp_path, compile_cache):
  out = tmp_path / "killed"
  command = train_command(*SMALL_RUN, "--out_dir", str(out), "--save_path", str(tmp_path / "m"),
                          "--compile_cache", compile_cache)
  proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  progress = out / "fold_0" / "progress.msgpack"
  deadline = time.time() + 300
  while not progress.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, ("the run ended before it could be killed: "
                               + proc.stderr.read().decode())
  time.sleep(0.3)  # somewhere inside the next epoch
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (out / "results.json").exists()

  run_train(["--resume", str(out), "--no_progress", "--save_path", str(tmp_path / "m")],
            compile_cache)
  # Same numbers as the uninterrupted run: resume is exact and the run is deterministic.
  assert results_of(out) == results_of(reference_run[0])
  with open(out / "metrics.csv") as f:
    assert len(list(csv.DictReader(f))) == 6


def test_multi_device_run_matches_single_device(reference_run, tmp_path, compile_cache):
  out = tmp_path / "four"
  run_train([*SMALL_RUN, "--out_dir", str(out), "--save_path", str(tmp_path / "m"),
             "--num_devices", "4"], compile_cache,
            env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  one, four = results_of(reference_run[0]), results_of(out)
  for a, b in zip(one["folds"], four["folds"], strict=True):
    assert a["best_epoch"] == b["best_epoch"]
    for key in SUMMARY:
      if a.get(key) is not None:
        assert b[key] == pytest.approx(a[key], abs=1e-4), key
    np.testing.assert_allclose(a["test_p1"], b["test_p1"], atol=1e-4)


def test_early_stop_ends_a_fold_patience_epochs_after_its_best(tmp_path, compile_cache):
  out = tmp_path / "early"
  # --selection auc: the first epoch of the highest validation AUC (the default breaks ties by
  # the validation loss, which keeps falling a little on this easy cohort whose AUC is 1.0 from
  # the first epoch, so its best epoch would keep moving).
  run_train([*SMALL_RUN, "--n_epochs", "12", "--early_stop_patience", "2", "--no-baselines",
             "--selection", "auc",
             "--out_dir", str(out), "--save_path", str(tmp_path / "m")], compile_cache)
  results = results_of(out)
  assert "baselines" not in results
  with open(out / "metrics.csv") as f:
    rows = list(csv.DictReader(f))
  stopped_early = 0
  for fold in results["folds"]:
    epochs = [r for r in rows if int(r["fold"]) == fold["fold"]]
    assert len(epochs) == fold["epochs_run"]
    if fold["epochs_run"] < 12:
      stopped_early += 1
      assert "early stop" in fold["stopped"]
      assert fold["epochs_run"] - 1 - fold["best_epoch"] == 2
  assert stopped_early  # the small cohort's validation AUC does stall within 12 epochs


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written, no user file lost.

def train_fails(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
  """Runs train.py expecting a user error: status 2 and a one-line message, no traceback."""
  result = subprocess.run(train_command(*args), cwd=cwd, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
  errors = [line for line in result.stderr.splitlines() if "error:" in line]
  assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
  return result


def test_write_synthetic_never_overwrites_an_earlier_cohort_without_the_flag(tmp_path):
  root = tmp_path / "cohort"
  root.mkdir()
  (root / "TADPOLE_TEMPORAL.csv").write_text("the user's own table\n")
  tiny = ["--synthetic_subjects", "20", "--synthetic_regions", "10"]
  result = train_fails(*tiny, "--write_synthetic", str(root))
  assert "already holds a cohort (TADPOLE_TEMPORAL.csv)" in result.stderr
  assert "--overwrite" in result.stderr
  assert (root / "TADPOLE_TEMPORAL.csv").read_text() == "the user's own table\n"
  assert not (root / "FC_Matrices").exists()
  subprocess.run(train_command(*tiny, "--write_synthetic", str(root), "--overwrite"), cwd=ROOT,
                 check=True, capture_output=True, timeout=300)
  assert (root / "TADPOLE_TEMPORAL.csv").read_text().startswith("Subject,Visit,")
  # Files are written with the umask's permissions, not mkstemp's private 0600.
  umask = os.umask(0)
  os.umask(umask)
  assert (root / "TADPOLE_TEMPORAL.csv").stat().st_mode & 0o777 == 0o666 & ~umask


def test_output_locations_are_checked_before_any_work(tmp_path):
  not_a_folder = tmp_path / "file"
  not_a_folder.write_text("x")
  out = tmp_path / "out"
  result = train_fails("--save_path", str(not_a_folder), "--out_dir", str(out))
  assert f"--save_path {not_a_folder}: exists and is not a folder" in result.stderr
  assert not out.exists()
  result = train_fails("--out_dir", str(not_a_folder))
  assert "--out_dir" in result.stderr and "not a folder" in result.stderr
  save = tmp_path / "save"
  save.mkdir()
  (save / "best_model_fold0.msgpack").write_bytes(b"an earlier run's")
  result = train_fails("--save_path", str(save), "--out_dir", str(out))
  assert "already holds best_model_fold0.msgpack" in result.stderr and not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--layer_type", "GIN"], "invalid choice: 'GIN'"),
    (["--topk_ratio", "1.5"], "topk_ratio"),
    (["--n_epochs", "-1"], "n_epochs=-1"),
    (["--focal_alpha", "2"], "focal_alpha=2.0"),
    (["--use_topk_pooling", "maybe"], "expected true or false"),
    (["--num_folds", "1"], "num_folds=1"),
    (["--resume", "/nonexistent/run"], "no config.json"),
    (["--lr", "inf"], "OptimConfig.lr=inf must be positive and finite"),
    (["--focal_gamma", "inf"], "OptimConfig.focal_gamma=inf must be finite"),
    (["--seed", "-1"], "RunConfig.seed=-1 must lie in [0, 2**32 - num_folds)"),
    (["--seed", str(2**32)], "RunConfig.seed=4294967296"),
    (["--num_devices", "64"], "--num_devices 64 but only"),
    (["--synthetic_subjects", "8", "--num_folds", "2"], "the stratified 80/20 validation split"),
    (["--pretrained", "/nonexistent/encoder.msgpack"], "does not exist"),
    (["--gamma_schedule", "2@5,3@10"], "the stages must start at epoch 0 and their epochs "
     "increase; expected VALUE@EPOCH pairs"),
    (["--gamma_schedule", "1@0,3@20,2@10"], "expected VALUE@EPOCH pairs from epoch 0 on"),
    (["--gamma_schedule=-1@0"], "value -1 outside [0, inf)"),
    (["--gamma_schedule", "-1@0"], "value -1 outside [0, inf)"),
    (["--smoothing_schedule", "0@0,1.5@10"], "value 1.5 outside [0, 1]"),
    (["--gamma_schedule", "one@0"], "is not a schedule; expected VALUE@EPOCH"),
    (["--n_epochs", "50", "--gamma_schedule", "1@0,2@20,3@60"], "its stage at epoch 60 starts "
     "after the last epoch (n_epochs=50 trains epochs 0-49)"),
    (["--sweep_chunk", "4"], "RunConfig.sweep_chunk=4 applies to a sweep"),
    (["--loss", "weighted_ce", "--class_weights", "1,2,3"], "needs one finite weight >= 0 per "
     "class (2: stable, converter)"),
    (["--loss", "weighted_ce", "--class_weights=-1,2"], "needs one finite weight >= 0"),
    (["--loss", "weighted_ce", "--class_weights", "-1,2"], "needs one finite weight >= 0"),
    (["--class_weights", "1,x"], "expected one weight per class, e.g. 1,3"),
])
def test_bad_settings_stop_with_one_line_before_the_run_folder_is_written(args, message,
                                                                         tmp_path):
  out = tmp_path / "out"
  result = train_fails(*args, "--out_dir", str(out), "--save_path", str(tmp_path / "save"),
                       "--no_progress")
  assert message in result.stderr
  assert not out.exists()


def test_data_errors_are_one_line_naming_the_file(tmp_path):

  root = tmp_path / "cohort"
  synthetic.write_synthetic(root, num_subjects=20, num_regions=10, seed=0)
  scan = sorted((root / "FC_Matrices").iterdir())[3]
  raw = bytearray(scan.read_bytes())
  raw[len(raw) // 2:len(raw) // 2 + 40] = b"\x00" * 40  # damage the compressed stream
  scan.write_bytes(bytes(raw))
  result = train_fails("--data_root", str(root), "--out_dir", str(tmp_path / "out"),
                       "--save_path", str(tmp_path / "save"))
  assert scan.name in result.stderr


def test_resume_names_a_damaged_config_and_warns_about_ignored_flags(tmp_path, reference_run,
                                                                      compile_cache):
  run_dir = tmp_path / "damaged"
  run_dir.mkdir()
  (run_dir / "config.json").write_bytes(b"\xff\xfe not json")
  result = train_fails("--resume", str(run_dir))
  assert f"{run_dir / 'config.json'}: not a readable run configuration" in result.stderr
  out, save = reference_run
  copy = tmp_path / "copy"
  shutil.copytree(out, copy)
  result = run_train(["--resume", str(copy), "--lr", "0.5", "--save_path",
                      str(tmp_path / "save2")], compile_cache)
  assert "ignoring --lr" in result.stdout + result.stderr


def test_a_pretrained_encoder_that_does_not_fit_is_refused_before_the_run_folder(tmp_path):

  path = tmp_path / "encoder.msgpack"  # a 24-region encoder, for the run's 20-region cohort
  save_checkpoint(path, {"encoder": params_for(reference_model(**SMALL))["encoder"]},
                  reference_model(**SMALL))
  out = tmp_path / "out"
  result = train_fails(*SMALL_RUN, "--node_features", "onehot", "--gnn_num_layers", "2",
                       "--graph_norm", "true", "--use_topk_pooling", "true", "--readout",
                       "meanmax", "--input_dropout", "0", "--no-linear_path", "--pretrained",
                       str(path), "--out_dir", str(out), "--save_path", str(tmp_path / "save"))
  assert "the pretrained encoder does not fit this model" in result.stderr
  assert not out.exists()


def test_the_main_command_runs_twice_in_the_same_folder(tmp_path, compile_cache):
  # Without --out_dir and --save_path, as the README shows it: each run gets its own folder and
  # keeps its checkpoints there (nothing is copied into ./model/ unless --save_path asks).
  for _ in range(2):
    result = subprocess.run(train_command(*SMALL_RUN, "--n_epochs", "1", "--compile_cache",
                                          compile_cache), cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  runs = sorted((tmp_path / "runs").iterdir())
  assert len(runs) == 2 and all((run / "results.json").is_file() for run in runs)
  assert all((run / "fold_1" / "best.msgpack").is_file() for run in runs)
  assert not (tmp_path / "model").exists()


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(reference_run, tmp_path):
  out, _ = reference_run
  result = train_fails(*SMALL_RUN, "--out_dir", str(out))
  assert (f"--out_dir {out} already holds a finished run; continue it with `python train.py "
          f"--resume {out}`") in result.stderr
  unfinished = tmp_path / "unfinished"
  shutil.copytree(out, unfinished)
  (unfinished / "results.json").unlink()
  (unfinished / "fold_1" / "result.json").unlink()
  result = train_fails(*SMALL_RUN, "--out_dir", str(unfinished), "--lr", "0.01")
  assert "already holds a run (1 fold(s) finished)" in result.stderr


def test_resume_copies_into_the_save_path_the_run_started_with(reference_run, tmp_path,
                                                               compile_cache):
  out, save = reference_run
  copy, work = tmp_path / "copy", tmp_path / "cwd"
  shutil.copytree(out, copy)
  work.mkdir()
  assert json.loads((copy / "outputs.json").read_text()) == {"save_path": str(save)}
  (copy / "outputs.json").write_text(json.dumps({"save_path": str(tmp_path / "kept")}))
  (copy / "results.json").unlink()
  (copy / "fold_1" / "result.json").unlink()  # fold 1 is trained again from its progress
  result = subprocess.run(train_command("--resume", str(copy), "--no_progress", "--compile_cache",
                                        compile_cache), cwd=work, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == [
      "best_model_fold0.msgpack", "best_model_fold1.msgpack"]
  assert not (work / "model").exists()


def test_ctrl_c_is_one_line_that_says_how_to_resume(tmp_path, compile_cache):
  out = tmp_path / "out"
  proc = subprocess.Popen(train_command(*SMALL_RUN, "--n_epochs", "50", "--out_dir", str(out),
                                        "--compile_cache", compile_cache),
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while not (out / "metrics.csv").exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be interrupted: " + proc.stderr.read()
  proc.send_signal(signal.SIGINT)
  stderr = proc.communicate(timeout=120)[1]
  assert proc.returncode == 130, stderr
  assert "Traceback" not in stderr and stderr.strip().splitlines() == [
      f"train.py: interrupted: {out} keeps every finished fold and the last saved epoch; "
      f"continue with `python train.py --resume {out}`"], stderr
  assert (out / "fold_0" / "progress.msgpack").is_file()
