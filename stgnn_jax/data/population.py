"""The draws every generated cohort shares: atlas, density calibration, subjects and visits.

The built-in cohort (`synthetic`), the family (`synthetic_family`) and the cohorts computed from
BOLD series (`bold_cohorts`) share these pieces: the population's networks and module (`Atlas`,
`draw_atlas`) and the scale that calibrates its edge density (`density_scale`), the subjects'
labels and ADNI-style ids (`draw_subjects`), their visit counts, schedules and diagnoses
(`draw_visits`), how far a converter's effect has progressed at each visit
(`conversion_progress`), and the assembly of the `SyntheticScans` (`collect_scans`). Each draws
from the cohort's generator in a fixed order, so a cohort is a function of its seed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from stgnn_jax.data.synthetic_scans import SyntheticScans

ONSETS = ("progressive", "baseline")  # how a converter's effect appears over its visits

# P(1..6 visits): mean 3.31 visits, like the reference's synthetic 976 scans / 300 subjects.
_VISIT_COUNT_WEIGHTS = (0.08, 0.24, 0.27, 0.20, 0.12, 0.09)
MODULE_Z = 0.55         # module strength in stable subjects, r ~ 0.5: edges kept at t = 0.2
MODULE_SUBJECT_SD = 0.15
PAIR_SUBJECT_SD = 0.10  # per pair, shared by a subject's visits
PAIR_VISIT_SD = 0.08    # per pair and visit
_FIRST_VISIT_PROGRESS = 0.0  # converters look like stable subjects at baseline
SINGLE_VISIT_PROGRESS = 0.6
Z_LIMIT = 1.6           # |r| <= tanh(1.6) = 0.92: off-diagonal values stay inside (-1, 1)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[float])(x / math.sqrt(2.0)))


def expected_density(mean: np.ndarray, sd: np.ndarray | float, z_threshold: float) -> float:
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


@dataclasses.dataclass(frozen=True)
class Atlas:
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


def default_module_size(num_regions: int) -> int:
  return min(12, max(3, num_regions // 4))


def draw_atlas(rng: np.random.Generator, n: int, module_size: int) -> Atlas:
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
  return Atlas(networks, structure, module)


def density_scale(free_structure: np.ndarray, noise_sd: float, fixed_density: float,
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
    free_density = expected_density(scale * free_structure, scale * noise_sd, z_threshold)
    density = fixed_fraction * fixed_density + (1 - fixed_fraction) * free_density
    lo, hi = (scale, hi) if density < edge_density else (lo, scale)
  return scale


def draw_subjects(rng: np.random.Generator, num_subjects: int,
                  n_conv: int) -> tuple[np.ndarray, list[str]]:
  """Which subjects convert (`[subjects]` bool, a random `n_conv` of them) and their ADNI-style
  ids ("023_S_4105", unique): four-digit numbers up to 9,000 subjects, more digits beyond."""
  is_converter = np.zeros(num_subjects, bool)
  is_converter[rng.permutation(num_subjects)[:n_conv]] = True
  # 1000-9999 as ADNI's; a larger cohort takes as many digits as it needs (the same draw, so the
  # ids of a cohort of up to 9,000 are those it always had).
  digits = max(4, len(str(num_subjects + 999)))
  numbers = np.sort(rng.choice(10 ** digits - 1000, num_subjects, replace=False)) + 1000
  sites = rng.integers(2, 142, num_subjects)
  return is_converter, [f"{s:03d}_S_{m:04d}" for s, m in zip(sites, numbers, strict=True)]


def visit_count_probabilities(min_visits: int,
                              max_visits: int) -> tuple[np.ndarray, np.ndarray]:
  """(visit counts, their probabilities): `_VISIT_COUNT_WEIGHTS` over 1-6, a geometric tail
  beyond, restricted to [min_visits, max_visits]."""
  counts = np.arange(min_visits, max_visits + 1)
  weights = np.array([_VISIT_COUNT_WEIGHTS[k - 1] if k <= 6 else 0.1 * 0.7 ** (k - 6)
                      for k in counts])
  return counts, weights / weights.sum()


class Visits(NamedTuple):
  """One subject's visit rows: months `[visits]`, months to next `[visits]`, diagnosis per visit,
  Label_CS_Num per visit `[visits]` int32."""

  months: np.ndarray
  to_next: np.ndarray
  groups: tuple[str, ...]
  labels: np.ndarray


def draw_visits(rng: np.random.Generator, converter: bool, counts: np.ndarray,
                probabilities: np.ndarray) -> Visits:
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
  return Visits(months, to_next, groups, labels)


def conversion_progress(months: np.ndarray, single_visit: float) -> np.ndarray:
  """`[visits]` fraction of a converter's effect present at each visit: 0 at the first visit,
  rising linearly in months to 1 at the last (conversion) visit; `single_visit` for one visit."""
  if len(months) > 1:
    return _FIRST_VISIT_PROGRESS + (1 - _FIRST_VISIT_PROGRESS) * (
        (months - months[0]) / (months[-1] - months[0]))
  return np.array([single_visit])


def fc_matrices(r_visits: np.ndarray, n: int) -> np.ndarray:
  """`[visits, pairs]` upper-triangle correlations -> float32 `[visits, N, N]`, symmetric, unit
  diagonal."""
  iu, ju = np.triu_indices(n, k=1)
  fc = np.zeros((len(r_visits), n, n), np.float32)
  fc[:, iu, ju] = r_visits
  fc[:, ju, iu] = r_visits
  fc[:, np.arange(n), np.arange(n)] = 1.0
  return fc


def check_arguments(num_subjects: int, num_regions: int, min_visits: int, max_visits: int,
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


def collect_scans(records: list[tuple], module: np.ndarray, threshold: float) -> SyntheticScans:
  """Records (id, fc, label, `Visits`) -> `SyntheticScans`, subjects in id order."""
  records.sort(key=lambda record: record[0])
  ids, fcs, labels, visits = zip(*records, strict=True)
  return SyntheticScans(
      subject_ids=tuple(ids), fc=tuple(fcs), labels=np.array(labels, np.int32),
      visit_labels=tuple(v.labels for v in visits), months=tuple(v.months for v in visits),
      months_to_next=tuple(v.to_next for v in visits), groups=tuple(v.groups for v in visits),
      module=module, threshold=float(threshold))
