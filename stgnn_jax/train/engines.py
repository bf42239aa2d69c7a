"""How a fold's arrays are laid out and stepped: one member (a single run) or a stack of members.

`train.driver.FoldTrainer` runs a fold's epochs once for both; what differs between a single run
and a sweep's chunk lives here, behind the same few methods:

  - `OneMember`: the state as it is, batches split over the `data` devices, `train_step`;
  - `Members`: every array with a leading member axis split over the `members` devices, one
    jitted, vmapped step for all members on the same batch, per-member plateaus.

Host values (`host`) always carry a leading member axis, so the driver reads member m's metrics,
predictions and plateau scale the same way in both.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stgnn_jax.config import OptimConfig
from stgnn_jax.train.loop import FrozenEncoderScans, collect_predictions, predict_split
from stgnn_jax.train.optimizer import plateau_scheduler, plateau_step, set_learning_rate
from stgnn_jax.train.sharding import Placement, to_host
from stgnn_jax.train.step import eval_step, train_step


class OneMember:
  """A single run: one member's arrays without a member axis, data-parallel batches."""

  who = "fold"

  def __init__(self, placement: Placement):
    self.placement = placement

  def place(self, tree: Any) -> Any:
    return self.placement.replicate(tree)

  def stage(self, state: Any, epoch: int) -> Any:
    """The state for training epoch `epoch`: its number and its stage of the schedules, placed
    like the rest of the state (an uncommitted scalar would compile the first step twice)."""
    staged = state.at_epoch(epoch)
    return state.replace(**self.place({"epoch": staged.epoch, "focal_gamma": staged.focal_gamma,
                                       "label_smoothing": staged.label_smoothing}))

  def first(self, state: Any) -> Any:
    return state

  def mask(self, active: np.ndarray) -> None:
    return None

  def step(self, state: Any, batch: Any, key: jax.Array, mask: None) -> tuple[Any, Any]:
    return train_step(state, batch, key)

  def host(self, tree: Any) -> Any:
    return jax.tree.map(lambda x: np.asarray(x)[None], to_host(tree))

  def predict(self, fold: Any, state: Any, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits, losses = predict_split(state, fold.subjects, indices, fold.run, self.placement)
    return logits[None], losses[None]

  def plateau(self, cfg: OptimConfig, plateau_state: Any, values: np.ndarray,
              min_scales: np.ndarray, keep: np.ndarray) -> Any:
    return plateau_step(cfg, plateau_state, values[0]) if keep[0] else plateau_state

  def with_learning_rates(self, state: Any, lrs: Sequence[float]) -> Any:
    return state.with_learning_rate(lrs[0])

  def where(self, mask: np.ndarray, new: Any, old: Any) -> Any:
    return new if mask[0] else old


# --- The vmapped programs of a stack of members ----------------------------------------------

def _where_members(mask: jax.Array, new: Any, old: Any) -> Any:
  """Each member's (leading axis) arrays from `new` where `mask`, else from `old`."""
  def select(n, o):
    return jnp.where(mask.reshape(mask.shape + (1,) * (n.ndim - 1)), n, o)
  return jax.tree.map(select, new, old)


@jax.jit
def members_train_step(states, batch, rng: jax.Array, active: jax.Array):
  """`train_step` for every member on the same batch and dropout key; a member that is not
  `active` keeps its state."""
  new, metrics = jax.vmap(train_step, in_axes=(0, None, None))(states, batch, rng)
  return _where_members(active, new, states), metrics


members_eval_step = jax.jit(jax.vmap(eval_step, in_axes=(0, None)))
select_members = jax.jit(_where_members)


@functools.partial(jax.jit, static_argnums=0)
def members_plateau_step(cfg: OptimConfig, states, values: jax.Array, min_scales: jax.Array,
                         active: jax.Array):
  """`plateau_step` per member (each with its own `min_lr / lr`); inactive members keep theirs."""
  def one(state, value, min_scale):
    _, state = plateau_scheduler(cfg, min_scale).update(updates=jnp.zeros(()), state=state,
                                                        value=value)
    return state
  return _where_members(active, jax.vmap(one)(states, values, min_scales), states)


def stack(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def first_member(state: Any) -> Any:
  """The first member's `TrainState` of a stacked one: with a frozen encoder, whose encoder is
  every member's of the chunk (one seed, never trained)."""
  return jax.tree.map(lambda x: x[0], state)


class Members:
  """A sweep's chunk: every array with a leading member axis over the `members` devices.

  `optim_configs` are the members' own settings (their schedules stage each epoch). With a
  frozen encoder (the same in every member of a chunk) a split's scans are embedded once, in
  eval mode, and only the members' classifiers run on them.
  """

  who = "member"

  def __init__(self, placement: Placement, optim_configs: Sequence[OptimConfig]):
    self.placement = placement
    self.optim_configs = list(optim_configs)
    self.frozen_splits: dict[tuple[int, ...], FrozenEncoderScans] = {}

  def place(self, tree: Any) -> Any:
    return self.placement.members(tree)

  def stage(self, state: Any, epoch: int) -> Any:
    k = len(self.optim_configs)
    values = {"epoch": np.full(k, epoch, np.int32),
              "focal_gamma": np.array([c.gamma_at(epoch) for c in self.optim_configs],
                                      np.float32),
              "label_smoothing": np.array([c.smoothing_at(epoch) for c in self.optim_configs],
                                          np.float32)}
    return state.replace(**self.place(values))

  def first(self, state: Any) -> Any:
    return first_member(state)

  def mask(self, active: np.ndarray) -> jax.Array:
    return self.place(active)

  def step(self, state: Any, batch: Any, key: jax.Array, mask: jax.Array) -> tuple[Any, Any]:
    return members_train_step(state, batch, self.placement.replicate(key), mask)

  def host(self, tree: Any) -> Any:
    return to_host(tree)

  def predict(self, fold: Any, state: Any, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits [members, n, classes], losses [members, n]) of every member for `indices`."""
    if fold.frozen_scans is None:
      return predict_split(state, fold.subjects, indices, fold.run, self.placement,
                           step=members_eval_step)
    key = tuple(int(i) for i in indices)
    if key not in self.frozen_splits:
      self.frozen_splits[key] = FrozenEncoderScans(fold.subjects, indices, fold.run,
                                                   self.placement)
    batches = self.frozen_splits[key].batches(first_member(state), indices, None,
                                              batch_size=fold.run.eval_batch_size)
    return collect_predictions(state, batches, len(indices), fold.run.eval_batch_size,
                               members_eval_step)

  def plateau(self, cfg: OptimConfig, plateau_state: Any, values: np.ndarray,
              min_scales: np.ndarray, keep: np.ndarray) -> Any:
    return members_plateau_step(cfg, plateau_state, self.place(values), self.place(min_scales),
                                self.place(keep))

  def with_learning_rates(self, state: Any, lrs: Sequence[float]) -> Any:
    return state.replace(opt_state=set_learning_rate(state.opt_state,
                                                     np.array(lrs, np.float32)))

  def where(self, mask: np.ndarray, new: Any, old: Any) -> Any:
    return select_members(self.place(mask), self.place(new), old)
