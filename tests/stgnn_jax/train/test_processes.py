"""A run over several processes (`stgnn_jax.train.processes`, train.py's processes flags): the
processes must agree on the run before any work, and bad flags are one line before any
connection."""

from __future__ import annotations

import subprocess

import jax
import pytest

import train
from tests.helpers import ROOT, free_port, train_command

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


@pytest.fixture
def no_connection(monkeypatch):
  """jax.distributed.initialize, replaced: a test that reaches it fails."""
  def initialize(*args, **kwargs):
    raise AssertionError("jax.distributed.initialize was called")
  monkeypatch.setattr(jax.distributed, "initialize", initialize)


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
