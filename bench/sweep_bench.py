"""Benchmark: a sweep's K members in one vmapped program against the same members trained one
after another as standalone runs, in members × epochs per second.

What is measured, on the built-in cohort (150 subjects, 100 regions, train.py's defaults: the
recipe's model and optimiser, batch 16; or, with `--reference`, the reference's recipe, whose
frozen encoder embeds each epoch's scans once and whose steps train the classifier only), fold 0
of the run's folds (96 training, 24 validation subjects):

  * one epoch = what the fold loop does per epoch: the training steps over the fold's training
    subjects in a freshly shuffled order, then validation, the plateau and the best-epoch
    bookkeeping (`driver.FoldTrainer.epoch`). Standalone: one member's trainer
    (`driver.single_trainer` with the member's settings). Sweep: the trainer of a chunk of K
    members (`sweep.setup_chunk`), the members
    taken from the seeds' α × γ × smoothing grid (K = 48 is the whole grid).
  * compilation apart: `--warmup` untimed epochs first (default 4), in which the steps compile
    for the batch shapes (graph buckets) the timed epochs meet; their time is reported.
  * standalone: `--standalone` members of the grid (default 8), each trained `--epochs` epochs
    after the warm-up; their members × epochs per second is
    the sequential throughput of any K (every member costs the same).
  * sweep: each K in its own child process (so that its peak memory, the process's maximum
    resident set, is its own), the warm-up and then `--epochs` timed epochs; all K members in
    one chunk.
  * speed-up = sweep members × epochs / s ÷ standalone members × epochs / s.

  python -m bench.sweep_bench                 # K = 4, 8, 16, 48; 3 timed epochs
  python -m bench.sweep_bench --members 8 --epochs 2
  python -m bench.sweep_bench --reference     # the reference's recipe (frozen encoder)

This is a benchmark, not a test: numbers depend on the machine and its load (the load average
is printed; run nothing else meanwhile).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import jax

from stgnn_jax.config import ModelConfig, OptimConfig, Preset, RunConfig, reference_preset
from stgnn_jax.train import cross_validation, sweep
from stgnn_jax.train.driver import single_trainer
from stgnn_jax.train.sharding import Placement


def recipe(reference: bool = False) -> Preset:
  """train.py's default configurations (the recipe), or the reference's."""
  return reference_preset() if reference else Preset(ModelConfig(), OptimConfig(), RunConfig())


def fold_inputs(num_members: int, reference: bool = False):
  model, optim, run = recipe(reference)
  setup = cross_validation.prepare_run(model, optim, dataclasses.replace(run, sweep_grid="seeds"))
  # Spread over the grid: every member differs from its neighbours in α, γ or smoothing.
  step = len(setup.members) / num_members
  chosen = [setup.members[int(i * step)] for i in range(num_members)]
  return (setup.model_config, optim, setup.run, setup.subjects, setup.folds, chosen,
          setup.placement)


def time_sweep(k: int, epochs: int, warmup: int, reference: bool) -> dict:
  model, optim, run, subjects, folds, members, placement = fold_inputs(k, reference)
  with tempfile.TemporaryDirectory() as directory:
    started = time.perf_counter()
    chunk = sweep.setup_chunk(0, folds[0], subjects, model, optim, run, placement, members,
                              os.path.join(directory, "sweep", "chunk_0"))
    setup = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(warmup):
      chunk.epoch()
    jax.block_until_ready(chunk.state)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(epochs):
      chunk.epoch()
    jax.block_until_ready(chunk.state)
    seconds = (time.perf_counter() - started) / epochs
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return {"members": k, "setup_s": setup, "first_epoch_s": first, "epoch_s": seconds,
          "member_epochs_per_s": k / seconds, "peak_rss_bytes": peak}


def time_standalone(count: int, epochs: int, warmup: int, reference: bool) -> dict:
  model, optim, run, subjects, folds, members, placement = fold_inputs(count, reference)
  placement = Placement(1, run.batch_size, run.eval_batch_size, run.graph_multiple)
  total, firsts = 0.0, []
  with tempfile.TemporaryDirectory() as directory:
    for member in members:
      trainer = single_trainer(0, folds[0], subjects, model, member.optim_config, run,
                               placement, os.path.join(directory, member.name))
      started = time.perf_counter()
      for _ in range(warmup):
        trainer.epoch()
      jax.block_until_ready(trainer.state)
      firsts.append(time.perf_counter() - started)
      started = time.perf_counter()
      for _ in range(epochs):
        trainer.epoch()
      jax.block_until_ready(trainer.state)
      total += time.perf_counter() - started
  return {"members": count, "first_epoch_s": firsts, "epoch_s": total / (count * epochs),
          "member_epochs_per_s": count * epochs / total}


def child(args) -> int:
  result = (time_standalone(args.standalone, args.epochs, args.warmup, args.reference)
            if args.child == "standalone" else time_sweep(int(args.child), args.epochs,
                                                          args.warmup, args.reference))
  print("RESULT " + json.dumps(result))
  return 0


def run_child(kind: str, args) -> dict:
  command = [sys.executable, "-m", "bench.sweep_bench", "--child", kind, "--epochs",
             str(args.epochs), "--standalone", str(args.standalone), "--warmup",
             str(args.warmup)] + (["--reference"] if args.reference else [])
  out = subprocess.run(command, capture_output=True, text=True, check=False)
  if out.returncode:
    sys.exit(f"sweep_bench: the {kind} child failed:\n{out.stderr[-3000:]}")
  line = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--members", default="4,8,16,48", help="the K values, comma-separated")
  parser.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement")
  parser.add_argument("--warmup", type=int, default=4,
                      help="untimed epochs first: they compile the step for the batch shapes")
  parser.add_argument("--standalone", type=int, default=8,
                      help="standalone members timed for the sequential throughput")
  parser.add_argument("--reference", action="store_true",
                      help="the reference's recipe (frozen encoder: the steps train the "
                      "classifier on each epoch's embeddings) instead of train.py's defaults")
  parser.add_argument("--child", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return child(args)
  print(f"recipe: {'the reference' if args.reference else 'train.py defaults'}; "
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {jax.devices()[0].platform} "
        f"({len(jax.devices())} device(s)), JAX {jax.__version__}; load average "
        f"{os.getloadavg()[0]:.2f}")
  single = run_child("standalone", args)
  print(f"standalone: {single['members']} members x {args.epochs} epochs, "
        f"{single['epoch_s']:.3f} s per member-epoch (warm-up epochs, compiling: "
        f"{', '.join(f'{s:.1f}' for s in single['first_epoch_s'])} s)")
  rows = []
  for k in (int(k) for k in args.members.split(",")):
    result = run_child(str(k), args)
    rows.append(result)
    print(f"K={k}: {result['epoch_s']:.2f} s per epoch, warm-up {result['first_epoch_s']:.1f}"
          f" s, set-up {result['setup_s']:.1f} s, peak RSS "
          f"{result['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
  print(f"\nload average after: {os.getloadavg()[0]:.2f}\n")
  print("| K | sweep s/epoch | sweep member-epochs/s | standalone member-epochs/s | speed-up "
        "| warm-up epochs (compile) s | peak RSS GiB |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['members']} | {r['epoch_s']:.2f} | {r['member_epochs_per_s']:.2f} | "
          f"{single['member_epochs_per_s']:.2f} | "
          f"{r['member_epochs_per_s'] / single['member_epochs_per_s']:.2f}x | "
          f"{r['first_epoch_s']:.1f} | {r['peak_rss_bytes'] / 2**30:.2f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
