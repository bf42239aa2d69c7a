"""The synthetic family: one generator per kind of conversion signal, for judging a model.

One cohort cannot judge a model, so `CohortSpec` and `make_cohort` make a family of them: the
population, visits, diagnoses and ids of the built-in cohort (`population`), with the conversion
signal in edge density, in FC strength above the threshold, in degree-matched rewiring (the
built-in cohort, `synthetic.make_synthetic_cohort`), in the change over visits, in a few hub
regions, or nowhere (null). `write_cohort` writes one in the reference's on-disk format. The
specs a model is benchmarked on live with the benchmark (`bench/cohorts.py`); the README
("Learnability") reports how learnable each is.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from stgnn_jax.data.population import (
    MODULE_SUBJECT_SD,
    MODULE_Z,
    ONSETS,
    PAIR_SUBJECT_SD,
    PAIR_VISIT_SD,
    SINGLE_VISIT_PROGRESS,
    Z_LIMIT,
    Atlas,
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
from stgnn_jax.data.synthetic import make_synthetic_cohort
from stgnn_jax.data.synthetic_scans import SyntheticScans
from stgnn_jax.data.writer import write_scans

SIGNALS = ("density", "strength", "rewiring", "trajectory", "regions", "null")

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
  single_visit_progress: float = SINGLE_VISIT_PROGRESS
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
    return _SignalPairs(MODULE_Z, MODULE_SUBJECT_SD, PAIR_SUBJECT_SD, PAIR_VISIT_SD, 0.0)
  if signal == "strength":
    # Low noise keeps even a fully converted module (r ~ 0.42) ~5 visit sd above the threshold.
    return _SignalPairs(z_threshold + 0.65, 0.06, 0.05, 0.05, z_threshold + 0.25)
  if signal == "trajectory":
    # The spread of levels between subjects (sd 0.45) exceeds a converter's drop (0.5 * loss), so
    # one scan says little; the scan-level offset keeps the change from being noise-free.
    # No signal without a second visit: the change from one's own baseline is the signal.
    return _SignalPairs(MODULE_Z, 0.45, 0.08, 0.06, None, drop=0.5, single_visit_progress=0.0,
                        scan_sd=0.10)
  if signal == "regions":
    return _SignalPairs(0.5, 0.12, PAIR_SUBJECT_SD, PAIR_VISIT_SD, 0.0)
  raise ValueError(f"no signal pairs for {signal!r}")


def _draw_hubs(rng: np.random.Generator, atlas: Atlas,
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
  n_conv = check_arguments(spec.num_subjects, spec.num_regions, spec.min_visits,
                           spec.max_visits, spec.converter_fraction, effect_size,
                           spec.edge_density, spec.threshold)
  n = spec.num_regions
  hubs = spec.signal == "regions"
  size = spec.module_size
  if size is None:
    size = 4 if hubs else default_module_size(n)
  if hubs and not 1 <= size <= n // 4:
    raise ValueError(f"module_size (hubs) must be in [1, N/4], got {size}")
  if not hubs and not 2 <= size <= n // 2:
    raise ValueError(f"module_size must be in [2, N/2], got {size}")
  z_threshold = math.atanh(spec.threshold)
  pairs = _signal_pairs(spec.signal, z_threshold)
  rng = np.random.default_rng(spec.seed)

  if hubs:
    atlas = draw_atlas(rng, n, default_module_size(n))  # its module stays ordinary structure
    regions, signal = _draw_hubs(rng, atlas, size)
  else:
    atlas = draw_atlas(rng, n, size)
    regions, signal = atlas.module, atlas.pairs_among(atlas.module)
  free = np.flatnonzero(~signal)
  noise_sd = math.hypot(PAIR_SUBJECT_SD, PAIR_VISIT_SD)
  signal_density = expected_density(np.full(signal.sum(), pairs.level), pairs.sd, z_threshold)
  scale = density_scale(atlas.structure[free], noise_sd, signal_density, signal.mean(),
                        spec.edge_density, z_threshold)
  visit_sd = np.where(signal, pairs.visit_sd, scale * PAIR_VISIT_SD)

  is_converter, subject_ids = draw_subjects(rng, spec.num_subjects, n_conv)
  counts, probabilities = visit_count_probabilities(spec.min_visits, spec.max_visits)
  records = []
  for i in range(spec.num_subjects):
    visits = draw_visits(rng, bool(is_converter[i]), counts, probabilities)
    mean = np.empty(signal.size)
    mean[free] = scale * (atlas.structure[free] + rng.normal(0.0, PAIR_SUBJECT_SD, free.size))
    mean[signal] = (pairs.level + rng.normal(0.0, pairs.subject_sd)
                    + rng.normal(0.0, pairs.pair_sd, signal.sum()))
    progress = (np.ones(len(visits.months)) if spec.onset == "baseline"
                else conversion_progress(visits.months, pairs.single_visit_progress))
    rate = rng.uniform(0.75, 1.25)
    r_visits = np.empty((len(progress), signal.size), np.float32)
    for k in range(len(progress)):
      visit_mean = mean.copy()
      if is_converter[i] and effect_size > 0:
        loss = min(1.0, effect_size * rate * progress[k])
        visit_mean[signal] = pairs.converted(mean[signal], loss)
      if pairs.scan_sd:
        visit_mean[signal] += rng.normal(0.0, pairs.scan_sd)
      z = np.clip(visit_mean + rng.normal(0.0, 1.0, signal.size) * visit_sd, -Z_LIMIT, Z_LIMIT)
      r_visits[k] = np.tanh(z)
    records.append((subject_ids[i], fc_matrices(r_visits, n), int(is_converter[i]), visits))
  return collect_scans(records, regions, spec.threshold)


def write_cohort(directory: str | os.PathLike, spec: CohortSpec, *, var_name: str = "fc_matrix",
                 overwrite: bool = False) -> SyntheticScans:
  """Writes `make_cohort(spec)` with `write_scans` (same `var_name`, `overwrite`); returns the
  `SyntheticScans` written."""
  scans = make_cohort(spec)
  write_scans(directory, scans, var_name=var_name, overwrite=overwrite)
  return scans
