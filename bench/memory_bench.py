"""Benchmark: peak memory and time of loading a cohort and of training on it, by cohort size and
by where the scans are kept (`--scan_store memory` or `memmap`).

What is measured, for each size (default 1,000, 5,000 and 20,000 subjects; the built-in
generator's cohort, `synthetic.write_synthetic`: 100 regions, 1-4 visits, about 2.4 visits per
subject, written once in the reference's format under `--data_dir` and reused), for each store,
each step in its own child process so that its peak memory is its own:

  * first load: `cross_validation.prepare_run` on the folder with no cohort cache: every scan
    file read, the cohort built and written to the cache (`data.cache`), the folds and the first
    batch made;
  * training: `prepare_run` again (the cohort read from the cache: memory-mapped with memmap),
    then fold 0 of the default recipe (`train.py`'s defaults, 5 folds) for `--epochs` epochs
    (default 2) with `driver.train_fold`: its set-up (the input statistics over the fold's
    training scans, the linear path's regressions, the initial state), the epochs (training
    steps, validation) and the test of the selected epoch. The first epoch includes the
    compilation; the epoch time reported is the last epoch's (`epoch_seconds` of its metrics
    row).

Memory: "peak RSS" is the process's maximum resident set (VmHWM), which counts the pages of a
memory-mapped store that happened to be in memory (pages the kernel may drop at any time and
read again); "peak anon" is the largest resident anonymous memory (RssAnon, sampled every 10 ms),
the memory the process itself holds and cannot give back: what decides whether a cohort fits.
The store's size on disk is the cache folder's.

  python -m bench.memory_bench                          # 1,000 / 5,000 / 20,000 subjects
  python -m bench.memory_bench --sizes 200,1000 --epochs 1
  python -m bench.memory_bench --stores memmap --extra_flags=--no-linear_path

This is a benchmark, not a test: times depend on the machine and its load (the load average is
printed; run nothing else meanwhile). Writing the 20,000-subject cohort (about 55,000 scan files,
4.3 GB) takes minutes, once; its fold 0 about 18 minutes on a 2-core CPU, most of it the linear
path's regressions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REGIONS = 100
MAX_VISITS = 4


def status_kib(field: str) -> int:
  """A field of /proc/self/status in KiB (0 where the kernel has none)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  return 0


class PeakMemory:
  """Samples this process's resident anonymous memory every `interval` seconds in a thread."""

  def __init__(self, interval: float = 0.01):
    self.interval, self.peak_anon = interval, status_kib("RssAnon")
    self.done = threading.Event()
    self.thread = threading.Thread(target=self._sample, daemon=True)
    self.thread.start()

  def _sample(self) -> None:
    while not self.done.wait(self.interval):
      self.peak_anon = max(self.peak_anon, status_kib("RssAnon"))

  def stop(self) -> dict[str, float]:
    """{"peak_rss_gb", "peak_anon_gb"} since the start of the process / of the sampling."""
    self.done.set()
    self.thread.join()
    self.peak_anon = max(self.peak_anon, status_kib("RssAnon"))
    return {"peak_rss_gb": status_kib("VmHWM") / 2**20, "peak_anon_gb": self.peak_anon / 2**20}


def configs(data_root: Path, store: str, extra_flags: str):
  """train.py's configurations for the cohort at `data_root` (its defaults, the store and
  `extra_flags` applied: the same parser, so every flag works as on the command line)."""
  import train
  from stgnn_jax.config.cli import configs_from_args, parse_flags

  return configs_from_args(parse_flags(train.build_parser(), [
      "--data_root", str(data_root), "--scan_store", store, *shlex.split(extra_flags)]))


def child(args) -> int:
  """One measurement (`args.child`: "load" or "train") in this fresh process; prints RESULT."""
  from stgnn_jax.train import cross_validation

  memory = PeakMemory()
  model, optim, run = configs(Path(args.data_root), args.store, args.extra_flags)
  result: dict = {}
  start = time.perf_counter()
  setup = cross_validation.prepare_run(model, optim, dataclasses.replace(run,
                                                                           n_epochs=args.epochs))
  result["load_s"] = time.perf_counter() - start
  result["scans"] = setup.cohort.n_scans_used
  if args.child == "train":
    from stgnn_jax.train.driver import train_fold

    with tempfile.TemporaryDirectory() as directory:
      start = time.perf_counter()
      fold = train_fold(0, setup.folds[0], setup.subjects, setup.model_config,
                        setup.optim_config, setup.run, setup.placement, directory)
      result["fold_s"] = time.perf_counter() - start
    epochs = [row["epoch_seconds"] for row in fold.history]
    result.update(epochs=len(epochs), first_epoch_s=epochs[0], epoch_s=epochs[-1],
                  train_subjects=len(setup.folds[0].train))
  result.update(memory.stop())
  print("RESULT " + json.dumps(result))
  return 0


