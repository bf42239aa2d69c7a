"""Every setting of a run, declared once: the model, the optimisation and the protocol.

`ModelConfig` (architecture, `config.model`), `OptimConfig` (loss and optimiser,
`config.optim`) and `RunConfig` (data, protocol, sweeps, bookkeeping, `config.run`) are frozen
dataclasses whose defaults are what `python train.py` runs. A field that is a flag of train.py
is declared with `fields.setting`: its one default, help, choices, the reference's value where
it differs, and whether a sweep may vary it. `config.cli` builds train.py's flags from them and
`config.presets` the reference's recipe (`reference_preset()`, `--preset reference`). Nothing
here imports JAX.
"""

from stgnn_jax.config.fields import FLAG_GROUPS, flag_fields, flag_type, reference_value, setting
from stgnn_jax.config.model import (
    ACTIVATIONS,
    LAYER_TYPES,
    MODEL_TYPES,
    NODE_FEATURES,
    READOUTS,
    TOPK_RATIO_RANGE,
    ModelConfig,
)
from stgnn_jax.config.optim import LOSSES, PLATEAU_METRICS, OptimConfig
from stgnn_jax.config.parsing import (
    SCHEDULE_FORM,
    parse_alpha,
    parse_bool,
    parse_class_weights,
    parse_schedule,
    schedule_value,
)
from stgnn_jax.config.presets import (
    PRESETS,
    Preset,
    reference_flags,
    reference_overrides,
    reference_preset,
)
from stgnn_jax.config.run import (
    CALIBRATIONS,
    CONFIGS,
    CONNECTIVITY_KINDS,
    DECISION_THRESHOLDS,
    HARMONIZE_CHOICES,
    INPUT_KINDS,
    SCAN_STORES,
    SELECTION_RULES,
    STANDARDIZE_CHOICES,
    SWEEP_GRIDS,
    SWEEPABLE,
    TIME_NORMALIZATIONS,
    RunConfig,
    parse_sweep_axis,
)

__all__ = [
    "ACTIVATIONS", "CALIBRATIONS", "CONFIGS", "CONNECTIVITY_KINDS", "DECISION_THRESHOLDS",
    "FLAG_GROUPS", "HARMONIZE_CHOICES", "INPUT_KINDS", "LAYER_TYPES", "LOSSES", "MODEL_TYPES",
    "NODE_FEATURES",
    "PLATEAU_METRICS",
    "PRESETS", "READOUTS", "SCAN_STORES", "SCHEDULE_FORM", "SELECTION_RULES",
    "STANDARDIZE_CHOICES", "SWEEPABLE",
    "SWEEP_GRIDS", "TIME_NORMALIZATIONS", "TOPK_RATIO_RANGE", "ModelConfig", "OptimConfig",
    "Preset", "RunConfig", "flag_fields", "flag_type", "parse_alpha", "parse_bool",
    "parse_class_weights", "parse_schedule", "parse_sweep_axis", "reference_flags",
    "reference_overrides", "reference_preset", "reference_value", "schedule_value", "setting",
]
