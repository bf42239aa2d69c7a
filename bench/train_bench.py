"""Benchmark: epoch time of OUR training loop against a PyTorch + PyG pipeline of the same recipe.

What is measured, in one process, on the same data and in the same batch order:

  * cohorts (`--cohorts`, default both): `builtin`, the built-in synthetic cohort
    (`make_synthetic_cohort(num_subjects=300, seed=0)`: edge density 0.3 at train.py's threshold
    0.2, ~970 scans of 100 regions), and `dense`, the same generator at edge density 0.6 (twice the
    edges: PyG's edge-list aggregation grows with them, our dense batched matmul does not). Of
    each, 120 training subjects are used (a seeded draw from fold 0's training split; the
    reference's measurement was one fold's training split of 120 subjects).
  * one epoch = one pass over the 120 subjects in batches of 16 (8 batches, the last one with 8
    subjects) in a freshly shuffled order; both frameworks get the same order in each epoch.
  * three modes (`--modes`, default all):
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
      - `default`: train.py's default recipe (`ModelConfig()`, `OptimConfig()`), set up as
        train.py sets up a fold (`train.loop.setup_fold` on the 120 subjects: their input
        statistics, the linear path fitted on them and their cross-fitted offsets, the focal α
        of their class balance); ours: `train_step` on `SubjectBatch`es with profile_change node
        features; PyTorch = the twin of bench/torch_default.py (PyG SAGEConv on `pyg_batch`
        edge lists carrying the same node features, the concatenation readout, the packed
        BiLSTM, the linear path; focal loss with the fold's α, γ 3, smoothing 0.05 + minority
        forcing, `clip_grad_norm_(1.0)`, `torch.optim.Adam(lr 3e-4, weight_decay 1e-2)` over its
        parameters), from the JAX weights (`twin_state_dict`). Its first steps equal ours
        (tests/stgnn_jax/train/test_default_twin.py).
  * ours: exactly the epoch of `stgnn_jax.train.driver.FoldTrainer` (`train_epoch`); end to end
    and default: batches from `Subjects.batches` (RunConfig defaults: graph_multiple 32,
    max_visits 10), `Placement.batch`, the jitted `train_step` (focal loss + minority forcing,
    clip 1.0, Adam with L2), a per-batch dropout key, and `block_until_ready` once at the end of
    the epoch (the real loop does not sync per step either).
  * PyTorch, reference modes: `TorchGraphEncoder` + `TorchTemporalClassifier` from
    bench/torch_reference.py (PyG's SAGEConv, GraphNorm, TopKPooling, packed BiLSTM), batches
    built by `pyg_batch` (edge lists); loss = the seed's focal loss (alpha 0.9, gamma 3,
    smoothing 0.05, mean) + the reference's minority-forcing cross-entropy (the same objective
    as `train_step`), `torch.optim.Adam(lr 1e-3, weight_decay 1e-4)` over encoder and classifier
    parameters (as the reference; with the frozen encoder their grads are None and Adam skips
    them), `clip_grad_norm_(1.0)`; both models start from the same weights (the torch state
    dicts converted with `params_from_torch`).
  * PyTorch in every mode: in train mode (dropout on, as ours, with torch's own masks);
    `torch.set_num_threads(os.cpu_count())` unless `--torch-threads` says otherwise.
  * host batch construction is inside the epoch time for both (it is part of the pipeline) and is
    also timed on its own, for one epoch's batches: `Subjects.batches` + `Placement.batch` for
    JAX, `pyg_batch` for PyTorch.
  * the fraction of the machine's peak an epoch reaches: the epoch's floating-point operations as
    XLA counts them in our jitted programs (`jax.jit(f).lower(...).cost_analysis()`, summed over
    the epoch's steps and, frozen, its embedding chunks; the program as traced, padding slots and
    the dense aggregation's zeros included; a loop body counts once, so the LSTM's recurrence,
    a small share of a step, is undercounted), divided by the epoch time and by the measured
    peak: a jitted float32 n x n matmul in JAX (n = 2048 on a CPU, 8192 on an accelerator; the
    same dtype and default precision as the model), median of 5. PyTorch's share is given at the
    same count: its edge lists skip the zeros, so that is a model-equivalent rate, not its
    arithmetic.

End to end and default, JAX compiles `train_step` once per graph-count bucket (real visits
rounded up to 32); frozen, it compiles the embedding pass and one classifier step. The first
(warm-up) epoch includes the compilations and is reported on its own; any bucket that a timed
epoch will hit but the warm-up epoch did not is compiled before timing starts (reported too), so
the timed epochs are steady state. Timed epochs alternate PyTorch / JAX so that a load change on
the machine hits both alike. Reported: median seconds per epoch over `--epochs` epochs (default
5), subjects/s = 120 / median, and the speed-up = JAX subjects/s / PyTorch subjects/s. The last
tables are markdown, ready for the README.

  python -m bench.train_bench             # 5 timed epochs per cohort, mode and framework
  python -m bench.train_bench --quick     # 2 timed epochs (smoke test)
  python -m bench.train_bench --modes default frozen --cohorts dense
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
import jax.numpy as jnp
import numpy as np
import torch

from bench.model_bench import (
  load_average,
  time_once,
  use_torch_threads,
  warn_if_loaded,
)
from bench.torch_default import TorchDefaultStep, TorchDefaultSTGNN, twin_state_dict
from bench.torch_reference import (
    SeedFocalLoss,
    TorchSTGNN,
    adam_like,
    minority_forcing,
    pyg_batch,
)
from stgnn_jax.config import ModelConfig, OptimConfig, RunConfig
from stgnn_jax.data import synthetic, synthetic_scans
from stgnn_jax.data.cohort import Cohort
from stgnn_jax.input_pipeline import (
  FoldSplit,
  SubjectBatch,
  Subjects,
  iterate_embedded_batches,
  make_folds,
)
from stgnn_jax.torch_interop.convert import params_from_torch
from stgnn_jax.train.driver import train_epoch
from stgnn_jax.train.engines import OneMember
from stgnn_jax.train.loop import FrozenEncoderScans, setup_fold
from stgnn_jax.train.sharding import Placement
from stgnn_jax.train.state import TrainState, init_params
from stgnn_jax.train.step import encode_graphs, train_step

COHORT_SUBJECTS = 300  # the reference's measurement cohort (fold 0 trains on ~190 of them)
NUM_TRAIN_SUBJECTS = 120
BATCH_SIZE = 16
MODES = ("frozen", "end-to-end", "default")
# Each cohort's expected fraction of region pairs with an edge at train.py's threshold: the
# built-in cohort's, and twice it.
COHORTS = {"builtin": 0.3, "dense": 0.6}
PEAK_REPEATS = 5


# --- Data ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Data:
  """A cohort as both pipelines need it, and the 120 training subjects."""

  name: str
  cohort: Cohort
  run: RunConfig
  split: FoldSplit  # fold 0's, its training subjects replaced by the 120 drawn

  @property
  def train_idx(self) -> np.ndarray:
    return self.split.train

  @property
  def num_scans(self) -> int:
    return sum(len(self.cohort.subjects[i].adjacency) for i in self.train_idx)

  def density(self) -> float:
    """The fraction of ordered region pairs (i != j) with an edge, over the training scans."""
    adjacency = np.concatenate([self.cohort.subjects[i].adjacency for i in self.train_idx])
    n = adjacency.shape[-1]
    return float((adjacency.sum() - np.trace(adjacency, axis1=1, axis2=2).sum())
                 / (adjacency.shape[0] * n * (n - 1)))

  def subjects(self, config: ModelConfig) -> Subjects:
    """The cohort with `config`'s node features (none for the reference's one-hot ones)."""
    return Subjects(self.cohort, self.run, config)


def load_data(name: str, seed: int) -> Data:
  run = RunConfig(batch_size=BATCH_SIZE)  # graph_multiple 32, max_visits 10
  scans = synthetic.make_synthetic_cohort(num_subjects=COHORT_SUBJECTS, seed=0,
                                          edge_density=COHORTS[name], threshold=run.threshold)
  cohort = synthetic_scans.cohort_from_scans(scans, max_visits=run.max_visits)
  split = make_folds(cohort.labels().astype(np.int32), run.num_folds, run.seed)[0]
  chosen = np.random.default_rng(seed).choice(split.train, NUM_TRAIN_SUBJECTS, replace=False)
  return Data(name, cohort, run, split._replace(train=np.sort(chosen)))


def epoch_order(data: Data, seed: int, epoch: int) -> np.ndarray:
  """The shuffled subject order of one epoch; both frameworks use it."""
  return np.random.default_rng([seed, epoch]).permutation(data.train_idx)


def batch_groups(order: np.ndarray) -> list[np.ndarray]:
  return [order[s:s + BATCH_SIZE] for s in range(0, len(order), BATCH_SIZE)]


# --- Ours: the training loop of stgnn_jax.train.loop ------------------------------------------

def xla_flops(jitted: Any, *args: Any, **kwargs: Any) -> float:
  """XLA's count of floating-point operations of one call of `jitted` on these arguments (the
  traced program, before optimisation; a loop body counts once)."""
  return float(jitted.lower(*args, **kwargs).cost_analysis()["flops"])


class JaxPipeline:
  """A single run's epoch: `stgnn_jax.train.driver.train_epoch` (frozen: one embedding pass over
  the epoch's scans + classifier steps on `EmbeddedBatch`es; otherwise `Subjects.batches` ->
  `Placement.batch` -> `train_step`)."""

  def __init__(self, state: TrainState, subjects: Subjects, data: Data, placement: Placement,
               seed: int):
    self.state = state
    self.subjects = subjects
    self.run = data.run
    self.placement = placement
    self.key = jax.random.fold_in(jax.random.key(seed), 1)
    self.frozen_scans = (FrozenEncoderScans(subjects, data.train_idx, data.run, placement)
                         if state.model_config.freeze_encoder else None)

  def epoch(self, order: np.ndarray, epoch: int) -> None:
    state, step_metrics = train_epoch(OneMember(self.placement), self.state, epoch,
                                      self.subjects, order, self.run, self.placement,
                                      jax.random.fold_in(self.key, epoch), self.frozen_scans)
    self.state = jax.block_until_ready(state)
    jax.block_until_ready(step_metrics)

  def compile_bucket(self, batch: SubjectBatch) -> None:
    """Runs (and discards) one step on `batch`, compiling its graph bucket if new."""
    jax.block_until_ready(train_step(self.state, batch, self.key))

  def graph_buckets(self, order: np.ndarray) -> dict[int, SubjectBatch]:
    """{graph slots: one host batch of that shape} over one epoch's batches."""
    return {int(b.visit_slot.shape[0]): b
            for b in self.subjects.batches(order, BATCH_SIZE, self.run)}

  def build_only(self, order: np.ndarray) -> None:
    """The host side of an epoch's batches (no model work)."""
    if self.frozen_scans is None:
      batches = (self.placement.batch(b)
                 for b in self.subjects.batches(order, BATCH_SIZE, self.run))
    else:
      positions = np.array([self.frozen_scans.position[int(i)] for i in order])
      batches = (self.placement.batch(b) for b in iterate_embedded_batches(
          self.frozen_scans.table, batch_size=BATCH_SIZE, max_visits=self.run.max_visits,
          order=positions))
    jax.block_until_ready(list(batches))

  def epoch_flops(self, order: np.ndarray) -> float:
    """XLA's floating-point operations of the epoch over `order`: its steps (one count per
    graph bucket) and, frozen, its embedding chunks."""
    state = self.state
    if self.frozen_scans is None:
      per_bucket = {slots: xla_flops(train_step, state, self.placement.batch(batch), self.key)
                    for slots, batch in self.graph_buckets(order).items()}
      return sum(per_bucket[int(b.visit_slot.shape[0])]
                 for b in self.subjects.batches(order, BATCH_SIZE, self.run))
    chunks = self.frozen_scans.chunks
    graphs, time_feature = chunks[0]
    embed = xla_flops(encode_graphs, state.params, graphs, time_feature, self.key,
                      model_config=state.model_config)
    batches = list(self.frozen_scans.batches(state, order, self.key))
    return len(chunks) * embed + len(batches) * xla_flops(train_step, state, batches[0], self.key)


