"""Benchmark: epoch time of OUR training loop against a PyTorch + PyG pipeline of the same model.

What is measured, in one process on the CPU, on the same data and in the same batch order:

  * data: the built-in synthetic cohort (`make_synthetic_cohort(num_subjects=300, seed=0)` ->
    `cohort_from_scans`, ~970 scans of 100 regions), of which 120 training subjects are used (a
    seeded draw from fold 0's training split; the reference's measurement was one fold's
    training split of 120 subjects). Both frameworks train on these 120 subjects.
  * one epoch = one pass over the 120 subjects in batches of 16 (8 batches, the last one with 8
    subjects) in a freshly shuffled order; both frameworks get the same order in each epoch.
  * two modes:
      - `frozen`: ours = `ModelConfig.reference()` (the reference's frozen encoder), as
        `train.py --preset reference` runs it: each epoch
        embeds all 120 subjects' scans once (`FrozenEncoderScans`: chunks of 32 graph slots,
        fresh encoder dropout per scan and epoch), then `train_step` trains the classifier on
        `EmbeddedBatch`es of those embeddings; PyTorch = the reference's behaviour: per batch
        the encoder computes the graph embeddings under `torch.no_grad()` (as the reference's
        data loader does), then the LSTM classifier is trained.
      - `end-to-end`: ours = `ModelConfig.reference(freeze_encoder=False)` (the reference's
        architecture, encoder trained); PyTorch = the same
        pipeline with gradients through the encoder.
  * ours: exactly the epoch of `stgnn_jax.train.driver.FoldTrainer` (`train_epoch`); end to end:
    batches from `Subjects.batches` (RunConfig defaults: graph_multiple 32, max_visits 10),
    `Placement.batch`, the jitted `train_step` (focal loss + minority forcing, clip 1.0, Adam
    with L2 1e-4), a per-batch dropout key, and `block_until_ready` once at the end of the
    epoch (the real loop does not sync per step either).
  * PyTorch: `TorchGraphEncoder` + `TorchTemporalClassifier` from bench/torch_reference.py (PyG's
    SAGEConv, GraphNorm, TopKPooling, packed BiLSTM), both in train mode (dropout on, as ours),
    batches built by `pyg_batch` (edge lists); loss = the seed's focal loss (alpha 0.9, gamma 3,
    smoothing 0.05, mean) + the reference's minority-forcing cross-entropy (the same objective
    as `train_step`), `torch.optim.Adam(lr 1e-3, weight_decay 1e-4)` over encoder and classifier
    parameters (as the reference; with the frozen encoder their grads are None and Adam skips
    them), `clip_grad_norm_(1.0)`; `torch.set_num_threads(os.cpu_count())` unless
    `--torch-threads` says otherwise.
  * both models start from the same weights (the torch state dicts converted with
    `params_from_torch`).
  * host batch construction is inside the epoch time for both (it is part of the pipeline) and is
    also timed on its own, for one epoch's batches: `Subjects.batches` + `Placement.batch` for
    JAX, `pyg_batch` for PyTorch.

End to end, JAX compiles `train_step` once per graph-count bucket (real visits rounded up to
32); frozen, it compiles the embedding pass and one classifier step. The first
(warm-up) epoch includes the compilations and is reported on its own; any bucket that a timed
epoch will hit but the warm-up epoch did not is compiled before timing starts (reported too), so
the timed epochs are steady state. Timed epochs alternate PyTorch / JAX so that a load change on
the machine hits both alike. Reported: median seconds per epoch over `--epochs` epochs (default
5), subjects/s = 120 / median, and the speed-up = JAX subjects/s / PyTorch subjects/s. The last
table is markdown, ready for the README.

  python -m bench.train_bench             # 5 timed epochs per mode and framework
  python -m bench.train_bench --quick     # 2 timed epochs (smoke test)
  python -m bench.train_bench --epochs 10 --torch-threads 1
  python -m bench.train_bench --breakdown # + synced ms per end-to-end train_step per bucket,
                                          #   with and without encoder dropout

This is a benchmark, not a test: numbers depend on the machine and on its load (the load average
is printed before and after; a warning is printed when it exceeds the number of CPUs).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from typing import Any

import jax
import numpy as np
import torch

from bench.model_bench import (
  load_average,
  time_once,
  use_torch_threads,
  warn_if_loaded,
)
from bench.torch_reference import SeedFocalLoss, TorchSTGNN, minority_forcing, pyg_batch
from stgnn_jax.config import ModelConfig, OptimConfig, RunConfig
from stgnn_jax.data import synthetic, synthetic_scans
from stgnn_jax.input_pipeline import (
  SubjectBatch,
  Subjects,
  iterate_embedded_batches,
  make_folds,
)
from stgnn_jax.torch_interop.convert import params_from_torch
from stgnn_jax.train.driver import train_epoch
from stgnn_jax.train.engines import OneMember
from stgnn_jax.train.loop import FrozenEncoderScans
from stgnn_jax.train.sharding import Placement
from stgnn_jax.train.state import TrainState, init_params
from stgnn_jax.train.step import train_step

COHORT_SUBJECTS = 300  # the reference's measurement cohort (fold 0 trains on ~190 of them)
NUM_TRAIN_SUBJECTS = 120
BATCH_SIZE = 16
MODES = ("frozen", "end-to-end")


# --- Data ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Data:
  """The cohort as both pipelines need it, and the 120 training subjects."""

  subjects: Subjects
  run: RunConfig
  train_idx: np.ndarray  # [120] subject indices

  @property
  def adjacency(self) -> list[np.ndarray]:
    return self.subjects.adjacency

  @property
  def num_scans(self) -> int:
    return sum(len(self.adjacency[i]) for i in self.train_idx)


def load_data(seed: int) -> Data:
  run = RunConfig(batch_size=BATCH_SIZE)  # graph_multiple 32, max_visits 10
  scans = synthetic.make_synthetic_cohort(num_subjects=COHORT_SUBJECTS, seed=0,
                                          threshold=run.threshold)
  cohort = synthetic_scans.cohort_from_scans(scans, max_visits=run.max_visits)
  subjects = Subjects(cohort, run, ModelConfig.reference())  # the reference's one-hot features
  train, _, _ = make_folds(subjects.labels, run.num_folds, run.seed)[0]
  chosen = np.random.default_rng(seed).choice(train, NUM_TRAIN_SUBJECTS, replace=False)
  return Data(subjects, run, np.sort(chosen))


def epoch_order(data: Data, seed: int, epoch: int) -> np.ndarray:
  """The shuffled subject order of one epoch; both frameworks use it."""
  return np.random.default_rng([seed, epoch]).permutation(data.train_idx)


def batch_groups(order: np.ndarray) -> list[np.ndarray]:
  return [order[s:s + BATCH_SIZE] for s in range(0, len(order), BATCH_SIZE)]


# --- Ours: the training loop of stgnn_jax.train.loop ------------------------------------------

class JaxPipeline:
  """A single run's epoch: `stgnn_jax.train.driver.train_epoch` (frozen: one embedding pass over
  the epoch's scans + classifier steps on `EmbeddedBatch`es; end-to-end: `Subjects.batches` ->
  `Placement.batch` -> `train_step`)."""

  def __init__(self, config: ModelConfig, params: Any, data: Data, seed: int):
    self.data = data
    self.placement = Placement(None, BATCH_SIZE, data.run.eval_batch_size,
                               data.run.graph_multiple)
    self.state = self.placement.replicate(TrainState.create(params, config,
                                                             OptimConfig.reference()))
    self.key = jax.random.fold_in(jax.random.key(seed), 1)
    self.frozen_scans = (FrozenEncoderScans(data.subjects, data.train_idx, data.run,
                                            self.placement)
                         if config.freeze_encoder else None)

  def epoch(self, order: np.ndarray, epoch: int) -> None:
    state, step_metrics = train_epoch(OneMember(self.placement), self.state, epoch,
                                      self.data.subjects, order, self.data.run, self.placement,
                                      jax.random.fold_in(self.key, epoch), self.frozen_scans)
    self.state = jax.block_until_ready(state)
    jax.block_until_ready(step_metrics)

  def compile_bucket(self, batch: SubjectBatch) -> None:
    """Runs (and discards) one step on `batch`, compiling its graph bucket if new."""
    jax.block_until_ready(train_step(self.state, batch, self.key))

  def build_only(self, order: np.ndarray) -> None:
    """The host side of an epoch's batches (no model work)."""
    if self.frozen_scans is None:
      batches = (self.placement.batch(b)
                 for b in self.data.subjects.batches(order, BATCH_SIZE, self.data.run))
    else:
      positions = np.array([self.frozen_scans.position[int(i)] for i in order])
      batches = (self.placement.batch(b) for b in iterate_embedded_batches(
          self.frozen_scans.table, batch_size=BATCH_SIZE,
          max_visits=self.data.run.max_visits, order=positions))
    jax.block_until_ready(list(batches))


