"""FC matrices -> thresholded graphs -> subjects -> a cohort.

`preprocessing`: the reference's thresholding rule, node features and time features;
`cohort`: the domain types (`Subject`, `Cohort`) and the rules that assemble them;
`reference_format`: the reference's on-disk layout (`FC_Matrices/*.npz` and the TADPOLE tables),
read by `load_cohort`; `cache`: the parsed cohort stored on disk, its scans as `.npy` files that
`--scan_store memmap` maps instead of loading.

Cohorts with a known signal (imported on demand): `synthetic`, the built-in one;
`synthetic_family`, the family with other signals; `bold_cohorts`, FC computed from BOLD series;
`population`, the draws they share; `synthetic_scans`, the scans they return; `writer`, which
writes those in the reference's format.
"""

from stgnn_jax.data.cohort import (
    Cohort,
    CohortError,
    CohortWarning,
    Subject,
    VisitRecord,
    build_cohort,
    conversion_type,
    time_features,
)
from stgnn_jax.data.preprocessing import (
    HORIZON_BUCKETS,
    TIME_NORMALIZATIONS,
    connection_features,
    fc_to_adjacency,
    horizon_bucket,
    horizon_bucket_index,
    normalize_time,
    threshold_fc,
)
from stgnn_jax.data.reference_format import (
    FC_DIR,
    SCAN_FILE_FORMAT,
    SIMPLIFIED_CSV,
    TEMPORAL_CSV,
    load_cohort,
    read_baseline_groups,
    read_visit_table,
)

__all__ = [
    "FC_DIR",
    "HORIZON_BUCKETS",
    "SCAN_FILE_FORMAT",
    "SIMPLIFIED_CSV",
    "TEMPORAL_CSV",
    "TIME_NORMALIZATIONS",
    "Cohort",
    "CohortError",
    "CohortWarning",
    "Subject",
    "VisitRecord",
    "build_cohort",
    "connection_features",
    "conversion_type",
    "fc_to_adjacency",
    "horizon_bucket",
    "horizon_bucket_index",
    "load_cohort",
    "normalize_time",
    "read_baseline_groups",
    "read_visit_table",
    "threshold_fc",
    "time_features",
]
