"""Benchmark: the STGNN (JAX, jitted) against the same model in PyTorch + PyTorch Geometric.

What is measured, in one process on the CPU:

  * forward (logits) and forward+backward (gradient of a mean cross-entropy with fixed labels
    w.r.t. every parameter) of `STGNN(ModelConfig.reference(layer_type=...))` for GraphSAGE (the
    reference's model: 100 -> 256 -> 256, elu, TopK 0.3, BiLSTM 64), GCN and GAT;
  * one batch of 16 subjects with 1..10 visits each (random lengths, fixed seed) of 100-node
    graphs: symmetric random adjacency with self loops (like thresholded FC matrices) at about
    20% and 50% edge density; node features are the one-hot region index, as in the reference;
  * JAX: the loss / gradient closures are compiled ahead of time (`jax.jit(...).lower().compile()`,
    trace+lower and compile reported separately), inputs already on the device, every call ends
    with `block_until_ready`;
  * PyTorch: `TorchSTGNN` from bench/torch_reference.py (PyG's SAGEConv/GCNConv/GATConv,
    GraphNorm, TopKPooling, packed BiLSTM) in eval mode, the forward under `torch.no_grad()`,
    forward+backward as `zero_grad(set_to_none=True)`, loss, `loss.backward()`;
    `torch.set_num_threads(os.cpu_count())` (override with `--torch-threads`: on a machine
    loaded by other processes, PyTorch's OpenMP threads slow down far more than XLA's thread
    pool, so a busy machine inflates the speed-up; the script warns when the load average
    exceeds the number of CPUs);
  * both models hold the same weights (the torch model's state dicts converted with
    `params_from_torch`) and run without dropout, so they compute the same function: the max
    abs logit difference and the max relative gradient difference are printed as sanity lines;
  * batch construction is timed on its own and is NOT inside the model timings: `pack_subjects`
    (+ `jax.device_put`) for JAX, `pyg_batch` (edge lists) for PyTorch.

Each timing is the median over `--repeats` rounds after warm-up calls; torch and JAX calls are
interleaved round by round so that a load change on the machine hits both alike. Throughput is
scans/s = real graphs in the batch / median time; speed-up = JAX scans/s / PyTorch scans/s.
The results and the compile times end the output as markdown tables, ready for the README.

  python -m bench.model_bench               # GraphSAGE, GCN, GAT x 20%, 50% density
  python -m bench.model_bench --quick       # default config only, fewer repeats (smoke test)
  python -m bench.model_bench --repeats 30
  python -m bench.model_bench --torch-threads 1   # e.g. to compare on a busy machine

This is a benchmark, not a test: numbers depend on the machine and on its load (the load average
is printed before and after).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from bench.torch_reference import TorchSTGNN, pyg_batch
from stgnn_jax.config import ModelConfig
from stgnn_jax.input_pipeline import SubjectBatch, pack_subjects
from stgnn_jax.nn.model import STGNN
from stgnn_jax.torch_interop.convert import params_from_torch, params_to_torch

NUM_SUBJECTS = 16
MAX_VISITS = 10
NUM_NODES = 100
DENSITIES = (0.2, 0.5)
LAYER_TYPES = ("GraphSAGE", "GCN", "GAT")
PASSES = ("forward", "fwd+bwd")


# --- Data ---------------------------------------------------------------------------------------

def random_adjacency(rng: np.random.Generator, visits: int, n: int, density: float) -> np.ndarray:
  """`[visits, n, n]` bool: symmetric, self loops, about `density` of all n*n entries set."""
  # Off-diagonal pairs are drawn once (upper triangle) and mirrored; the diagonal is always set,
  # so the off-diagonal probability is chosen to make the total fraction `density`.
  p = (density * n * n - n) / (n * n - n)
  upper = np.triu(rng.random((visits, n, n)) < p, k=1)
  adjacency = upper | np.swapaxes(upper, 1, 2)
  adjacency[:, np.arange(n), np.arange(n)] = True
  return adjacency


@dataclasses.dataclass
class Workload:
  """One batch of subjects at one density, in both frameworks' formats."""

  density: float
  adjacency: list[np.ndarray]
  labels: np.ndarray
  jax_batch: SubjectBatch
  torch_inputs: dict[str, Any]
  torch_labels: torch.Tensor

  @property
  def num_scans(self) -> int:
    return sum(len(a) for a in self.adjacency)

  @property
  def edge_fraction(self) -> float:
    return float(np.mean([a.mean() for a in self.adjacency]))