# --- PyTorch + PyG: the reference's pipeline and the default recipe's twin -------------------

class TorchPipeline:
  """An epoch of PyTorch steps: per batch of subjects, `build` then `step`."""

  def build(self, chosen: np.ndarray) -> tuple[Any, ...]:
    raise NotImplementedError

  def step(self, built: tuple[Any, ...], epoch: int) -> None:
    raise NotImplementedError

  def epoch(self, order: np.ndarray, epoch: int) -> None:
    for chosen in batch_groups(order):
      self.step(self.build(chosen), epoch)

  def build_only(self, order: np.ndarray) -> None:
    for chosen in batch_groups(order):
      self.build(chosen)


class ReferencePipeline(TorchPipeline):
  """Per batch: `pyg_batch`, encoder (under no_grad when frozen), LSTM classifier, Adam step."""

  def __init__(self, model: TorchSTGNN, subjects: Subjects, frozen: bool, optim: OptimConfig):
    self.model = model.train()
    self.subjects = subjects
    self.frozen = frozen
    self.optim = optim
    self.optimizer = adam_like(model.parameters(), optim)

  def build(self, chosen: np.ndarray) -> tuple[dict[str, Any], torch.Tensor]:
    inputs = pyg_batch([self.subjects.adjacency[i] for i in chosen])
    labels = torch.from_numpy(self.subjects.labels[chosen]).long()
    return inputs, labels

  def embed(self, inputs: dict[str, Any]) -> torch.Tensor:
    return self.model.encoder(inputs["x"], inputs["edge_index"], inputs["batch"],
                              inputs["num_graphs"])

  def step(self, built: tuple[Any, ...], epoch: int) -> None:
    inputs, labels = built
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


