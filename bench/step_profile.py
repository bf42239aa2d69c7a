"""Benchmark: where an epoch of the default recipe spends its time, operation by operation.

The epoch is `python -m bench.train_bench --modes default`'s (the built-in cohort, 120 training
subjects in batches of 16, the fold's set-up, `driver.train_epoch`); after a warm-up epoch and
the compilation of every graph bucket the profiled epochs meet, `--epochs` epochs (default 3)
run untimed by the profiler, then the same epochs again under `jax.profiler.trace`. The trace is
read back with `jax.profiler.ProfileData`: on a CPU each operation the XLA runtime executes is
an event on the thread that ran it, named after its instruction in the optimised program and
carrying that name in its `hlo_op` statistic. Per instruction the script sums its self time
(its events' durations less those of operations nested in them on the same thread, so a
`while` loop counts its own bookkeeping, its body's operations count as themselves) and looks
up, in the optimised programs (`Compiled.as_text()` of `train_step` for each bucket), the
instruction's `op_name`: the JAX operation it came from, the model layer (flax module path
under `STGNN`), and the pass (`jvp(...)`: forward; `transpose(jvp(...))`: backward; neither:
the optimiser update, gradient clipping and the parts of the loss outside the model).

Printed: the epoch's wall time with and without the profiler; how much of the wall at least
one and two operations ran (this is a 2-thread budget on a 2-core CPU; the rest is the host:
batch construction, dispatch, Python); the time by layer and pass; by kind of instruction
(matrix products: XLA's YNNPACK fusions and Eigen `dot`s; loop fusions of elementwise work;
copies; the `while` loops' own time); and the 25 costliest instructions with their operation.

What an event's duration means: an operation the runtime runs in place (YNNPACK fusions, loop
fusions, copies) spans its work; an Eigen `dot` is asynchronous and its event ends when its work
is queued on the thread pool (a lone jitted `[3200, 200]^T [3200, 256]` product: 0.40 ms of
event for 3.30 ms of work on this CPU), so the backward pass's `dot`s are undercounted and their
work shows up as time when no operation's event is open.

  python -m bench.step_profile
  python -m bench.step_profile --epochs 5 --top 40

This is a benchmark, not a test: run nothing else meanwhile (the load average is printed).
"""

from __future__ import annotations

import argparse
import collections
import glob
import platform
import re
import tempfile
import time
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np

from bench.model_bench import load_average
from bench.train_bench import epoch_order, load_data, make_pipelines, print_table
from stgnn_jax.train.step import train_step

# `name = ... metadata={op_name="..."` of an instruction line in an optimised HLO module.
INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+) = .*?op_name="([^"]*)"')
# A flax module's name in an op_name path (not an operation, a transform or a jit).
MODULE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Where the model's part of an op_name begins: `jvp(STGNN)/` or `transpose(jvp(STGNN))/`.
MODEL = re.compile(r"\(STGNN\)+/")


def op_names(hlo_texts: Iterable[str]) -> dict[str, str]:
  """{instruction name: its op_name} over optimised HLO modules (the first wins where bucket
  programs share a name)."""
  names: dict[str, str] = {}
  for text in hlo_texts:
    for line in text.splitlines():
      match = INSTRUCTION.match(line)
      if match:
        names.setdefault(match.group(1), match.group(2))
  return names


def layer_and_pass(op_name: str) -> tuple[str, str]:
  """(the model layer, "forward" | "backward" | "update") an op_name comes from: the module
  path under `STGNN` (its first two modules), or "outside the model"."""
  which = ("backward" if "transpose(jvp(" in op_name else
           "forward" if "jvp(" in op_name else "update")
  inside = MODEL.split(op_name, maxsplit=1)
  if len(inside) == 1:
    return "outside the model (loss, clipping, Adam)", which
  parts = inside[1].split("/")[:-1]  # the last part is the operation
  modules = []
  for part in parts[:2]:
    if not MODULE.match(part):
      break
    modules.append(part)
  return "/".join(modules) or "STGNN", which


def instruction_kind(name: str) -> str:
  """A readable kind of an instruction from its name in the optimised program."""
  base = re.sub(r"\.\d+$", "", name)
  if base.startswith("ynn_fusion") or base.startswith("dot"):
    return "matrix products (YNNPACK fusions, dots)"
  if base.startswith("while"):
    return "while loops' own time (the BiLSTM's time steps)"
  if base.startswith("copy"):
    return "copies and layout changes"
  if "fusion" in base:
    return "fused elementwise and reductions"
  return "other single operations"


def self_times(events: list[Any]) -> collections.Counter[str]:
  """{instruction: ns} over one thread's operation events: each event's duration less those
  of the events nested in it (a `while` loop less its body's operations)."""
  own: collections.Counter[str] = collections.Counter()
  stack: list[Any] = []
  for event in sorted(events, key=lambda e: (e.start_ns, -e.duration_ns)):
    while stack and stack[-1].end_ns <= event.start_ns:
      stack.pop()
    if stack:
      own[stack[-1].name] -= event.duration_ns
    own[event.name] += event.duration_ns
    stack.append(event)
  return own


