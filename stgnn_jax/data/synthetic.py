"""A synthetic longitudinal FC cohort with a known, local, progressive conversion signal.

ADNI/TADPOLE data needs an access agreement, so the project trains and tests on this cohort. It is
written in the reference's on-disk format (`write_synthetic`), and `load_cohort` of that folder
equals the in-memory `synthetic_cohort` with the same arguments.

One cohort cannot judge a model, so this module also makes a family of them (`CohortSpec`,
`make_cohort`, `write_cohort`): the same population, visits and on-disk format, with the
conversion signal in edge density, in FC strength above the threshold, in degree-matched rewiring
(this cohort), in the change over visits, in a few hub regions, or nowhere (null).
`LEARNABILITY_SUITE` spans what real FC cohorts do and records how learnable each cohort is.
The rest of this docstring describes the built-in cohort (`make_synthetic_cohort`).

Generative model (Fisher-z space, z -> r = tanh(z), float32, symmetric, unit diagonal):
  - Regions are split into ~N/14 contiguous "networks" (an atlas such as Schaefer-100 orders its
    regions by network). Population mean z per pair: a within-network level, a between-network
    level (some network pairs anti-correlated) and a fixed per-pair deviation. The whole non-module
    structure and its noise are scaled by one factor, solved so that the expected fraction of pairs
    with |r| >= threshold equals `edge_density`.
  - One "conversion module" of `module_size` regions inside one network is strongly inter-connected
    in everyone (z ~ 0.55 + a subject-level offset, so module edges are almost all present).
  - Subject-level noise (per pair, shared by all visits of the subject) and visit-level noise.
  - Converters: the module's z values shrink towards 0 by a fraction that grows with follow-up,
    `effect_size * rate * progress`, progress = 0 at the first visit (converters look like stable
    subjects at baseline) rising linearly in months to 1 at the last (conversion) visit, 0.6 for a
    single visit; rate ~ U(0.75, 1.25) per subject. So module edges drop below the threshold visit
    by visit. Stable subjects keep the module.
  - Edge count and every node degree are matched exactly: each module edge (i, j) a converter loses
    is given back by a double edge swap with an edge (x, y) between non-module regions (remove
    (x, y), add (i, x) and (j, y); `_rewire`), taking (x, y) in a per-subject order so the same
    swaps recur across visits. Each converter scan has exactly the edge count and degree sequence
    of its no-effect counterfactual, so density and degrees carry no label information: the signal
    is which regions the module regions connect to, not how many edges there are.
Visits: 1-6 per subject (mean ~3.3, like the reference's 300-subject / 976-scan cohort), at
ADNI-like 6/12-month gaps with jitter and some missed visits. Converters are CN->MCI or MCI->AD;
stable subjects are CN, MCI or AD at baseline. Visit count, spacing and group are drawn
independently of the module signal.

Measured on the default cohort (seed 0: 300 subjects, 90 converters, 971 scans, density 0.300),
5-fold logistic regression AUCs: first->last adjacency change 0.96, last scan alone 0.98, first scan
alone 0.52, edge count 0.48 (its change 0.49), summed module-region degree 0.48, all degrees 0.43.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stgnn_jax import atomic
from stgnn_jax.data.cohort import Cohort, VisitRecord, build_cohort
from stgnn_jax.data.preprocessing import threshold_fc
from stgnn_jax.data.reference_format import (
    FC_DIR,
    SCAN_FILE_PATTERN,
    SIMPLIFIED_CSV,
    TEMPORAL_CSV,
)

# P(1..6 visits): mean 3.31 visits, like the reference's synthetic 976 scans / 300 subjects.
_VISIT_COUNT_WEIGHTS = (0.08, 0.24, 0.27, 0.20, 0.12, 0.09)
_MODULE_Z = 0.55         # module strength in stable subjects, r ~ 0.5: edges kept at t = 0.2
_MODULE_SUBJECT_SD = 0.15
_PAIR_SUBJECT_SD = 0.10  # per pair, shared by a subject's visits
_PAIR_VISIT_SD = 0.08    # per pair and visit
_FIRST_VISIT_PROGRESS = 0.0  # converters look like stable subjects at baseline
_SINGLE_VISIT_PROGRESS = 0.6
_Z_LIMIT = 1.6           # |r| <= tanh(1.6) = 0.92: off-diagonal values stay inside (-1, 1)


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticScans:
  """The raw synthetic cohort, as `write_synthetic` puts it on disk.

  Attributes:
    subject_ids: CSV form, e.g. "023_S_4105" (the file name form drops the underscores).
    fc: per subject, float32 `[visits, N, N]` FC matrices, oldest first (run k = visit k).
    labels: `[subjects]` int32, 1 = converter (the label of the last visit row).
    visit_labels: per subject, int32 `[visits]` Label_CS_Num per visit row (converters: 1 from
      the conversion visit, which is the last, on).
    months: per subject, float64 `[visits]` Months_From_Baseline.
    months_to_next: per subject, float64 `[visits]` Months_To_Next_Original (NaN = unknown).
    groups: per subject, its diagnosis per visit ("CN"/"MCI"/"AD"); [0] is the baseline group.
    module: int `[module_size]` regions of the conversion module.
    threshold: the edge threshold the density was calibrated for (load with the same threshold).
  """

  subject_ids: tuple[str, ...]
  fc: tuple[np.ndarray, ...]
  labels: np.ndarray
  visit_labels: tuple[np.ndarray, ...]
  months: tuple[np.ndarray, ...]
  months_to_next: tuple[np.ndarray, ...]
  groups: tuple[tuple[str, ...], ...]
  module: np.ndarray
  threshold: float

  @property
  def num_regions(self) -> int:
    return self.fc[0].shape[-1]

  @property
  def num_scans(self) -> int:
    return sum(len(f) for f in self.fc)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[float])(x / math.sqrt(2.0)))


def _expected_density(mean: np.ndarray, sd: np.ndarray, z_threshold: float) -> float:
  """Mean over pairs of P(|z| >= z_threshold) for z ~ N(mean, sd^2)."""
  return float(np.mean(_normal_cdf((mean - z_threshold) / sd)
                       + _normal_cdf((-mean - z_threshold) / sd)))


def _visit_months(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  """ADNI-like schedule: baseline, ~6 months, then 6- or 12-month gaps, jittered, some visits
  missed. Returns (months from baseline [n], months to the next original visit [n], NaN unknown)."""
  gaps = []
  for k in range(n):
    gap = 6.0 if k == 0 else float(rng.choice([6.0, 12.0], p=[0.3, 0.7]))
    if rng.random() < 0.1:  # a missed visit doubles the gap
      gap *= 2
    gaps.append(round(gap + float(np.clip(rng.normal(0.0, 0.8), -2.0, 2.0)), 2))
  months = np.concatenate([[0.0], np.cumsum(gaps[:-1])])
  months = np.round(months, 2)
  to_next = np.append(np.diff(months), gaps[-1] if rng.random() < 0.5 else math.nan)
  return months, to_next


# ---------------------------------------------------------------------------------------------
# Pieces every cohort of the family shares: the atlas, the density scale, subjects and visits.
# Each draws from the cohort's generator in a fixed order, so a cohort is a function of its seed.


@dataclasses.dataclass(frozen=True)
class _Atlas:
  """The population's connectivity layout.

  Attributes:
    networks: region indices of each network (contiguous, ~14 regions each).
    structure: `[pairs]` population mean z of every upper-triangle pair, before the density scale.
    module: sorted `[module_size]` regions of the conversion module, inside one network.
  """

  networks: list[np.ndarray]
  structure: np.ndarray
  module: np.ndarray

  @property
  def num_regions(self) -> int:
    return sum(len(r) for r in self.networks)

  def pairs_among(self, regions: np.ndarray) -> np.ndarray:
    """`[pairs]` bool: upper-triangle pairs with both ends in `regions`."""
    iu, ju = np.triu_indices(self.num_regions, k=1)
    return np.isin(iu, regions) & np.isin(ju, regions)


def _default_module_size(num_regions: int) -> int:
  return min(12, max(3, num_regions // 4))


def _draw_atlas(rng: np.random.Generator, n: int, module_size: int) -> _Atlas:
  """Networks, their within/between levels (some network pairs anti-correlated), a per-pair
  deviation, and a module of `module_size` regions in one network large enough to hold it."""
  iu, ju = np.triu_indices(n, k=1)
  networks = np.array_split(np.arange(n), max(2, round(n / 14)))
  network_of = np.concatenate([np.full(len(r), i) for i, r in enumerate(networks)])
  n_net = len(networks)
  within = rng.normal(0.40, 0.06, n_net)
  between = rng.normal(0.02, 0.10, (n_net, n_net))
  between = (between + between.T) / 2
  a, b = network_of[iu], network_of[ju]
  structure = np.where(a == b, within[a], between[a, b]) + rng.normal(0.0, 0.10, iu.size)
  candidates = [r for r in networks if len(r) >= module_size] or [np.arange(n)]
  home = candidates[int(rng.integers(len(candidates)))]
  module = np.sort(rng.choice(home, module_size, replace=False))
  return _Atlas(networks, structure, module)


def _density_scale(free_structure: np.ndarray, noise_sd: float, fixed_density: float,
                   fixed_fraction: float, edge_density: float, z_threshold: float) -> float:
  """The factor on the free pairs' structure and noise that makes the expected fraction of pairs
  with |r| >= threshold equal `edge_density` (bisection).

  Args:
    free_structure: population mean z of the pairs the scale applies to.
    noise_sd: their subject + visit noise sd before scaling.
    fixed_density: expected density of the other (signal) pairs, which are not scaled.
    fixed_fraction: fraction of all pairs that are signal pairs.
    edge_density: the target density.
    z_threshold: atanh(threshold).
  """
  lo, hi = 1e-3, 20.0
  for _ in range(60):
    scale = (lo + hi) / 2
    free_density = _expected_density(scale * free_structure, scale * noise_sd, z_threshold)
    density = fixed_fraction * fixed_density + (1 - fixed_fraction) * free_density
    lo, hi = (scale, hi) if density < edge_density else (lo, scale)
  return scale


def _draw_subjects(rng: np.random.Generator, num_subjects: int,
                   n_conv: int) -> tuple[np.ndarray, list[str]]:
  """Which subjects convert (`[subjects]` bool, a random `n_conv` of them) and their ADNI-style
  ids ("023_S_4105", unique)."""
  is_converter = np.zeros(num_subjects, bool)
  is_converter[rng.permutation(num_subjects)[:n_conv]] = True
  numbers = np.sort(rng.choice(9000, num_subjects, replace=False)) + 1000
  sites = rng.integers(2, 142, num_subjects)
  return is_converter, [f"{s:03d}_S_{m:04d}" for s, m in zip(sites, numbers)]


def _visit_count_probabilities(min_visits: int,
                               max_visits: int) -> tuple[np.ndarray, np.ndarray]:
  """(visit counts, their probabilities): `_VISIT_COUNT_WEIGHTS` over 1-6, a geometric tail
  beyond, restricted to [min_visits, max_visits]."""
  counts = np.arange(min_visits, max_visits + 1)
  weights = np.array([_VISIT_COUNT_WEIGHTS[k - 1] if k <= 6 else 0.1 * 0.7 ** (k - 6)
                      for k in counts])
  return counts, weights / weights.sum()


class _Visits(NamedTuple):
  """One subject's visit rows: months `[visits]`, months to next `[visits]`, diagnosis per visit,
  Label_CS_Num per visit `[visits]` int32."""

  months: np.ndarray
  to_next: np.ndarray
  groups: tuple[str, ...]
  labels: np.ndarray


def _draw_visits(rng: np.random.Generator, converter: bool, counts: np.ndarray,
                 probabilities: np.ndarray) -> _Visits:
  """Visit count and schedule, then the diagnoses: converters go CN->MCI or MCI->AD at their last
  visit (label 1 there only); stable subjects stay CN, MCI or AD."""
  n_visits = int(rng.choice(counts, p=probabilities))
  months, to_next = _visit_months(rng, n_visits)
  labels = np.zeros(n_visits, np.int32)
  if converter:
    baseline = "CN" if rng.random() < 0.4 else "MCI"
    final = {"CN": "MCI", "MCI": "AD"}[baseline]
    groups = (baseline,) * (n_visits - 1) + (final,)
    labels[-1] = 1
  else:
    baseline = str(rng.choice(["CN", "MCI", "AD"], p=[0.45, 0.40, 0.15]))
    groups = (baseline,) * n_visits
  return _Visits(months, to_next, groups, labels)


def _progress(months: np.ndarray, single_visit: float) -> np.ndarray:
  """`[visits]` fraction of a converter's effect present at each visit: 0 at the first visit,
  rising linearly in months to 1 at the last (conversion) visit; `single_visit` for one visit."""
  if len(months) > 1:
    return _FIRST_VISIT_PROGRESS + (1 - _FIRST_VISIT_PROGRESS) * (
        (months - months[0]) / (months[-1] - months[0]))
  return np.array([single_visit])


def _matrices(r_visits: np.ndarray, n: int) -> np.ndarray:
  """`[visits, pairs]` upper-triangle correlations -> float32 `[visits, N, N]`, symmetric, unit
  diagonal."""
  iu, ju = np.triu_indices(n, k=1)
  fc = np.zeros((len(r_visits), n, n), np.float32)
  fc[:, iu, ju] = r_visits
  fc[:, ju, iu] = r_visits
  fc[:, np.arange(n), np.arange(n)] = 1.0
  return fc


def _check_arguments(num_subjects: int, num_regions: int, min_visits: int, max_visits: int,
                     converter_fraction: float, effect_size: float, edge_density: float,
                     threshold: float) -> int:
  """Raises ValueError on arguments no cohort can have; returns the number of converters."""
  if num_regions < 6:
    raise ValueError(f"num_regions must be >= 6, got {num_regions}")
  if not 1 <= min_visits <= max_visits:
    raise ValueError(f"need 1 <= min_visits <= max_visits, got {min_visits}, {max_visits}")
  if not 0 < converter_fraction < 1:
    raise ValueError(f"converter_fraction must be in (0, 1), got {converter_fraction}")
  if not 0 <= effect_size <= 1:
    raise ValueError(f"effect_size must be in [0, 1], got {effect_size}")
  if not 0 < edge_density < 1 or not 0 < threshold < 1:
    raise ValueError(f"edge_density and threshold must be in (0, 1), got {edge_density}, "
                     f"{threshold}")
  n_conv = int(round(converter_fraction * num_subjects))
  if not 0 < n_conv < num_subjects:
    raise ValueError(f"{num_subjects} subjects with converter_fraction {converter_fraction} give "
                     f"{n_conv} converters: both classes are needed")
  return n_conv


def _collect(records: list[tuple], module: np.ndarray, threshold: float) -> SyntheticScans:
  """Records (id, fc, label, `_Visits`) -> `SyntheticScans`, subjects in id order."""
  records.sort(key=lambda record: record[0])
  ids, fcs, labels, visits = zip(*records)
  return SyntheticScans(
      subject_ids=tuple(ids), fc=tuple(fcs), labels=np.array(labels, np.int32),
      visit_labels=tuple(v.labels for v in visits), months=tuple(v.months for v in visits),
      months_to_next=tuple(v.to_next for v in visits), groups=tuple(v.groups for v in visits),
      module=module, threshold=float(threshold))


# ---------------------------------------------------------------------------------------------
# The built-in cohort: degree-matched rewiring of a module.


def make_synthetic_cohort(
    *,
    num_subjects: int = 300,
    num_regions: int = 100,
    min_visits: int = 1,
    max_visits: int = 6,
    converter_fraction: float = 0.3,
    effect_size: float = 0.8,
    edge_density: float = 0.3,
    module_size: int | None = None,
    seed: int = 0,
    threshold: float = 0.2,
) -> SyntheticScans:
  """Generates the synthetic cohort (module docstring); deterministic per argument set.

  Args:
    num_subjects: subjects; `round(converter_fraction * num_subjects)` are converters.
    num_regions: N, regions per scan (>= 6).
    min_visits, max_visits: visits per subject, drawn from an ADNI-like distribution over 1-6
      (geometric tail beyond 6) restricted to this range.
    converter_fraction: fraction of converters, in (0, 1).
    effect_size: fraction of the module's connectivity (in z) a converter has lost at conversion,
      in [0, 1]; 0 gives a cohort whose labels carry no signal.
    edge_density: expected fraction of off-diagonal pairs with |r| >= threshold, in (0, 1).
    module_size: regions of the conversion module; default min(12, max(3, N // 4)).
    seed: the random seed.
    threshold: edge threshold the density is calibrated for, in (0, 1).

  Returns:
    `SyntheticScans`, subjects in id order.
  """
  n_conv = _check_arguments(num_subjects, num_regions, min_visits, max_visits,
                            converter_fraction, effect_size, edge_density, threshold)
  if module_size is None:
    module_size = _default_module_size(num_regions)
  if not 2 <= module_size <= num_regions // 2:
    raise ValueError(f"module_size must be in [2, N/2], got {module_size}")
  rng = np.random.default_rng(seed)
  n = num_regions
  iu, ju = np.triu_indices(n, k=1)

  atlas = _draw_atlas(rng, n, module_size)
  structure, module = atlas.structure, atlas.module
  in_module = atlas.pairs_among(module)
  outside = np.flatnonzero(~in_module)
  module_pairs = np.flatnonzero(in_module)
  outer = np.flatnonzero(~np.isin(iu, module) & ~np.isin(ju, module))  # no module endpoint
  pair_index = np.full((n, n), -1)
  pair_index[iu, ju] = pair_index[ju, iu] = np.arange(iu.size)

  # One scale for the non-module structure and noise, solved for the expected density.
  z_threshold = math.atanh(threshold)
  noise_sd = math.hypot(_PAIR_SUBJECT_SD, _PAIR_VISIT_SD)
  module_sd = math.hypot(noise_sd, _MODULE_SUBJECT_SD)
  module_density = _expected_density(np.full(in_module.sum(), _MODULE_Z), module_sd, z_threshold)
  scale = _density_scale(structure[outside], noise_sd, module_density, in_module.mean(),
                         edge_density, z_threshold)

  # Subjects: labels, groups, visit counts are independent of one another's draws below.
  is_converter, subject_ids = _draw_subjects(rng, num_subjects, n_conv)
  counts, probabilities = _visit_count_probabilities(min_visits, max_visits)

  records = []
  for i in range(num_subjects):
    visits = _draw_visits(rng, bool(is_converter[i]), counts, probabilities)
    n_visits = len(visits.months)
    subject_mean = np.empty(iu.size)
    subject_mean[outside] = scale * (structure[outside]
                                     + rng.normal(0.0, _PAIR_SUBJECT_SD, outside.size))
    subject_mean[in_module] = (_MODULE_Z + rng.normal(0.0, _MODULE_SUBJECT_SD)
                               + rng.normal(0.0, _PAIR_SUBJECT_SD, in_module.sum()))
    visit_sd = np.where(in_module, _PAIR_VISIT_SD, scale * _PAIR_VISIT_SD)
    progress = _progress(visits.months, _SINGLE_VISIT_PROGRESS)
    rate = rng.uniform(0.75, 1.25)
    swap_order = rng.permutation(outer)
    r_visits = np.empty((n_visits, iu.size), np.float32)
    for k in range(n_visits):
      z = np.clip(subject_mean + rng.normal(0.0, 1.0, iu.size) * visit_sd, -_Z_LIMIT, _Z_LIMIT)
      r_counterfactual = np.tanh(z).astype(np.float32)
      r = r_counterfactual.copy()
      if is_converter[i] and effect_size > 0:
        loss = min(1.0, effect_size * rate * progress[k])
        r[in_module] = np.tanh(z[in_module] * (1 - loss)).astype(np.float32)
        lost = module_pairs[_edges(r_counterfactual[module_pairs], threshold)
                            & ~_edges(r[module_pairs], threshold)]
        _rewire(r, lost, swap_order, pair_index, threshold, rng)
      r_visits[k] = r
    records.append((subject_ids[i], _matrices(r_visits, n), int(is_converter[i]), visits))
  return _collect(records, module, threshold)


def _rewire(r: np.ndarray, lost: np.ndarray, swap_order: np.ndarray, pair_index: np.ndarray,
            threshold: float, rng: np.random.Generator) -> None:
  """Gives back, in place, the edges and node degrees a converter's scan lost in its module.

  For each lost module edge (i, j): take the first edge (x, y) between non-module regions in the
  subject's `swap_order` such that (i, x) and (j, y) are not edges, remove it and add (i, x) and
  (j, y) (a double edge swap). Every region keeps its counterfactual degree and the scan its edge
  count, so neither carries the label: module regions are rewired to outside regions instead.
  (Exact unless `swap_order` runs out of usable edges; on the default cohort all 6198 lost edges
  of its 310 converter scans are given back.)

  Args:
    r: `[pairs]` float32 upper-triangle correlations of one scan, edited in place.
    lost: pair indices of the module edges lost to the conversion effect.
    swap_order: pair indices of non-module pairs, in this subject's (fixed) order.
    pair_index: `[N, N]` pair index of (a, b), -1 on the diagonal.
    threshold: edge threshold.
    rng: draws the new values.
  """
  n = pair_index.shape[0]
  endpoints = np.stack(np.triu_indices(n, k=1), axis=1)
  is_edge = _edges(r, threshold)
  cursor = 0
  for pair in lost:
    i, j = endpoints[pair]
    while cursor < len(swap_order):
      candidate = swap_order[cursor]
      cursor += 1
      if not is_edge[candidate]:
        continue
      x, y = endpoints[candidate]
      for a, b in ((x, y), (y, x)):
        new_1, new_2 = pair_index[i, a], pair_index[j, b]
        if not (is_edge[new_1] or is_edge[new_2]):
          break
      else:
        continue
      r[candidate] = np.float32(threshold * rng.uniform(-0.75, 0.75))
      r[[new_1, new_2]] = (threshold + rng.uniform(0.02, 0.25, 2)).astype(np.float32)
      is_edge[candidate], is_edge[new_1], is_edge[new_2] = False, True, True
      break


def _edges(r: np.ndarray, threshold: float) -> np.ndarray:
  # Same test as preprocessing.fc_to_adjacency on a symmetric matrix, so edge counts here are
  # exact there.
  return (np.abs(r) >= threshold) & (r != 0)


# ---------------------------------------------------------------------------------------------
# The family: one generator per kind of conversion signal, for judging a model on many cohorts.

SIGNALS = ("density", "strength", "rewiring", "trajectory", "regions", "null")
ONSETS = ("progressive", "baseline")

_HUB_TARGET_FRACTION = 0.4  # "regions": each hub is strongly tied to ~40% of the other regions


@dataclasses.dataclass(frozen=True)
class CohortSpec:
  """One cohort of the synthetic family: the kind of conversion signal and the cohort's shape.

  Every signal shares the population structure, visit schedule, diagnoses and ids of
  `make_synthetic_cohort`, and the density calibration (the non-signal pairs are scaled so that
  the expected fraction of pairs with |r| >= threshold is `edge_density`). A converter's effect
  grows over its visits: 0 at the first visit, full at the last (conversion) visit (linear in
  months; `loss = min(1, effect_size * rate * progress)`, rate ~ U(0.75, 1.25) per converter).
  Stable subjects keep the population pattern. In Fisher z, per signal:

  - "density": a module of `module_size` regions inside one network (z ~ 0.55, r ~ 0.5, in
    everyone) shrinks towards z = 0 in converters: its edges drop below the threshold and are NOT
    given back, so the module regions' degrees and the edge count fall.
  - "strength": the module is strong in everyone (r ~ 0.69 at threshold 0.2: z = atanh(t) + 0.65)
    and shrinks, in converters, towards r ~ 0.42 (z = atanh(t) + 0.25), with little noise, so its
    edges stay above the threshold: binarised graphs barely change, only FC values carry the label.
  - "rewiring": `make_synthetic_cohort` (degree- and edge-count-matched rewiring of a module).
  - "trajectory": every subject has its own module level (z ~ N(0.55, 0.45): the spread between
    subjects exceeds the effect) and each scan a module-wide offset (sd 0.1); converters' module
    falls by `0.5 * loss` in z from their OWN level, stable subjects stay. The last visit alone
    says little, the change from the first visit much. Single-visit subjects carry no signal.
  - "regions": `module_size` hub regions (default 4, from different networks), each tied to a
    random ~40% of the other regions (z ~ 0.5); in converters these hub connections shrink towards
    z = 0 (strength falls, then edges drop): a node-level signal (hub disruption) spread over
    ~150 pairs, the rest of the graph untouched.
  - "null": the "density" cohort without any effect (`effect_size` is not used): labels are
    drawn independently of the scans.

  Attributes:
    name: a short identifier (folder names, tables).
    signal: one of `SIGNALS`.
    num_subjects: subjects; `round(converter_fraction * num_subjects)` are converters.
    num_regions: N, regions per scan (>= 6).
    edge_density: expected fraction of off-diagonal pairs with |r| >= threshold (stable
      subjects), in (0, 1).
    converter_fraction: in (0, 1).
    min_visits, max_visits: visits per subject (ADNI-like distribution over 1-6, restricted).
    effect_size: the converters' effect at conversion, in [0, 1], as a fraction of the full
      effect of the signal (above); 0 gives a cohort without signal.
    seed: the random seed; a spec gives the same cohort every time.
    threshold: edge threshold the density is calibrated for, in (0, 1).
    module_size: regions of the module ("regions": number of hubs); None for the default
      (module min(12, max(3, N // 4)), hubs 4).
    description: what the cohort is designed to test (tables).
    onset: "progressive" (the effect grows from 0 at the first visit to full at the last) or
      "baseline" (a converter carries its full effect at every visit, so the change over visits
      says nothing: a check that a model does not rely on change alone).
  """

  name: str
  signal: str
  num_subjects: int
  num_regions: int = 100
  edge_density: float = 0.3
  converter_fraction: float = 0.3
  min_visits: int = 1
  max_visits: int = 6
  effect_size: float = 0.8
  seed: int = 0
  threshold: float = 0.2
  module_size: int | None = None
  description: str = ""
  onset: str = "progressive"

  def __post_init__(self):
    if self.signal not in SIGNALS:
      raise ValueError(f"signal must be one of {SIGNALS}, got {self.signal!r}")
    if self.onset not in ONSETS:
      raise ValueError(f"onset must be one of {ONSETS}, got {self.onset!r}")
    if self.onset != "progressive" and self.signal == "rewiring":
      raise ValueError("the rewiring signal (make_synthetic_cohort) is progressive only")

  @property
  def summary(self) -> str:
    """One line, e.g. "density, 200 subjects (30% converters), 100 regions, density 0.30, 1-6
    visits"."""
    return (f"{self.signal}, {self.num_subjects} subjects "
            f"({self.converter_fraction:.0%} converters), {self.num_regions} regions, density "
            f"{self.edge_density:.2f}, {self.min_visits}-{self.max_visits} visits")


@dataclasses.dataclass(frozen=True)
class _SignalPairs:
  """How a signal's pairs are drawn in Fisher z and how conversion moves a subject's mean.

  The subject mean of each signal pair is `level + N(0, subject_sd)` (one draw per subject)
  `+ N(0, pair_sd)` (per pair); each scan adds `N(0, scan_sd)` (one draw, shared by the signal
  pairs) and `N(0, visit_sd)` (per pair). At loss l in [0, 1] the
  subject mean becomes `floor + (mean - floor)(1 - l)`, or, without a floor, `mean - l * drop`.
  The effect acts on the subject mean, before the visit noise, so a converter's scans stay as
  noisy as a stable subject's (a shrink after the noise would also shrink the noise).
  """

  level: float
  subject_sd: float
  pair_sd: float
  visit_sd: float
  floor: float | None
  drop: float = 0.0
  single_visit_progress: float = _SINGLE_VISIT_PROGRESS
  scan_sd: float = 0.0

  @property
  def sd(self) -> float:
    return math.sqrt(self.subject_sd ** 2 + self.pair_sd ** 2 + self.visit_sd ** 2
                     + self.scan_sd ** 2)

  def converted(self, mean: np.ndarray, loss: float) -> np.ndarray:
    if self.floor is None:
      return mean - loss * self.drop
    return self.floor + (mean - self.floor) * (1 - loss)


def _signal_pairs(signal: str, z_threshold: float) -> _SignalPairs:
  if signal in ("density", "null"):
    return _SignalPairs(_MODULE_Z, _MODULE_SUBJECT_SD, _PAIR_SUBJECT_SD, _PAIR_VISIT_SD, 0.0)
  if signal == "strength":
    # Low noise keeps even a fully converted module (r ~ 0.42) ~5 visit sd above the threshold.
    return _SignalPairs(z_threshold + 0.65, 0.06, 0.05, 0.05, z_threshold + 0.25)
  if signal == "trajectory":
    # The spread of levels between subjects (sd 0.45) exceeds a converter's drop (0.5 * loss), so
    # one scan says little; the scan-level offset keeps the change from being noise-free.
    # No signal without a second visit: the change from one's own baseline is the signal.
    return _SignalPairs(_MODULE_Z, 0.45, 0.08, 0.06, None, drop=0.5, single_visit_progress=0.0,
                        scan_sd=0.10)
  if signal == "regions":
    return _SignalPairs(0.5, 0.12, _PAIR_SUBJECT_SD, _PAIR_VISIT_SD, 0.0)
  raise ValueError(f"no signal pairs for {signal!r}")


def _draw_hubs(rng: np.random.Generator, atlas: _Atlas,
               num_hubs: int) -> tuple[np.ndarray, np.ndarray]:
  """(hub regions `[num_hubs]`, `[pairs]` bool mask of hub-target pairs): one hub per network
  (distinct networks while there are enough), each tied to a random ~40% of the other regions."""
  n = atlas.num_regions
  nets = rng.choice(len(atlas.networks), num_hubs, replace=num_hubs > len(atlas.networks))
  hubs: list[int] = []
  for net in nets:
    free = np.setdiff1d(atlas.networks[net], hubs)
    hubs.append(int(rng.choice(free if free.size else np.setdiff1d(np.arange(n), hubs))))
  tied = np.zeros((n, n), bool)
  tied[hubs] = rng.random((num_hubs, n)) < _HUB_TARGET_FRACTION
  tied |= tied.T
  np.fill_diagonal(tied, False)
  iu, ju = np.triu_indices(n, k=1)
  return np.sort(np.array(hubs)), tied[iu, ju]


def make_cohort(spec: CohortSpec) -> SyntheticScans:
  """Generates the cohort `spec` describes (`CohortSpec` documents each signal); deterministic
  per spec.

  Args:
    spec: the cohort.

  Returns:
    `SyntheticScans`, subjects in id order; `module` holds the signal's regions (the module, or
    the hubs of "regions").
  """
  if spec.signal == "rewiring":
    return make_synthetic_cohort(
        num_subjects=spec.num_subjects, num_regions=spec.num_regions,
        min_visits=spec.min_visits, max_visits=spec.max_visits,
        converter_fraction=spec.converter_fraction, effect_size=spec.effect_size,
        edge_density=spec.edge_density, module_size=spec.module_size, seed=spec.seed,
        threshold=spec.threshold)
  effect_size = 0.0 if spec.signal == "null" else spec.effect_size
  n_conv = _check_arguments(spec.num_subjects, spec.num_regions, spec.min_visits,
                            spec.max_visits, spec.converter_fraction, effect_size,
                            spec.edge_density, spec.threshold)
  n = spec.num_regions
  hubs = spec.signal == "regions"
  size = spec.module_size
  if size is None:
    size = 4 if hubs else _default_module_size(n)
  if hubs and not 1 <= size <= n // 4:
    raise ValueError(f"module_size (hubs) must be in [1, N/4], got {size}")
  if not hubs and not 2 <= size <= n // 2:
    raise ValueError(f"module_size must be in [2, N/2], got {size}")
  z_threshold = math.atanh(spec.threshold)
  pairs = _signal_pairs(spec.signal, z_threshold)
  rng = np.random.default_rng(spec.seed)

  if hubs:
    atlas = _draw_atlas(rng, n, _default_module_size(n))  # its module stays ordinary structure
    regions, signal = _draw_hubs(rng, atlas, size)
  else:
    atlas = _draw_atlas(rng, n, size)
    regions, signal = atlas.module, atlas.pairs_among(atlas.module)
  free = np.flatnonzero(~signal)
  noise_sd = math.hypot(_PAIR_SUBJECT_SD, _PAIR_VISIT_SD)
  signal_density = _expected_density(np.full(signal.sum(), pairs.level), pairs.sd, z_threshold)
  scale = _density_scale(atlas.structure[free], noise_sd, signal_density, signal.mean(),
                         spec.edge_density, z_threshold)
  visit_sd = np.where(signal, pairs.visit_sd, scale * _PAIR_VISIT_SD)

  is_converter, subject_ids = _draw_subjects(rng, spec.num_subjects, n_conv)
  counts, probabilities = _visit_count_probabilities(spec.min_visits, spec.max_visits)
  records = []
  for i in range(spec.num_subjects):
    visits = _draw_visits(rng, bool(is_converter[i]), counts, probabilities)
    mean = np.empty(signal.size)
    mean[free] = scale * (atlas.structure[free] + rng.normal(0.0, _PAIR_SUBJECT_SD, free.size))
    mean[signal] = (pairs.level + rng.normal(0.0, pairs.subject_sd)
                    + rng.normal(0.0, pairs.pair_sd, signal.sum()))
    progress = (np.ones(len(visits.months)) if spec.onset == "baseline"
                else _progress(visits.months, pairs.single_visit_progress))
    rate = rng.uniform(0.75, 1.25)
    r_visits = np.empty((len(progress), signal.size), np.float32)
    for k in range(len(progress)):
      visit_mean = mean.copy()
      if is_converter[i] and effect_size > 0:
        loss = min(1.0, effect_size * rate * progress[k])
        visit_mean[signal] = pairs.converted(mean[signal], loss)
      if pairs.scan_sd:
        visit_mean[signal] += rng.normal(0.0, pairs.scan_sd)
      z = np.clip(visit_mean + rng.normal(0.0, 1.0, signal.size) * visit_sd, -_Z_LIMIT, _Z_LIMIT)
      r_visits[k] = np.tanh(z)
    records.append((subject_ids[i], _matrices(r_visits, n), int(is_converter[i]), visits))
  return _collect(records, regions, spec.threshold)


LEARNABILITY_SUITE: tuple[CohortSpec, ...] = (
    CohortSpec("density", "density", 200, edge_density=0.30, converter_fraction=0.30,
               effect_size=0.55, seed=1,
               description="module edges lost, not given back: edges, degrees and values carry "
               "the label"),
    CohortSpec("strength", "strength", 180, edge_density=0.45, converter_fraction=0.25,
               effect_size=0.3, seed=2,
               description="module weakens but stays above the threshold: only FC values carry "
               "the label, binarised graphs do not"),
    CohortSpec("rewiring", "rewiring", 240, edge_density=0.20, converter_fraction=0.20,
               effect_size=0.5, seed=3,
               description="degree-matched rewiring of the module: which regions connect, not "
               "how many (degrees and edge count carry nothing)"),
    CohortSpec("trajectory", "trajectory", 240, edge_density=0.35, converter_fraction=0.35,
               effect_size=0.6, seed=4,
               description="module weakens relative to the subject's own level: the change "
               "over visits carries the label, one scan little"),
    CohortSpec("regions", "regions", 300, edge_density=0.15, converter_fraction=0.15,
               max_visits=4, effect_size=0.5, seed=5,
               description="4 hubs lose their ties to ~40% of regions: a node-level signal in "
               "sparse graphs, few converters, short follow-up"),
    CohortSpec("density-200", "density", 140, num_regions=200, edge_density=0.25,
               converter_fraction=0.30, effect_size=0.6, seed=6,
               description="the density signal on a 200-region atlas (4x the compute per scan)"),
    CohortSpec("strength-static", "strength", 200, edge_density=0.30, converter_fraction=0.30,
               effect_size=0.3, seed=8, onset="baseline",
               description="the strength signal present from the first visit on: the change "
               "over visits carries nothing, one scan does"),
    CohortSpec("null", "null", 200, edge_density=0.40, converter_fraction=0.25, effect_size=0.0,
               seed=7,
               description="no effect, labels independent of the scans: every model should be "
               "at chance"),
)
"""The cohorts a model is judged on (`bench/learnability.py`): one per signal, a larger atlas, a
null; densities 0.15-0.45, converters 15-35%, 140-300 subjects, 1-6 visits, ~5000 scans in all.

Calibration: for each cohort, 5-fold stratified cross-validated logistic regression
(`StandardScaler`, `LogisticRegression(class_weight="balanced")`), mean test-fold AUC, on four
feature sets per subject: (a) fc = the last scan's upper triangle with |r| < threshold set to 0,
(b) edges = the same binarised, (c) degree = the last scan's node degrees, (d) change = (a) of the
last scan minus (a) of the first (0 for one visit). In brackets: the mean over the same spec with
seeds +100, +200, +300 (the design, not one draw). Under shuffled labels these AUCs spread with
sd ~0.07 around 0.5, so 0.4-0.65 is chance (the null's degree 0.65, strength's edges 0.41).

| cohort | subjects / converters / scans | density | (a) fc | (b) edges | (c) degree | (d) change |
|---|---|---:|---:|---:|---:|---:|
| density | 200 / 60 / 634 | 0.30 | 0.97 (0.93) | 0.89 (0.83) | 0.80 (0.74) | 0.92 (0.94) |
| strength | 180 / 45 / 609 | 0.45 | 0.93 (0.90) | 0.41 (0.58) | 0.51 (0.48) | 0.94 (0.95) |
| rewiring | 240 / 48 / 817 | 0.20 | 0.91 (0.89) | 0.78 (0.71) | 0.53 (0.47) | 0.93 (0.96) |
| trajectory | 240 / 84 / 827 | 0.35 | 0.63 (0.64) | 0.60 (0.53) | 0.49 (0.54) | 0.87 (0.85) |
| regions | 300 / 45 / 830 | 0.15 | 0.93 (0.94) | 0.86 (0.90) | 0.77 (0.81) | 0.96 (0.87) |
| density-200 | 140 / 42 / 440 | 0.25 | 0.90 (0.93) | 0.75 (0.88) | 0.74 (0.72) | 0.94 (0.94) |
| null | 200 / 50 / 643 | 0.40 | 0.43 (0.46) | 0.41 (0.49) | 0.65 (0.48) | 0.48 (0.49) |

Every signal cohort has a feature set at 0.87-0.97 (trajectory: only the change). The change
scores high on every signal cohort because the effect is 0 at the first visit and the difference
removes the subject's own pattern.
"""


def cohort_from_scans(
    scans: SyntheticScans,
    *,
    threshold: float | None = None,
    max_visits: int = 10,
    exclude_target_visit: bool = False,
    single_visit_horizon: float = 6.0,
) -> Cohort:
  """The `Cohort` that `load_cohort` gives for `scans` written by `write_synthetic`, built in memory
  (same arguments as `load_cohort`; `threshold` defaults to the one the scans were made for)."""
  threshold = scans.threshold if threshold is None else threshold
  adjacency, visits, groups = {}, {}, {}
  for i, subject in enumerate(scans.subject_ids):
    key = subject.replace("_", "")
    adjacency[key] = {k + 1: a for k, a in enumerate(threshold_fc(scans.fc[i], threshold))}
    visits[key] = [VisitRecord(order=k + 1, months=float(m), months_to_next=float(t),
                                    label=int(y))
                   for k, (m, t, y) in enumerate(zip(scans.months[i], scans.months_to_next[i],
                                                     scans.visit_labels[i]))]
    groups[key] = scans.groups[i][0]
  return build_cohort(adjacency, visits, groups, max_visits=max_visits,
                           exclude_target_visit=exclude_target_visit,
                           single_visit_horizon=single_visit_horizon)


def synthetic_cohort(**kwargs) -> Cohort:
  """`cohort_from_scans(make_synthetic_cohort(**kwargs))`: equals `load_cohort(directory)` after
  `write_synthetic(directory, **kwargs)` (with load_cohort's default settings)."""
  return cohort_from_scans(make_synthetic_cohort(**kwargs))


def _viscode(months: float) -> str:
  return "bl" if months == 0 else f"m{int(round(months)):02d}"


def write_scans(directory: str | os.PathLike, scans: SyntheticScans, *,
                var_name: str = "fc_matrix", overwrite: bool = False) -> None:
  """Writes `scans` in the reference's on-disk format.

  Creates `directory/FC_Matrices/sub-<ID>_run-<NN>_fc_matrix.npz` (float32 matrix under `var_name`),
  `directory/TADPOLE_TEMPORAL.csv` and `directory/TADPOLE_Simplified.csv`. Floats are written with
  Python's shortest round-trip repr, so `load_cohort` reads back exactly the generated values.

  Args:
    directory: the data root (created if needed).
    scans: the cohort.
    var_name: the npz key.
    overwrite: replace an earlier cohort's files; without it an existing visit table, groups
      table or non-empty FC_Matrices folder raises `FileExistsError` (nothing is written).
  """
  root = Path(directory)
  fc_dir = root / FC_DIR
  if root.exists() and not root.is_dir():
    raise FileExistsError(f"{root} exists and is not a folder; pass a folder for the cohort")
  existing = [p for p in (root / TEMPORAL_CSV, root / SIMPLIFIED_CSV) if p.exists()]
  if fc_dir.is_dir() and any(fc_dir.iterdir()):
    existing.append(fc_dir)
  if existing and not overwrite:
    raise FileExistsError(
        f"{root} already holds a cohort ({', '.join(p.name for p in existing)}); pass another "
        "folder, or --overwrite (overwrite=True) to replace it")
  fc_dir.mkdir(parents=True, exist_ok=True)
  for path in fc_dir.iterdir():
    if SCAN_FILE_PATTERN.fullmatch(path.name):
      path.unlink()

  temporal_rows, simplified_rows = [], []
  for i, subject in enumerate(scans.subject_ids):
    key = subject.replace("_", "")
    for k in range(len(scans.fc[i])):
      np.savez_compressed(fc_dir / f"sub-{key}_run-{k + 1:02d}_fc_matrix.npz",
                          **{var_name: scans.fc[i][k]})
      months, to_next = float(scans.months[i][k]), float(scans.months_to_next[i][k])
      label = int(scans.visit_labels[i][k])
      temporal_rows.append([subject, _viscode(months), label, k + 1, repr(months),
                            "" if math.isnan(to_next) else repr(to_next)])
      simplified_rows.append([subject, k, scans.groups[i][k], label])
  _write_csv(root / TEMPORAL_CSV, ["Subject", "Visit", "Label_CS_Num", "Visit_Order",
                                     "Months_From_Baseline", "Months_To_Next_Original"],
             temporal_rows)
  _write_csv(root / SIMPLIFIED_CSV, ["Subject", "Visit_idx", "Group", "Label_CS_Num"],
             simplified_rows)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\r\n")  # csv's default, as open(newline="") wrote
  writer.writerow(header)
  writer.writerows(rows)
  atomic.write_text(path, buffer.getvalue())


def write_synthetic(directory: str | os.PathLike, *, var_name: str = "fc_matrix",
                    overwrite: bool = False, **kwargs) -> SyntheticScans:
  """Writes `make_synthetic_cohort(**kwargs)` with `write_scans` (same `var_name`, `overwrite`);
  returns the `SyntheticScans` written."""
  scans = make_synthetic_cohort(**kwargs)
  write_scans(directory, scans, var_name=var_name, overwrite=overwrite)
  return scans


def write_cohort(directory: str | os.PathLike, spec: CohortSpec, *, var_name: str = "fc_matrix",
                 overwrite: bool = False) -> SyntheticScans:
  """Writes `make_cohort(spec)` with `write_scans` (same `var_name`, `overwrite`); returns the
  `SyntheticScans` written."""
  scans = make_cohort(spec)
  write_scans(directory, scans, var_name=var_name, overwrite=overwrite)
  return scans
