"""Helpers shared by the tests (never imported by the packages or by bench/)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from stgnn_jax.config import ModelConfig, OptimConfig

# The repository's root: train.py, README.md, docs/.
ROOT = Path(__file__).resolve().parents[1]


def reference_model(**changes: Any) -> ModelConfig:
  """The reference's architecture with its encoder trainable (`freeze_encoder=False`, unless
  `changes` say otherwise): the models the parity tests build, with `changes`."""
  return ModelConfig.reference(**{"freeze_encoder": False, **changes})


def reference_optim(**changes: Any) -> OptimConfig:
  """The reference's loss and optimiser, with `changes`."""
  return OptimConfig.reference(**changes)


def train_command(*args: str) -> list[str]:
  """The command line that runs the repository's train.py with `args`."""
  return [sys.executable, str(ROOT / "train.py"), *args]


def free_port() -> int:
  """A TCP port of 127.0.0.1 that is free now (for a coordinator of train.py's processes)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_train(args, cache, env=None, timeout=600) -> subprocess.CompletedProcess:
  """Runs train.py with `args` and the compilation cache `cache`; asserts it succeeded."""
  full_env = dict(os.environ, **(env or {}))
  result = subprocess.run(train_command(*args, "--compile_cache", cache), cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result


def results_of(out_dir: Path) -> dict:
  """A run folder's results.json."""
  return json.loads((out_dir / "results.json").read_text())


# ROI time-series cohorts (TimeSeries/ + TADPOLE_TEMPORAL.csv) for the time-series tests.
SERIES_REGIONS = 6


def series(rng, points=60, regions=SERIES_REGIONS, coupling=0.0):
  """A scan's [points, regions] series; `coupling` ties regions 0-2 to a shared signal."""
  x = rng.normal(size=(points, regions))
  x[:, :3] += coupling * rng.normal(size=(points, 1))
  return x


def write_cohort(root, scans, labels, *, ext="npy", header=None, t_r=None, columns=None):
  """`scans[subject]` is its visits' series; writes TimeSeries/ and TADPOLE_TEMPORAL.csv (with
  `columns`: {name: a value per subject} as further visit-table columns)."""
  columns = columns or {}
  (root / "TimeSeries").mkdir(parents=True, exist_ok=True)
  rows = []
  for s, (visits, label) in enumerate(zip(scans, labels, strict=True)):
    subject = f"S{s:03d}"
    for k, x in enumerate(visits):
      path = root / "TimeSeries" / f"sub-{subject}_run-{k + 1:02d}_timeseries.{ext}"
      if ext == "npy":
        np.save(path, x)
      else:
        with open(path, "w", newline="") as f:
          writer = csv.writer(f, delimiter="\t" if ext == "tsv" else ",")
          if header is not None:
            writer.writerow(header)
          writer.writerows(x.tolist())
      rows.append([subject, label, k + 1, 6.0 * k, 6.0] + ([t_r] if t_r else [])
                  + [values[s] for values in columns.values()])
  with open(root / "TADPOLE_TEMPORAL.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["Subject", "Label_CS_Num", "Visit_Order", "Months_From_Baseline",
                     "Months_To_Next_Original"] + (["RepetitionTime"] if t_r else [])
                    + list(columns))
    writer.writerows(rows)


def cohort_data(seed=0, n=16, regions=SERIES_REGIONS, site_scale=1.6):
  """Series of `n` subjects (2 visits), labels 1 in 4, sites A/B (B's series scaled: a site
  effect on the covariances), ages."""
  rng = np.random.default_rng(seed)
  labels = [int(i % 4 == 0) for i in range(n)]
  sites = ["A" if i % 2 else "B" for i in range(n)]
  scans = [[series(rng, points=70, regions=regions, coupling=0.8 * y + 0.3)
            * (site_scale if s == "B" else 1.0) for _ in range(2)]
           for y, s in zip(labels, sites, strict=True)]
  return scans, labels, {"Site": sites, "Age": [60 + 3 * i % 25 for i in range(n)]}
