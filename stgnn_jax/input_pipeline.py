"""Cohort -> subjects -> padded batches with static shapes for the jitted model, and the folds.

A batch holds every real visit of up to `subjects` subjects as one `DenseGraphs` of `graphs`
slots (thresholded adjacency; one-hot node features or given ones), plus the index that puts each
graph's embedding back at its (subject, visit) place. Subjects, visits and graphs are padded to
fixed sizes so that a jitted step compiles once per (graphs, visits) bucket; padding subjects carry
`subject_mask = False` and padding graphs point past the last visit slot.

`Subjects` holds a cohort as the arrays the batcher needs (views of the subjects' scans, and
their node features computed batch by batch: `NodeFeatures`), so that a batch reads only its own
subjects' scans, from memory or from a memory-mapped scan store (`--scan_store memmap`);
`make_folds` splits it for the reference's cross-validation; `pack_scans` /
`iterate_embedded_batches` serve a frozen encoder.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import NamedTuple, overload

import flax.struct
import jax
import numpy as np

from stgnn_jax.config import ModelConfig, RunConfig
from stgnn_jax.data.cohort import Cohort, conversion_type, time_features
from stgnn_jax.data.fold_steps import FIT_FILE, FittedSteps, FoldSteps
from stgnn_jax.data.preprocessing import (
    connection_features,
    horizon_bucket,
    normalize_time,
)
from stgnn_jax.errors import InputError, RunStateError
from stgnn_jax.nn.graphs import BatchArray, DenseGraphs


@flax.struct.dataclass
class SubjectBatch:
  """A padded batch of subjects.

  Attributes:
    graphs: `DenseGraphs` of the visits' adjacency, with one-hot region features
      (`nodes=None`) or the given node features.
    visit_slot: `[graphs]` int32, `subject * max_visits + visit`; `subjects * max_visits` for
      padding graphs.
    lengths: `[subjects]` int32 real visits per subject (0 for padding subjects).
    time: `[graphs]` float32 time feature of each graph (its subject's value).
    labels: `[subjects]` int32 (0 for padding subjects).
    subject_mask: `[subjects]` bool, False for padding subjects.
    max_visits: static visit slots per subject.
    offset: `[subjects]` float32 or None: added to each subject's converter-minus-stable logit
      difference by `train_step` (the linear path's cross-fitting correction of training
      subjects, `train.linear_path`; 0 for padding subjects).
  """

  graphs: DenseGraphs
  visit_slot: BatchArray
  lengths: BatchArray
  time: BatchArray
  labels: BatchArray
  subject_mask: BatchArray
  max_visits: int = flax.struct.field(pytree_node=False)
  offset: BatchArray | None = None

  @property
  def num_subjects(self) -> int:
    return self.lengths.shape[0]


def pack_subjects(
    adjacency: Sequence[np.ndarray],
    *,
    labels: Sequence[int] | np.ndarray | None = None,
    time: Sequence[float] | np.ndarray | None = None,
    features: Sequence[np.ndarray] | None = None,
    num_subjects: int | None = None,
    max_visits: int | None = None,
    num_graphs: int | None = None,
    offsets: Sequence[float] | np.ndarray | None = None,
) -> SubjectBatch:
  """Packs subjects' visit graphs into one `SubjectBatch` of NumPy arrays.

  Args:
    adjacency: per subject a bool/0-1 array `[visits, N, N]` (oldest visit first), as made by
      `stgnn_jax.data.fc_to_adjacency`; `adjacency[v, i, j]` is the edge between regions i and j.
    labels: per subject class index (default 0, e.g. for prediction).
    time: per subject time feature, given to each of its visits (default 0).
    features: per subject `[visits, N, F]` node features (e.g. the connection profile: the
      subject's thresholded FC matrices, `Subject.fc`); default None, one-hot region features.
    num_subjects: subject slots (>= len(adjacency)); default len(adjacency).
    max_visits: visit slots per subject (>= the longest sequence); default the longest.
    num_graphs: graph slots (>= total visits); default the total number of visits.
    offsets: per subject a training-logit offset (`SubjectBatch.offset`); default None.

  Returns:
    A `SubjectBatch` whose arrays are NumPy (move them with `jax.device_put` or pass to jit).
  """
  if len(adjacency) == 0:
    raise ValueError("pack_subjects: no subjects given.")
  lengths = np.array([len(a) for a in adjacency], np.int32)
  if lengths.min() < 1:
    raise ValueError(f"pack_subjects: subject {int(lengths.argmin())} has no visit.")
  sizes = {a.shape[1:] for a in adjacency}
  if len(sizes) != 1 or any(len(s) != 2 or s[0] != s[1] for s in sizes):
    raise ValueError(
        f"pack_subjects: every visit must be one square N x N graph of the same atlas; got "
        f"per-visit shapes {sorted(sizes)}.")
  (num_nodes, _), = sizes
  num_real = len(adjacency)
  total = int(lengths.sum())
  num_subjects = num_real if num_subjects is None else num_subjects
  max_visits = int(lengths.max()) if max_visits is None else max_visits
  num_graphs = total if num_graphs is None else num_graphs
  for name, have, need in (("num_subjects", num_subjects, num_real),
                           ("max_visits", max_visits, int(lengths.max())),
                           ("num_graphs", num_graphs, total)):
    if have < need:
      raise ValueError(f"pack_subjects: {name}={have} is smaller than needed ({need}).")

  adjacency_slots = np.zeros((num_graphs, num_nodes, num_nodes), np.float32)
  adjacency_slots[:total] = np.concatenate([np.asarray(a, np.float32) for a in adjacency])
  node_mask = np.zeros((num_graphs, num_nodes), bool)
  node_mask[:total] = True
  nodes = None
  if features is not None:
    if [f.shape[:2] for f in features] != [(len(a), num_nodes) for a in adjacency]:
      raise ValueError("pack_subjects: features must be [visits, N, F] per subject, matching "
                       "the adjacency's visits and N.")
    nodes = np.zeros((num_graphs, num_nodes, features[0].shape[-1]), np.float32)
    nodes[:total] = np.concatenate([np.asarray(f, np.float32) for f in features])

  subject_of_graph = np.repeat(np.arange(num_real), lengths)
  visit_of_graph = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  visit_slot = np.full((num_graphs,), num_subjects * max_visits, np.int32)
  visit_slot[:total] = subject_of_graph * max_visits + visit_of_graph

  time_of_graph = np.zeros((num_graphs,), np.float32)
  if time is not None:
    time_of_graph[:total] = np.repeat(np.asarray(time, np.float32), lengths)
  padded_lengths = np.zeros((num_subjects,), np.int32)
  padded_lengths[:num_real] = lengths
  padded_labels = np.zeros((num_subjects,), np.int32)
  if labels is not None:
    padded_labels[:num_real] = np.asarray(labels, np.int32)
  subject_mask = np.arange(num_subjects) < num_real
  padded_offsets = None
  if offsets is not None:
    padded_offsets = np.zeros((num_subjects,), np.float32)
    padded_offsets[:num_real] = np.asarray(offsets, np.float32)
  return SubjectBatch(
      graphs=DenseGraphs(nodes=nodes, adjacency=adjacency_slots, node_mask=node_mask),
      visit_slot=visit_slot, lengths=padded_lengths, time=time_of_graph,
      labels=padded_labels, subject_mask=subject_mask, max_visits=max_visits,
      offset=padded_offsets)


def graph_budget(num_visits: int, *, multiple: int, cap: int) -> int:
  """Graph slots for a batch with `num_visits` real graphs: the next multiple, at most `cap`.

  Rounding to a multiple bounds the number of distinct shapes (and so of compilations) while
  wasting on average `multiple / 2` empty graph slots per batch.
  """
  return min(-(-num_visits // multiple) * multiple, max(cap, num_visits))


def iterate_batches(
    adjacency: Sequence[np.ndarray],
    labels: Sequence[int] | np.ndarray,
    time: Sequence[float] | np.ndarray | None,
    *,
    batch_size: int,
    max_visits: int,
    graph_multiple: int,
    order: Sequence[int] | np.ndarray | None = None,
    features: Sequence[np.ndarray] | None = None,
    offsets: Sequence[float] | np.ndarray | None = None,
) -> Iterator[SubjectBatch]:
  """Yields `SubjectBatch`es of exactly `batch_size` subject slots and `max_visits` visit slots.

  Args:
    adjacency, labels, time, features, offsets: per subject, as for `pack_subjects`.
    batch_size: subject slots per batch; the last batch is padded with masked subjects.
    max_visits: visit slots (every subject must have at most this many visits).
    graph_multiple: graph slots are the batch's real visits rounded up to this multiple.
    order: the subjects' order (a permutation for shuffling); default as given.
  """
  positions = np.arange(len(adjacency)) if order is None else np.asarray(order)
  for start in range(0, len(positions), batch_size):
    chosen = positions[start:start + batch_size]
    visits = sum(len(adjacency[i]) for i in chosen)
    yield pack_subjects(
        [adjacency[i] for i in chosen],
        labels=[labels[i] for i in chosen],
        time=None if time is None else [time[i] for i in chosen],
        features=None if features is None else [features[i] for i in chosen],
        offsets=None if offsets is None else [offsets[i] for i in chosen],
        num_subjects=batch_size, max_visits=max_visits,
        num_graphs=graph_budget(visits, multiple=graph_multiple, cap=batch_size * max_visits))


# --- Frozen encoder: embed every scan once per epoch, then batch the embeddings ---------------

@flax.struct.dataclass
class EmbeddedBatch:
  """A padded batch of subjects whose visits are already embedded (a frozen encoder's output).

  With a frozen encoder the parameters of the encoder do not change during an epoch, so every
  training scan can be embedded in one pass per epoch (`train.step.encode_graphs`) and the steps
  only run the temporal classifier on those embeddings.

  Attributes:
    embeddings: `[rows, D]` visit embeddings the batch picks from (all scans of the epoch; the
      same array for every batch of the epoch). `iterate_embedded_batches` leaves it None: the
      epoch's embeddings exist only once the encoder has run, and they are placed on the
      devices apart from the batch (replicated, while the subjects are sharded).
    visit_index: `[subjects, max_visits]` int32, the row of each visit, oldest first (0 at
      padding visits, which the classifier never reads).
    lengths, labels, subject_mask: as in `SubjectBatch`.
  """

  embeddings: BatchArray | None
  visit_index: BatchArray
  lengths: BatchArray
  labels: BatchArray
  subject_mask: BatchArray

  @property
  def max_visits(self) -> int:
    return self.visit_index.shape[1]

@dataclasses.dataclass(frozen=True)
class ScanTable:
  """Every visit of a set of subjects packed once as graph slots, in chunks of equal size.

  Attributes:
    chunks: `(graphs, time)` pairs of `chunk_size` graph slots each (`DenseGraphs` with the
      subjects' node features and each graph's time feature); row `r` of the concatenated
      chunks is scan `r`, subjects in the order given, then padding graphs.
    first_row: `[subjects]` the row of each subject's oldest visit.
    lengths: `[subjects]` visits per subject.
    labels: `[subjects]` class index per subject.
  """

  chunks: list[tuple[DenseGraphs, BatchArray]]
  first_row: np.ndarray
  lengths: np.ndarray
  labels: np.ndarray


def pack_scans(adjacency: Sequence[np.ndarray], labels: Sequence[int] | np.ndarray,
               time: Sequence[float] | np.ndarray | None, *, chunk_size: int,
               features: Sequence[np.ndarray] | None = None) -> ScanTable:
  """Packs all visits of the subjects into `ceil(visits / chunk_size)` chunks of `chunk_size`
  graph slots (one compiled shape for the embedding pass; fewer than `chunk_size` padding slots
  in all)."""
  lengths = np.array([len(a) for a in adjacency], np.int32)
  total = int(lengths.sum())
  rows = -(-total // chunk_size) * chunk_size
  packed = pack_subjects(adjacency, labels=labels, time=time, features=features, num_graphs=rows)
  chunks = [(jax.tree.map(lambda a, s=s: a[s:s + chunk_size], packed.graphs),
             packed.time[s:s + chunk_size])
            for s in range(0, rows, chunk_size)]
  return ScanTable(chunks=chunks, first_row=np.cumsum(lengths) - lengths, lengths=lengths,
                   labels=np.asarray(labels, np.int32))


def iterate_embedded_batches(table: ScanTable, *, batch_size: int, max_visits: int,
                             order: Sequence[int] | np.ndarray | None = None
                             ) -> Iterator[EmbeddedBatch]:
  """Yields `EmbeddedBatch`es of `batch_size` subject slots over `table`'s subjects.

  Args:
    table: the packed scans (row r of their embeddings = scan r).
    batch_size, max_visits: subject and visit slots; the last batch is padded with masked
      subjects.
    order: positions into `table`'s subjects (a permutation for shuffling); default as packed.
  """
  if int(table.lengths.max()) > max_visits:
    raise ValueError(f"a subject has {int(table.lengths.max())} visits but max_visits is "
                     f"{max_visits}.")
  positions = np.arange(len(table.lengths)) if order is None else np.asarray(order)
  for start in range(0, len(positions), batch_size):
    chosen = positions[start:start + batch_size]
    n = len(chosen)
    lengths = np.zeros((batch_size,), np.int32)
    lengths[:n] = table.lengths[chosen]
    labels = np.zeros((batch_size,), np.int32)
    labels[:n] = table.labels[chosen]
    visits = np.arange(max_visits)
    visit_index = np.zeros((batch_size, max_visits), np.int32)
    visit_index[:n] = np.where(visits < lengths[:n, None],
                               table.first_row[chosen][:, None] + visits, 0)
    yield EmbeddedBatch(embeddings=None, visit_index=visit_index, lengths=lengths,
                        labels=labels, subject_mask=np.arange(batch_size) < n)


# --- The cohort as subjects, and the folds ----------------------------------------------------

class FoldSplit(NamedTuple):
  """One fold's subjects, as sorted indices into the cohort: the training subjects, the
  validation subjects (selection, early stopping, the plateau scheduler) and the test subjects."""

  train: np.ndarray
  val: np.ndarray
  test: np.ndarray


def make_folds(labels: np.ndarray, num_folds: int, seed: int) -> list[FoldSplit]:
  """One `FoldSplit` per fold, the reference's stratified protocol:
  stratified K-fold over subjects (shuffled, `seed`), then a stratified 80/20 train/validation
  split of each fold's training subjects (seed `seed + fold`)."""
  from sklearn.model_selection import StratifiedKFold, train_test_split

  counts = np.bincount(labels, minlength=2)
  if counts.min() < num_folds:
    raise InputError(
        f"num_folds={num_folds} but the smaller class has only {counts.min()} subjects; lower "
        "--num_folds or add subjects.")
  folds = []
  splitter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
  for k, (train_val, test) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
    # The stratified 80/20 split needs two subjects of each class to put one on either side.
    fold_counts = np.bincount(labels[train_val], minlength=2)
    n_val = int(np.ceil(0.2 * len(train_val)))
    if fold_counts.min() < 2 or n_val < 2 or len(train_val) - n_val < 2:
      raise InputError(
          f"fold {k} keeps {fold_counts[0]} stable and {fold_counts[1]} converter subjects for "
          "training and validation: the stratified 80/20 validation split needs at least two "
          "of each class; lower --num_folds or add subjects.")
    train, val = train_test_split(train_val, test_size=0.2, stratify=labels[train_val],
                                  random_state=seed + k)
    folds.append(FoldSplit(np.sort(train), np.sort(val), np.sort(test)))
  return folds


class NodeFeatures(Sequence[np.ndarray]):
  """Each subject's node features `[visits, N, F]` (`connection_features` of its thresholded FC
  values `[visits, N, N]`), computed when they are asked for (a batch, the fold's training
  statistics) and never kept: they are one to two times the size of the scans they come from,
  and the scans may be memory-mapped from disk.

  Args:
    fc: per subject its `[visits, N, N]` edge values (`Subject.fc`).
    kind: `ModelConfig.node_features` (connection_profile or profile_change).
  """

  def __init__(self, fc: Sequence[np.ndarray], kind: str):
    self.fc, self.kind = fc, kind

  def __len__(self) -> int:
    return len(self.fc)

  @overload
  def __getitem__(self, index: int) -> np.ndarray: ...

  @overload
  def __getitem__(self, index: slice) -> list[np.ndarray]: ...

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    return connection_features(self.fc[index], self.kind)

  def subset(self, indices: Sequence[int] | np.ndarray) -> NodeFeatures:
    """The features of the subjects `indices`, in that order (still computed when asked for)."""
    return NodeFeatures([self.fc[i] for i in indices], self.kind)


class Subjects:
  """The cohort as the arrays the batcher needs, plus report groupings.

  `adjacency` holds the subjects' own arrays (no copy: from a memory-mapped cohort, views of the
  files) and `features` computes node features when a batch asks for them (`NodeFeatures`), so
  the memory a run holds per subject is a few scalars beside its scans. With `steps`
  (preprocessing fitted inside each fold, `data.fold_steps`) these are the cohort's graphs before
  the steps; `fit_fold` gives a fold's subjects.
  """

  def __init__(self, cohort: Cohort, run: RunConfig, model_config: ModelConfig,
               steps: FoldSteps | None = None):
    self.cohort, self.run, self.model_config, self.steps = cohort, run, model_config, steps
    use_time = model_config.use_time_features
    self.adjacency = [s.adjacency for s in cohort.subjects]
    self.features = (NodeFeatures([s.fc for s in cohort.subjects], model_config.node_features)
                     if model_config.explicit_node_features else None)
    self.labels = cohort.labels().astype(np.int32)
    self.time = (time_features(cohort, run.time_normalization) if use_time else None)
    self.time_to_predict = cohort.time_to_predict()
    self.time_normalization = run.time_normalization
    self.conversion_types = [conversion_type(s) for s in cohort.subjects]
    self.has_groups = any(s.group is not None for s in cohort.subjects)
    self.horizons = ([horizon_bucket(s.time_to_predict) for s in cohort.subjects]
                     if use_time else None)
    self.num_nodes = cohort.num_nodes
    self.offsets: np.ndarray | None = None

  # What the classical baselines see: each subject's last and first input scans, edge values
  # (the same matrix twice for a subject with one visit), stacked when asked for.
  @property
  def last_fc(self) -> np.ndarray:
    """`[subjects, N, N]` float32 each subject's last input scan's edge values."""
    return np.stack([s.fc[-1] for s in self.cohort.subjects])

  @property
  def first_fc(self) -> np.ndarray:
    """`[subjects, N, N]` float32 each subject's first input scan's edge values."""
    return np.stack([s.fc[0] for s in self.cohort.subjects])

  def fit_fold(self, train_idx: np.ndarray, directory: str | None) -> Subjects:
    """The subjects of the fold whose training subjects are `train_idx`: the steps fitted on
    them and applied to everyone (self when the run fits no step). The fit is stored in
    `directory` (`fold_steps.FIT_FILE`) and read back from there, once written, so a resumed
    run and a prediction use the same one."""
    if self.steps is None:
      return self
    train_ids = tuple(self.cohort.subjects[i].subject_id for i in train_idx)
    path = None if directory is None else os.path.join(directory, FIT_FILE)
    fitted = None
    if path is not None and os.path.exists(path):
      fitted = FittedSteps.load(path)
      if fitted.steps != self.steps or fitted.train_ids != train_ids:
        raise RunStateError(f"{path}: fitted with other settings or training subjects than this "
                            "fold's; delete it (or the run folder) to fit again")
    if fitted is None:
      fitted = self.steps.fit(self.cohort, train_idx)
      if path is not None:
        fitted.save(path)
    return Subjects(fitted.apply(self.cohort), self.run, self.model_config)

  def with_offsets(self, offsets: np.ndarray) -> Subjects:
    """These subjects with per-subject training-logit offsets (`SubjectBatch.offset`)."""
    fold = copy.copy(self)
    fold.offsets = np.asarray(offsets, np.float32)
    return fold

  def for_fold(self, train_idx: np.ndarray) -> Subjects:
    """These subjects with the time feature fitted on a fold's training subjects only: `minmax`
    scales by their longest time to predict, never a test subject's (the other normalisations
    fit nothing)."""
    if self.time is None or self.time_normalization != "minmax":
      return self
    fold = copy.copy(self)
    fold.time = normalize_time(self.time_to_predict, "minmax",
                               max_months=float(np.max(self.time_to_predict[train_idx])))
    return fold

  def batches(self, indices: np.ndarray, batch_size: int, run: RunConfig
              ) -> Iterator[SubjectBatch]:
    """`iterate_batches` over the subjects `indices`, in that order."""
    return iterate_batches(self.adjacency, self.labels, self.time, batch_size=batch_size,
                           max_visits=run.max_visits, graph_multiple=run.graph_multiple,
                           order=indices, features=self.features, offsets=self.offsets)