class DefaultPipeline(TorchPipeline):
  """Per batch: `pyg_batch` with the subjects' node features, the twin's step
  (`TorchDefaultStep`: model, focal loss + forcing, clipping, Adam with L2)."""

  def __init__(self, twin: TorchDefaultStep, subjects: Subjects):
    assert subjects.features is not None and subjects.offsets is not None
    twin.model.train()
    self.twin = twin
    self.subjects = subjects
    self.features, self.offsets = subjects.features, subjects.offsets

  def build(self, chosen: np.ndarray) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    inputs = pyg_batch([self.subjects.adjacency[i] for i in chosen],
                       features=[self.features[i] for i in chosen])
    labels = torch.from_numpy(self.subjects.labels[chosen]).long()
    return inputs, labels, torch.from_numpy(self.offsets[chosen])

  def step(self, built: tuple[Any, ...], epoch: int) -> None:
    self.twin(*built, epoch)


def make_pipelines(mode: str, data: Data, seed: int) -> tuple[JaxPipeline, TorchPipeline]:
  """Both frameworks' pipelines of `mode` on `data`, from the same weights."""
  placement = Placement(None, BATCH_SIZE, data.run.eval_batch_size, data.run.graph_multiple)
  torch.manual_seed(seed)
  if mode == "default":
    config, optim = ModelConfig(input_dim=data.cohort.num_nodes), OptimConfig()
    fold, state = setup_fold(0, data.split, data.subjects(config), config, optim, data.run,
                             placement, directory="")
    model = TorchDefaultSTGNN(config)
    model.load_state_dict(twin_state_dict(jax.device_get(state.params), config), strict=True)
    return (JaxPipeline(state, fold.subjects, data, placement, seed),
            DefaultPipeline(TorchDefaultStep(model, optim, fold.focal_alpha), fold.subjects))
  frozen = mode == "frozen"
  config = ModelConfig.reference(freeze_encoder=frozen)
  reference = TorchSTGNN(config)
  params = params_from_torch({"encoder": reference.encoder.state_dict(),
                              "classifier": reference.classifier.state_dict()}, config)
  subjects = data.subjects(config)
  state = placement.replicate(TrainState.create(params, config, OptimConfig.reference()))
  return (JaxPipeline(state, subjects, data, placement, seed),
          ReferencePipeline(reference, subjects, frozen, OptimConfig.reference()))


