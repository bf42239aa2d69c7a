"""The protocol's settings (`RunConfig`: data, folds, selection, sweeps, bookkeeping) and
what the three configurations declare together: `CONFIGS`, their flags and the sweepable ones.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from stgnn_jax.config.fields import (
    Settings,
    check_fields,
    flag_fields,
    flag_type,
    positive_int,
    setting,
    warn_once,
)
from stgnn_jax.config.model import ModelConfig
from stgnn_jax.config.optim import OptimConfig
from stgnn_jax.config.parsing import parse_columns
from stgnn_jax.errors import ConfigError

DECISION_THRESHOLDS = ("val", "argmax")
# Post-hoc calibration of each fold's probabilities on its validation subjects (`eval.calibration`).
CALIBRATIONS = ("temperature", "none")
SELECTION_RULES = ("auc", "auc_loss")
TIME_NORMALIZATIONS = ("log", "minmax", "buckets", "raw")
INPUT_KINDS = ("fc", "timeseries")
# The visit table's label columns: never a ComBat covariate.
LABEL_COLUMNS = ("Label_CS_Num", "Label", "label")
# Per-scan connectivity measures of time-series input (`data.connectivity`) and its cleaning.
CONNECTIVITY_KINDS = ("correlation", "partial_correlation", "covariance", "precision", "tangent")
# Site harmonisation, fitted inside each fold (`data.fold_steps`).
HARMONIZE_CHOICES = ("none", "combat")
# Where a run keeps the cohort's scans (`data.cache`): in memory, or memory-mapped from disk.
SCAN_STORES = ("memory", "memmap")
STANDARDIZE_CHOICES = ("zscore_sample", "psc", "none")
# Named grids of `--sweep_grid`: "seeds" is the focal-loss seeds' tuning grid (48 members).
SWEEP_GRIDS = {"seeds": ("focal_alpha=0.1,0.25,0.5,0.75", "focal_gamma=0.5,1,2,3",
                         "label_smoothing=0,0.05,0.1")}


def parse_sweep_axis(text: str) -> tuple[str, tuple[Any, ...]]:
  """"focal_gamma=1,2,3" -> ("focal_gamma", (1.0, 2.0, 3.0)): one axis of a sweep.

  Raises ValueError naming the problem: a setting not declared sweepable (`setting(sweep=)`: it
  would change shapes, the architecture, the data or the protocol), a value its flag would not
  take, a repeated value.
  """
  name, equals, values = text.partition("=")
  name = name.strip().lstrip("-")
  if not equals or not name:
    raise ValueError(f"{text!r} is not a sweep axis; expected NAME=V1,V2,... e.g. "
                     "focal_gamma=1,2,3")
  if name not in SWEEPABLE:
    if name not in FLAGS:
      raise ValueError(f"{name} is not a setting of train.py; sweepable: {', '.join(SWEEPABLE)}")
    if FLAGS[name][0] is ModelConfig:
      problem = "changes the model's architecture or shapes"
    else:
      problem = "changes the data, the batches or the protocol"
    raise ValueError(f"{name} cannot be swept: it {problem}, so its values cannot train in one "
                     f"program; run train.py once per value. Sweepable: {', '.join(SWEEPABLE)}")
  config_class, field = FLAGS[name]
  parse = field.metadata["parse"] or flag_type(config_class, field)
  choices = field.metadata["choices"]
  parsed = []
  for value in values.split(","):
    try:
      parsed.append(parse(value.strip()))
    except ValueError:
      raise ValueError(f"{name}={values}: {value.strip()!r} is not a value of --{name}") from None
    if choices and parsed[-1] not in choices:
      raise ValueError(f"{name}={values}: {value.strip()!r} is not one of {', '.join(choices)}")
  if len(set(parsed)) != len(parsed):
    raise ValueError(f"{name}={values}: a value is repeated")
  return name, tuple(parsed)


def _sweep_axis_flag(text: str) -> str:
  """--sweep's parser: the axis as given, once it parses (`parse_sweep_axis`)."""
  parse_sweep_axis(text)
  return text.strip()


