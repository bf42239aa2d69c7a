"""Sweeps (`stgnn_jax.train.sweep`): every member of the vmapped program trains exactly as a
standalone run with its overrides, the outputs and the selection, resume, and bad flags."""

from __future__ import annotations

import csv
import dataclasses
import json
import signal
import subprocess
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

from stgnn_jax.config import ModelConfig, OptimConfig, RunConfig
from stgnn_jax.errors import ConfigError, RunStateError
from stgnn_jax.train import cross_validation, sweep
from stgnn_jax.train.driver import single_trainer
from stgnn_jax.train.sharding import Placement
from tests.helpers import ROOT, free_port, results_of, run_train, train_command

# The default recipe, smaller, without the linear path, at the reference's learning rate.
MODEL = ModelConfig(gnn_hidden_dim=16, output_dim=16, lstm_hidden_dim=8, linear_path=False)
OPTIM = OptimConfig(lr=1e-3)
RUN = RunConfig(synthetic_subjects=40, synthetic_regions=20, n_epochs=1, num_folds=2,
                batch_size=8, graph_multiple=8, eval_batch_size=8, baselines=False)
# The row entries a member and its standalone run must share (epoch_seconds is a timing).
ROW_KEYS = ("fold", "epoch", "train_loss", "train_acc", "val_loss", "val_acc",
            "val_balanced_acc", "val_auc", "val_threshold", "lr")


def fold_inputs(run: RunConfig, **model_changes):
  """What run_cross_validation builds before training: the sized model, run, subjects, folds."""
  setup = cross_validation.prepare_run(dataclasses.replace(MODEL, **model_changes), OPTIM, run)
  return setup.model_config, setup.run, setup.subjects, setup.folds


def assert_rows_agree(member_row, single_row):
  for key in ROW_KEYS:
    a, b = member_row[key], single_row[key]
    if isinstance(b, float):
      np.testing.assert_allclose(a, b, rtol=1e-5, err_msg=key)
    else:
      assert a == b, key


@pytest.mark.parametrize("model_changes, axes, compared", [
    # Members that differ in α, γ, smoothing and the learning rate (16 in the program).
    ({}, ("focal_alpha=0.25,0.75", "focal_gamma=1,2", "label_smoothing=0,0.1", "lr=0.001,0.003"),
     (0, 6, 9, 15)),
    # The loss itself, the weight decay and the minority-forcing epochs (8 in the program).
    ({}, ("loss=ce,weighted_ce", "weight_decay=0,0.05", "minority_focus_epochs=0,5"), (0, 3, 6)),
    # The reference's frozen encoder: the classifier steps on the epoch's shared embeddings.
    ({"freeze_encoder": True}, ("focal_alpha=0.25,0.9", "lr=0.001,0.003"), (0, 3)),
    # The default's fitted linear path: one regression per fold, shared, its offsets in batches.
    ({"linear_path": True}, ("focal_alpha=0.25,0.75", "lr=0.001,0.003"), (0, 3)),
])
def test_members_equal_standalone_runs_after_one_epoch(tmp_path, model_changes, axes, compared):
  run = dataclasses.replace(RUN, sweep=axes)
  model, run, subjects, folds = fold_inputs(run, **model_changes)
  members = sweep.sweep_members(OPTIM, run)
  placement = Placement(1, run.batch_size, run.eval_batch_size, run.graph_multiple)
  chunk = sweep.setup_chunk(0, folds[0], subjects, model, OPTIM, run, placement, members,
                            str(tmp_path / "sweep" / "chunk_0"))
  rows = {row["member"]: row for row in chunk.epoch()}
  params = sweep.to_host(chunk.state.params)
  for m in compared:
    member = members[m]
    single_run = single_trainer(0, folds[0], subjects, model, member.optim_config, run,
                                placement, str(tmp_path / f"single_{m}"))
    [single_row] = single_run.epoch()
    assert_rows_agree(rows[member.name], single_row)
    single = jax.device_get(single_run.state.params)
    for path, leaf in jax.tree_util.tree_leaves_with_path(single):
      stacked = params
      for key in path:
        stacked = stacked[key.key]
      # Relative to each parameter array's norm: vmapped matmuls sum in another order, and
      # Adam divides a near-zero gradient entry by its own tiny scale, which can blow that
      # entry's float32 reordering up (measured: 1 entry of 5120 at 2.7e-4, the array at 1e-6).
      error = np.linalg.norm(stacked[m] - leaf) / max(np.linalg.norm(leaf), 1e-30)
      assert error <= 1e-5, f"{member.name}: {jax.tree_util.keystr(path)} differs by {error:.2e}"


