"""A synthetic longitudinal FC cohort with a known, local, progressive conversion signal.

ADNI/TADPOLE data needs an access agreement, so the project trains and tests on this cohort. It is
written in the reference's on-disk format (`write_synthetic`), and `load_cohort` of that folder
equals the in-memory `synthetic_cohort` with the same arguments.

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
import math
import os
from pathlib import Path

import numpy as np

from stgnn_jax import data

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
  if module_size is None:
    module_size = min(12, max(3, num_regions // 4))
  if not 2 <= module_size <= num_regions // 2:
    raise ValueError(f"module_size must be in [2, N/2], got {module_size}")
  n_conv = int(round(converter_fraction * num_subjects))
  if not 0 < n_conv < num_subjects:
    raise ValueError(f"{num_subjects} subjects with converter_fraction {converter_fraction} give "
                     f"{n_conv} converters: both classes are needed")
  rng = np.random.default_rng(seed)
  n = num_regions
  iu, ju = np.triu_indices(n, k=1)

  # Population structure.
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
  in_module = np.isin(iu, module) & np.isin(ju, module)
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
  frac_module = in_module.mean()
  lo, hi = 1e-3, 20.0
  for _ in range(60):
    scale = (lo + hi) / 2
    outside_density = _expected_density(scale * structure[outside], scale * noise_sd, z_threshold)
    density = frac_module * module_density + (1 - frac_module) * outside_density
    lo, hi = (scale, hi) if density < edge_density else (lo, scale)

  # Subjects: labels, groups, visit counts are independent of one another's draws below.
  is_converter = np.zeros(num_subjects, bool)
  is_converter[rng.permutation(num_subjects)[:n_conv]] = True
  counts = np.arange(min_visits, max_visits + 1)
  weights = np.array([_VISIT_COUNT_WEIGHTS[k - 1] if k <= 6 else 0.1 * 0.7 ** (k - 6)
                      for k in counts])
  numbers = np.sort(rng.choice(9000, num_subjects, replace=False)) + 1000
  sites = rng.integers(2, 142, num_subjects)
  subject_ids = [f"{s:03d}_S_{m:04d}" for s, m in zip(sites, numbers)]

  records = []
  for i in range(num_subjects):
    n_visits = int(rng.choice(counts, p=weights / weights.sum()))
    months, to_next = _visit_months(rng, n_visits)
    if is_converter[i]:
      baseline = "CN" if rng.random() < 0.4 else "MCI"
      final = {"CN": "MCI", "MCI": "AD"}[baseline]
      groups = (baseline,) * (n_visits - 1) + (final,)
      visit_labels = np.zeros(n_visits, np.int32)
      visit_labels[-1] = 1
    else:
      baseline = str(rng.choice(["CN", "MCI", "AD"], p=[0.45, 0.40, 0.15]))
      groups = (baseline,) * n_visits
      visit_labels = np.zeros(n_visits, np.int32)

    subject_mean = np.empty(iu.size)
    subject_mean[outside] = scale * (structure[outside]
                                     + rng.normal(0.0, _PAIR_SUBJECT_SD, outside.size))
    subject_mean[in_module] = (_MODULE_Z + rng.normal(0.0, _MODULE_SUBJECT_SD)
                               + rng.normal(0.0, _PAIR_SUBJECT_SD, in_module.sum()))
    visit_sd = np.where(in_module, _PAIR_VISIT_SD, scale * _PAIR_VISIT_SD)
    if n_visits > 1:
      progress = _FIRST_VISIT_PROGRESS + (1 - _FIRST_VISIT_PROGRESS) * (
          (months - months[0]) / (months[-1] - months[0]))
    else:
      progress = np.array([_SINGLE_VISIT_PROGRESS])
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
    fc = np.zeros((n_visits, n, n), np.float32)
    fc[:, iu, ju] = r_visits
    fc[:, ju, iu] = r_visits
    fc[:, np.arange(n), np.arange(n)] = 1.0
    records.append((subject_ids[i], fc, int(is_converter[i]), visit_labels, months, to_next,
                    groups))

  records.sort(key=lambda record: record[0])
  ids, fcs, labels, visit_labels, months, to_next, groups = zip(*records)
  return SyntheticScans(
      subject_ids=tuple(ids), fc=tuple(fcs), labels=np.array(labels, np.int32),
      visit_labels=tuple(visit_labels), months=tuple(months), months_to_next=tuple(to_next),
      groups=tuple(groups), module=module, threshold=float(threshold))


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
  # Same test as data.fc_to_adjacency on a symmetric matrix, so edge counts here are exact there.
  return (np.abs(r) >= threshold) & (r != 0)


def cohort_from_scans(
    scans: SyntheticScans,
    *,
    threshold: float | None = None,
    max_visits: int = 10,
    exclude_target_visit: bool = False,
    single_visit_horizon: float = 6.0,
) -> data.Cohort:
  """The `Cohort` that `load_cohort` gives for `scans` written by `write_synthetic`, built in memory
  (same arguments as `load_cohort`; `threshold` defaults to the one the scans were made for)."""
  threshold = scans.threshold if threshold is None else threshold
  adjacency, visits, groups = {}, {}, {}
  for i, subject in enumerate(scans.subject_ids):
    key = subject.replace("_", "")
    adjacency[key] = {k + 1: a for k, a in enumerate(data.fc_to_adjacency(scans.fc[i], threshold))}
    visits[key] = [data.VisitRecord(order=k + 1, months=float(m), months_to_next=float(t),
                                    label=int(y))
                   for k, (m, t, y) in enumerate(zip(scans.months[i], scans.months_to_next[i],
                                                     scans.visit_labels[i]))]
    groups[key] = scans.groups[i][0]
  return data.build_cohort(adjacency, visits, groups, max_visits=max_visits,
                           exclude_target_visit=exclude_target_visit,
                           single_visit_horizon=single_visit_horizon)


def synthetic_cohort(**kwargs) -> data.Cohort:
  """`cohort_from_scans(make_synthetic_cohort(**kwargs))`: equals `load_cohort(directory)` after
  `write_synthetic(directory, **kwargs)` (with load_cohort's default settings)."""
  return cohort_from_scans(make_synthetic_cohort(**kwargs))


def _viscode(months: float) -> str:
  return "bl" if months == 0 else f"m{int(round(months)):02d}"


def write_synthetic(directory: str | os.PathLike, *, var_name: str = "fc_matrix",
                    overwrite: bool = False, **kwargs) -> SyntheticScans:
  """Writes `make_synthetic_cohort(**kwargs)` in the reference's on-disk format.

  Creates `directory/FC_Matrices/sub-<ID>_run-<NN>_fc_matrix.npz` (float32 matrix under `var_name`),
  `directory/TADPOLE_TEMPORAL.csv` and `directory/TADPOLE_Simplified.csv`. Floats are written with
  Python's shortest round-trip repr, so `load_cohort` reads back exactly the generated values.

  Args:
    directory: the data root (created if needed).
    var_name: the npz key.
    overwrite: replace the scan files of an earlier cohort; without it a non-empty FC_Matrices
      folder raises `FileExistsError` (stale scans would mix into the new cohort).
    **kwargs: `make_synthetic_cohort` arguments.

  Returns:
    The `SyntheticScans` written.
  """
  scans = make_synthetic_cohort(**kwargs)
  root = Path(directory)
  fc_dir = root / data.FC_DIR
  fc_dir.mkdir(parents=True, exist_ok=True)
  existing = [p for p in fc_dir.iterdir()]
  if existing and not overwrite:
    raise FileExistsError(f"{fc_dir} is not empty; pass overwrite=True to replace its scans")
  for path in existing:
    if data.SCAN_FILE_PATTERN.fullmatch(path.name):
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
  with open(root / data.TEMPORAL_CSV, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["Subject", "Visit", "Label_CS_Num", "Visit_Order", "Months_From_Baseline",
                     "Months_To_Next_Original"])
    writer.writerows(temporal_rows)
  with open(root / data.SIMPLIFIED_CSV, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["Subject", "Visit_idx", "Group", "Label_CS_Num"])
    writer.writerows(simplified_rows)
  return scans
