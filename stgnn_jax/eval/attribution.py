"""Integrated gradients: which regions and connections move a subject's predicted conversion.

What is explained
-----------------
The output explained is each subject's converter log-odds `f = logit[:, 1] - logit[:, 0]` (the
log of p(converter) / p(stable) under the model's softmax), in eval mode (no dropout), as a
function of the batch's node features `batch.graphs.nodes` `[G, N, F]` only: the adjacency
(which edges survived thresholding), the node masks, the visit layout and the time feature stay
as they are. An attribution therefore says how much an FC *value* (a region's row entry, and with
"profile_change" its change since the first visit) moved `f`; the presence of an edge is not on
the path. `SubjectBatch.offset` (a training-only correction) is not applied, as in
`inference.apply_model`.

Method
------
Integrated Gradients (Sundararajan, Taly and Yan, "Axiomatic Attribution for Deep Networks",
ICML 2017) attributes to input entry k

    IG_k = (x_k - x'_k) * integral over a in [0, 1] of  df/dx_k (x' + a (x - x')) da,

for a baseline input x'. When the integral is exact the attributions of a subject add up to
`f(x) - f(x')` (completeness). The integral is approximated by the midpoint rule: `steps` equal
intervals, the gradient evaluated at their midpoints `a = (k + 1/2) / steps`, each weighted
`1 / steps`. Its error falls as `steps**-2` for a smooth integrand (ELU, tanh, sigmoid), but
the classifier head's ReLU makes the gradient jump where a unit switches along the path, and then
the error falls only as `1 / steps`. Rather than trust a fixed `steps`, `integrated_gradients`
returns the completeness gap `delta` per subject (sum of its attributions minus
`f(x) - f(x')`): a gap that is not small next to `|f(x) - f(x')|` means more steps are needed
(on small test models 64 steps leave gaps of up to a few percent, 256 under 1%).

Subjects never interact in the model (each graph feeds only its own subject's sequence), so the
gradient of the sum of `f` over the batch's subjects gives, on each graph, the gradient of that
graph's subject's `f`: one backward pass per integration point serves the whole batch.

Memory and compilation: the integration points run in chunks of `chunk` points; the points of a
chunk are one `jax.vmap`-ed forward and backward pass (peak memory about `chunk` times that of one
pass over the batch, plus the chunk's `[chunk, G, N, F]` gradients), and the chunks run one after
the other in a `lax.scan` that accumulates one `[G, N, F]` sum. The default `chunk = steps` is a
single pass, fastest on an accelerator; lower it for big batches. Everything is one `jax.jit`
program per (config, steps, chunk, batch shapes), with the params, batch and baseline as traced
arguments.

Baseline
--------
By default the baseline is the model's own input mean, `params["encoder"]
["input_standardization"]["mean"]` `[N, F]`: the mean of every (region, feature) entry over the
fold's training scans (`train.state.input_statistics`), used for every visit of every subject.
It is "an average training scan" (the zero input after standardisation), so an attribution
explains the difference between a subject and the average training subject. With
"profile_change" the change half of that baseline is the average change since the first visit,
entry by entry (not the change between two average scans, which would be 0): Integrated Gradients
treats every entry as its own coordinate. Any `[N, F]` or `[G, N, F]` baseline can be given
instead (e.g. zeros, or the mean of the stable training subjects).

Signed and absolute values
--------------------------
Per subject, attributions stay signed: positive entries push that subject towards "converter",
negative ones towards "stable". `subject_attributions` sums a subject's visits (the same region
at several visits is one region), `region_importance` sums a region's features and
`connection_importance` maps features to connections, all signed. Across subjects signs can
cancel (a connection that raises one subject's risk and lowers another's), so the summary that
ranks regions or connections, `mean_absolute_importance`, is the mean over subjects of the
absolute value of each subject's signed importance.

From features to connections and regions
-----------------------------------------
With "connection_profile" (F = N) feature j of region i is the FC value of connection i-j; with
"profile_change" (F = 2N) features j and N + j are that value and its change since the first
visit, and the connection gets their sum. Connection i-j appears in both region i's row and
region j's row, so the matrix `A[i, j]` of row-wise attributions is symmetrised as
`(A + A^T) / 2`: the symmetric result sums to the same total as the features, and the whole
attribution of connection i-j (i != j) is twice its entry. One-hot features carry no connection
values and cannot be attributed.

This module needs JAX for `integrated_gradients` and NumPy only for the aggregation helpers.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stgnn_jax.config import ModelConfig
from stgnn_jax.input_pipeline import SubjectBatch
from stgnn_jax.nn.graphs import BatchArray
from stgnn_jax.nn.model import STGNN


def baseline_of(params: Mapping[str, Any]) -> jax.Array:
  """The default baseline `[N, F]`: the input-standardisation mean that `params` carry (the
  fold's training-scan mean of each (region, feature) entry, `train.state.input_statistics`)."""
  return jnp.asarray(params["encoder"]["input_standardization"]["mean"])


def _log_odds(params: Mapping[str, Any], config: ModelConfig, batch: SubjectBatch,
              nodes: jax.Array) -> jax.Array:
  """`logit[:, 1] - logit[:, 0]` `[subjects]` of `batch` with node features `nodes`, eval mode."""
  graphs = dataclasses.replace(batch.graphs, nodes=nodes)
  logits = STGNN(config).apply(
      {"params": params}, graphs, batch.visit_slot, batch.lengths, batch.time,
      max_visits=batch.max_visits, deterministic=True)
  assert isinstance(logits, jax.Array)  # apply without `mutable` returns the output alone
  return logits[:, 1] - logits[:, 0]


@functools.partial(jax.jit, static_argnames=("config",))
def converter_log_odds(params: Mapping[str, Any], config: ModelConfig,
                       batch: SubjectBatch) -> jax.Array:
  """The output `integrated_gradients` explains: `logit[:, 1] - logit[:, 0]` `[subjects]`, eval
  mode (jitted; `batch` must carry node features)."""
  if batch.graphs.nodes is None:
    raise ValueError("converter_log_odds: the batch carries no node features (one-hot).")
  return _log_odds(params, config, batch, jnp.asarray(batch.graphs.nodes))


def _graph_subject(batch: SubjectBatch) -> jax.Array:
  """Subject of each graph `[G]`; `subjects` (one past the end) for padding graphs."""
  slot = jnp.asarray(batch.visit_slot)
  return jnp.minimum(slot // batch.max_visits, batch.num_subjects)


@functools.partial(jax.jit, static_argnames=("config", "steps", "chunk"))
def _integrated_gradients(params: Mapping[str, Any], config: ModelConfig, batch: SubjectBatch,
                          baseline: jax.Array, steps: int, chunk: int
                          ) -> tuple[jax.Array, jax.Array]:
  assert batch.graphs.nodes is not None  # checked by the caller
  x = jnp.asarray(batch.graphs.nodes)
  x0 = jnp.broadcast_to(baseline.astype(x.dtype), x.shape)
  diff = x - x0

  def total_log_odds(nodes: jax.Array) -> jax.Array:
    # Subjects do not interact: d(sum over subjects)/d(graph g) = d f[subject of g] / d(g).
    return jnp.sum(_log_odds(params, config, batch, nodes))

  gradient = jax.grad(total_log_odds)

  # Midpoint rule; points past `steps` (padding of the last chunk) get weight 0.
  num_chunks = -(-steps // chunk)
  index = jnp.arange(num_chunks * chunk)
  alphas = jnp.minimum((index + 0.5) / steps, 1.0).astype(x.dtype).reshape(num_chunks, chunk)
  weights = jnp.where(index < steps, 1.0 / steps, 0.0).astype(x.dtype).reshape(num_chunks, chunk)

  def accumulate(total: jax.Array, points: tuple[jax.Array, jax.Array]
                 ) -> tuple[jax.Array, None]:
    a, w = points
    grads = jax.vmap(lambda alpha: gradient(x0 + alpha * diff))(a)  # [chunk, G, N, F]
    return total + jnp.tensordot(w, grads, axes=1), None

  mean_gradient, _ = jax.lax.scan(accumulate, jnp.zeros_like(x), (alphas, weights))
  subject = _graph_subject(batch)
  real = jnp.asarray(batch.graphs.node_mask) & (subject < batch.num_subjects)[:, None]
  attributions = jnp.where(real[..., None], diff * mean_gradient, 0)

  per_subject = jnp.zeros((batch.num_subjects,), x.dtype).at[subject].add(
      attributions.sum(axis=(1, 2)), mode="drop")
  change = _log_odds(params, config, batch, x) - _log_odds(params, config, batch, x0)
  return attributions, per_subject - change


def integrated_gradients(params: Mapping[str, Any], config: ModelConfig, batch: SubjectBatch,
                         baseline: BatchArray | None = None, *, steps: int = 32,
                         chunk: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Integrated Gradients of each subject's converter log-odds w.r.t. the node features.

  Args:
    params: the model's params (with the fold's input statistics, and linear path if any).
    config: the model's architecture; explicit node features and `num_classes == 2`.
    batch: a `SubjectBatch` with node features `[G, N, F]` (`pack_subjects(..., features=)`),
      padding subjects and graphs allowed.
    baseline: `[G, N, F]`, or `[N, F]` for every graph; None: `baseline_of(params)`, the
      training-scan mean (an average training scan).
    steps: integration points (midpoint rule over [0, 1]).
    chunk: points per vmapped pass (memory grows with it); None: all `steps` at once.

  Returns:
    `attributions` `[G, N, F]` (signed; 0 on padding graphs and padding node slots) and `delta`
    `[subjects]`, each subject's completeness gap: the sum of its attributions minus
    `f(x) - f(baseline)` (0 for padding subjects).
  """
  nodes = batch.graphs.nodes
  if nodes is None or not config.explicit_node_features:
    raise ValueError(
        f"integrated_gradients: node_features={config.node_features!r} and the batch carries "
        f"{'no' if nodes is None else 'explicit'} node features; attribution needs connection "
        "values as node features (connection_profile or profile_change), packed with "
        "pack_subjects(..., features=).")
  if config.num_classes != 2:
    raise ValueError(f"integrated_gradients explains the converter-vs-stable log-odds of a "
                     f"two-class model, not num_classes={config.num_classes}.")
  if steps < 1:
    raise ValueError(f"integrated_gradients: steps must be >= 1, got {steps}.")
  chunk = steps if chunk is None else chunk
  if not 1 <= chunk <= steps:
    raise ValueError(f"integrated_gradients: chunk must be in [1, steps={steps}], got {chunk}.")
  base = baseline_of(params) if baseline is None else jnp.asarray(baseline)
  try:
    broadcast = np.broadcast_shapes(base.shape, nodes.shape)
  except ValueError:
    broadcast = None
  if broadcast != tuple(nodes.shape):
    raise ValueError(f"integrated_gradients: a baseline of shape {tuple(base.shape)} for node "
                     f"features {tuple(nodes.shape)}; give [N, F] or [G, N, F].")
  return _integrated_gradients(params, config, batch, base, steps, chunk)


# --- Aggregation (NumPy) ------------------------------------------------------------------------

def subject_attributions(attributions: BatchArray, batch: SubjectBatch) -> np.ndarray:
  """Signed attributions summed over each subject's visits: `[G, N, F]` -> `[subjects, N, F]`.

  A graph's subject is `batch.visit_slot // batch.max_visits`; padding graphs (slots past the
  last subject) are left out, and padding subjects get 0.
  """
  attributions = np.asarray(attributions)
  subject = np.asarray(batch.visit_slot) // batch.max_visits
  real = subject < batch.num_subjects
  out = np.zeros((batch.num_subjects,) + attributions.shape[1:], attributions.dtype)
  np.add.at(out, subject[real], attributions[real])
  return out


def _node_features_kind(num_features: int, num_nodes: int, node_features: str | None) -> str:
  """The kind of node features of width `num_features` for `num_nodes` regions, checked."""
  inferred = {num_nodes: "connection_profile", 2 * num_nodes: "profile_change"}.get(num_features)
  if node_features is None:
    if inferred is None:
      raise ValueError(
          f"node features of width {num_features} for {num_nodes} regions are neither "
          f"connection_profile (F = N = {num_nodes}) nor profile_change (F = 2N = "
          f"{2 * num_nodes}); no connection corresponds to them.")
    return inferred
  if node_features not in ("connection_profile", "profile_change"):
    raise ValueError(f"node_features={node_features!r} carry no connection values; connection "
                     "importance needs connection_profile or profile_change.")
  if node_features != inferred:
    raise ValueError(f"node_features={node_features!r} but the attributions have {num_features} "
                     f"features for {num_nodes} regions.")
  return node_features


def connection_importance(attributions: BatchArray, num_nodes: int, *,
                          node_features: str | None = None) -> np.ndarray:
  """Signed attribution of each connection: `[..., N, F]` -> symmetric `[..., N, N]`.

  Entry (i, j) before symmetrising is the attribution of feature j of region i: with
  connection_profile (F = N) that feature alone, with profile_change (F = 2N) the sum of
  features j and N + j (the connection's value and its change since the first visit). The result
  is `(A + A^T) / 2`, so it sums to the same total as the features and connection i-j (i != j)
  has twice its entry in all.

  Args:
    attributions: signed attributions, e.g. `subject_attributions` `[subjects, N, F]`.
    num_nodes: N, the atlas size.
    node_features: the model's `ModelConfig.node_features`, checked against F; None infers it
      from F.

  Raises:
    ValueError: features of another kind (onehot, or F not in {N, 2N}).
  """
  attributions = np.asarray(attributions)
  if attributions.ndim < 2 or attributions.shape[-2] != num_nodes:
    raise ValueError(f"connection_importance: attributions of shape {attributions.shape} are not "
                     f"[..., N={num_nodes}, F].")
  kind = _node_features_kind(attributions.shape[-1], num_nodes, node_features)
  rows = attributions
  if kind == "profile_change":
    rows = attributions[..., :num_nodes] + attributions[..., num_nodes:]
  return (rows + np.swapaxes(rows, -1, -2)) / 2


def region_importance(attributions: BatchArray) -> np.ndarray:
  """Signed attribution of each region: the sum over its features, `[..., N, F]` -> `[..., N]`.

  Region i's features are its own row of connection values (and their changes), so this is what
  the model attributes to region i's row; the copy of connection i-j in region j's row counts
  for region j.
  """
  return np.asarray(attributions).sum(axis=-1)


def mean_absolute_importance(importance: BatchArray,
                             subject_mask: BatchArray | None = None) -> np.ndarray:
  """The ranking summary over subjects: the mean of the ABSOLUTE value of each subject's signed
  importance, `[subjects, ...]` -> `[...]`.

  Absolute values keep effects of opposite sign in different subjects from cancelling; a
  subject's own signed value (e.g. `region_importance` of its `subject_attributions`) is taken as
  is, so opposite effects within one subject's region do cancel first. `subject_mask` `[subjects]`
  picks the subjects averaged (e.g. `batch.subject_mask`, to leave padding subjects out).
  """
  magnitude = np.abs(np.asarray(importance))
  if subject_mask is not None:
    magnitude = magnitude[np.asarray(subject_mask, bool)]
  if magnitude.shape[0] == 0:
    raise ValueError("mean_absolute_importance: no subject to average.")
  return magnitude.mean(axis=0)