def test_sweep_outputs_selection_and_resume(tmp_path, monkeypatch):
  run = dataclasses.replace(RUN, n_epochs=3, sweep=("focal_gamma=1,3", "lr=0.001,0.01"),
                            sweep_chunk=3, early_stop_patience=1)
  output = cross_validation.run_cross_validation(MODEL, OPTIM, run, str(tmp_path),
                                                 progress_bar=False)
  results = output["sweep"]
  names = [m["name"] for m in results["members"]]
  assert names == ["focal_gamma=1,lr=0.001", "focal_gamma=1,lr=0.01", "focal_gamma=3,lr=0.001",
                   "focal_gamma=3,lr=0.01"]
  assert results["members"][1]["overrides"] == {"focal_gamma": 1.0, "lr": 0.01}
  # Selected by the mean validation AUC, never by test; its folds are the run's.
  best = max(results["members"], key=lambda m: (m["mean_val_auc"], m["mean_val_balanced_acc"]))
  assert results["selected"]["name"] == best["name"]
  for m in results["members"]:
    assert m["mean_val_auc"] == pytest.approx(np.mean(
        [0.5 if f["best_val_auc"] is None else f["best_val_auc"] for f in m["folds"]]))
    assert len(m["folds"]) == 2 and set(m["summary"]) >= {"test_auc", "balanced_acc"}
  assert output["folds"] == best["folds"]
  # Chunks of 3 members of one seed: 2 and 2.
  assert (tmp_path / "fold_0" / "sweep" / "chunk_1" / "result.json").exists()
  with open(tmp_path / "sweep.csv") as f:
    table = list(csv.DictReader(f))
  assert [row["member"] for row in table] == names
  assert [row["selected"] for row in table].count("True") == 1
  assert float(table[0]["test_auc_mean"]) == pytest.approx(
      results["members"][0]["summary"]["test_auc"]["mean"])
  assert (tmp_path / "sweep_heatmap.png").stat().st_size > 10_000
  with open(tmp_path / "metrics.csv") as f:
    rows = list(csv.DictReader(f))
  # Early stopping per member: each member's rows are its own epochs run.
  for m in results["members"]:
    assert sum(r["member"] == m["name"] for r in rows) == sum(
        f["epochs_run"] for f in m["folds"])
  # Each fold keeps the selected member's best checkpoint.
  from stgnn_jax.train.checkpoints import load_checkpoint

  for k, fold in enumerate(best["folds"]):
    if fold["best_epoch"] >= 0:
      _, _, meta = load_checkpoint(tmp_path / f"fold_{k}" / "best.msgpack")
      assert meta["sweep_member"] == best["name"] and meta["epoch"] == fold["best_epoch"]

  # Resume after a kill inside a fold: the chunk in progress restarts from its saved epoch,
  # finished chunks are read back, and the results are the same.
  done = tmp_path / "fold_1" / "sweep" / "chunk_1" / "result.json"
  done.unlink()
  calls = []
  real_epoch = sweep.FoldTrainer.epoch

  def counted(chunk):
    calls.append(min(p.next_epoch for p in chunk.progress))
    return real_epoch(chunk)

  monkeypatch.setattr(sweep.FoldTrainer, "epoch", counted)
  again = cross_validation.run_cross_validation(MODEL, OPTIM, run, str(tmp_path),
                                                progress_bar=False)
  assert calls and calls[0] == 0  # the result was gone with no progress: trained again
  assert json.loads(json.dumps(again)) == json.loads(json.dumps(output))
  # A sweep folder is a run in progress: other settings are refused, not mixed in.
  with pytest.raises(RunStateError, match="holds a different configuration"):
    cross_validation.run_cross_validation(
        MODEL, OPTIM, dataclasses.replace(run, sweep=("focal_gamma=1,2",)), str(tmp_path),
        progress_bar=False)


