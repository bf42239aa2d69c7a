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
import glob
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stgnn_jax import atomic
from stgnn_jax.config import LOSSES, ModelConfig, OptimConfig, RunConfig
from stgnn_jax.errors import ConfigError, RunStateError
from stgnn_jax.eval import metrics as metrics_lib
from stgnn_jax.input_pipeline import FoldSplit, Subjects
from stgnn_jax.train.checkpoints import load_checkpoint, save_checkpoint
from stgnn_jax.train.driver import FoldTrainer, train_epoch
from stgnn_jax.train.engines import Members, stack
from stgnn_jax.train.fold_result import LAST_EPOCH, PATH_ALONE, FoldResult
from stgnn_jax.train.loop import Fold, FoldProgress, setup_fold
from stgnn_jax.train.optimizer import plateau_scheduler
from stgnn_jax.train.processes import gather_text
from stgnn_jax.train.sharding import Placement, to_host
from stgnn_jax.train.state import TrainState

logger = logging.getLogger(__name__)

SELECTED_BY = ("mean validation AUC over folds (an undefined fold counts as 0.5); ties by the "
               "mean validation balanced accuracy of the folds' best epochs, then grid order")
# A chunk's progress (every member's state: tens of MB) is saved at most this often, and after
# its last epoch; a killed chunk resumes from the last save and trains the same epochs again.
SAVE_SECONDS = 60.0
# Memory a chunk of members may take on the host or device, when --sweep_chunk is not given.
CHUNK_MEMORY_BUDGET = 2 * 2**30
# A fold's chunks, `fold_k/sweep/chunks.json`: {"chunks": [[member names of chunk_0], ...]},
# written before the fold's first chunk trains, so that a resume finds a started chunk's members
# whatever its --sweep_chunk.
CHUNKS_FILE = "chunks.json"
# How many members a sweep trains together and why (`choose_chunk_size`), written when it is
# chosen: a resume keeps it.
LAYOUT_FILE = "sweep_layout.json"


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
    overrides = dict(zip(names, values, strict=True))
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


def holds_progress(directory: str) -> bool:
  """Whether a fold's or a chunk's folder holds a trained epoch (its progress) or its result."""
  return any(os.path.exists(os.path.join(directory, name))
             for name in ("progress.msgpack", "result.json"))


def fold_chunks(sweep_dir: str, members: Sequence[Member], chunk_size: int
                ) -> list[list[Member]]:
  """A fold's chunks (`sweep_dir` is its `fold_k/sweep`): those its `CHUNKS_FILE` records as
  started keep their members, whatever `chunk_size` is now; the other members follow in chunks
  of `chunk_size` (`plan_chunks`). Chunks train in order, so the started ones come first.

  Raises RunStateError when a recorded chunk holds a member this sweep does not have.
  """
  path = os.path.join(sweep_dir, CHUNKS_FILE)
  by_name = {m.name: m for m in members}
  started: list[list[Member]] = []
  recorded = atomic.read_json(path).get("chunks", []) if os.path.exists(path) else []
  for c, names in enumerate(recorded):
    if not holds_progress(os.path.join(sweep_dir, f"chunk_{c}")):
      break
    if not set(names) <= set(by_name):
      raise RunStateError(f"{path}: chunk {c} holds members this sweep does not have "
                          f"({', '.join(sorted(set(names) - set(by_name)))}); resume with the "
                          "run's --sweep, or use a new --out_dir.")
    started.append([by_name[name] for name in names])
  done = {m.name for chunk in started for m in chunk}
  return started + plan_chunks([m for m in members if m.name not in done], chunk_size)


def has_unrecorded_chunks(out_dir: str) -> bool:
  """Whether a run folder holds a started chunk in a fold that does not record its chunks'
  members (`CHUNKS_FILE`: a sweep of an earlier version), whose members are then found again
  only with the chunk size they were planned with."""
  for sweep_dir in glob.glob(os.path.join(glob.escape(out_dir), "fold_*", "sweep")):
    if not os.path.exists(os.path.join(sweep_dir, CHUNKS_FILE)) and any(
        holds_progress(d) for d in glob.glob(os.path.join(glob.escape(sweep_dir), "chunk_*"))):
      return True
  return False


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


# --- Which layout trains the members fastest ------------------------------------------------

