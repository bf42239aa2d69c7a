"""The loss's and the optimiser's settings: `OptimConfig`."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from stgnn_jax.config.fields import Settings, check_fields, setting, warn_once
from stgnn_jax.config.parsing import (
    SCHEDULE_FORM,
    parse_alpha,
    parse_class_weights,
    parse_schedule,
    schedule_value,
)
from stgnn_jax.errors import ConfigError

PLATEAU_METRICS = ("balanced_acc", "auc", "loss")
# The seeds' comparison: the focal loss against cross-entropy, plain or class-weighted.
LOSSES = ("focal", "ce", "weighted_ce")


@dataclasses.dataclass(frozen=True)
class OptimConfig(Settings):
  """Loss and optimiser: names are the reference's flags and constants, defaults train.py's
  recipe; `OptimConfig.reference()` is the reference's.

  `focal_alpha` is a number in [0, 1] or "auto" (`train.state.auto_focal_alpha` of each fold's
  training labels). `plateau_metric` is the validation metric the learning-rate plateau watches:
  "balanced_acc" (the reference), "auc" or "loss".
  """

  lr: float = setting(3e-4, "Adam's learning rate (the reference: 1e-3)", group="training",
                      reference=1e-3, sweep=True)
  loss: str = setting(
      "focal", "the classification loss: the seeds' focal loss, or their baselines: softmax "
      "cross-entropy (ce) and class-weighted cross-entropy (weighted_ce, PyTorch's "
      "CrossEntropyLoss(weight=...)); every one with --label_smoothing and the minority forcing",
      group="training", choices=LOSSES, sweep=True)
  class_weights: tuple[float, ...] | None = setting(
      None, "weighted_ce's class weights w0,w1 (stable, converter); default: the inverse class "
      "frequency of each fold's training subjects, n / (2 n_c)", group="training",
      parse=parse_class_weights)
  focal_alpha: float | str = setting(
      "auto", "focal α of the converter class, or 'auto': the share of stable subjects in each "
      "fold's training split (weights the minority class up; the reference: 0.9)",
      group="training", reference=0.9, parse=parse_alpha, sweep=True)
  focal_gamma: float = setting(3.0, "focal γ", group="training", sweep=True)
  gamma_schedule: str | None = setting(
      None, "multi-stage focusing, e.g. 1@0,2@20,3@60: γ = 1 from epoch 0, 2 from epoch 20, 3 "
      "from epoch 60 (replaces --focal_gamma; a traced value, no recompilation)",
      group="training")
  label_smoothing: float = setting(0.05, "label smoothing of the loss", group="training",
                                   sweep=True)
  smoothing_schedule: str | None = setting(
      None, "label smoothing by stage, in --gamma_schedule's form (replaces --label_smoothing)",
      group="training")
  minority_focus_epochs: int = setting(
      20, "epochs of the reference's decaying extra cross-entropy on converters",
      group="training", sweep=True)
  weight_decay: float = setting(
      1e-2, "L2 penalty added to the gradient before Adam (torch Adam's weight_decay; the "
      "reference: 1e-4)", group="training", reference=1e-4, sweep=True)
  clip_norm: float = 1.0
  adam_b1: float = 0.9
  adam_b2: float = 0.999
  adam_eps: float = 1e-8
  plateau_factor: float = 0.5
  plateau_patience: int = 10
  min_lr: float = 1e-6
  plateau_metric: str = setting(
      "auc", "validation metric the learning-rate plateau watches (the reference: "
      "balanced_acc)", group="training", choices=PLATEAU_METRICS,
      reference="balanced_acc")

  MISSING_FIELDS_ARE_REFERENCE: ClassVar[bool] = True

  def __post_init__(self):
    if self.class_weights is not None:  # a list from config.json
      object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))
    alpha_ok = self.focal_alpha == "auto" or (
        not isinstance(self.focal_alpha, str) and 0 <= self.focal_alpha <= 1)
    weights = self.class_weights
    check_fields(self, [
        ("loss", self.loss in LOSSES, f"must be one of {', '.join(LOSSES)}"),
        ("class_weights", weights is None or (
            len(weights) == 2 and all(0 <= w < math.inf for w in weights) and sum(weights) > 0),
         "needs one finite weight >= 0 per class (2: stable, converter), not all 0, e.g. 1,3"),
        ("lr", 0 < self.lr < math.inf, "must be positive and finite"),
        ("focal_alpha", alpha_ok, "must lie in [0, 1] or be 'auto'"),
        ("plateau_metric", self.plateau_metric in PLATEAU_METRICS,
         f"must be one of {', '.join(PLATEAU_METRICS)}"),
        ("focal_gamma", 0 <= self.focal_gamma < math.inf, "must be finite and >= 0"),
        ("label_smoothing", 0 <= self.label_smoothing <= 1, "must lie in [0, 1]"),
        ("minority_focus_epochs", self.minority_focus_epochs >= 0, "must be >= 0"),
        ("weight_decay", 0 <= self.weight_decay < math.inf, "must be finite and >= 0"),
        ("clip_norm", 0 < self.clip_norm < math.inf, "must be positive and finite"),
        ("plateau_factor", 0 < self.plateau_factor < 1, "must lie in (0, 1)"),
        ("plateau_patience", self.plateau_patience >= 0, "must be >= 0"),
        ("min_lr", 0 <= self.min_lr <= self.lr, "must lie in [0, lr]"),
    ])
    for name, low, high in (("gamma_schedule", 0, math.inf), ("smoothing_schedule", 0, 1)):
      text = getattr(self, name)
      if text is None:
        continue
      try:
        stages = parse_schedule(text)
      except ValueError as error:
        raise ConfigError(f"OptimConfig.{name}={text!r}: {error}") from None
      bad = [value for _, value in stages if not low <= value <= high]
      if bad:
        raise ConfigError(f"OptimConfig.{name}={text!r}: value {bad[0]:g} outside "
                          f"[{low}, {high}{')' if high == math.inf else ']'}; expected "
                          f"{SCHEDULE_FORM}")
    if self.class_weights is not None and self.loss != "weighted_ce":
      warn_once(f"class_weights={self.class_weights} are used only by loss='weighted_ce' "
                 f"(this run's loss: {self.loss!r}).")

  def check_schedules(self, n_epochs: int) -> None:
    """Raises ConfigError for a schedule stage that starts after the last of `n_epochs` epochs
    (it would never run); checked with the run's `RunConfig.n_epochs` (`prepare_run`)."""
    for name in ("gamma_schedule", "smoothing_schedule"):
      text = getattr(self, name)
      late = [start for start, _ in parse_schedule(text) if start >= n_epochs] if text else []
      if late:
        epochs = f"epochs 0-{n_epochs - 1}" if n_epochs > 1 else "epoch 0"
        raise ConfigError(
            f"OptimConfig.{name}={text!r}: its stage at epoch {late[0]} starts after the last "
            f"epoch (n_epochs={n_epochs} trains {epochs}); drop the stage or raise --n_epochs.")

  def gamma_at(self, epoch: int) -> float:
    """γ of `epoch` (0-based): the schedule's, or `focal_gamma`."""
    if self.gamma_schedule is None:
      return self.focal_gamma
    return schedule_value(parse_schedule(self.gamma_schedule), epoch)

  def smoothing_at(self, epoch: int) -> float:
    """Label smoothing of `epoch` (0-based): the schedule's, or `label_smoothing`."""
    if self.smoothing_schedule is None:
      return self.label_smoothing
    return schedule_value(parse_schedule(self.smoothing_schedule), epoch)
