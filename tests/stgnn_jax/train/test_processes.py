"""A run over several processes (`stgnn_jax.train.processes`, train.py's processes flags): the
processes must agree on the run before any work, a process that waits for the others says so
and gives up after `--process_timeout`, and bad flags are one line before any connection."""

from __future__ import annotations

import csv
import json
import subprocess
import time

import jax
import numpy as np
import pytest

import train
from stgnn_jax.errors import ConfigError
from tests.helpers import ROOT, free_port, results_of, train_command

# A sweep small enough that two processes start it in seconds (they stop before training).
TINY = ["--synthetic_subjects", "40", "--synthetic_regions", "20", "--gnn_hidden_dim", "16",
        "--lstm_hidden_dim", "8", "--n_epochs", "1", "--num_folds", "2", "--batch_size", "8",
        "--graph_multiple", "8", "--eval_batch_size", "8", "--no-baselines", "--no_progress",
        "--compile_cache", "none"]


def error_lines(stderr: str) -> list[str]:
  """The command's error lines ("<prog>: error: ..."; in process, prog is pytest's)."""
  return [line for line in stderr.splitlines() if ": error: " in line]


def test_processes_with_different_settings_stop_before_any_work(tmp_path):
  out = tmp_path / "out"
  port = free_port()
  sweeps = ("focal_gamma=1,2", "focal_gamma=1,3")
  procs = [subprocess.Popen(
      train_command(*TINY, "--sweep", sweeps[i], "--out_dir", str(out), "--save_path",
                    str(out / "m"), "--coordinator_address", f"127.0.0.1:{port}",
                    "--num_processes", "2", "--process_id", str(i)),
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  try:
    logs = [proc.communicate(timeout=180) for proc in procs]
  finally:
    for proc in procs:
      proc.kill()
  for proc, (stdout, stderr) in zip(procs, logs, strict=True):
    assert proc.returncode == 2, stdout[-2000:] + stderr[-2000:]
    [line] = error_lines(stderr)
    assert "Traceback" not in stderr
    # Both values, each with the process that was given it.
    assert '--sweep: ["focal_gamma=1,2"] (process 0) vs ["focal_gamma=1,3"] (process 1)' in line
  assert not (out / "results.json").exists() and not (out / "config.json").exists()


def test_a_process_alone_stops_after_the_timeout_with_one_line(tmp_path):
  port = free_port()
  start = time.monotonic()
  result = subprocess.run(
      train_command(*TINY, "--sweep", "focal_gamma=1,2", "--out_dir", str(tmp_path / "out"),
                    "--save_path", str(tmp_path / "m"), "--coordinator_address",
                    f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", "0",
                    "--process_timeout", "3"),
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  elapsed = time.monotonic() - start
  assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
  assert f"process 0 of 2: waiting for the others at 127.0.0.1:{port} (up to 3 s" in \
      result.stdout
  [line] = error_lines(result.stderr)
  assert f"127.0.0.1:{port}" in line and "2 processes" in line and "--process_timeout" in line
  assert "Traceback" not in result.stderr and "Check failure" not in result.stderr
  assert elapsed >= 3
  assert not (tmp_path / "out").exists()


def test_processes_with_other_data_name_the_parts_but_not_the_data_root(monkeypatch):
  """Another host's copy of the data may lie elsewhere (--data_root); what it holds may not
  differ."""
  from stgnn_jax.train import processes

  config = {"model": {}, "optim": {"lr": 0.001}, "run": {"data_root": "/a", "seed": 1}}
  fingerprint = {"subjects": "1", "labels": "2", "scans": "3"}
  other = {"config": {**config, "run": {"data_root": "/b", "seed": 1}},
           "fingerprint": {**fingerprint, "labels": "x", "scans": "y"}}
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(processes, "gather_text",
                      lambda text: [text, json.dumps(other, sort_keys=True)])
  with pytest.raises(ConfigError) as refused:
    processes.check_processes_agree(config, fingerprint)
  assert "process 1's data differ from process 0's (its labels, scans differ)" in \
      str(refused.value)
  assert "data_root" not in str(refused.value)
  other["fingerprint"] = fingerprint
  processes.check_processes_agree(config, fingerprint)  # the same data at another path


@pytest.fixture
def no_connection(monkeypatch):
  """jax.distributed.initialize, replaced: a test that reaches it fails."""
  def initialize(*args, **kwargs):
    raise AssertionError("jax.distributed.initialize was called")
  monkeypatch.setattr(jax.distributed, "initialize", initialize)


# A single run whose network is tested on every fold (no gate to the linear path alone), long
# enough that both processes can be killed inside it.
SINGLE_RUN = [*TINY[:TINY.index("--n_epochs")], "--n_epochs", "4",
              *TINY[TINY.index("--n_epochs") + 2:], "--network_gate", "always"]


def process_commands(*args: str) -> list[list[str]]:
  """train.py with `args`, as process 0 and 1 of a run over two processes on localhost."""
  port = free_port()
  return [train_command(*args, "--coordinator_address", f"127.0.0.1:{port}",
                        "--num_processes", "2", "--process_id", str(i)) for i in range(2)]


def test_a_single_run_over_two_processes_resumes_and_equals_one_process(tmp_path):
  """Data parallel over the two processes' devices (each puts its half of every batch), killed
  inside fold 0 and resumed by both: the numbers of one process, up to the order of the
  batch's sums (1e-5)."""
  one = tmp_path / "one"
  subprocess.run(train_command(*SINGLE_RUN, "--out_dir", str(one), "--save_path",
                               str(one / "m")), cwd=ROOT, check=True, capture_output=True,
                 timeout=300)
  two = tmp_path / "two"
  procs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
           for command in process_commands(*SINGLE_RUN, "--out_dir", str(two), "--save_path",
                                           str(two / "m"))]
  progress = two / "fold_0" / "progress.msgpack"
  deadline = time.time() + 300
  while not progress.exists() and procs[0].poll() is None and time.time() < deadline:
    time.sleep(0.05)
  for proc in procs:
    proc.kill()
    proc.wait()
  assert progress.exists() and not (two / "results.json").exists()
  procs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
           for command in process_commands("--resume", str(two), "--no_progress")]
  logs = [proc.communicate(timeout=300)[0] for proc in procs]
  assert [proc.returncode for proc in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
  assert "data parallel over 2 devices" in logs[0]
  assert "cross-validation summary" not in logs[1]  # process 1 computes, process 0 reports
  a, b = results_of(one), results_of(two)
  for fa, fb in zip(a["folds"], b["folds"], strict=True):
    assert fa["best_epoch"] == fb["best_epoch"] and fb["network_gate"]["tested"] == "network"
    np.testing.assert_allclose(fb["test_p1"], fa["test_p1"], rtol=1e-5, atol=1e-6)
    assert fb["best_val_auc"] == pytest.approx(fa["best_val_auc"], abs=1e-6)
  with open(one / "metrics.csv") as f, open(two / "metrics.csv") as g:
    rows_a, rows_b = list(csv.DictReader(f)), list(csv.DictReader(g))
  assert [(r["fold"], r["epoch"]) for r in rows_a] == [(r["fold"], r["epoch"]) for r in rows_b]
  for ra, rb in zip(rows_a, rows_b, strict=True):
    for key in ("train_loss", "val_loss", "val_auc"):
      assert float(rb[key]) == pytest.approx(float(ra[key]), rel=1e-5, abs=1e-7), key
  # Only process 0 wrote the checkpoints.
  assert sorted(p.name for p in (two / "m").iterdir()) == ["best_model_fold0.msgpack",
                                                          "best_model_fold1.msgpack"]


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:port", "127.0.0.1:0",
                                     "127.0.0.1:65536", ":1234", "::1:1234", "[::1]"])