def training_seconds(trainer: FoldTrainer, repeats: int = 2) -> float:
  """Seconds of one training pass of `trainer`'s members over the fold's training subjects
  (the steps of epoch 0, and with a frozen encoder its embedding pass; no validation), the
  fastest of `repeats` passes after an untimed one that compiles every batch shape."""
  fold, engine = trainer.folds[0], trainer.engine
  order = np.random.default_rng([fold.run.seed, fold.index, 0]).permutation(fold.train_idx)
  key = jax.random.fold_in(fold.base_key, 1)
  mask = engine.mask(trainer.active())

  def one_pass() -> float:
    started = time.perf_counter()
    jax.block_until_ready(train_epoch(engine, trainer.state, 0, fold.subjects, order, fold.run,
                                      trainer.placement, key, fold.frozen_scans, mask))
    return time.perf_counter() - started

  one_pass()
  return min(one_pass() for _ in range(repeats))


def choose_chunk_size(fold_dir: str, split: FoldSplit, subjects: Subjects,
                      model_config: ModelConfig, optim_config: OptimConfig, run: RunConfig,
                      placement: Placement, members: Sequence[Member], largest: int
                      ) -> tuple[int, dict[str, Any]]:
  """Members per chunk, by timing: a chunk of `largest` members (the most memory allows,
  `auto_chunk_size`) against one member per member device (the members one after another),
  each trained one pass over fold `split`'s training subjects (`training_seconds`); the
  vmapped chunk only where it trains a member faster. Vmapping pays where one member's step
  leaves the machine idle (small steps, a frozen encoder whose embedding pass the chunk
  shares) and can lose where one member's step already fills it (e.g. the default recipe on a
  CPU: README, "Sweeps").

  The timed chunks are set up in the fold's folder `fold_dir` as the sweep's would be, so what
  they fit and keep there (the fold's fitted input steps, a seed's pretrained encoder) serves
  the sweep; they save nothing else. Returns (chunk size, {"chunk_size", "chosen_by",
  "seconds_per_member_pass": {size: s}}). The processes of a run each time their part and all
  take process 0's choice.
  """
  group = [m for m in members if m.seed == members[0].seed][:largest]
  alone = placement.member_devices
  if len(group) <= alone:
    return largest, {"chunk_size": largest, "chosen_by": "memory budget (nothing to time: one "
                     "chunk holds one member per device)"}
  os.makedirs(os.path.join(fold_dir, "sweep"), exist_ok=True)
  fold_subjects = subjects.fit_fold(split.train, fold_dir)
  seconds: dict[int, float] = {}
  for size in (len(group), alone):
    trainer = setup_chunk(0, split, fold_subjects, model_config, optim_config, run, placement,
                          list(group[:size]), os.path.join(fold_dir, "sweep", f"timing_{size}"))
    seconds[size] = training_seconds(trainer) / size
  if jax.process_count() > 1:  # every process trains the same chunks: process 0's choice
    seconds = {int(k): v for k, v in json.loads(gather_text(json.dumps(seconds))[0]).items()}
  size = len(group) if seconds[len(group)] < seconds[alone] else alone
  logger.info("sweep: %d member(s) per chunk (one member's training pass: %s)", size,
              ", ".join(f"{s * 1000:.0f} ms in a chunk of {k}" for k, s in seconds.items()))
  return size, {"chunk_size": size, "chosen_by": "timing",
                "seconds_per_member_pass": {str(k): v for k, v in seconds.items()}}


def recorded_layout(out_dir: str) -> dict[str, Any] | None:
  """The layout a started sweep in `out_dir` chose (`LAYOUT_FILE`), so that a resumed sweep
  plans its remaining chunks as it started and reports the same choice; for a sweep of an
  earlier version, the largest chunk its folds recorded (`CHUNKS_FILE`); None before either."""
  path = os.path.join(out_dir, LAYOUT_FILE)
  if os.path.exists(path):
    return atomic.read_json(path)
  sizes = [len(chunk) for path in glob.glob(os.path.join(glob.escape(out_dir), "fold_*", "sweep",
                                                          CHUNKS_FILE))
           for chunk in atomic.read_json(path).get("chunks", [])]
  return {"chunk_size": max(sizes), "chosen_by": "the started sweep's chunks"} if sizes else None


# --- One chunk of members in one fold --------------------------------------------------------

