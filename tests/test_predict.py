"""predict.py and `trained_run.load_run` on a finished train.py run: the run's own test
probabilities reproduced, new subjects (labelled or not), bad input in one line."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from stgnn_jax.data import synthetic
from stgnn_jax.eval import calibration
from stgnn_jax.trained_run import load_run
from tests.helpers import ROOT, results_of, run_train

RUN = ["--gnn_hidden_dim", "16", "--lstm_hidden_dim", "8", "--n_epochs", "3", "--num_folds", "3",
       "--batch_size", "8", "--graph_multiple", "48", "--eval_batch_size", "16",
       "--no_progress"]


def predict_command(*args: str) -> list[str]:
  return [sys.executable, str(ROOT / "predict.py"), *args]


def run_predict(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(predict_command(*args), cwd=ROOT, capture_output=True, text=True,
                        timeout=300)


def read_csv(path) -> list[dict[str, str]]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, compile_cache):
  """A 3-fold run on a written synthetic cohort (45 subjects, 20 regions), and a folder of 12
  new subjects of the same atlas."""
  root = tmp_path_factory.mktemp("predict")
  synthetic.write_synthetic(root / "data", num_subjects=45, num_regions=20, seed=3)
  synthetic.write_synthetic(root / "new", num_subjects=12, num_regions=20, seed=4)
  run_train(["--data_root", str(root / "data"), *RUN, "--out_dir", str(root / "run"),
             "--save_path", str(root / "save")], compile_cache)
  return root


def calibrated(p, temperature):
  z = np.log(p) - np.log1p(-p)
  return calibration.calibrated_p1(np.stack([np.zeros_like(z), z], axis=-1), temperature)


def test_the_runs_own_test_probabilities_are_reproduced(finished_run):
  root = finished_run
  results = results_of(root / "run")
  run = load_run(root / "run")
  predictions = run.predict_cohort(run.read_cohort(root / "data"))
  assert predictions.subject_ids == tuple(results["subject_ids"])
  for fold in results["folds"]:
    test = np.asarray(fold["test_subjects"])
    model_p1 = 1 / (1 + np.exp(-calibration.log_odds(predictions.logits[fold["fold"], test])))
    np.testing.assert_allclose(model_p1, fold["test_p1"], atol=1e-5)
    assert fold["temperature"] is not None
    np.testing.assert_allclose(predictions.oof_p1[test],
                               calibrated(np.asarray(fold["test_p1"]), fold["temperature"]),
                               atol=1e-5)
    assert (predictions.out_of_fold[test] == fold["fold"]).all()

  done = run_predict(str(root / "run"), "--data_root", str(root / "data"), "--out",
                     str(root / "own.csv"))
  assert done.returncode == 0, done.stderr
  assert "the run's own subjects (out-of-fold): 45 labelled" in done.stdout
  rows = read_csv(root / "own.csv")
  ids = results["subject_ids"]
  for fold in results["folds"]:
    for i, p in zip(fold["test_subjects"], fold["test_p1"], strict=True):
      row = rows[i]
      assert row["subject"] == ids[i] and row["in_run"] == "yes"
      assert int(row["oof_fold"]) == fold["fold"]
      assert float(row["oof_p"]) == pytest.approx(
          float(calibrated(np.array([p]), fold["temperature"])[0]), abs=1e-5)
      # The fold's decision on its test subject is the one results.json counted.
      threshold = fold["decision_threshold"]
      assert int(row[f"decision_fold{fold['fold']}"]) == int(
          p >= threshold if threshold is not None else p > 0.5)


def test_new_subjects_get_the_ensembles_columns(finished_run):
  root = finished_run
  done = run_predict(str(root / "run"), "--data_root", str(root / "new"))
  assert done.returncode == 0, done.stderr
  assert "new subjects (fold ensemble): 12 labelled" in done.stdout
  rows = read_csv(root / "run" / "predictions_new.csv")
  assert len(rows) == 12
  assert list(rows[0])[:4] == ["subject", "visits", "label", "p_fold0"]
  for row in rows:
    p = np.array([float(row[f"p_fold{k}"]) for k in range(3)])
    votes = [int(row[f"decision_fold{k}"]) for k in range(3)]
    assert float(row["p_mean"]) == pytest.approx(p.mean(), abs=2e-6)
    assert float(row["p_std"]) == pytest.approx(p.std(), abs=2e-6)
    assert int(row["decision"]) == int(sum(votes) >= 2)
    assert float(row["agreement"]) == pytest.approx(
        votes.count(int(row["decision"])) / 3, abs=0.01)
    assert row["in_run"] == "no" and row["oof_fold"] == "" and row["oof_p"] == ""
    assert row["label"] in ("0", "1")

  # Without labels: blank Label_CS_Num (or no such column) is a subject to predict.
  shutil.copytree(root / "new", root / "unlabelled")
  table = root / "unlabelled" / "TADPOLE_TEMPORAL.csv"
  lines = list(csv.reader(table.open()))
  column = lines[0].index("Label_CS_Num")
  with table.open("w", newline="") as f:
    csv.writer(f).writerows([lines[0]] + [r[:column] + [""] + r[column + 1:] for r in lines[1:]])
  done = run_predict(str(root / "run"), "--data_root", str(root / "unlabelled"))
  assert done.returncode == 0, done.stderr
  unlabelled = read_csv(root / "run" / "predictions_unlabelled.csv")
  assert [r["label"] for r in unlabelled] == [""] * 12
  assert [r["p_mean"] for r in unlabelled] == [r["p_mean"] for r in rows]
  assert "(fold ensemble)" not in done.stdout  # no labels, no metrics


def test_bad_input_is_one_line(finished_run, tmp_path):
  root = finished_run
  unfinished = tmp_path / "unfinished"
  shutil.copytree(root / "run", unfinished)
  (unfinished / "fold_1" / "best.msgpack").unlink()
  synthetic.write_synthetic(tmp_path / "wide", num_subjects=6, num_regions=24, seed=5)
  shutil.copytree(root / "new", tmp_path / "orphan")
  with open(tmp_path / "orphan" / "TADPOLE_TEMPORAL.csv", "a", newline="") as f:
    header = next(csv.reader((root / "new" / "TADPOLE_TEMPORAL.csv").open()))
    csv.writer(f).writerow([{"Subject": "999_S_9999", "Label_CS_Num": "0", "Visit_Order": "1",
                             "Months_From_Baseline": "0"}.get(c, "") for c in header])
  (tmp_path / "taken.csv").write_text("mine\n")
  for args, message in (
      ([str(tmp_path), "--data_root", str(root / "new")], "not a run folder (no config.json)"),
      ([str(unfinished), "--data_root", str(root / "new")],
       "the run has not finished (folds without best.msgpack: 1); finish it with train.py "
       "--resume"),
      ([str(root / "run"), "--data_root", str(tmp_path / "wide")],
       "its scans have 24 regions but the run"),
      ([str(root / "run"), "--data_root", str(tmp_path / "orphan")],
       "subject(s) 999S9999 of the visit table have no usable scan"),
      ([str(root / "run"), "--data_root", str(root / "new"), "--out", str(tmp_path / "taken.csv")],
       "the file exists; pass --overwrite")):
    bad = run_predict(*args)
    assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
  assert (tmp_path / "taken.csv").read_text() == "mine\n"


def test_library_twin_predicts_from_arrays(finished_run):
  root = finished_run
  run = load_run(root / "run")
  cohort = run.read_cohort(root / "new")
  from_files = run.predict_cohort(cohort)
  from_arrays = run.predict([s.fc for s in cohort.subjects])
  np.testing.assert_allclose(from_arrays.logits, from_files.logits, atol=1e-5)
  assert json.loads((root / "run" / "config.json").read_text())["run"]["calibrate"] == (
      "temperature")


def test_explain_finds_the_planted_regions(finished_run):
  """explain.py on the run's cohort: the synthetic cohort's conversion module (its planted
  regions) are the top-ranked regions; files, agreement and completeness are reported."""
  root = finished_run
  angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
  coords = root / "coords.csv"
  coords.write_text("region,x,y,z\n" + "".join(
      f"r{i},{60 * np.cos(a):.1f},{70 * np.sin(a):.1f},{10 * (i % 3)}\n"
      for i, a in enumerate(angles)))
  done = subprocess.run([sys.executable, str(ROOT / "explain.py"), str(root / "run"),
                         "--data_root", str(root / "data"), "--steps", "64", "--out_dir",
                         str(root / "explain"), "--atlas_coords", str(coords)], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr
  rows = read_csv(root / "explain" / "importance_regions.csv")
  assert len(rows) == 20 and sorted(int(r["rank"]) for r in rows) == list(range(1, 21))
  planted = set(synthetic.make_synthetic_cohort(num_subjects=45, num_regions=20,
                                                seed=3).module.tolist())
  top = {int(r["region"]) for r in rows if int(r["rank"]) <= len(planted)}
  assert len(top & planted) >= 0.8 * len(planted), (sorted(top), sorted(planted))
  for r in rows:
    scores = [float(r[f"score_fold{k}"]) for k in range(3)]
    assert float(r["mean"]) == pytest.approx(np.mean(scores), rel=1e-4)
    assert float(r["logreg_fc_mass"]) >= 0
  edges = np.load(root / "explain" / "importance_edges.npy")
  assert edges.shape == (3, 20, 20) and np.allclose(edges, edges.transpose(0, 2, 1))
  summary = json.loads((root / "explain" / "importance.json").read_text())
  assert max(summary["completeness_gap_max"]) < 0.05
  assert -1 <= summary["fold_rank_agreement"]["spearman_min"] <= 1
  assert (root / "explain" / "importance.png").stat().st_size > 0
  assert (root / "explain" / "glass_brain.png").stat().st_size > 0
  again = subprocess.run([sys.executable, str(ROOT / "explain.py"), str(root / "run"),
                          "--data_root", str(root / "data"), "--out_dir",
                          str(root / "explain")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
  assert again.returncode == 2 and "pass --overwrite" in again.stderr