def peak_flops() -> tuple[float, int]:
  """(FLOP/s, n) of a jitted float32 n x n matmul in JAX, median of `PEAK_REPEATS` calls: the
  machine's measured peak for the model's dtype."""
  n = 2048 if jax.default_backend() == "cpu" else 8192
  a, b = jax.random.normal(jax.random.key(0), (2, n, n), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, b))
  seconds = statistics.median(time_once(lambda: jax.block_until_ready(matmul(a, b)))
                              for _ in range(PEAK_REPEATS))
  return 2 * n**3 / seconds, n


# --- Timing -------------------------------------------------------------------------------------

@dataclasses.dataclass
class ModeResult:
  cohort: str
  mode: str
  torch_epochs: list[float]
  jax_epochs: list[float]
  jax_first_epoch_s: float
  jax_extra_compile_s: float
  buckets: list[int]
  torch_build_s: float
  jax_build_s: float
  epoch_flops: float  # XLA's count of one epoch's programs (`JaxPipeline.epoch_flops`)

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
  started = time.perf_counter()
  ours, theirs = make_pipelines(mode, data, seed)
  print(f"  {data.name} {mode}: set up in {time.perf_counter() - started:.1f} s"
        + (" (the linear path's fit included)" if mode == "default" else ""), flush=True)
  orders = [epoch_order(data, seed, e) for e in range(epochs + 1)]

  # Epoch 0: warm-up for both (JAX compiles here), timed on its own.
  jax_first = time_once(lambda: ours.epoch(orders[0], 0))
  torch_first = time_once(lambda: theirs.epoch(orders[0], 0))
  if ours.frozen_scans is not None:  # one embedding pass and one step shape: nothing is left
    seen, missing, extra, buckets = {}, {}, 0.0, []
  else:
    seen = ours.graph_buckets(orders[0])
    later: dict[int, SubjectBatch] = {}
    for order in orders[1:]:
      later.update(ours.graph_buckets(order))
    missing = {g: b for g, b in later.items() if g not in seen}
    extra = time_once(lambda: [ours.compile_bucket(ours.placement.batch(b))
                               for b in missing.values()])
    buckets = sorted(set(seen) | set(later))
  print(f"  {data.name} {mode}: JAX warm-up epoch {jax_first:.2f} s (compiles graph buckets "
        f"{sorted(seen) or 'none: embedding pass + classifier step'}), {len(missing)} more "
        f"bucket(s) {sorted(missing)} compiled in {extra:.2f} s; PyTorch first epoch "
        f"{torch_first:.2f} s", flush=True)
  flops = ours.epoch_flops(orders[1])

  # Host batch construction alone, one epoch's batches (median of 3 passes).
  jax_build = statistics.median(time_once(lambda: ours.build_only(orders[0])) for _ in range(3))
  torch_build = statistics.median(time_once(lambda: theirs.build_only(orders[0]))
                                  for _ in range(3))

  torch_epochs, jax_epochs = [], []
  for e in range(1, epochs + 1):  # alternated: a load spike hits both frameworks alike
    torch_epochs.append(time_once(lambda e=e: theirs.epoch(orders[e], e)))
    jax_epochs.append(time_once(lambda e=e: ours.epoch(orders[e], e)))
    print(f"  {data.name} {mode} epoch {e}: PyTorch {torch_epochs[-1]:.3f} s, JAX "
          f"{jax_epochs[-1]:.3f} s", flush=True)
  return ModeResult(data.name, mode, torch_epochs, jax_epochs, jax_first, extra, buckets,
                    torch_build, jax_build, flops)