class Killed(Exception):
  """Stands for a kill of the process in the middle of an epoch."""


def test_a_resume_takes_another_chunk_size_and_gives_the_same_results(tmp_path, monkeypatch,
                                                                      capsys):
  import train

  run = dataclasses.replace(RUN, n_epochs=2, sweep=("focal_gamma=1,2", "lr=0.001,0.003"),
                            sweep_chunk=2)
  whole = cross_validation.run_cross_validation(MODEL, OPTIM, run, str(tmp_path / "whole"),
                                                progress_bar=False)
  # Killed in fold 1's first chunk, in its second epoch, with its first epoch saved.
  out = tmp_path / "killed"
  monkeypatch.setattr(sweep, "SAVE_SECONDS", 0.0)
  real_epoch = sweep.FoldTrainer.epoch

  def epoch(chunk):
    if chunk.folds[0].index == 1 and min(p.next_epoch for p in chunk.progress) == 1:
      raise Killed
    return real_epoch(chunk)

  monkeypatch.setattr(sweep.FoldTrainer, "epoch", epoch)
  with pytest.raises(Killed):
    cross_validation.run_cross_validation(MODEL, OPTIM, run, str(out), progress_bar=False)
  monkeypatch.setattr(sweep.FoldTrainer, "epoch", real_epoch)
  progress = out / "fold_1" / "sweep" / "chunk_0" / "progress.msgpack"
  assert progress.exists() and not (out / "fold_1" / "sweep" / "chunk_1").exists()

  # train.py --resume with a chunk of one member: it takes effect (no "ignoring" warning).
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    status = train.main(["--resume", str(out), "--sweep_chunk", "1", "--no_progress",
                         "--save_path", str(tmp_path / "m"), "--compile_cache", "none"])
  assert status == 0, capsys.readouterr().err
  assert not [w for w in caught if "ignoring" in str(w.message)]
  assert json.loads((out / "config.json").read_text())["run"]["sweep_chunk"] == 1
  # The chunk in progress kept its two members; the fold's other members trained one by one.
  names = [m["name"] for m in whole["sweep"]["members"]]
  assert json.loads((out / "fold_1" / "sweep" / "chunks.json").read_text())["chunks"] == [
      names[:2], names[2:3], names[3:]]
  assert json.loads((out / "fold_0" / "sweep" / "chunks.json").read_text())["chunks"] == [
      names[:2], names[2:]]
  # Fold 0 was read back and fold 1's first chunk resumed with its members: bit for bit.
  got, want = results_of(out)["sweep"], json.loads(json.dumps(whole["sweep"]))
  assert [m["folds"][0] for m in got["members"]] == [m["folds"][0] for m in want["members"]]
  assert got["members"][:2] == want["members"][:2]
  # The members that trained one per chunk sum in another order (a program of another width):
  # the same selection and best epochs, numbers equal to float32 rounding.
  assert_same_sweep(tmp_path / "whole", out)