@dataclasses.dataclass(frozen=True)
class RunConfig(Settings):
  """Data, protocol and bookkeeping settings of a cross-validated run (`train.cross_validation`).

  Its defaults are train.py's; the reference's protocol differs in `decision_threshold`
  ("argmax"), `selection` ("auc") and `early_stop_patience` (0): `RunConfig.reference()`.
  """

  data_root: str | None = setting(
      None, "folder with FC_Matrices/ (or TimeSeries/) and TADPOLE_TEMPORAL.csv; without it the "
      "built-in synthetic cohort is used", group="data")
  input: str | None = setting(
      None, "the scans to read when --data_root holds both FC_Matrices/ and TimeSeries/ "
      "(default: the one it holds)", group="data", choices=INPUT_KINDS)
  connectivity: str = setting(
      "correlation", "time-series input: each scan's connectivity measure (nilearn, empirical "
      "covariance); --threshold applies to its unit-free form (covariance: the correlation, "
      "precision: the partial correlation, tangent: the scan's own correlation); tangent is "
      "fitted on each fold's training subjects", group="data", choices=CONNECTIVITY_KINDS)
  fisher_z: bool = setting(
      False, "time-series input: Fisher z (arctanh) of a correlation's values; edges are still "
      "chosen on the correlation", group="data")
  t_r: float | None = setting(
      None, "time-series input: repetition time in seconds, for scans whose visit row has no "
      "RepetitionTime (needed by --high_pass / --low_pass)", group="data")
  high_pass: float | None = setting(
      None, "time-series input: high-pass cutoff in Hz (Butterworth)", group="data")
  low_pass: float | None = setting(
      None, "time-series input: low-pass cutoff in Hz (Butterworth)", group="data")
  detrend: bool = setting(True, "time-series input: remove each region's linear trend",
                          group="data")
  standardize: str = setting(
      "zscore_sample", "time-series input: standardise each region's series (nilearn.signal."
      "clean)", group="data", choices=STANDARDIZE_CHOICES)
  confounds: tuple[str, ...] = setting(
      (), "time-series input: COL,COL: columns of Confounds/sub-<ID>_run-<NN>_confounds.tsv "
      "regressed out of each scan", group="data", parse=parse_columns)
  harmonize: str = setting(
      "none", "site harmonisation of the connection values: combat (needs a Site column in "
      "the visit table), fitted on each fold's training subjects only", group="data",
      choices=HARMONIZE_CHOICES)
  harmonize_covariates: tuple[str, ...] = setting(
      (), "COL,COL: visit-table columns whose effects ComBat keeps (numbers, or categories "
      "such as sex); never the label", group="data", parse=parse_columns)
  var_name: str = setting("fc_matrix", "array key inside each .npz", group="data")
  threshold: float = setting(0.2, "|FC| below it is no edge", group="data")
  max_visits: int = setting(10, "keep the last N visits", group="data")
  exclude_target_visit: bool = setting(
      False, "predict the last visit's label from the visits before it", group="data")
  time_normalization: str = setting("log", "how the time-to-predict is scaled", group="data",
                                    choices=TIME_NORMALIZATIONS)
  single_visit_horizon: float = setting(
      6.0, "months to predict for a subject with one visit", group="data")
  # 150 subjects (~510 scans) keep `python train.py` to a few minutes on 2 CPU cores; 300 is the
  # scale of the reference's own synthetic measurements.
  synthetic_subjects: int = setting(
      150, "subjects of the built-in synthetic cohort (300: the scale of the reference's "
      "synthetic measurements, about twice the run time)", group="data")
  synthetic_regions: int = setting(
      100, "regions (nodes) per scan of the built-in synthetic cohort", group="data")
  scan_store: str = setting(
      "memory", "where the cohort's scans are kept during a run: memory, or memmap (.npy files "
      "in the cohort cache, memory-mapped read-only and read from disk batch by batch, so a "
      "cohort larger than the memory trains; the same results)", group="data",
      choices=SCAN_STORES)
  n_epochs: int = setting(100, "epochs per fold", group="training")
  batch_size: int = setting(16, "subjects per training batch", group="training")
  decision_threshold: str = setting(
      "val", "val: the threshold on p(converter) that maximises validation balanced accuracy, "
      "chosen with the best epoch and applied to the test fold; argmax: the reference",
      group="training", choices=DECISION_THRESHOLDS, reference="argmax")
  calibrate: str = setting(
      "temperature", "temperature: one temperature per fold, fitted on its validation "
      "subjects' log-odds at the selected epoch, rescales the reported and predicted "
      "probabilities (ranking and decisions unchanged); none: the model's own (the reference)",
      group="training", choices=CALIBRATIONS, reference="none")
  selection: str = setting(
      "auc_loss", "best epoch: highest validation AUC, ties by lower validation loss (auc_loss) "
      "or the first (auc, the reference)", group="training", choices=SELECTION_RULES,
      reference="auc")
  early_stop_patience: int = setting(
      30, "stop a fold this many epochs after its best epoch (0: never, the reference)",
      group="training", reference=0)
  baselines: bool = setting(
      True, "fit logistic-regression baselines on the last scan of the same folds",
      group="training")
  num_folds: int = setting(5, "stratified cross-validation folds", group="training")
  seed: int = setting(42, "seed of the folds, the initialisation and the batch order",
                      group="training", sweep=True)
  pretrain_encoder: bool = setting(
      False, "supervised encoder pretraining on each fold's training subjects first",
      group="training")
  pretrain_epochs: int = setting(100, "epochs of encoder pretraining", group="training")
  pretrained: str | None = setting(
      None, "encoder to start from: a stgnn-jax checkpoint or a reference .pth",
      group="training")
  trust_checkpoint: bool = setting(
      False, "unpickle a --pretrained .pth file fully (this runs code stored in the file: only "
      "for files you trust); by default only tensors are read", group="training")
  num_devices: int | None = setting(
      None, "JAX devices for data parallelism (default: all)", group="training")
  graph_multiple: int = setting(
      32, "graph slots per batch are rounded up to this multiple (fewer distinct shapes = "
      "fewer compilations, more padding)", group="training")
  eval_batch_size: int = setting(64, "subjects per evaluation batch", group="training")
  sweep: tuple[str, ...] = setting(
      (), "NAME=V1,V2,...: train every value (repeat the flag: every combination) as one "
      "vmapped program per fold and select by mean validation AUC; NAME is one of "
      "{sweepable}", group="sweep", parse=_sweep_axis_flag, repeat=True)
  sweep_grid: str | None = setting(
      None, "a named sweep: seeds = the focal-loss seeds' grid, focal_alpha 0.1,0.25,0.5,0.75 x "
      "focal_gamma 0.5,1,2,3 x label_smoothing 0,0.05,0.1 (48 members)", group="sweep",
      choices=tuple(SWEEP_GRIDS))
  sweep_chunk: int | None = setting(
      None, "sweep members trained together (default: as many as fit the memory budget if "
      "that trains a member faster than one at a time, timed on fold 0; else 1)", group="sweep")

  def __post_init__(self):
    object.__setattr__(self, "sweep", tuple(self.sweep or ()))  # None (argparse), a JSON list
    object.__setattr__(self, "confounds", tuple(self.confounds or ()))
    object.__setattr__(self, "harmonize_covariates", tuple(self.harmonize_covariates or ()))
    check_fields(self, [
        ("seed", 0 <= self.seed and self.seed + self.num_folds < 2**32,
         "must lie in [0, 2**32 - num_folds) (NumPy and scikit-learn seeds are 32-bit)"),
        ("n_epochs", self.n_epochs >= 1, "must be >= 1"),
        ("batch_size", self.batch_size >= 1, "must be >= 1"),
        ("num_folds", self.num_folds >= 2, "must be >= 2 (cross-validation)"),
        ("max_visits", self.max_visits >= 1, "must be >= 1"),
        ("threshold", 0 <= self.threshold < math.inf, "must be finite and >= 0"),
        # The built-in generator's own bounds (data.population.check_arguments), checked here so
        # that the flags are named before any work.
        ("synthetic_subjects", self.synthetic_subjects >= 2,
         "must be >= 2 (the built-in cohort needs both classes)"),
        ("synthetic_regions", self.synthetic_regions >= 6,
         "must be >= 6 (the built-in generator's smallest atlas)"),
        ("fisher_z", not self.fisher_z or self.connectivity in ("correlation",
                                                                "partial_correlation"),
         "applies to correlations: use --connectivity correlation or partial_correlation"),
        ("harmonize_covariates", not self.harmonize_covariates or self.harmonize != "none",
         "are ComBat's: add --harmonize combat"),
        ("harmonize_covariates", not set(self.harmonize_covariates) & set(LABEL_COLUMNS),
         "must not name the label: harmonising with it would carry the label into the inputs"),
        ("t_r", self.t_r is None or 0 < self.t_r < math.inf, "must be positive (seconds)"),
        ("high_pass", self.high_pass is None or 0 < self.high_pass < math.inf,
         "must be positive (Hz)"),
        ("low_pass", self.low_pass is None or 0 < self.low_pass < math.inf,
         "must be positive (Hz)"),
        ("high_pass", self.high_pass is None or self.low_pass is None
         or self.high_pass < self.low_pass,
         f"Hz is not below low_pass={self.low_pass} Hz: no frequency band is left"),
        ("time_normalization", self.time_normalization in TIME_NORMALIZATIONS,
         f"must be one of {', '.join(TIME_NORMALIZATIONS)}"),
        ("single_visit_horizon", 0 < self.single_visit_horizon < math.inf,
         "must be positive and finite (months)"),
        ("pretrain_epochs", self.pretrain_epochs >= 1, "must be >= 1"),
        ("num_devices", self.num_devices is None or self.num_devices >= 1, "must be >= 1"),
        ("graph_multiple", self.graph_multiple >= 1, "must be >= 1"),
        ("eval_batch_size", self.eval_batch_size >= 1, "must be >= 1"),
        ("decision_threshold", self.decision_threshold in DECISION_THRESHOLDS,
         f"must be one of {', '.join(DECISION_THRESHOLDS)}"),
        ("calibrate", self.calibrate in CALIBRATIONS,
         f"must be one of {', '.join(CALIBRATIONS)}"),
        ("selection", self.selection in SELECTION_RULES,
         f"must be one of {', '.join(SELECTION_RULES)}"),
        ("early_stop_patience", self.early_stop_patience >= 0, "must be >= 0 (0: off)"),
        ("sweep_grid", self.sweep_grid is None or self.sweep_grid in SWEEP_GRIDS,
         f"must be one of {', '.join(SWEEP_GRIDS)}"),
        ("sweep_chunk", self.sweep_chunk is None or positive_int(self.sweep_chunk),
         "must be >= 1"),
        ("sweep_chunk", self.sweep_chunk is None or bool(self.sweep or self.sweep_grid),
         "applies to a sweep: add --sweep or --sweep_grid, or leave --sweep_chunk out"),
    ])
    try:
      self.sweep_axes()
    except ValueError as error:
      raise ConfigError(f"RunConfig.sweep: {error}") from None
    if self.pretrained and self.pretrain_encoder:
      warn_once("pretrained and pretrain_encoder are both set: the pretrained encoder is used "
                 "and no pretraining runs.")

  def sweep_axes(self) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """The sweep's axes, `sweep_grid`'s then `sweep`'s (`parse_sweep_axis`); () for one run.

    Raises ValueError when two axes vary the same setting.
    """
    texts = SWEEP_GRIDS[self.sweep_grid] if self.sweep_grid else ()
    axes = tuple(parse_sweep_axis(text) for text in texts + self.sweep)
    names = [name for name, _ in axes]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
      raise ValueError(f"{repeated[0]} is swept twice (--sweep or --sweep_grid); give its "
                       "values once")
    return axes


# The three configurations of a run, in train.py's order; their flags, {name: (class, field)};
# and the settings `--sweep` may vary (declared with `setting(sweep=True)`).
CONFIGS = (ModelConfig, OptimConfig, RunConfig)
FLAGS = {f.name: (config_class, f) for config_class in CONFIGS
         for f in flag_fields(config_class)}
SWEEPABLE = tuple(name for name, (_, f) in FLAGS.items() if f.metadata["sweep"])