def test_a_malformed_coordinator_address_is_one_line(tmp_path, no_connection, capsys, address):
  status = train.main([*TINY, "--sweep", "focal_gamma=1,2", "--out_dir", str(tmp_path / "out"),
                       "--save_path", str(tmp_path / "m"), "--coordinator_address", address,
                       "--num_processes", "2", "--process_id", "0"])
  assert status == 2
  [line] = error_lines(capsys.readouterr().err)
  assert f"--coordinator_address {address}:" in line and "HOST:PORT" in line


def test_a_malformed_address_in_jaxs_variable_is_named(tmp_path, no_connection, capsys,
                                                         monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1")
  status = train.main([*TINY, "--sweep", "focal_gamma=1,2", "--out_dir", str(tmp_path / "out"),
                       "--save_path", str(tmp_path / "m")])
  assert status == 2
  [line] = error_lines(capsys.readouterr().err)
  assert "JAX_COORDINATOR_ADDRESS 10.0.0.1:" in line and "HOST:PORT" in line


@pytest.mark.parametrize("flags, named", [
    (["--num_processes", "0"], "--num_processes 0: must be >= 1"),
    (["--num_processes", "2", "--process_id", "2"],
     "--process_id 2: must lie in 0..num_processes - 1 (1)"),
    (["--num_processes", "2", "--process_id", "-1"], "--process_id -1: must lie in 0..")])
def test_process_counts_out_of_range_are_one_line(tmp_path, no_connection, capsys, flags, named):
  status = train.main([*TINY, "--out_dir", str(tmp_path / "out"), "--save_path",
                       str(tmp_path / "m"), "--coordinator_address", "127.0.0.1:1234", *flags])
  assert status == 2
  [line] = error_lines(capsys.readouterr().err)
  assert named in line
  assert not (tmp_path / "out").exists()
