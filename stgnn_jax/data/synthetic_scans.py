"""A generated cohort's scans (`SyntheticScans`) and the `Cohort` they load as.

Every generator of the package returns `SyntheticScans`: the built-in cohort (`synthetic`), the
family of cohorts with other signals (`synthetic_family`) and the cohorts computed from BOLD
series (`bold_cohorts`). `writer.write_scans` puts them on disk in the reference's format, and
`cohort_from_scans` builds in memory the `Cohort` that `load_cohort` reads back from there.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stgnn_jax.data.cohort import Cohort, SubjectStore, VisitRecord, build_cohort
from stgnn_jax.data.preprocessing import threshold_fc
from stgnn_jax.data.reference_format import subject_file_id


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticScans:
  """A generated cohort's scans and visit rows, as `writer.write_scans` puts them on disk.

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


def cohort_from_scans(
    scans: SyntheticScans,
    *,
    threshold: float | None = None,
    max_visits: int = 10,
    exclude_target_visit: bool = False,
    single_visit_horizon: float = 6.0,
    store: SubjectStore | None = None,
) -> Cohort:
  """The `Cohort` that `load_cohort` gives for `scans` written by `writer.write_scans`, built
  from them directly (same arguments as `load_cohort`; `threshold` defaults to the one the scans
  were made for; `store`: where the subjects go, as for `build_cohort`)."""
  threshold = scans.threshold if threshold is None else threshold
  adjacency, visits, groups = {}, {}, {}
  for i, subject in enumerate(scans.subject_ids):
    key = subject_file_id(subject)
    adjacency[key] = {k + 1: a for k, a in enumerate(threshold_fc(scans.fc[i], threshold))}
    visits[key] = [VisitRecord(order=k + 1, months=float(m), months_to_next=float(t),
                               label=int(y))
                   for k, (m, t, y) in enumerate(zip(scans.months[i], scans.months_to_next[i],
                                                     scans.visit_labels[i], strict=True))]
    groups[key] = scans.groups[i][0]
  return build_cohort(adjacency, visits, groups, max_visits=max_visits,
                      exclude_target_visit=exclude_target_visit,
                      single_visit_horizon=single_visit_horizon, store=store)