def make_workload(lengths: np.ndarray, density: float, seed: int) -> Workload:
  rng = np.random.default_rng(seed)
  adjacency = [random_adjacency(rng, int(v), NUM_NODES, density) for v in lengths]
  labels = rng.integers(0, 2, len(lengths)).astype(np.int32)
  jax_batch = jax.device_put(pack_subjects(adjacency, labels=labels))
  return Workload(density, adjacency, labels, jax_batch, pyg_batch(adjacency),
                  torch.from_numpy(labels).long())


# --- Timing -------------------------------------------------------------------------------------

def time_once(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def median_ms(samples: list[float]) -> float:
  return 1e3 * statistics.median(samples)


def time_construction(fn: Callable[[], Any], repeats: int) -> float:
  fn()
  return median_ms([time_once(fn) for _ in range(repeats)])


def load_average() -> str:
  try:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
  except OSError:
    return "load average unavailable"


def warn_if_loaded(cpus: int) -> None:
  try:
    load = os.getloadavg()[0]
  except OSError:
    return
  if load > cpus:
    print(f"WARNING: 1-minute load average {load:.1f} > {cpus} CPUs: other processes compete "
          "for the cores; absolute numbers are unreliable and PyTorch's multi-threaded OpenMP "
          "regions suffer most (try --torch-threads 1 for comparison).")


# --- The two models -----------------------------------------------------------------------------

def torch_model(config: ModelConfig, seed: int) -> TorchSTGNN:
  torch.manual_seed(seed)
  return TorchSTGNN(config).eval()  # eval: no dropout, the same function as deterministic JAX


def torch_closures(model: TorchSTGNN, work: Workload) -> dict[str, Callable[[], Any]]:
  inputs, labels = work.torch_inputs, work.torch_labels

  def forward() -> torch.Tensor:
    with torch.no_grad():
      return model(**inputs)

  def forward_backward() -> None:
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(**inputs), labels)
    loss.backward()

  return {"forward": forward, "fwd+bwd": forward_backward}


def jax_functions(config: ModelConfig) -> dict[str, Callable[..., Any]]:
  """Pure functions of (params, batch): logits and the gradient of the mean cross-entropy."""
  model = STGNN(config)

  def logits(params: Any, batch: SubjectBatch) -> jax.Array:
    return model.apply({"params": params}, batch.graphs, batch.visit_slot, batch.lengths,
                       batch.time, max_visits=batch.max_visits)

  def loss(params: Any, batch: SubjectBatch) -> jax.Array:
    log_p = jax.nn.log_softmax(logits(params, batch))
    picked = jnp.take_along_axis(log_p, batch.labels[:, None], axis=1)[:, 0]
    return -jnp.sum(jnp.where(batch.subject_mask, picked, 0)) / jnp.sum(batch.subject_mask)

  return {"forward": logits, "fwd+bwd": jax.grad(loss)}


@dataclasses.dataclass
class Compiled:
  fn: Callable[..., Any]
  trace_lower_s: float
  compile_s: float


def compile_jax(fn: Callable[..., Any], params: Any, batch: SubjectBatch) -> Compiled:
  start = time.perf_counter()
  lowered = jax.jit(fn).lower(params, batch)
  traced = time.perf_counter()
  compiled = lowered.compile()
  done = time.perf_counter()
  return Compiled(compiled, traced - start, done - traced)


