"""A run over several processes (`stgnn_jax.train.processes`, train.py's processes flags): the
processes must agree on the run before any work."""

from __future__ import annotations

import subprocess

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