def step_breakdown(data: Data, seed: int, rounds: int) -> list[str]:
  """Markdown rows: synced ms per end-to-end `train_step` (on `SubjectBatch`es) for each graph
  bucket, with and without dropout in the encoder (`gnn_dropout=0`), calls interleaved round by
  round. The frozen loop has no per-bucket graph step, so it has no breakdown.

  The epoch loop never syncs per step; this is a diagnostic of where a step's time goes.
  """
  subjects = data.subjects(ModelConfig.reference())
  buckets: dict[int, SubjectBatch] = {}
  for e in range(6):
    buckets.update({int(b.visit_slot.shape[0]): b for b in subjects.batches(
        epoch_order(data, seed, e), BATCH_SIZE, data.run)})
  key = jax.random.key(seed)
  rows = []
  for graphs, batch in sorted(buckets.items()):
    batch = jax.device_put(batch)
    states = {}
    for dropout in (ModelConfig.gnn_dropout, 0.0):
      config = ModelConfig.reference(freeze_encoder=False, gnn_dropout=dropout)
      first = next(subjects.batches(data.train_idx, BATCH_SIZE, data.run))
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
    rows.append(f"| {data.name} | end-to-end | {graphs} | {real} | {with_ms:.1f} "
                f"| {without_ms:.1f} | {1 - without_ms / with_ms:.0%} |")
    print(f"  {data.name} end-to-end bucket {graphs}: {with_ms:.1f} ms/step, {without_ms:.1f} ms "
          "without encoder dropout", flush=True)
  return rows


