"""Sweeps: a grid of loss and optimiser settings trained as one vmapped program per fold.

`--sweep NAME=V1,V2,...` (and `--sweep_grid seeds`, the focal-loss seeds' α × γ × smoothing
grid) makes the Cartesian product of the values its members (`sweep_members`). Within a fold the
members of a chunk train together: their `TrainState`s, plateau states and best parameters carry
a leading member axis, every setting that differs between them is a traced value of the state
(α, γ, smoothing, class weights, the loss's index, the minority-forcing epochs, the learning rate
and weight decay in the optimiser's hyper-parameters), and one jitted, vmapped step updates them
all on the same batch, so the batches are built once. A member whose `seed` differs also starts
from other parameters and draws other dropout and batch orders, so each chunk holds the members
of one seed. Validation, the plateau, the selection of the best epoch and early stopping are
per member, as in a single run; a member that stops keeps its state while the others go on.

Each member trains as `train.py` with its overrides would (same initial parameters, dropout keys
and batch order; the folds and the cohort always come from the run's `--seed`). After the last
fold the member with the highest mean validation AUC is selected (never by test); its folds are
the run's results and its best checkpoints the folds' `best.msgpack`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import time as wall_time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stgnn_jax import atomic
from stgnn_jax.config import LOSSES, ModelConfig, OptimConfig, RunConfig
from stgnn_jax.errors import ConfigError, RunStateError
from stgnn_jax.eval import metrics as metrics_lib
from stgnn_jax.input_pipeline import Subjects
from stgnn_jax.train.checkpoints import (
    load_checkpoint,
    restore_state,
    save_checkpoint,
    save_state,
)
from stgnn_jax.train.loop import (
    Fold,
    FoldProgress,
    FrozenEncoderScans,
    NonFiniteError,
    collect_predictions,
    epoch_losses,
    predict_split,
    record_epoch,
    setup_fold,
    split_metrics,
    tested_result,
)
from stgnn_jax.train.optimizer import plateau_scheduler, plateau_value, set_learning_rate
from stgnn_jax.train.sharding import Placement, to_host
from stgnn_jax.train.step import eval_step, train_step

logger = logging.getLogger(__name__)

SELECTED_BY = ("mean validation AUC over folds (an undefined fold counts as 0.5); ties by the "
               "mean validation balanced accuracy of the folds' best epochs, then grid order")
# A chunk's progress (every member's state: tens of MB) is saved at most this often, and after
# its last epoch; a killed chunk resumes from the last save and trains the same epochs again.
SAVE_SECONDS = 60.0
# Memory a chunk of members may take on the host or device, when --sweep_chunk is not given.
CHUNK_MEMORY_BUDGET = 2 * 2**30


@dataclasses.dataclass(frozen=True)
class Member:
  """One setting of a sweep: its name ("focal_alpha=0.25,focal_gamma=2"), the values it
  overrides, the optimiser configuration they make and its seed."""

  index: int
  name: str
  overrides: dict[str, Any]
  optim_config: OptimConfig
  seed: int


def sweep_members(optim_config: OptimConfig, run: RunConfig) -> list[Member]:
  """The members of `run`'s sweep, the Cartesian product of its axes; [] for a single run.

  Raises ConfigError naming the member and its problem (e.g. a learning rate below min_lr),
  or a swept value that a schedule would replace.
  """
  axes = run.sweep_axes()
  if not axes:
    return []
  names = [name for name, _ in axes]
  for name, schedule in (("focal_gamma", "gamma_schedule"),
                         ("label_smoothing", "smoothing_schedule")):
    if name in names and getattr(optim_config, schedule):
      raise ConfigError(f"--sweep {name}: --{schedule} replaces --{name} at every epoch; "
                        f"sweep one of them, not both.")
  members = []
  for index, values in enumerate(itertools.product(*(values for _, values in axes))):
    overrides = dict(zip(names, values))
    name = ",".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                    for key, value in overrides.items())
    try:
      optim = dataclasses.replace(
          optim_config, **{k: v for k, v in overrides.items() if k != "seed"})
      seed = dataclasses.replace(run, seed=overrides.get("seed", run.seed)).seed
    except ConfigError as error:
      raise ConfigError(f"--sweep member {name}: {error}") from None
    members.append(Member(index, name, overrides, optim, seed))
  return members


def plan_chunks(members: Sequence[Member], chunk_size: int) -> list[list[Member]]:
  """Members in chunks of at most `chunk_size`, each of one seed (in order of appearance)."""
  seeds = list(dict.fromkeys(m.seed for m in members))
  chunks = []
  for seed in seeds:
    group = [m for m in members if m.seed == seed]
    count = math.ceil(len(group) / chunk_size)
    size = math.ceil(len(group) / count)  # balanced chunks: 48 in 20s gives 16, 16, 16
    chunks += [group[i:i + size] for i in range(0, len(group), size)]
  return chunks


def auto_chunk_size(params: Any, model_config: ModelConfig, run: RunConfig, num_members: int,
                    member_devices: int, budget: int = CHUNK_MEMORY_BUDGET) -> int:
  """Members per chunk so that a chunk's arrays fit `budget` bytes per device, a multiple of
  the member devices.

  Per member: the parameters five times over (parameters, Adam's two moments, the best
  parameters, the step's new copy) plus the activations a training step keeps for its
  backward pass, estimated as 16 float32 values per (graph slot, region, hidden unit) of the
  largest batch (`batch_size * max_visits` graphs).
  """
  param_bytes = sum(np.prod(x.shape) * 4 for x in jax.tree.leaves(params))
  graphs = run.batch_size * run.max_visits
  width = model_config.gnn_hidden_dim * model_config.gnn_num_layers + model_config.input_dim
  per_member = 5 * param_bytes + 16 * 4 * graphs * model_config.input_dim * width
  per_device = max(1, min(budget // per_member, math.ceil(num_members / member_devices)))
  return int(per_device * member_devices)


# --- The vmapped programs --------------------------------------------------------------------

def _where_members(mask: jax.Array, new: Any, old: Any) -> Any:
  """Each member's (leading axis) arrays from `new` where `mask`, else from `old`."""
  def select(n, o):
    return jnp.where(mask.reshape(mask.shape + (1,) * (n.ndim - 1)), n, o)
  return jax.tree.map(select, new, old)


@jax.jit
def sweep_train_step(states, batch, rng: jax.Array, active: jax.Array):
  """`train_step` for every member on the same batch and dropout key; a member that is not
  `active` keeps its state."""
  new, metrics = jax.vmap(train_step, in_axes=(0, None, None))(states, batch, rng)
  return _where_members(active, new, states), metrics


sweep_eval_step = jax.jit(jax.vmap(eval_step, in_axes=(0, None)))
select_members = jax.jit(_where_members)


@functools.partial(jax.jit, static_argnums=0)
def sweep_plateau_step(cfg: OptimConfig, states, values: jax.Array, min_scales: jax.Array,
                       active: jax.Array):
  """`plateau_step` per member (each with its own `min_lr / lr`); inactive members keep theirs."""
  def one(state, value, min_scale):
    _, state = plateau_scheduler(cfg, min_scale).update(updates=jnp.zeros(()), state=state,
                                                        value=value)
    return state
  return _where_members(active, jax.vmap(one)(states, values, min_scales), states)


def stack(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


# --- One chunk of members in one fold --------------------------------------------------------

@dataclasses.dataclass
class Chunk:
  """A fold's chunk of members: their folds (fixed inputs), bookkeeping and stacked arrays.

  `members` may end with copies of the last member that only pad the chunk to a multiple of the
  member devices; `real` counts the others.
  """

  members: list[Member]
  real: int
  folds: list[Fold]
  progress: list[FoldProgress]
  state: Any
  plateau_state: Any
  best_params: Any
  directory: str
  placement: Placement
  # A frozen encoder's packed scans of the validation, test and training splits.
  frozen_splits: dict = dataclasses.field(default_factory=dict)

  @property
  def path(self) -> str:
    return os.path.join(self.directory, "progress.msgpack")

  def to_tree(self) -> dict[str, Any]:
    return {"state": self.state, "plateau_state": self.plateau_state,
            "best_params": self.best_params,
            "meta": json.dumps([p.meta() for p in self.progress])}

  def save(self) -> None:
    save_state(self.path, to_host(self.to_tree()))

  def restore(self) -> None:
    tree = restore_state(self.path, to_host(self.to_tree()))
    self.state = self.placement.members(tree["state"])
    self.plateau_state = self.placement.members(tree["plateau_state"])
    self.best_params = self.placement.members(tree["best_params"])
    for progress, meta in zip(self.progress, json.loads(tree["meta"])):
      for name, value in meta.items():
        setattr(progress, name, value)

  def active(self) -> np.ndarray:
    return np.array([not p.stopped and p.next_epoch < f.run.n_epochs
                     for p, f in zip(self.progress, self.folds)])


def setup_chunk(index: int, split, subjects: Subjects, model_config: ModelConfig,
                optim_config: OptimConfig, run: RunConfig, placement: Placement,
                members: list[Member], directory: str) -> Chunk:
  """The chunk's stacked initial state: each member's as `setup_fold` makes it for a single run
  with its overrides (or the state saved in `directory`, to resume from)."""
  padded = members + [members[-1]] * (-len(members) % placement.member_devices)
  folds, states = [], []
  seed_dir = os.path.join(os.path.dirname(directory), f"seed_{members[0].seed}")
  os.makedirs(seed_dir, exist_ok=True)  # a pretrained encoder of the seed's members
  for member in padded:
    member_run = dataclasses.replace(run, seed=member.seed)
    fold, progress = setup_fold(index, split, subjects, model_config, member.optim_config,
                                member_run, placement, seed_dir)
    if folds and fold.frozen_scans is not None:
      fold.frozen_scans = folds[0].frozen_scans  # the fold's packed scans, held once
    folds.append(fold)
    # The stack's static configuration is the run's: every member's own values are traced.
    states.append(progress.state.replace(
        optim_config=optim_config, loss_index=np.int32(LOSSES.index(member.optim_config.loss)),
        focus_epochs=np.int32(member.optim_config.minority_focus_epochs)))
  state = placement.members(stack(to_host(states)))
  plateau = plateau_scheduler(optim_config).init(jnp.zeros(()))
  chunk = Chunk(members=padded, real=len(members), folds=folds,
                progress=[FoldProgress(state=None, plateau_state=None, best_params=None)
                          for _ in padded],
                state=state, plateau_state=placement.members(stack([plateau] * len(padded))),
                best_params=state.params, directory=directory, placement=placement)
  if os.path.exists(chunk.path):
    chunk.restore()
    logger.info("fold %d, %s: resuming at epoch %d", index, os.path.basename(directory),
                min(p.next_epoch for p in chunk.progress))
  return chunk


def predict_members(chunk: Chunk, state: Any, indices: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
  """(logits [members, n, classes], losses [members, n]) of every member for `indices`.

  With a frozen encoder (the same in every member of the chunk) the split's scans are embedded
  once, in eval mode, and only the members' classifiers run on them.
  """
  fold = chunk.folds[0]
  if fold.frozen_scans is None:
    return predict_split(state, fold.subjects, indices, fold.run, chunk.placement,
                         step=sweep_eval_step)
  key = tuple(indices)
  if key not in chunk.frozen_splits:
    chunk.frozen_splits[key] = FrozenEncoderScans(fold.subjects, indices, fold.run,
                                                  chunk.placement)
  batches = chunk.frozen_splits[key].batches(first_member(state), indices, None,
                                             batch_size=fold.run.eval_batch_size)
  return collect_predictions(state, batches, len(indices), fold.run.eval_batch_size,
                             sweep_eval_step)


def first_member(state: Any) -> Any:
  """The first member's `TrainState` of a stacked one: with a frozen encoder, whose encoder is
  every member's of the chunk (one seed, never trained)."""
  return jax.tree.map(lambda x: x[0], state)


def staged(chunk: Chunk, epoch: int) -> Any:
  """The chunk's state for training epoch `epoch`: each member's stage of its schedules."""
  k = len(chunk.members)
  values = {"epoch": np.full(k, epoch, np.int32),
            "focal_gamma": np.array([m.optim_config.gamma_at(epoch) for m in chunk.members],
                                    np.float32),
            "label_smoothing": np.array([m.optim_config.smoothing_at(epoch)
                                         for m in chunk.members], np.float32)}
  return chunk.state.replace(**chunk.placement.members(values))


def chunk_epoch(chunk: Chunk, optim_config: OptimConfig) -> list[dict[str, Any]]:
  """Trains the chunk's next epoch for its active members, validates each, steps their plateaus,
  keeps each one's best epoch; returns the metrics rows of the members that trained it."""
  fold, placement = chunk.folds[0], chunk.placement
  run, active = fold.run, chunk.active()
  epoch = min(p.next_epoch for p, a in zip(chunk.progress, active) if a)
  order = np.random.default_rng([run.seed, fold.index, epoch]).permutation(fold.train_idx)
  epoch_key = jax.random.fold_in(jax.random.fold_in(fold.base_key, 1), epoch)
  started = wall_time.perf_counter()
  mask = placement.members(active)
  state, step_metrics = staged(chunk, epoch), []
  if fold.frozen_scans is not None:
    # The epoch's embeddings are computed once, by the encoder every member shares, as each
    # member's standalone run computes them (the same key).
    batches = fold.frozen_scans.batches(first_member(state), order,
                                        jax.random.fold_in(epoch_key, 2**31 - 1))
  else:
    batches = (placement.batch(b) for b in fold.subjects.batches(order, run.batch_size, run))
  for b, batch in enumerate(batches):
    state, metrics = sweep_train_step(state, batch,
                                      placement.replicate(jax.random.fold_in(epoch_key, b)), mask)
    step_metrics.append(metrics)
  step_metrics = to_host(step_metrics)
  val_logits, val_losses = predict_members(chunk, state, fold.val_idx)
  epoch_seconds = wall_time.perf_counter() - started

  vals, keep, train = [None] * len(chunk.members), active.copy(), {}
  for m in np.flatnonzero(active):
    train[m] = epoch_losses([{k: v[m] for k, v in s.items()} for s in step_metrics])
    train_loss = train[m][0]
    if not math.isfinite(train_loss):
      chunk.progress[m].stop_keeping_best(
          f"non-finite training loss ({train_loss}) at epoch {epoch}", who="member")
      keep[m] = False
      continue
    try:
      vals[m] = split_metrics(val_logits[m], val_losses[m], fold.subjects, fold.val_idx,
                              choose_threshold=run.decision_threshold == "val")
    except NonFiniteError as error:
      chunk.progress[m].stop_keeping_best(
          f"non-finite validation predictions at epoch {epoch} ({error})", who="member")
      keep[m] = False
  keep_mask = placement.members(keep)
  values = np.array([plateau_value(optim_config, v) if v else 0.0 for v in vals], np.float32)
  min_scales = np.array([optim_config.min_lr / m.optim_config.lr for m in chunk.members],
                        np.float32)
  chunk.plateau_state = sweep_plateau_step(optim_config, chunk.plateau_state,
                                           placement.members(values),
                                           placement.members(min_scales), keep_mask)
  scales = to_host(chunk.plateau_state.scale)
  # The learning rate in float64 on the host, as a single run computes it.
  lrs = [m.optim_config.lr * float(scale) for m, scale in zip(chunk.members, scales)]
  state = state.replace(opt_state=set_learning_rate(state.opt_state, np.array(lrs, np.float32)))
  chunk.state = select_members(keep_mask, placement.members(state), chunk.state)

  rows = []
  for m in np.flatnonzero(keep):
    train_loss, train_acc = train[m]
    row = record_epoch(chunk.progress[m], fold.index, epoch, run, vals[m], lr=lrs[m],
                       train_loss=train_loss, train_acc=train_acc, epoch_seconds=epoch_seconds)
    rows.append(dict(row, member=chunk.members[m].name))
  improved = np.array([p.best_epoch == epoch for p in chunk.progress]) & keep
  chunk.best_params = select_members(placement.members(improved), chunk.state.params,
                                     chunk.best_params)
  return rows


def test_chunk(chunk: Chunk) -> list[dict[str, Any]]:
  """Each real member's results.json entry: its best epoch (or last state) on the test fold."""
  fold = chunk.folds[0]
  has_best = chunk.placement.members(np.array([p.best_epoch >= 0 for p in chunk.progress]))
  best = chunk.state.replace(params=select_members(has_best, chunk.best_params,
                                                   chunk.state.params))
  test = predict_members(chunk, best, fold.test_idx)
  train = predict_members(chunk, best, fold.train_idx)
  return [tested_result(chunk.folds[m], chunk.progress[m], (test[0][m], test[1][m]),
                        (train[0][m], train[1][m]))
          for m in range(chunk.real)]


def train_chunk(index: int, split, subjects: Subjects, model_config: ModelConfig,
                optim_config: OptimConfig, run: RunConfig, placement: Placement,
                members: list[Member], directory: str,
                on_epoch: Callable[[list[dict[str, Any]]], None]) -> dict[str, Any]:
  """Trains (or resumes) one chunk of a fold and tests each member; saves its progress at most
  every `SAVE_SECONDS`, then writes the chunk's `result.json` and the members' stacked best
  parameters (`best.msgpack`)."""
  chunk = setup_chunk(index, split, subjects, model_config, optim_config, run, placement,
                      members, directory)
  saved = wall_time.monotonic()
  while chunk.active().any():
    rows = chunk_epoch(chunk, optim_config)
    if wall_time.monotonic() - saved >= SAVE_SECONDS:
      chunk.save()
      saved = wall_time.monotonic()
    on_epoch(rows)
  results = test_chunk(chunk)
  best = to_host(chunk.best_params)
  save_checkpoint(os.path.join(directory, "best.msgpack"),
                  jax.tree.map(lambda x: x[:chunk.real], best), model_config,
                  fold=index, members=[m.name for m in members])
  done = {"members": [{"name": m.name, "result": r, "history": p.history}
                      for m, r, p in zip(members, results, chunk.progress)]}
  atomic.write_json(os.path.join(directory, "result.json"), done)
  if os.path.exists(chunk.path):
    atomic.remove(chunk.path)  # the finished chunk's arrays: best.msgpack keeps what is needed
  return done


# --- The whole sweep -------------------------------------------------------------------------

def train_sweep(folds, subjects: Subjects, model_config: ModelConfig, optim_config: OptimConfig,
                run: RunConfig, placement: Placement, out_dir: str, members: list[Member],
                chunk_size: int, *, progress_bar: bool) -> dict[str, Any]:
  """Every member's fold results and histories (finished chunks are read back), the selection,
  and the selected member's best checkpoint as each fold's `best.msgpack`.

  Returns {"members": [{name, overrides, summary, folds, histories, mean_val_auc}],
  "selected": {...}}.
  """
  from tqdm.auto import tqdm
  from tqdm.contrib.logging import logging_redirect_tqdm

  from stgnn_jax.train.cross_validation import SUMMARY_METRICS, read_json

  chunks = plan_chunks(members, chunk_size)
  logger.info("sweep: %d members in %d chunk(s) of up to %d per fold, members over %d "
              "device(s)", len(members), len(chunks), max(map(len, chunks)),
              placement.member_devices)
  per_member = {m.name: {"folds": [], "histories": []} for m in members}
  bar = tqdm(total=run.num_folds * len(members) * run.n_epochs, disable=not progress_bar,
             unit="member-epoch", dynamic_ncols=True)
  with bar, logging_redirect_tqdm():
    for k, split in enumerate(folds):
      for c, chunk_members in enumerate(chunks):
        directory = os.path.join(out_dir, f"fold_{k}", "sweep", f"chunk_{c}")
        done_path = os.path.join(directory, "result.json")
        if os.path.exists(done_path):
          done = read_json(done_path)
          if [m["name"] for m in done.get("members", [])] != [m.name for m in chunk_members]:
            raise RunStateError(f"{done_path}: holds other members than this sweep's chunk "
                                f"{c}; delete it to train the chunk again.")
        else:
          bar.set_description(f"fold {k + 1}/{run.num_folds} chunk {c + 1}/{len(chunks)}")
          os.makedirs(directory, exist_ok=True)
          done = train_chunk(k, split, subjects, model_config, optim_config, run, placement,
                             chunk_members, directory,
                             on_epoch=lambda rows: bar.update(len(rows)))
        for entry in done["members"]:
          per_member[entry["name"]]["folds"].append(entry["result"])
          per_member[entry["name"]]["histories"].append(entry["history"])
        bar.update(len(chunk_members) * run.n_epochs - sum(
            len(entry["history"]) for entry in done["members"]))
  entries = []
  for member in members:
    got = per_member[member.name]
    val_aucs = [0.5 if f.get("best_val_auc") is None else f["best_val_auc"]
                for f in got["folds"]]
    val_balanced = [next((row["val_balanced_acc"] for row in history
                          if row["epoch"] == f["best_epoch"]), 0.5)
                    for f, history in zip(got["folds"], got["histories"])]
    entries.append({"name": member.name, "overrides": member.overrides,
                    "mean_val_auc": float(np.mean(val_aucs)),
                    "mean_val_balanced_acc": float(np.mean(val_balanced)),
                    "summary": metrics_lib.summarize(got["folds"], SUMMARY_METRICS),
                    "folds": got["folds"], "histories": got["histories"]})
  selected = max(entries, key=lambda e: (e["mean_val_auc"], e["mean_val_balanced_acc"]))
  if atomic.writes():  # it reads the chunks' files, which only the writing process has for sure
    write_selected_checkpoints(out_dir, folds, chunks, members.index(
        next(m for m in members if m.name == selected["name"])), selected, model_config)
  logger.info("sweep: selected %s (mean validation AUC %.4f; test AUC %s)", selected["name"],
              selected["mean_val_auc"], _mean(selected["summary"]["test_auc"]))
  return {"members": entries,
          "selected": {"name": selected["name"], "by": SELECTED_BY,
                       "mean_val_auc": selected["mean_val_auc"],
                       "mean_val_balanced_acc": selected["mean_val_balanced_acc"]},
          "note": "every member's test metrics are reported for context; none was used to "
                  "select"}


def _mean(entry: dict[str, Any]) -> str:
  return "undefined" if entry["mean"] is None else f"{entry['mean']:.4f}"


def write_selected_checkpoints(out_dir: str, folds, chunks: list[list[Member]], index: int,
                               selected: dict[str, Any], model_config: ModelConfig) -> None:
  """Each fold's `best.msgpack`: the selected member's best parameters of that fold."""
  c = next(i for i, chunk in enumerate(chunks) if any(m.index == index for m in chunk))
  position = [m.index for m in chunks[c]].index(index)
  for k in range(len(folds)):
    if selected["folds"][k]["best_epoch"] < 0:
      continue  # no epoch was selected: as in a single run, the fold has no best checkpoint
    stacked, _, _ = load_checkpoint(os.path.join(out_dir, f"fold_{k}", "sweep", f"chunk_{c}",
                                                 "best.msgpack"))
    result = selected["folds"][k]
    save_checkpoint(os.path.join(out_dir, f"fold_{k}", "best.msgpack"),
                    jax.tree.map(lambda x: np.asarray(x)[position], stacked), model_config,
                    fold=k, epoch=result["best_epoch"], val_auc=result["best_val_auc"],
                    decision_threshold=result["decision_threshold"],
                    focal_alpha=result["focal_alpha"], sweep_member=selected["name"])