def max_relative_grad_difference(config: ModelConfig, model: TorchSTGNN, grads: Any) -> float:
  """max |g_jax - g_torch| over all parameters / max |g_torch| (torch grads must be fresh).

  One global scale, not one per parameter: some gradients are zero up to rounding (the first
  conv's bias is cancelled by GraphNorm's mean subtraction), so a per-parameter ratio would
  compare rounding noise with rounding noise.
  """
  ours = params_to_torch(jax.tree.map(np.asarray, grads), config)
  worst_diff, scale = 0.0, 1e-30
  for part, module in (("encoder", model.encoder), ("classifier", model.classifier)):
    for name, p in module.named_parameters():
      expected = p.grad.numpy()
      scale = max(scale, float(np.abs(expected).max()))
      worst_diff = max(worst_diff, float(np.abs(ours[part][name] - expected).max()))
  return worst_diff / scale


# --- One configuration --------------------------------------------------------------------------

@dataclasses.dataclass
class Row:
  layer_type: str
  density: float
  edge_fraction: float
  pass_name: str
  scans: int
  torch_ms: float
  jax_ms: float

  @property
  def torch_scans_s(self) -> float:
    return self.scans / (self.torch_ms / 1e3)

  @property
  def jax_scans_s(self) -> float:
    return self.scans / (self.jax_ms / 1e3)

  @property
  def speedup(self) -> float:
    return self.torch_ms / self.jax_ms


def bench_layer_type(layer_type: str, workloads: list[Workload], repeats: int, warmup: int,
                     seed: int) -> tuple[list[Row], dict[str, Compiled]]:
  config = ModelConfig.reference(layer_type=layer_type, freeze_encoder=False)
  model = torch_model(config, seed)
  params = jax.device_put(params_from_torch(
      {"encoder": model.encoder.state_dict(), "classifier": model.classifier.state_dict()},
      config))
  functions = jax_functions(config)
  # Every workload has the same lengths, hence the same shapes: one compilation per pass.
  compiled = {name: compile_jax(fn, params, workloads[0].jax_batch)
              for name, fn in functions.items()}
  for name, c in compiled.items():
    print(f"  {layer_type:9s} {name:8s} JAX trace+lower {c.trace_lower_s:6.2f} s, "
          f"compile {c.compile_s:6.2f} s", flush=True)

  rows = []
  for work in workloads:
    batch = work.jax_batch
    torch_fns = torch_closures(model, work)
    jax_fns = {name: (lambda c=c, batch=batch: jax.block_until_ready(c.fn(params, batch)))
               for name, c in compiled.items()}

    # Sanity: the same function in both frameworks.
    logit_diff = float(np.abs(np.asarray(jax_fns["forward"]()) -
                              torch_fns["forward"]().numpy()).max())
    torch_fns["fwd+bwd"]()
    grad_diff = max_relative_grad_difference(config, model, jax_fns["fwd+bwd"]())
    print(f"  {layer_type:9s} density {work.edge_fraction:.2f}: max |logit JAX - torch| = "
          f"{logit_diff:.2e}, max relative gradient difference = {grad_diff:.2e}", flush=True)

    for name in PASSES:
      for _ in range(warmup):
        torch_fns[name]()
        jax_fns[name]()
      torch_s, jax_s = [], []
      for _ in range(repeats):  # interleaved: a load spike hits both frameworks alike
        torch_s.append(time_once(torch_fns[name]))
        jax_s.append(time_once(jax_fns[name]))
      row = Row(layer_type, work.density, work.edge_fraction, name, work.num_scans,
                median_ms(torch_s), median_ms(jax_s))
      rows.append(row)
      print(f"  {layer_type:9s} density {work.edge_fraction:.2f} {name:8s}: torch "
            f"{row.torch_ms:8.2f} ms, JAX {row.jax_ms:8.2f} ms, speed-up {row.speedup:5.2f}x",
            flush=True)
  return rows, compiled


# --- Main ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="default config (GraphSAGE) only, fewer repeats: a smoke test")
  parser.add_argument("--repeats", type=int, default=None,
                      help="timed rounds per (config, density, pass) (default 7, quick 3)")
  parser.add_argument("--torch-threads", type=int, default=None,
                      help="torch.set_num_threads value (default os.cpu_count())")
  parser.add_argument("--seed", type=int, default=0, help="seed of lengths, graphs, weights")
  args = parser.parse_args(argv)
  if args.repeats is None:
    args.repeats = 3 if args.quick else 7
  if args.repeats < 1:
    parser.error("--repeats must be >= 1")
  return args


