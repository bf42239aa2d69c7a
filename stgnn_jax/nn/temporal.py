"""The temporal classifier: a (bi)directional LSTM / GRU / tanh-RNN over per-visit embeddings.

Each subject is a sequence of visit embeddings `[subjects, visits, features]` with a true length per
subject; the classifier reads the recurrent network's final states and maps them to class logits.
It reproduces the reference's `nn.LSTM`/`nn.GRU`/`nn.RNN(batch_first=True)` fed with
`pack_padded_sequence(..., enforce_sorted=False)` followed by
`nn.Sequential(Linear(., 64), ReLU, Dropout, Linear(64, num_classes))`:

- the forward direction's final state is its state at the subject's true last visit
  (`t = length - 1`); the backward direction starts from a zero state at the true last visit and
  ends at the first visit; visits at `t >= length` never influence anything;
- stacked layers see the previous layer's per-step outputs (`[forward, backward]` concatenated),
  with dropout between layers (not after the last), as `nn.LSTM(dropout=...)` does;
- the classifier feature is the last layer's `[forward final, backward final]` (`h_n`).

Cells follow PyTorch's definitions (https://pytorch.org/docs/stable/generated/torch.nn.LSTM.html and
the GRU/RNN pages), gate orders included, so reference weights load unchanged:

  LSTM: i, f, g, o = split(W_ih x + b_ih + W_hh h + b_hh);  c' = σ(f) c + σ(i) tanh(g);
        h' = σ(o) tanh(c')
  GRU:  r = σ(W_ir x + b_ir + W_hr h + b_hr);  z = σ(W_iz x + b_iz + W_hz h + b_hz);
        n = tanh(W_in x + b_in + r (W_hn h + b_hn));  h' = (1 - z) n + z h
  RNN:  h' = tanh(W_ih x + b_ih + W_hh h + b_hh)

Parameter tree of `TemporalClassifier` (G = 4 for LSTM, 3 for GRU, 1 for RNN; H = hidden_dim;
in_0 = input features, in_l = H·dirs for l > 0; weights are stored as `[in, out]`, i.e. transposed
with respect to PyTorch, gate blocks in PyTorch's order along the last axis):

  {"rnn": {"l0":         {"weight_ih": [in_0, G·H], "weight_hh": [H, G·H],
                          "bias_ih": [G·H], "bias_hh": [G·H]},
           "l0_reverse": {...},            # only when bidirectional
           "l1": {...}, "l1_reverse": {...}, ...},
   "head_0": {"kernel": [H·dirs, 64], "bias": [64]},       # torch classifier.0
   "head_3": {"kernel": [64, num_classes], "bias": [num_classes]}}   # torch classifier.3

`temporal_params_from_torch` / `temporal_params_to_torch` convert between this tree and the
reference's state-dict keys (`lstm.weight_ih_l0`, ..., `classifier.3.bias`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stgnn_jax.nn.initializers import uniform

# Gate blocks per cell type, in PyTorch's order (LSTM: i, f, g, o; GRU: r, z, n).
GATES_PER_CELL: dict[str, int] = {"LSTM": 4, "GRU": 3, "RNN": 1}


# The reference's head is Linear(H·dirs, 64) -> ReLU -> Dropout -> Linear(64, num_classes).
HEAD_HIDDEN_DIM = 64


Params = Mapping[str, Any]


Carry = tuple[jax.Array, ...]


def check_model_type(model_type: str) -> None:
  """Raises ValueError unless `model_type` is one of "LSTM", "GRU", "RNN"."""
  if model_type not in GATES_PER_CELL:
    raise ValueError(
        f"unknown model_type {model_type!r}; expected one of {sorted(GATES_PER_CELL)}.")


def layer_name(layer: int, reverse: bool) -> str:
  """The parameter-tree name of one direction of one layer: "l0", "l0_reverse", "l1", ..."""
  return f"l{layer}_reverse" if reverse else f"l{layer}"


def _lstm_cell(gi: jax.Array, gh: jax.Array, carry: Carry) -> Carry:
  _, c = carry
  i, f, g, o = jnp.split(gi + gh, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  return jax.nn.sigmoid(o) * jnp.tanh(c), c


def _gru_cell(gi: jax.Array, gh: jax.Array, carry: Carry) -> Carry:
  (h,) = carry
  i_r, i_z, i_n = jnp.split(gi, 3, axis=-1)
  h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
  r = jax.nn.sigmoid(i_r + h_r)
  z = jax.nn.sigmoid(i_z + h_z)
  n = jnp.tanh(i_n + r * h_n)
  return ((1.0 - z) * n + z * h,)


def _rnn_cell(gi: jax.Array, gh: jax.Array, carry: Carry) -> Carry:
  return (jnp.tanh(gi + gh),)


_CELLS: dict[str, Callable[[jax.Array, jax.Array, Carry], Carry]] = {
    "LSTM": _lstm_cell, "GRU": _gru_cell, "RNN": _rnn_cell}


class _DirectionWeights(nn.Module):
  """The four arrays of one direction of one layer (see the module docstring for shapes)."""

  hidden_dim: int
  num_gates: int

  @nn.compact
  def __call__(self, input_dim: int) -> dict[str, jax.Array]:
    init = uniform(1.0 / np.sqrt(self.hidden_dim))  # torch's RNN init
    width = self.num_gates * self.hidden_dim
    return {
        "weight_ih": self.param("weight_ih", init, (input_dim, width)),
        "weight_hh": self.param("weight_hh", init, (self.hidden_dim, width)),
        "bias_ih": self.param("bias_ih", init, (width,)),
        "bias_hh": self.param("bias_hh", init, (width,)),
    }


def _run_layer(
    cell: Callable[[jax.Array, jax.Array, Carry], Carry],
    weights: list[dict[str, jax.Array]],
    x: jax.Array,
    mask: jax.Array,
    carry_size: int,
) -> tuple[jax.Array, jax.Array]:
  """Runs one layer, all directions in the same scan.

  Args:
    cell: one of the `_CELLS`.
    weights: one dict per direction, forward first.
    x: `[subjects, visits, features]` inputs, zero at padded visits.
    mask: `[subjects, visits]` True at real visits (`t < length`).
    carry_size: 2 for LSTM (h, c), 1 otherwise.

  Returns:
    `outputs [subjects, visits, dirs·H]` per-step hidden states (zero at padded visits) and
    `finals [dirs, subjects, H]` each direction's final hidden state.
  """
  w_ih = jnp.stack([w["weight_ih"] for w in weights])  # [dirs, in, G·H]
  b_ih = jnp.stack([w["bias_ih"] for w in weights])  # [dirs, G·H]
  w_hh = jnp.stack([w["weight_hh"] for w in weights])  # [dirs, H, G·H]
  b_hh = jnp.stack([w["bias_hh"] for w in weights])  # [dirs, G·H]
  num_dirs, hidden_dim = w_hh.shape[0], w_hh.shape[1]
  subjects = x.shape[0]

  # The input projection does not depend on the recurrence: one matmul for all visits and
  # directions, time-major for the scan.
  gi = jnp.einsum("btf,dfg->tdbg", x, w_ih) + b_ih[:, None, :]  # [visits, dirs, subjects, G·H]
  step_mask = jnp.broadcast_to(mask.T[:, None, :], (mask.shape[1], num_dirs, subjects))
  if num_dirs == 2:
    # The backward direction reads time reversed; its masked (t >= length) steps then come first
    # and keep its zero initial state, so it effectively starts at t = length - 1.
    gi = jnp.stack([gi[:, 0], gi[::-1, 1]], axis=1)
    step_mask = jnp.stack([step_mask[:, 0], step_mask[::-1, 1]], axis=1)

  def step(carry: Carry, inputs: tuple[jax.Array, jax.Array]) -> tuple[Carry, jax.Array]:
    gi_t, mask_t = inputs  # [dirs, subjects, G·H], [dirs, subjects]
    gh_t = jnp.einsum("dbh,dhg->dbg", carry[0], w_hh) + b_hh[:, None, :]
    new = cell(gi_t, gh_t, carry)
    keep = mask_t[..., None]
    # Padded steps leave the state as it is: that is what packing does.
    carry = tuple(jnp.where(keep, n, c) for n, c in zip(new, carry, strict=True))
    return carry, jnp.where(keep, carry[0], 0.0)

  zeros = jnp.zeros((num_dirs, subjects, hidden_dim), gi.dtype)
  carry, outputs = jax.lax.scan(step, (zeros,) * carry_size, (gi, step_mask))
  # outputs: [visits, dirs, subjects, H]; undo the backward direction's time reversal.
  per_dir = [outputs[:, 0]] + ([outputs[::-1, 1]] if num_dirs == 2 else [])
  outputs = jnp.concatenate(per_dir, axis=-1).transpose(1, 0, 2)
  return outputs, carry[0]


class StackedRNN(nn.Module):
  """A stack of (bi)directional LSTM / GRU / tanh-RNN layers with packed-sequence semantics.

  Attributes:
    model_type: "LSTM", "GRU" or "RNN" (Elman, tanh).
    hidden_dim: H, the state size of each direction.
    num_layers: stacked layers.
    bidirectional: add a backward direction to every layer.
    dropout: rate between stacked layers (as `nn.LSTM(dropout=...)`); unused with one layer.
  """

  model_type: str = "LSTM"
  hidden_dim: int = 64
  num_layers: int = 1
  bidirectional: bool = True
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array, *, deterministic: bool) -> jax.Array:
    """Final states of the last layer.

    Args:
      x: `[subjects, visits, features]` visit embeddings; values at visits `t >= length` are
        ignored.
      lengths: `[subjects]` int true number of visits, `0 <= length <= visits`. Subjects of
        length 0 (batch padding) give a zero feature.
      deterministic: disables the between-layer dropout (needs a "dropout" rng otherwise).

    Returns:
      `[subjects, H·dirs]`: `[forward final, backward final]`, or the forward final alone.
    """
    check_model_type(self.model_type)
    chex.assert_rank(x, 3)
    chex.assert_shape(lengths, (x.shape[0],))
    cell = _CELLS[self.model_type]
    carry_size = 2 if self.model_type == "LSTM" else 1
    mask = jnp.arange(x.shape[1])[None, :] < lengths[:, None]  # [subjects, visits]
    # Zeroing padded visits changes no value (they are masked) but keeps inf/NaN garbage there
    # from leaking into gradients through jnp.where.
    h = jnp.where(mask[..., None], x, 0.0)
    directions = (False, True) if self.bidirectional else (False,)
    finals = None
    for layer in range(self.num_layers):
      weights = [
          _DirectionWeights(
              self.hidden_dim, GATES_PER_CELL[self.model_type], name=layer_name(layer, rev)
          )(h.shape[-1])
          for rev in directions]
      h, finals = _run_layer(cell, weights, h, mask, carry_size)
      if layer < self.num_layers - 1:
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    # finals: [dirs, subjects, H] -> [subjects, dirs·H], forward first, as
    # torch.cat(h_n[-2], h_n[-1]).
    assert finals is not None, "StackedRNN needs num_layers >= 1"
    return finals.transpose(1, 0, 2).reshape(x.shape[0], -1)


class TemporalClassifier(nn.Module):
  """Recurrent classifier over visit sequences: `StackedRNN` then a two-layer MLP head.

  Attributes:
    model_type: "LSTM" (reference default), "GRU" or "RNN" (Elman, tanh).
    hidden_dim: H per direction (`lstm_hidden_dim` in the reference).
    num_layers: stacked recurrent layers (`lstm_num_layers`).
    bidirectional: forward + backward directions (the reference uses it for LSTM only).
    rnn_dropout: dropout between stacked recurrent layers (only with `num_layers > 1`).
    head_dropout: dropout after the head's ReLU.
    num_classes: logits per subject.

  The parameter tree is documented in the module docstring. All weights are initialised like
  PyTorch's (`U(-1/sqrt(H), 1/sqrt(H))` for the recurrent ones, `U(-1/sqrt(in), 1/sqrt(in))` for
  the head's weights and biases).
  """

  model_type: str = "LSTM"
  hidden_dim: int = 64
  num_layers: int = 1
  bidirectional: bool = True
  rnn_dropout: float = 0.45
  head_dropout: float = 0.45
  num_classes: int = 2

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array, *, deterministic: bool) -> jax.Array:
    """Class logits per subject.

    Args:
      x: `[subjects, visits, features]` visit embeddings; visits `t >= length` are ignored.
      lengths: `[subjects]` int true number of visits. Length 0 marks a padding subject: its
        logits are finite but meaningless (mask them downstream).
      deterministic: turns both dropouts off; otherwise `apply` needs `rngs={"dropout": key}`.

    Returns:
      `[subjects, num_classes]` logits.
    """
    features = StackedRNN(
        model_type=self.model_type, hidden_dim=self.hidden_dim, num_layers=self.num_layers,
        bidirectional=self.bidirectional, dropout=self.rnn_dropout, name="rnn",
    )(x, lengths, deterministic=deterministic)
    fan_in = features.shape[-1]
    y = nn.Dense(
        HEAD_HIDDEN_DIM, kernel_init=uniform(1.0 / np.sqrt(fan_in)),
        bias_init=uniform(1.0 / np.sqrt(fan_in)), name="head_0")(features)
    y = nn.relu(y)
    y = nn.Dropout(self.head_dropout)(y, deterministic=deterministic)
    return nn.Dense(
        self.num_classes, kernel_init=uniform(1.0 / np.sqrt(HEAD_HIDDEN_DIM)),
        bias_init=uniform(1.0 / np.sqrt(HEAD_HIDDEN_DIM)), name="head_3")(y)