def graph_buckets(data: Data, order: np.ndarray) -> dict[int, SubjectBatch]:
  """{graph slots: one host batch of that shape} over one epoch's batches."""
  return {int(b.visit_slot.shape[0]): b
          for b in data.subjects.batches(order, BATCH_SIZE, data.run)}


# --- PyTorch + PyG: the reference's pipeline ----------------------------------------------------

class TorchPipeline:
  """Per batch: `pyg_batch`, encoder (under no_grad when frozen), LSTM classifier, Adam step."""

  def __init__(self, model: TorchSTGNN, data: Data, frozen: bool, optim: OptimConfig):
    self.model = model.train()
    self.data = data
    self.frozen = frozen
    self.optim = optim
    self.optimizer = torch.optim.Adam(model.parameters(), lr=optim.lr,
                                      betas=(optim.adam_b1, optim.adam_b2), eps=optim.adam_eps,
                                      weight_decay=optim.weight_decay)

  def build(self, chosen: np.ndarray) -> tuple[dict[str, Any], torch.Tensor]:
    inputs = pyg_batch([self.data.adjacency[i] for i in chosen])
    labels = torch.from_numpy(self.data.subjects.labels[chosen]).long()
    return inputs, labels

  def embed(self, inputs: dict[str, Any]) -> torch.Tensor:
    return self.model.encoder(inputs["x"], inputs["edge_index"], inputs["batch"],
                              inputs["num_graphs"])

  def step(self, inputs: dict[str, Any], labels: torch.Tensor, epoch: int) -> None:
    if self.frozen:
      with torch.no_grad():  # the reference's data loader
        embedding = self.embed(inputs)
    else:
      embedding = self.embed(inputs)
    lengths = inputs["lengths"]
    sequences = embedding.new_zeros((len(lengths), int(lengths.max()), embedding.shape[-1]))
    sequences = sequences.index_put((inputs["subject"], inputs["visit"]), embedding)
    logits = self.model.classifier(sequences, lengths)
    o = self.optim
    loss = (SeedFocalLoss(o.focal_alpha, o.focal_gamma, label_smoothing=o.label_smoothing)(
                logits, labels)
            + minority_forcing(logits, labels, epoch, o.minority_focus_epochs))
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.clip_norm)
    self.optimizer.step()

  def epoch(self, order: np.ndarray, epoch: int) -> None:
    for chosen in batch_groups(order):
      self.step(*self.build(chosen), epoch)

  def build_only(self, order: np.ndarray) -> None:
    for chosen in batch_groups(order):
      self.build(chosen)


