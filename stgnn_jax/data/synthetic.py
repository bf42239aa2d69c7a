"""The built-in synthetic cohort: a known, local, progressive conversion signal.

ADNI/TADPOLE data needs an access agreement, so the project trains and tests on this cohort
(`python train.py` without `--data_root`). `write_synthetic` writes it in the reference's on-disk
format (`writer.write_scans`), and `load_cohort` of that folder equals the in-memory
`synthetic_cohort` with the same arguments.

One cohort cannot judge a model: `synthetic_family` makes cohorts with the conversion signal
elsewhere (this one is its "rewiring" member). How learnable each is, this one included, is
measured in the README ("Learnability").

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
"""

from __future__ import annotations

import math
import os

import numpy as np

from stgnn_jax.data.cohort import Cohort
from stgnn_jax.data.population import (
    MODULE_SUBJECT_SD,
    MODULE_Z,
    PAIR_SUBJECT_SD,
    PAIR_VISIT_SD,
    SINGLE_VISIT_PROGRESS,
    Z_LIMIT,
    check_arguments,
    collect_scans,
    conversion_progress,
    default_module_size,
    density_scale,
    draw_atlas,
    draw_subjects,
    draw_visits,
    expected_density,
    fc_matrices,
    visit_count_probabilities,
)
from stgnn_jax.data.synthetic_scans import SyntheticScans, cohort_from_scans
from stgnn_jax.data.writer import write_scans


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
  """Generates the built-in cohort (module docstring); deterministic per argument set.

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
  n_conv = check_arguments(num_subjects, num_regions, min_visits, max_visits,
                           converter_fraction, effect_size, edge_density, threshold)
  if module_size is None:
    module_size = default_module_size(num_regions)
  if not 2 <= module_size <= num_regions // 2:
    raise ValueError(f"module_size must be in [2, N/2], got {module_size}")
  rng = np.random.default_rng(seed)
  n = num_regions
  iu, ju = np.triu_indices(n, k=1)

  atlas = draw_atlas(rng, n, module_size)
  structure, module = atlas.structure, atlas.module
  in_module = atlas.pairs_among(module)
  outside = np.flatnonzero(~in_module)
  module_pairs = np.flatnonzero(in_module)
  outer = np.flatnonzero(~np.isin(iu, module) & ~np.isin(ju, module))  # no module endpoint
  pair_index = np.full((n, n), -1)
  pair_index[iu, ju] = pair_index[ju, iu] = np.arange(iu.size)

  # One scale for the non-module structure and noise, solved for the expected density.
  z_threshold = math.atanh(threshold)
  noise_sd = math.hypot(PAIR_SUBJECT_SD, PAIR_VISIT_SD)
  module_sd = math.hypot(noise_sd, MODULE_SUBJECT_SD)
  module_density = expected_density(np.full(in_module.sum(), MODULE_Z), module_sd, z_threshold)
  scale = density_scale(structure[outside], noise_sd, module_density, in_module.mean(),
                        edge_density, z_threshold)

  # Subjects: labels, groups, visit counts are independent of one another's draws below.
  is_converter, subject_ids = draw_subjects(rng, num_subjects, n_conv)
  counts, probabilities = visit_count_probabilities(min_visits, max_visits)

  records = []
  for i in range(num_subjects):
    visits = draw_visits(rng, bool(is_converter[i]), counts, probabilities)
    n_visits = len(visits.months)
    subject_mean = np.empty(iu.size)
    subject_mean[outside] = scale * (structure[outside]
                                     + rng.normal(0.0, PAIR_SUBJECT_SD, outside.size))
    subject_mean[in_module] = (MODULE_Z + rng.normal(0.0, MODULE_SUBJECT_SD)
                               + rng.normal(0.0, PAIR_SUBJECT_SD, in_module.sum()))
    visit_sd = np.where(in_module, PAIR_VISIT_SD, scale * PAIR_VISIT_SD)
    progress = conversion_progress(visits.months, SINGLE_VISIT_PROGRESS)
    rate = rng.uniform(0.75, 1.25)
    swap_order = rng.permutation(outer)
    r_visits = np.empty((n_visits, iu.size), np.float32)
    for k in range(n_visits):
      z = np.clip(subject_mean + rng.normal(0.0, 1.0, iu.size) * visit_sd, -Z_LIMIT, Z_LIMIT)
      r_counterfactual = np.tanh(z).astype(np.float32)
      r = r_counterfactual.copy()
      if is_converter[i] and effect_size > 0:
        loss = min(1.0, effect_size * rate * progress[k])
        r[in_module] = np.tanh(z[in_module] * (1 - loss)).astype(np.float32)
        lost = module_pairs[_edges(r_counterfactual[module_pairs], threshold)
                            & ~_edges(r[module_pairs], threshold)]
        _rewire(r, lost, swap_order, pair_index, threshold, rng)
      r_visits[k] = r
    records.append((subject_ids[i], fc_matrices(r_visits, n), int(is_converter[i]), visits))
  return collect_scans(records, module, threshold)


def _rewire(r: np.ndarray, lost: np.ndarray, swap_order: np.ndarray, pair_index: np.ndarray,
            threshold: float, rng: np.random.Generator) -> None:
  """Gives back, in place, the edges and node degrees a converter's scan lost in its module.

  For each lost module edge (i, j): take the first edge (x, y) between non-module regions in the
  subject's `swap_order` such that (i, x) and (j, y) are not edges, remove it and add (i, x) and
  (j, y) (a double edge swap). Every region keeps its counterfactual degree and the scan its edge
  count, so neither carries the label: module regions are rewired to outside regions instead.
  Exact unless `swap_order` runs out of usable edges (README, "Learnability": how many are given
  back on the default cohort).

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


def synthetic_cohort(**kwargs) -> Cohort:
  """`cohort_from_scans(make_synthetic_cohort(**kwargs))`: equals `load_cohort(directory)` after
  `write_synthetic(directory, **kwargs)` (with load_cohort's default settings)."""
  return cohort_from_scans(make_synthetic_cohort(**kwargs))


def write_synthetic(directory: str | os.PathLike, *, var_name: str = "fc_matrix",
                    overwrite: bool = False, **kwargs) -> SyntheticScans:
  """Writes `make_synthetic_cohort(**kwargs)` with `write_scans` (same `var_name`, `overwrite`);
  returns the `SyntheticScans` written."""
  scans = make_synthetic_cohort(**kwargs)
  write_scans(directory, scans, var_name=var_name, overwrite=overwrite)
  return scans