def run_child(kind: str, data_root: Path, store: str, args) -> dict:
  command = [sys.executable, "-m", "bench.memory_bench", "--child", kind, "--data_root",
             str(data_root), "--store", store, "--epochs", str(args.epochs),
             f"--extra_flags={args.extra_flags}"]
  out = subprocess.run(command, capture_output=True, text=True, check=False)
  line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
  if out.returncode or line is None:
    sys.exit(f"memory_bench: the {kind} child ({store}, {data_root}) failed:\n"
             f"{out.stderr[-3000:]}")
  return json.loads(line[len("RESULT "):])


def cohort_folder(data_dir: Path, size: int) -> Path:
  """The generated cohort of `size` subjects in the reference's format, written once (in a
  child process, so that its memory is not the parent's while the measurements run)."""
  folder = data_dir / f"cohort-{size}"
  if not (folder / "TADPOLE_TEMPORAL.csv").is_file():
    print(f"writing the {size}-subject cohort to {folder} ...", flush=True)
    code = ("import sys; from stgnn_jax.data import synthetic; synthetic.write_synthetic("
            f"sys.argv[1], num_subjects={size}, num_regions={REGIONS}, max_visits={MAX_VISITS}, "
            "seed=0, overwrite=True)")
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True)
  return folder


def folder_gb(folder: Path) -> float:
  return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**30


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="1000,5000,20000",
                      help="cohort sizes in subjects, comma-separated")
  parser.add_argument("--stores", default="memory,memmap",
                      help="--scan_store values to measure, comma-separated")
  parser.add_argument("--epochs", type=int, default=2, help="epochs of fold 0 (>= 1)")
  parser.add_argument("--data_dir", default="runs/memory_bench",
                      help="where the generated cohorts are written and kept")
  parser.add_argument("--extra_flags", default="",
                      help="train.py flags for every run, e.g. --extra_flags=--no-linear_path")
  parser.add_argument("--child", choices=("load", "train"), help=argparse.SUPPRESS)
  parser.add_argument("--data_root", help=argparse.SUPPRESS)
  parser.add_argument("--store", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return child(args)
  if args.epochs < 1:
    parser.error(f"--epochs {args.epochs}: train at least 1 epoch")
  try:
    sizes = [int(s) for s in args.sizes.split(",")]
  except ValueError:
    parser.error(f"--sizes {args.sizes!r}: give subject counts separated by commas, e.g. 200,1000")
  stores = args.stores.split(",")
  if not set(stores) <= {"memory", "memmap"}:
    parser.error(f"--stores {args.stores!r}: give memory, memmap or both, separated by commas")

  print(f"# memory_bench: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB memory; "
        f"load average {os.getloadavg()[0]:.2f}; flags: {args.extra_flags or '(defaults)'}")
  rows = []
  for size in sizes:
    folder = cohort_folder(Path(args.data_dir), size)
    for store in stores:
      shutil.rmtree(folder / ".stgnn_cache", ignore_errors=True)  # a first load reads every scan
      first = run_child("load", folder, store, args)
      trained = run_child("train", folder, store, args)
      rows.append((size, store, first, trained, folder_gb(folder / ".stgnn_cache")))
      print(f"{size} subjects, {store}: done", flush=True)

  print(f"\nload average after: {os.getloadavg()[0]:.2f}\n")
  print("| subjects | scans | store | first load s | first load peak RSS / anon GB | cached load "
        "s | fold 0: train subjects | fold 0 s | first epoch s | epoch s | training peak RSS / "
        "anon GB | store on disk GB |")
  print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for size, store, first, trained, disk in rows:
    print(f"| {size:,} | {first['scans']:,} | {store} | {first['load_s']:.1f} | "
          f"{first['peak_rss_gb']:.2f} / {first['peak_anon_gb']:.2f} | {trained['load_s']:.1f} | "
          f"{trained['train_subjects']:,} | {trained['fold_s']:.1f} | "
          f"{trained['first_epoch_s']:.1f} | {trained['epoch_s']:.1f} | "
          f"{trained['peak_rss_gb']:.2f} / {trained['peak_anon_gb']:.2f} | {disk:.2f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