# --- Timing -------------------------------------------------------------------------------------

@dataclasses.dataclass
class ModeResult:
  mode: str
  torch_epochs: list[float]
  jax_epochs: list[float]
  jax_first_epoch_s: float
  jax_extra_compile_s: float
  buckets: list[int]
  torch_build_s: float
  jax_build_s: float

  @property
  def torch_s(self) -> float:
    return statistics.median(self.torch_epochs)

  @property
  def jax_s(self) -> float:
    return statistics.median(self.jax_epochs)

  @property
  def torch_subjects_s(self) -> float:
    return NUM_TRAIN_SUBJECTS / self.torch_s

  @property
  def jax_subjects_s(self) -> float:
    return NUM_TRAIN_SUBJECTS / self.jax_s

  @property
  def speedup(self) -> float:
    return self.jax_subjects_s / self.torch_subjects_s


def bench_mode(mode: str, data: Data, epochs: int, seed: int) -> ModeResult:
  frozen = mode == "frozen"
  config = ModelConfig.reference(freeze_encoder=frozen)
  torch.manual_seed(seed)
  model = TorchSTGNN(config)
  params = params_from_torch({"encoder": model.encoder.state_dict(),
                              "classifier": model.classifier.state_dict()}, config)
  ours = JaxPipeline(config, params, data, seed)
  theirs = TorchPipeline(model, data, frozen, OptimConfig.reference())
  orders = [epoch_order(data, seed, e) for e in range(epochs + 1)]

  # Epoch 0: warm-up for both (JAX compiles here), timed on its own.
  jax_first = time_once(lambda: ours.epoch(orders[0], 0))
  torch_first = time_once(lambda: theirs.epoch(orders[0], 0))
  if frozen:  # one embedding pass and one step shape: nothing is left to compile
    seen, missing, extra, buckets = {}, {}, 0.0, []
  else:
    seen = graph_buckets(data, orders[0])
    later: dict[int, SubjectBatch] = {}
    for order in orders[1:]:
      later.update(graph_buckets(data, order))
    missing = {g: b for g, b in later.items() if g not in seen}
    extra = time_once(lambda: [ours.compile_bucket(ours.placement.batch(b))
                               for b in missing.values()])
    buckets = sorted(set(seen) | set(later))
  print(f"  {mode}: JAX warm-up epoch {jax_first:.2f} s (compiles graph buckets "
        f"{sorted(seen) or 'none: embedding pass + classifier step'}), {len(missing)} more "
        f"bucket(s) {sorted(missing)} compiled in {extra:.2f} s; PyTorch first epoch "
        f"{torch_first:.2f} s", flush=True)

  # Host batch construction alone, one epoch's batches (median of 3 passes).
  jax_build = statistics.median(time_once(lambda: ours.build_only(orders[0])) for _ in range(3))
  torch_build = statistics.median(time_once(lambda: theirs.build_only(orders[0]))
                                  for _ in range(3))

  torch_epochs, jax_epochs = [], []
  for e in range(1, epochs + 1):  # alternated: a load spike hits both frameworks alike
    torch_epochs.append(time_once(lambda e=e: theirs.epoch(orders[e], e)))
    jax_epochs.append(time_once(lambda e=e: ours.epoch(orders[e], e)))
    print(f"  {mode} epoch {e}: PyTorch {torch_epochs[-1]:.3f} s, JAX {jax_epochs[-1]:.3f} s",
          flush=True)
  return ModeResult(mode, torch_epochs, jax_epochs, jax_first, extra, buckets, torch_build,
                    jax_build)