def use_torch_threads(requested: int | None) -> tuple[int, int]:
  """Sets PyTorch's thread count (default: every CPU); returns (cpus, threads)."""
  cpus = os.cpu_count() or 1
  threads = cpus if requested is None else requested
  torch.set_num_threads(threads)
  return cpus, threads


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  cpus, threads = use_torch_threads(args.torch_threads)
  layer_types = LAYER_TYPES[:1] if args.quick else LAYER_TYPES
  warmup = 1  # plus the sanity-check call of each function, also untimed

  print(f"# STGNN model benchmark: JAX {jax.__version__} ({jax.default_backend()}) vs "
        f"PyTorch {torch.__version__} + PyG")
  print(f"{platform.processor() or platform.machine()}, {cpus} CPUs; "
        f"torch.set_num_threads({threads}) -> torch uses {torch.get_num_threads()} threads; "
        f"{load_average()}")
  warn_if_loaded(cpus)
  rng = np.random.default_rng(args.seed)
  lengths = rng.integers(1, MAX_VISITS + 1, NUM_SUBJECTS)
  workloads = [make_workload(lengths, d, args.seed + 1 + i) for i, d in enumerate(DENSITIES)]
  print(f"batch: {NUM_SUBJECTS} subjects, visit lengths {lengths.tolist()} "
        f"({int(lengths.sum())} scans) of {NUM_NODES}-node graphs; "
        f"{args.repeats} timed rounds after {warmup} warm-up calls, medians")

  print("\n## Batch construction (not inside the model timings), per batch")
  construction_repeats = max(3, args.repeats)
  for work in workloads:
    pack = time_construction(lambda work=work: pack_subjects(work.adjacency, labels=work.labels),
                             construction_repeats)
    pack_put = time_construction(
        lambda work=work: jax.block_until_ready(
            jax.device_put(pack_subjects(work.adjacency, labels=work.labels))),
        construction_repeats)
    pyg = time_construction(lambda work=work: pyg_batch(work.adjacency), construction_repeats)
    edges = work.torch_inputs["edge_index"].shape[1]
    print(f"density {work.edge_fraction:.2f} ({edges} edges): JAX pack_subjects {pack:.2f} ms, "
          f"pack_subjects + device_put {pack_put:.2f} ms; PyG pyg_batch {pyg:.2f} ms")

  print("\n## Model timings")
  rows: list[Row] = []
  compiles: dict[str, dict[str, Compiled]] = {}
  for layer_type in layer_types:
    layer_rows, compiles[layer_type] = bench_layer_type(
        layer_type, workloads, args.repeats, warmup, args.seed)
    rows += layer_rows

  print(f"\n## Results ({load_average()})\n")
  warn_if_loaded(cpus)
  print(f"{int(lengths.sum())} scans per batch ({NUM_SUBJECTS} subjects); JAX jitted, PyTorch "
        f"eager with {torch.get_num_threads()} threads; median ms per batch.\n")
  print("| layer | density | pass | PyTorch ms | JAX ms | PyTorch scans/s | JAX scans/s "
        "| speed-up |")
  print("|---|---|---|---:|---:|---:|---:|---:|")
  for r in rows:
    print(f"| {r.layer_type} | {r.edge_fraction:.0%} | {r.pass_name} | {r.torch_ms:.1f} "
          f"| {r.jax_ms:.1f} | {r.torch_scans_s:.0f} | {r.jax_scans_s:.0f} "
          f"| {r.speedup:.2f}x |")

  print("\nJAX compile time (once per layer type and pass; both densities share the shapes):\n")
  print("| layer | pass | trace+lower s | compile s |")
  print("|---|---|---:|---:|")
  for layer_type, by_pass in compiles.items():
    for name, c in by_pass.items():
      print(f"| {layer_type} | {name} | {c.trace_lower_s:.2f} | {c.compile_s:.2f} |")


if __name__ == "__main__":
  main()
