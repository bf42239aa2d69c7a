"""A trained fold's outcome: `FoldResult`, what results.json, the fold's result.json and the
sweep's chunk files are written from and read back into.

A result is *tested* (the selected model's test and training metrics) or *undefined* (its
predictions were not finite: every metric None, `stopped` says why). The JSON entry keeps
results.json's keys and their order; the fields that only a tested result has are left out of an
undefined one's entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from stgnn_jax.errors import RunStateError

# Which model a tested fold's metrics (and its best.msgpack) are of: the selected epoch's, or,
# when no epoch predicted both validation classes (nothing could be selected), the last epoch's,
# or the linear path alone when the network gate kept it (`ModelConfig.network_gate`).
BEST_EPOCH = "best_epoch"
LAST_EPOCH = "last_epoch"
PATH_ALONE = "path_alone"


def _when_tested() -> Any:
  """A field left out of the JSON entry when None: what only a tested result (or only a cohort
  with the groups) has."""
  return dataclasses.field(default=None, metadata={"when_tested": True})


@dataclasses.dataclass(frozen=True)
class FoldResult:
  """One fold of one model: its results.json entry (`to_json`) and its metrics rows (`history`).

  The test metrics are those of the selected epoch at `decision_threshold` (None: argmax);
  `argmax` holds the reference's argmax metrics of the same model. `test_p1` is each test
  subject's (`test_subjects`, cohort indices) converter probability, the model's own; with
  `temperature` (`--calibrate temperature`, fitted on the validation subjects) the calibrated
  ones are sigmoid(logit(p) / temperature), and `ece_calibrated` / `brier_calibrated` are
  theirs beside `ece` / `brier`. `per_conversion_type` and
  `per_horizon` are present when the cohort has the groups. `tested` is `BEST_EPOCH`, or
  `LAST_EPOCH` when no epoch could be selected; such a fold counts in the means like the others
  (its model was tested like theirs), and the summary names it. With a linear path,
  `network_gate` records the choice between that model and the path alone (`PATH_ALONE`; the
  gate's record without its threshold, `train.linear_path.gate_network`).
  """

  fold: int
  test_acc: float | None = None
  balanced_acc: float | None = None
  minority_precision: float | None = None
  minority_recall: float | None = None
  minority_f1: float | None = None
  test_auc: float | None = None
  test_loss: float | None = None
  train_acc: float | None = None
  balanced_train_acc: float | None = None
  decision_threshold: float | None = None
  argmax: dict[str, Any] | None = _when_tested()
  focal_alpha: float | None = None
  class_weights: Sequence[float] | None = None
  linear_path: dict[str, Any] | None = None
  network_gate: dict[str, Any] | None = None
  best_epoch: int = -1
  tested: str | None = _when_tested()
  best_val_auc: float | None = None
  epochs_run: int = 0
  stopped: str | None = None
  n_train: int = 0
  n_val: int = 0
  n_test: int = 0
  prediction_counts: dict[str, int] | None = _when_tested()
  classification_report: dict[str, Any] | None = _when_tested()
  test_subjects: list[int] = dataclasses.field(default_factory=list)
  test_p1: list[float] | None = _when_tested()
  confidence_mean: float | None = _when_tested()
  confidence_min: float | None = _when_tested()
  confidence_max: float | None = _when_tested()
  overconfident: int | None = _when_tested()
  brier: float | None = _when_tested()
  ece: float | None = _when_tested()
  temperature: float | None = _when_tested()
  ece_calibrated: float | None = _when_tested()
  brier_calibrated: float | None = _when_tested()
  per_conversion_type: dict[str, Any] | None = _when_tested()
  per_horizon: dict[str, Any] | None = _when_tested()
  history: list[dict[str, Any]] = dataclasses.field(
      default_factory=list, repr=False, compare=False, metadata={"json": False})

  def to_json(self) -> dict[str, Any]:
    """The results.json entry (without the history, which metrics.csv holds)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.metadata.get("json", True)
            and not (f.metadata.get("when_tested") and getattr(self, f.name) is None)}

  @classmethod
  def from_json(cls, entry: Mapping[str, Any], history: list[dict[str, Any]],
                where: str) -> FoldResult:
    """The result whose results.json entry is `entry`, with its metrics rows; `where` names the
    file for the error that a foreign entry raises."""
    names = {f.name for f in dataclasses.fields(cls) if f.metadata.get("json", True)}
    if not isinstance(entry, Mapping) or "fold" not in entry or not set(entry) <= names:
      raise RunStateError(f"{where}: not a fold result; delete it to train the fold again.")
    return cls(**entry, history=history)

  def to_record(self) -> dict[str, Any]:
    """The fold's result.json: the entry and the metrics rows."""
    return {"result": self.to_json(), "history": self.history}

  @classmethod
  def from_record(cls, record: Any, where: str) -> FoldResult:
    """The result a fold's result.json (`to_record`) holds."""
    if not isinstance(record, Mapping) or not {"result", "history"} <= set(record):
      raise RunStateError(f"{where}: not a fold result; delete it to train the fold again.")
    return cls.from_json(record["result"], record["history"], where)