def setup_chunk(index: int, split: FoldSplit, subjects: Subjects, model_config: ModelConfig,
                optim_config: OptimConfig, run: RunConfig, placement: Placement,
                members: list[Member], directory: str) -> FoldTrainer:
  """The trainer of a fold's chunk of members (`driver.FoldTrainer` with the `Members` engine):
  each member's initial state as `setup_fold` makes it for a single run with its overrides,
  stacked (or the state saved in `directory`, to resume from).

  The members may end with copies of the last one that only pad the chunk to a multiple of the
  member devices; the trainer reports the others (`real`).
  """
  padded = members + [members[-1]] * (-len(members) % placement.member_devices)
  folds: list[Fold] = []
  states: list[TrainState] = []
  seed_dir = os.path.join(os.path.dirname(directory), f"seed_{members[0].seed}")
  os.makedirs(seed_dir, exist_ok=True)  # a pretrained encoder of the seed's members
  for member in padded:
    member_run = dataclasses.replace(run, seed=member.seed)
    fold, state = setup_fold(index, split, subjects, model_config, member.optim_config,
                             member_run, placement, seed_dir)
    if folds and fold.frozen_scans is not None:
      fold.frozen_scans = folds[0].frozen_scans  # the fold's packed scans, held once
    folds.append(fold)
    # The stack's static configuration is the run's: every member's own values are traced.
    states.append(state.replace(
        optim_config=optim_config, loss_index=np.int32(LOSSES.index(member.optim_config.loss)),
        focus_epochs=np.int32(member.optim_config.minority_focus_epochs)))
  state = placement.members(stack(to_host(states)))
  plateau = plateau_scheduler(optim_config).init(jnp.zeros(()))
  trainer = FoldTrainer(
      folds=folds, progress=[FoldProgress() for _ in padded],
      engine=Members(placement, [m.optim_config for m in padded]), state=state,
      plateau_state=placement.members(stack([plateau] * len(padded))), best_params=state.params,
      path=os.path.join(directory, "progress.msgpack"), optim_config=optim_config,
      real=len(members), names=[m.name for m in padded], save_seconds=SAVE_SECONDS)
  trainer.resume_if_saved()
  return trainer


def train_chunk(index: int, split: FoldSplit, subjects: Subjects, model_config: ModelConfig,
                optim_config: OptimConfig, run: RunConfig, placement: Placement,
                members: list[Member], directory: str,
                on_epoch: Callable[[list[dict[str, Any]]], None]) -> dict[str, Any]:
  """Trains (or resumes) one chunk of a fold and tests each member; saves its progress at most
  every `SAVE_SECONDS`, then writes the chunk's `result.json` and the members' stacked best
  parameters (`best.msgpack`)."""
  chunk = setup_chunk(index, split, subjects, model_config, optim_config, run, placement,
                      members, directory)
  chunk.train(on_epoch)
  results = chunk.test()
  best = to_host(chunk.best_params)
  save_checkpoint(os.path.join(directory, "best.msgpack"),
                  jax.tree.map(lambda x: x[:chunk.real], best), model_config,
                  fold=index, members=[m.name for m in members])
  done = {"members": [{"name": m.name, **r.to_record()}
                      for m, r in zip(members, results, strict=True)]}
  atomic.write_json(os.path.join(directory, "result.json"), done)
  if os.path.exists(chunk.path):
    atomic.remove(chunk.path)  # the finished chunk's arrays: best.msgpack keeps what is needed
  return done


# --- The whole sweep -------------------------------------------------------------------------