def test_a_killed_chunk_resumes_at_its_next_epoch(tmp_path):
  run = dataclasses.replace(RUN, n_epochs=3, sweep=("focal_gamma=1,2",))
  model, run, subjects, folds = fold_inputs(run)
  members = sweep.sweep_members(OPTIM, run)
  placement = Placement(1, run.batch_size, run.eval_batch_size, run.graph_multiple)
  directory = str(tmp_path / "sweep" / "chunk_0")

  def start():
    return sweep.setup_chunk(0, folds[0], subjects, model, OPTIM, run, placement, members,
                             directory)

  whole = start()
  rows = [whole.epoch() for _ in range(3)]
  killed = start()
  killed.epoch()
  killed.save()  # what train_chunk saves (at most every SAVE_SECONDS); then the process dies
  resumed = start()
  assert [p.next_epoch for p in resumed.progress] == [1, 1]
  later = [resumed.epoch() for _ in range(2)]
  for got, want in zip(later, rows[1:], strict=True):
    for a, b in zip(got, want, strict=True):
      assert a["member"] == b["member"]
      assert_rows_agree(a, b)
  np.testing.assert_array_equal(
      jax.tree.leaves(sweep.to_host(resumed.state.params))[0],
      jax.tree.leaves(sweep.to_host(whole.state.params))[0])


@pytest.mark.parametrize("change, message", [
    ({"sweep": ("gnn_hidden_dim=8,16",)}, "gnn_hidden_dim cannot be swept: it changes the "
     "model's architecture or shapes"),
    ({"sweep": ("batch_size=8,16",)}, "batch_size cannot be swept: it changes the data"),
    ({"sweep": ("lr=0.1,0.1",)}, "lr=0.1,0.1: a value is repeated"),
    ({"sweep": ("focal_gamma=1,2",), "sweep_grid": "seeds"}, "focal_gamma is swept twice"),
    ({"sweep": ("loss=focal,hinge",)}, "'hinge' is not one of focal, ce, weighted_ce"),
    ({"sweep_chunk": 2}, r"RunConfig.sweep_chunk=2 applies to a sweep: add --sweep or "
     "--sweep_grid, or leave --sweep_chunk out"),
])
def test_bad_sweeps_are_refused_by_the_config(change, message):
  with pytest.raises(ConfigError, match=message):
    dataclasses.replace(RUN, **change)


def test_bad_members_are_refused_before_any_work(tmp_path):
  run = dataclasses.replace(RUN, sweep=("lr=0.001,0",))
  with pytest.raises(ConfigError, match=r"--sweep member lr=0: OptimConfig.lr=0.0 must be"):
    cross_validation.run_cross_validation(MODEL, OPTIM, run, str(tmp_path / "out"))
  run = dataclasses.replace(RUN, sweep=("focal_gamma=1,2",))
  with pytest.raises(ConfigError, match="--gamma_schedule replaces --focal_gamma"):
    cross_validation.run_cross_validation(
        MODEL, dataclasses.replace(OPTIM, gamma_schedule="1@0,2@5"), run, str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_members_train_in_the_faster_layout(tmp_path, monkeypatch):
  """Without --sweep_chunk a sweep times one training pass of a chunk of every member and one
  of a single member, and takes the chunk only where it trains a member faster (here the
  timings are set: 4.4 s for 4 members loses to 1 s for one, 1.6 s wins); a resume keeps the
  layout it started with, and reports the same choice."""
  timed, chunk_seconds = [], [4.4]

  def seconds(trainer):
    timed.append(len(trainer.folds))
    return chunk_seconds[0] if len(trainer.folds) == 4 else 1.0

  monkeypatch.setattr(sweep, "training_seconds", seconds)
  run = dataclasses.replace(RUN, sweep=("focal_gamma=1,3", "lr=0.001,0.01"))
  model, sized, subjects, folds = fold_inputs(run)
  placement = Placement(None, sized.batch_size, sized.eval_batch_size, sized.graph_multiple)
  size, layout = sweep.choose_chunk_size(
      str(tmp_path / "slow" / "fold_0"), folds[0], subjects, model, OPTIM, sized, placement,
      sweep.sweep_members(OPTIM, sized), 4)
  assert (size, timed) == (1, [4, 1])
  assert layout == {"chunk_size": 1, "chosen_by": "timing",
                    "seconds_per_member_pass": {"4": 4.4 / 4, "1": 1.0}}
  assert not list(tmp_path.glob("slow/fold_0/sweep/timing_*"))  # the timed chunks saved nothing

  # The whole sweep, where the chunk trains a member faster.
  chunk_seconds[0], out = 1.6, tmp_path / "run"
  timed.clear()
  output = cross_validation.run_cross_validation(MODEL, OPTIM, run, str(out),
                                                 progress_bar=False)
  assert timed == [4, 1]
  assert output["sweep"]["layout"] == {
      "chunk_size": 4, "chosen_by": "timing",
      "seconds_per_member_pass": {"4": 1.6 / 4, "1": 1.0}}
  for k in range(2):
    planned = json.loads((out / f"fold_{k}" / "sweep" / "chunks.json").read_text())
    assert [len(c) for c in planned["chunks"]] == [4]
  # A resume plans as the sweep started, without timing again.
  timed.clear()
  (out / "results.json").unlink()
  resumed = cross_validation.run_cross_validation(MODEL, OPTIM, run, str(out),
                                                  progress_bar=False)
  assert timed == [] and resumed["sweep"]["layout"] == output["sweep"]["layout"]


def test_the_timed_pass_is_a_real_training_pass(tmp_path):
  model, run, subjects, folds = fold_inputs(dataclasses.replace(RUN, sweep=("lr=0.001,0.003",)))
  members = sweep.sweep_members(OPTIM, run)
  placement = Placement(None, run.batch_size, run.eval_batch_size, run.graph_multiple)
  chunk = sweep.setup_chunk(0, folds[0], subjects, model, OPTIM, run, placement, members,
                            str(tmp_path / "sweep" / "chunk_0"))
  before = jax.tree.map(np.asarray, chunk.state.params)
  assert sweep.training_seconds(chunk, repeats=1) > 0
  # Timing trains nothing for real: the chunk's state is the one it was set up with.
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, chunk.state.params),
               before)