def step_breakdown(data: Data, seed: int, rounds: int) -> list[str]:
  """Markdown rows: synced ms per end-to-end `train_step` (on `SubjectBatch`es) for each graph
  bucket, with and without dropout in the encoder (`gnn_dropout=0`), calls interleaved round by
  round. The frozen loop has no per-bucket graph step, so it has no breakdown.

  The epoch loop never syncs per step; this is a diagnostic of where a step's time goes.
  """
  buckets: dict[int, SubjectBatch] = {}
  for e in range(6):
    buckets.update(graph_buckets(data, epoch_order(data, seed, e)))
  key = jax.random.key(seed)
  rows = []
  for graphs, batch in sorted(buckets.items()):
    batch = jax.device_put(batch)
    states = {}
    for dropout in (ModelConfig.gnn_dropout, 0.0):
      config = ModelConfig.reference(freeze_encoder=False, gnn_dropout=dropout)
      first = next(data.subjects.batches(data.train_idx, BATCH_SIZE, data.run))
      state = TrainState.create(init_params(config, first, key), config,
                                OptimConfig.reference())
      jax.block_until_ready(train_step(state, batch, key))  # compiles
      states[dropout] = state
    samples: dict[float, list[float]] = {d: [] for d in states}
    for _ in range(rounds):
      for dropout, state in states.items():
        samples[dropout].append(
            time_once(lambda state=state, batch=batch:
                      jax.block_until_ready(train_step(state, batch, key))))
    with_ms, without_ms = (1e3 * statistics.median(samples[d]) for d in states)
    real = int(batch.lengths.sum())
    rows.append(f"| end-to-end | {graphs} | {real} | {with_ms:.1f} | {without_ms:.1f} "
                f"| {1 - without_ms / with_ms:.0%} |")
    print(f"  end-to-end bucket {graphs}: {with_ms:.1f} ms/step, {without_ms:.1f} ms without "
          "encoder dropout", flush=True)
  return rows