# --- Main ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--epochs", type=int, default=None,
                      help="timed epochs per cohort, mode and framework (default 5, --quick 2)")
  parser.add_argument("--quick", action="store_true", help="2 timed epochs: a smoke test")
  parser.add_argument("--torch-threads", type=int, default=None,
                      help="torch.set_num_threads value (default os.cpu_count())")
  parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
  parser.add_argument("--cohorts", nargs="+", choices=list(COHORTS), default=list(COHORTS),
                      help="builtin: the built-in synthetic cohort (edge density 0.3); dense: "
                      "the same generator at edge density 0.6")
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


def print_table(header: str, rows: list[str]) -> None:
  print(header)
  print("|" + "|".join("---" if i < 2 else "---:" for i in range(header.count("|") - 1)) + "|")
  print("\n".join(rows))


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  cpus, threads = use_torch_threads(args.torch_threads)

  print(f"# STGNN training-loop benchmark: JAX {jax.__version__} ({jax.default_backend()}) vs "
        f"PyTorch {torch.__version__} + PyG")
  print(f"{platform.processor() or platform.machine()}, {cpus} CPUs; "
        f"torch.set_num_threads({threads}) -> PyTorch uses {torch.get_num_threads()} threads; "
        f"{load_average()}", flush=True)
  warn_if_loaded(cpus)
  peak, n = peak_flops()
  print(f"measured peak: {peak / 1e9:.1f} GFLOP/s (jitted float32 {n} x {n} matmul, median of "
        f"{PEAK_REPEATS})", flush=True)

  results: list[ModeResult] = []
  cohorts: dict[str, Data] = {}
  for name in args.cohorts:
    started = time.perf_counter()
    data = cohorts[name] = load_data(name, args.seed)
    labels = data.cohort.labels()[data.train_idx]
    print(f"data: {name} synthetic cohort ({COHORT_SUBJECTS} subjects, edge density "
          f"{data.density():.2f}) built in {time.perf_counter() - started:.1f} s; "
          f"{NUM_TRAIN_SUBJECTS} training subjects ({int(labels.sum())} converters, "
          f"{data.num_scans} scans), batches of {BATCH_SIZE}, {args.epochs} timed epochs after "
          "one warm-up epoch, medians", flush=True)
    for mode in args.modes:
      results.append(bench_mode(mode, data, args.epochs, args.seed))

  print(f"\n## Results ({load_average()})\n")
  warn_if_loaded(cpus)
  print(f"One epoch = {NUM_TRAIN_SUBJECTS} subjects in batches of {BATCH_SIZE}, host batch "
        f"construction included; median of {args.epochs} epochs; PyTorch eager with "
        f"{torch.get_num_threads()} threads, JAX jitted `train_step`.\n")
  print_table("| cohort | mode | PyTorch s/epoch | JAX s/epoch | PyTorch subjects/s | "
              "JAX subjects/s | speed-up |",
              [f"| {r.cohort} | {r.mode} | {r.torch_s:.3f} | {r.jax_s:.3f} "
               f"| {r.torch_subjects_s:.0f} | {r.jax_subjects_s:.0f} | {r.speedup:.2f}x |"
               for r in results])

  print(f"\nShare of the measured peak ({peak / 1e9:.1f} GFLOP/s, float32 {n} x {n} matmul): "
        "an epoch's floating-point operations as XLA counts them in our programs, per epoch "
        "second; PyTorch's at the same count (its edge lists skip the dense aggregation's "
        "zeros).\n")
  print_table("| cohort | mode | GFLOP/epoch | JAX GFLOP/s | JAX share of peak | "
              "PyTorch share of peak |",
              [f"| {r.cohort} | {r.mode} | {r.epoch_flops / 1e9:.1f} "
               f"| {r.epoch_flops / r.jax_s / 1e9:.1f} | {r.epoch_flops / r.jax_s / peak:.1%} "
               f"| {r.epoch_flops / r.torch_s / peak:.1%} |" for r in results])

  print("\nJAX first epoch (compilation of the buckets it meets + one epoch) and host batch "
        "construction per epoch (inside the epoch times above):\n")
  print_table("| cohort | mode | JAX first epoch s | later buckets compile s | graph buckets | "
              "JAX batches ms/epoch | PyG batches ms/epoch |",
              [f"| {r.cohort} | {r.mode} | {r.jax_first_epoch_s:.2f} "
               f"| {r.jax_extra_compile_s:.2f} "
               f"| {', '.join(map(str, r.buckets)) or 'none (embedded)'} "
               f"| {1e3 * r.jax_build_s:.1f} | {1e3 * r.torch_build_s:.1f} |" for r in results])

  for name in args.cohorts:
    by_mode = {r.mode: r for r in results if r.cohort == name}
    if "frozen" in by_mode:
      r = by_mode["frozen"]
      print(f"\n{name}: target frozen: JAX >= 5x PyTorch subjects/s: {r.speedup:.2f}x -> "
            f"{'met' if r.speedup >= 5 else 'NOT met'}")
    if "frozen" in by_mode and "end-to-end" in by_mode:
      e2e, frozen = by_mode["end-to-end"], by_mode["frozen"]
      ratio = e2e.jax_subjects_s / frozen.torch_subjects_s
      print(f"{name}: target end-to-end: JAX end-to-end faster than PyTorch frozen: "
            f"{ratio:.2f}x -> {'met' if ratio > 1 else 'NOT met'}")

  if args.breakdown:
    print("\n## Breakdown: one synced end-to-end JAX train_step per graph bucket\n", flush=True)
    rows = [row for name in args.cohorts
            for row in step_breakdown(cohorts[name], args.seed, rounds=max(5, args.epochs))]
    print(f"\n({load_average()}; median ms of interleaved calls, fresh weights)\n")
    print_table("| cohort | mode | graph slots | real scans | ms/step | ms/step, gnn_dropout=0 "
                "| share of encoder dropout |", rows)


if __name__ == "__main__":
  main()