def test_the_seeds_grid_and_chunks():
  run = dataclasses.replace(RUN, sweep_grid="seeds", sweep=("seed=1,2",))
  members = sweep.sweep_members(OPTIM, run)
  assert len(members) == 96
  assert members[0].overrides == {"focal_alpha": 0.1, "focal_gamma": 0.5,
                                  "label_smoothing": 0.0, "seed": 1}
  assert members[0].optim_config.focal_alpha == 0.1 and members[0].seed == 1
  chunks = sweep.plan_chunks(members, 20)
  # Each chunk holds one seed's members; 48 per seed in 20s becomes 16, 16, 16.
  assert [len(c) for c in chunks] == [16] * 6
  assert all(len({m.seed for m in c}) == 1 for c in chunks)


# --- The command line: several devices and processes give one device's results --------------

SWEEP_RUN = ["--synthetic_subjects", "40", "--synthetic_regions", "20", "--gnn_hidden_dim", "16",
             "--lstm_hidden_dim", "8", "--n_epochs", "2", "--num_folds", "2", "--batch_size",
             "8", "--graph_multiple", "8", "--eval_batch_size", "8", "--no-baselines",
             "--no_progress", "--sweep", "focal_gamma=1,2", "--sweep", "lr=0.001,0.003",
             # The layout fixed, not timed: runs compared here must train the same chunks.
             "--sweep_chunk", "4"]


def sweep_rows(out: Path) -> list[dict]:
  with open(out / "metrics.csv") as f:
    return list(csv.DictReader(f))