def union(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
  """The disjoint intervals covering `intervals` (one thread's: a loop and its body's operations
  are one stretch of that thread's time)."""
  merged: list[tuple[int, int]] = []
  for start, end in sorted(intervals):
    if merged and start <= merged[-1][1]:
      merged[-1] = (merged[-1][0], max(merged[-1][1], end))
    else:
      merged.append((start, end))
  return merged


def coverage(intervals: list[tuple[float, float]], start: float, end: float) -> tuple[float, float]:
  """(ns with at least one, with at least two intervals open) within [start, end] (the
  intervals of each thread merged first, `union`)."""
  points = sorted([(max(a, start), 1) for a, b in intervals if b > start and a < end]
                  + [(min(b, end), -1) for a, b in intervals if b > start and a < end])
  one = two = 0.0
  depth, last = 0, start
  for t, change in points:
    if depth >= 1:
      one += t - last
    if depth >= 2:
      two += t - last
    depth, last = depth + change, t
  return one, two


def read_trace(path: str) -> tuple[collections.Counter[str], collections.Counter[str],
                                   list[tuple[int, int]]]:
  """({instruction: self ns}, {instruction: calls}, the stretches each thread spent in
  operations (`union` of its events)) of a trace file."""
  own: collections.Counter[str] = collections.Counter()
  calls: collections.Counter[str] = collections.Counter()
  intervals: list[tuple[int, int]] = []
  for plane in jax.profiler.ProfileData.from_file(path).planes:
    if plane.name != "/host:CPU":
      continue
    for line in plane.lines:
      events = [e for e in line.events if any(k == "hlo_op" for k, _ in e.stats)]
      own.update(self_times(events))
      calls.update(e.name for e in events)
      intervals += union([(e.start_ns, e.end_ns) for e in events])
  if not intervals:
    raise SystemExit("the trace holds no XLA operations: is this jax's CPU backend?")
  return own, calls, intervals


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--epochs", type=int, default=3, help="profiled epochs (>= 1)")
  parser.add_argument("--top", type=int, default=25, help="instructions listed")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  if args.epochs < 1:
    parser.error("--epochs must be >= 1")
  return args


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  epochs = args.epochs
  print(f"# Op-by-op profile of the default recipe's epoch: JAX {jax.__version__} "
        f"({jax.default_backend()}), {platform.processor() or platform.machine()}; "
        f"{load_average()}", flush=True)
  data = load_data("builtin", args.seed)
  ours, _ = make_pipelines("default", data, args.seed)
  orders = [epoch_order(data, args.seed, e) for e in range(epochs + 1)]
  ours.epoch(orders[0], 0)  # warm-up: compiles its buckets
  buckets = {}
  for order in orders[1:]:
    buckets.update(ours.graph_buckets(order))
  texts = []
  for batch in buckets.values():
    placed = ours.placement.batch(batch)
    ours.compile_bucket(placed)
    texts.append(train_step.lower(ours.state, placed, ours.key).compile().as_text())
  names = op_names(texts)

  plain = []
  for e, order in enumerate(orders[1:], 1):
    started = time.perf_counter()
    ours.epoch(order, e)
    plain.append(time.perf_counter() - started)
  with tempfile.TemporaryDirectory() as directory:
    with jax.profiler.trace(directory):
      started = time.perf_counter()
      for e, order in enumerate(orders[1:], 1):
        ours.epoch(order, e)
      traced_ms = 1e3 * (time.perf_counter() - started) / epochs
    [path] = glob.glob(f"{directory}/**/*.xplane.pb", recursive=True)
    own, calls, intervals = read_trace(path)

  first, last = min(a for a, _ in intervals), max(b for _, b in intervals)
  one, two = coverage(intervals, first, last)
  total = sum(own.values())
  per_epoch = 1e6 * epochs  # ns in the trace -> ms per epoch
  print(f"\nepoch wall: {1e3 * float(np.median(plain)):.0f} ms without the profiler (median of "
        f"{epochs}), {traced_ms:.0f} ms under it; the operations' events span "
        f"{total / per_epoch:.0f} ms per epoch; from the first operation to the last, at least "
        f"one ran {one / (last - first):.0%} of the time, two {two / (last - first):.0%}; "
        f"{load_average()}\n")

  layers: collections.Counter[tuple[str, str]] = collections.Counter()
  kinds: collections.Counter[str] = collections.Counter()
  for name, ns in own.items():
    kinds[instruction_kind(name)] += ns
    layers[layer_and_pass(names[name]) if name in names else ("(no op_name)", "")] += ns
  print_table("| layer | pass | ms per epoch | share |",
        [f"| {layer} | {which} | {ns / per_epoch:.1f} | {ns / total:.1%} |"
         for (layer, which), ns in layers.most_common()])
  print()
  print_table("| kind of instruction | ms per epoch | share |",
        [f"| {kind} | {ns / per_epoch:.1f} | {ns / total:.1%} |"
         for kind, ns in kinds.most_common()])
  print()
  print_table("| instruction | ms per epoch | share | calls per epoch | ms per call | op_name |",
        [f"| `{name}` | {ns / per_epoch:.1f} | {ns / total:.1%} | {calls[name] / epochs:.0f} "
         f"| {ns / 1e6 / calls[name]:.2f} "
         f"| `{names.get(name, '?').removeprefix('jit(train_step)/')}` |"
         for name, ns in own.most_common(args.top)])


if __name__ == "__main__":
  main()