def train_sweep(folds: list[FoldSplit], subjects: Subjects, model_config: ModelConfig,
                optim_config: OptimConfig, run: RunConfig, placement: Placement, out_dir: str,
                members: list[Member], chunk_size: int, *, progress_bar: bool) -> dict[str, Any]:
  """Every member's fold results and histories (finished chunks are read back), the selection,
  and the selected member's best checkpoint as each fold's `best.msgpack`.

  Returns {"members": [{name, overrides, summary, folds, histories, mean_val_auc}],
  "selected": {...}}.
  """
  from tqdm.auto import tqdm
  from tqdm.contrib.logging import logging_redirect_tqdm

  # Every fold's chunks, planned before any of this run's writes (a process that plans after
  # another wrote a fold's CHUNKS_FILE finds the same plan there).
  plans = [fold_chunks(os.path.join(out_dir, f"fold_{k}", "sweep"), members, chunk_size)
           for k in range(len(folds))]
  logger.info("sweep: %d members in %d chunk(s) of up to %d per fold, members over %d "
              "device(s)", len(members), max(map(len, plans)),
              max(len(chunk) for chunks in plans for chunk in chunks), placement.member_devices)
  per_member: dict[str, list[FoldResult]] = {m.name: [] for m in members}
  bar = tqdm(total=run.num_folds * len(members) * run.n_epochs, disable=not progress_bar,
             unit="member-epoch", dynamic_ncols=True)
  with bar, logging_redirect_tqdm():
    for k, split in enumerate(folds):
      fold_subjects = None  # fitted when a chunk of the fold trains
      chunks = plans[k]
      for c, chunk_members in enumerate(chunks):
        directory = os.path.join(out_dir, f"fold_{k}", "sweep", f"chunk_{c}")
        done_path = os.path.join(directory, "result.json")
        if os.path.exists(done_path):
          done = atomic.read_json(done_path)
          if [m["name"] for m in done.get("members", [])] != [m.name for m in chunk_members]:
            raise RunStateError(f"{done_path}: holds other members than this sweep's chunk "
                                f"{c}; delete it to train the chunk again.")
        else:
          bar.set_description(f"fold {k + 1}/{run.num_folds} chunk {c + 1}/{len(chunks)}")
          os.makedirs(directory, exist_ok=True)
          if fold_subjects is None:
            atomic.write_json(os.path.join(out_dir, f"fold_{k}", "sweep", CHUNKS_FILE),
                              {"chunks": [[m.name for m in chunk] for chunk in chunks]})
            fold_subjects = subjects.fit_fold(split.train, os.path.join(out_dir, f"fold_{k}"))
          done = train_chunk(k, split, fold_subjects, model_config, optim_config, run, placement,
                             chunk_members, directory,
                             on_epoch=lambda rows: bar.update(len(rows)))
        for entry in done["members"]:
          per_member[entry["name"]].append(FoldResult.from_record(entry, done_path))
        bar.update(len(chunk_members) * run.n_epochs - sum(
            len(entry["history"]) for entry in done["members"]))
  entries: list[dict[str, Any]] = []
  for member in members:
    got = per_member[member.name]
    val_aucs = [0.5 if f.best_val_auc is None else f.best_val_auc for f in got]
    val_balanced = [next((row["val_balanced_acc"] for row in f.history
                          if row["epoch"] == f.best_epoch), 0.5) for f in got]
    entries_json = [f.to_json() for f in got]
    entries.append({"name": member.name, "overrides": member.overrides,
                    "mean_val_auc": float(np.mean(val_aucs)),
                    "mean_val_balanced_acc": float(np.mean(val_balanced)),
                    "summary": metrics_lib.summarize(entries_json,
                                                     metrics_lib.FOLD_SUMMARY_METRICS),
                    "folds": entries_json, "histories": [f.history for f in got]})
  selected = max(entries, key=lambda e: (e["mean_val_auc"], e["mean_val_balanced_acc"]))
  if atomic.writes():  # it reads the chunks' files, which only the writing process has for sure
    write_selected_checkpoints(out_dir, folds, plans, members.index(
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


def write_selected_checkpoints(out_dir: str, folds: list[FoldSplit],
                               plans: list[list[list[Member]]], index: int,
                               selected: dict[str, Any], model_config: ModelConfig) -> None:
  """Each fold's `best.msgpack`: the selected member's best parameters of that fold (`plans`:
  each fold's chunks, `fold_chunks`)."""
  for k in range(len(folds)):
    # The chunk's checkpoint holds what each member was tested with (FoldTrainer.test): its
    # selected epoch's parameters, or its last epoch's when none could be selected.
    chunks = plans[k]
    c = next(i for i, chunk in enumerate(chunks) if any(m.index == index for m in chunk))
    position = [m.index for m in chunks[c]].index(index)
    stacked, _, _ = load_checkpoint(os.path.join(out_dir, f"fold_{k}", "sweep", f"chunk_{c}",
                                                 "best.msgpack"))
    result = selected["folds"][k]
    tested = result.get("tested")
    path = tested == PATH_ALONE
    save_checkpoint(os.path.join(out_dir, f"fold_{k}", "best.msgpack"),
                    jax.tree.map(lambda x, m=position: np.asarray(x)[m], stacked), model_config,
                    fold=k,
                    val_auc=result["network_gate"]["val_auc_path"] if path
                    else result["best_val_auc"],
                    epoch=result["epochs_run"] - 1 if tested == LAST_EPOCH
                    else result["best_epoch"],
                    decision_threshold=result["decision_threshold"],
                    focal_alpha=result["focal_alpha"], sweep_member=selected["name"],
                    **({"tested": tested} if tested in (LAST_EPOCH, PATH_ALONE) else {}))