def assert_same_sweep(one: Path, other: Path) -> None:
  a, b = results_of(one)["sweep"], results_of(other)["sweep"]
  assert a["selected"]["name"] == b["selected"]["name"]
  for key in ("mean_val_auc", "mean_val_balanced_acc"):
    assert b["selected"][key] == pytest.approx(a["selected"][key], abs=1e-6), key
  for ma, mb in zip(a["members"], b["members"], strict=True):
    assert ma["name"] == mb["name"]
    assert mb["mean_val_auc"] == pytest.approx(ma["mean_val_auc"], abs=1e-6)
    for fa, fb in zip(ma["folds"], mb["folds"], strict=True):
      assert fa["best_epoch"] == fb["best_epoch"]
      np.testing.assert_allclose(fb["test_p1"], fa["test_p1"], rtol=1e-5, atol=1e-6)
  rows_a, rows_b = sweep_rows(one), sweep_rows(other)
  assert [(r["member"], r["fold"], r["epoch"]) for r in rows_a] == \
      [(r["member"], r["fold"], r["epoch"]) for r in rows_b]
  for ra, rb in zip(rows_a, rows_b, strict=True):
    for key in ("train_loss", "val_loss", "val_auc", "lr"):
      assert float(rb[key]) == pytest.approx(float(ra[key]), rel=1e-5, abs=1e-7), key


@pytest.fixture(scope="module")
def one_device_sweep(tmp_path_factory, compile_cache):
  out = tmp_path_factory.mktemp("sweep") / "one"
  run_train([*SWEEP_RUN, "--out_dir", str(out), "--save_path", str(out / "m")], compile_cache)
  return out


def test_sweep_over_four_devices_matches_one_device(one_device_sweep, tmp_path, compile_cache):
  out = tmp_path / "four"
  result = run_train([*SWEEP_RUN, "--out_dir", str(out), "--save_path", str(out / "m")],
                     compile_cache, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  assert "members over 4 device(s)" in result.stdout
  assert_same_sweep(one_device_sweep, out)


def test_sweep_over_two_processes_matches_one_device(one_device_sweep, tmp_path):
  """Two processes, the layout timed (no --sweep_chunk): both take process 0's choice, a chunk
  of 4 or one member per device (members in another chunk size agree to float rounding)."""
  out = tmp_path / "two"
  port = free_port()
  timed = SWEEP_RUN[:-2]
  assert SWEEP_RUN[-2] == "--sweep_chunk"
  procs = [subprocess.Popen(
      train_command(*timed, "--out_dir", str(out), "--save_path", str(out / "m"),
                    "--compile_cache", "none", "--coordinator_address", f"127.0.0.1:{port}",
                    "--num_processes", "2", "--process_id", str(i)),
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  logs = [proc.communicate(timeout=600)[0] for proc in procs]
  assert [proc.returncode for proc in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
  assert "members over 2 device(s)" in logs[0]
  assert "cross-validation summary" not in logs[1]  # process 1 computes, process 0 reports
  assert_same_sweep(one_device_sweep, out)
  assert results_of(out)["sweep"]["layout"]["chosen_by"] == "timing"
  # Only process 0 wrote: the selected member's checkpoints went to --save_path once.
  assert sorted(p.name for p in (out / "m").iterdir()) == ["best_model_fold0.msgpack",
                                                          "best_model_fold1.msgpack"]


def test_a_killed_sweep_resumes_with_the_same_results(one_device_sweep, tmp_path,
                                                       compile_cache):
  out = tmp_path / "killed"
  proc = subprocess.Popen(
      train_command(*SWEEP_RUN, "--out_dir", str(out), "--save_path", str(out / "m"),
                    "--compile_cache", compile_cache),
      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  finished_chunk = out / "fold_0" / "sweep" / "chunk_0" / "result.json"
  deadline = time.time() + 300
  while not finished_chunk.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be killed: " + \
      proc.stderr.read().decode()
  proc.send_signal(signal.SIGKILL)  # inside fold 1
  proc.wait()
  assert not (out / "results.json").exists()
  run_train(["--resume", str(out), "--no_progress", "--save_path", str(out / "m")],
            compile_cache)
  assert results_of(out)["sweep"] == results_of(one_device_sweep)["sweep"]


def test_train_py_refuses_a_sweep_of_the_architecture_in_one_line(tmp_path):
  result = subprocess.run(train_command("--sweep", "gnn_hidden_dim=8,16", "--out_dir",
                                        str(tmp_path / "out")),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      "train.py: error: argument --sweep: gnn_hidden_dim cannot be swept")
  assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
