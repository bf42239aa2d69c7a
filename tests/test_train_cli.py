"""train.py end to end, in subprocesses: outputs, determinism, resume after SIGKILL, devices."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stgnn_jax.train.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# A tiny but complete run: one graph bucket and one eval shape keep compilations to a minimum.
SMALL_RUN = ["--synthetic_subjects", "40", "--synthetic_regions", "20", "--gnn_hidden_dim", "16",
             "--lstm_hidden_dim", "8", "--n_epochs", "3", "--num_folds", "2", "--batch_size", "8",
             "--graph_multiple", "48", "--eval_batch_size", "8", "--no_progress"]
SUMMARY = ("test_acc", "balanced_acc", "minority_f1", "test_auc", "train_acc",
           "balanced_train_acc")


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("xla_cache"))


def train_command(*args: str) -> list[str]:
  return [sys.executable, str(ROOT / "train.py"), *args]


def run_train(args, cache, env=None, timeout=600) -> subprocess.CompletedProcess:
  full_env = dict(os.environ, **(env or {}))
  result = subprocess.run(train_command(*args, "--compile_cache", cache), cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result


def results_of(out_dir: Path) -> dict:
  return json.loads((out_dir / "results.json").read_text())


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
  assert set(results["summary"]) == set(SUMMARY)
  # The classical baselines ran on exactly the STGNN's test folds.
  assert set(results["baselines"]) == {"logreg_fc", "logreg_edges", "logreg_degree"}
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
      assert set(params) == {"encoder", "classifier"}
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
  assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()
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
  for a, b in zip(one["folds"], four["folds"]):
    assert a["best_epoch"] == b["best_epoch"]
    for key in SUMMARY:
      if a[key] is not None:
        assert b[key] == pytest.approx(a[key], abs=1e-4), key
    np.testing.assert_allclose(a["test_p1"], b["test_p1"], atol=1e-4)


@pytest.mark.parametrize("args,message", [
    (["--layer_type", "GIN"], "invalid choice: 'GIN'"),
    (["--topk_ratio", "1.5"], "topk_ratio"),
    (["--n_epochs", "-1"], "n_epochs=-1"),
    (["--focal_alpha", "2"], "focal_alpha=2.0"),
    (["--use_topk_pooling", "maybe"], "expected true or false"),
    (["--num_folds", "1"], "num_folds=1"),
    (["--resume", "/nonexistent/run"], "no config.json"),
])
def test_invalid_flags_stop_before_any_work(args, message, tmp_path):
  result = subprocess.run(train_command(*args, "--out_dir", str(tmp_path / "x")), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert message in result.stderr
  assert not (tmp_path / "x").exists()


def test_early_stop_ends_a_fold_patience_epochs_after_its_best(tmp_path, compile_cache):
  out = tmp_path / "early"
  run_train([*SMALL_RUN, "--n_epochs", "12", "--early_stop_patience", "2", "--no-baselines", "--out_dir", str(out),
             "--save_path", str(tmp_path / "m")], compile_cache)
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