# --- Main ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--epochs", type=int, default=None,
                      help="timed epochs per mode and framework (default 5, --quick 2)")
  parser.add_argument("--quick", action="store_true", help="2 timed epochs: a smoke test")
  parser.add_argument("--torch-threads", type=int, default=None,
                      help="torch.set_num_threads value (default os.cpu_count())")
  parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
  parser.add_argument("--breakdown", action="store_true",
                      help="also time single synced end-to-end train_steps per graph bucket, "
                      "with and without encoder dropout (compiles 2 more steps per bucket)")
  parser.add_argument("--seed", type=int, default=0,
                      help="seed of the subject draw, the epoch orders and the weights")
  args = parser.parse_args(argv)
  if args.epochs is None:
    args.epochs = 2 if args.quick else 5
  if args.epochs < 1:
    parser.error("--epochs must be >= 1")
  return args


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  cpus, threads = use_torch_threads(args.torch_threads)

  print(f"# STGNN training-loop benchmark: JAX {jax.__version__} ({jax.default_backend()}) vs "
        f"PyTorch {torch.__version__} + PyG")
  print(f"{platform.processor() or platform.machine()}, {cpus} CPUs; "
        f"torch.set_num_threads({threads}) -> PyTorch uses {torch.get_num_threads()} threads; "
        f"{load_average()}", flush=True)
  warn_if_loaded(cpus)
  started = time.perf_counter()
  data = load_data(args.seed)
  labels = data.subjects.labels[data.train_idx]
  print(f"data: synthetic cohort ({COHORT_SUBJECTS} subjects) built in "
        f"{time.perf_counter() - started:.1f} s; "
        f"{NUM_TRAIN_SUBJECTS} training subjects ({int(labels.sum())} converters, "
        f"{data.num_scans} scans), batches of {BATCH_SIZE}, {args.epochs} timed epochs after "
        "one warm-up epoch, medians", flush=True)

  results = []
  for mode in args.modes:
    results.append(bench_mode(mode, data, args.epochs, args.seed))

  print(f"\n## Results ({load_average()})\n")
  warn_if_loaded(cpus)
  print(f"One epoch = {NUM_TRAIN_SUBJECTS} subjects ({data.num_scans} scans) in batches of "
        f"{BATCH_SIZE}, host batch construction included; median of {args.epochs} epochs; "
        f"PyTorch eager with {torch.get_num_threads()} threads, JAX jitted `train_step`.\n")
  print("| mode | PyTorch s/epoch | JAX s/epoch | PyTorch subjects/s | JAX subjects/s | speed-up |")
  print("|---|---:|---:|---:|---:|---:|")
  for r in results:
    print(f"| {r.mode} | {r.torch_s:.3f} | {r.jax_s:.3f} | {r.torch_subjects_s:.0f} "
          f"| {r.jax_subjects_s:.0f} | {r.speedup:.2f}x |")

  print("\nJAX first epoch (compilation of the buckets it meets + one epoch) and host batch "
        "construction per epoch (inside the epoch times above):\n")
  print("| mode | JAX first epoch s | later buckets compile s | graph buckets | "
        "JAX batches ms/epoch | PyG batches ms/epoch |")
  print("|---|---:|---:|---|---:|---:|")
  for r in results:
    print(f"| {r.mode} | {r.jax_first_epoch_s:.2f} | {r.jax_extra_compile_s:.2f} "
          f"| {', '.join(map(str, r.buckets)) or 'none (embedded)'} | {1e3 * r.jax_build_s:.1f} "
          f"| {1e3 * r.torch_build_s:.1f} |")

  by_mode = {r.mode: r for r in results}
  if "frozen" in by_mode:
    r = by_mode["frozen"]
    print(f"\ntarget frozen: JAX >= 5x PyTorch subjects/s: {r.speedup:.2f}x -> "
          f"{'met' if r.speedup >= 5 else 'NOT met'}")
  if "frozen" in by_mode and "end-to-end" in by_mode:
    e2e, frozen = by_mode["end-to-end"], by_mode["frozen"]
    ratio = e2e.jax_subjects_s / frozen.torch_subjects_s
    print(f"target end-to-end: JAX end-to-end faster than PyTorch frozen: {ratio:.2f}x -> "
          f"{'met' if ratio > 1 else 'NOT met'}")

  if args.breakdown:
    print("\n## Breakdown: one synced end-to-end JAX train_step per graph bucket\n", flush=True)
    rows = step_breakdown(data, args.seed, rounds=max(5, args.epochs))
    print(f"\n({load_average()}; median ms of interleaved calls, fresh weights)\n")
    print("| mode | graph slots | real scans | ms/step | ms/step, gnn_dropout=0 "
          "| share of encoder dropout |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
  main()
