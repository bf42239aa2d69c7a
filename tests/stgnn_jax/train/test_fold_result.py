"""`FoldResult`: the JSON entry results.json holds, read back exactly; foreign files refused."""

from __future__ import annotations

import json

import pytest

from stgnn_jax.errors import RunStateError
from stgnn_jax.train.fold_result import FoldResult

HISTORY = [{"fold": 2, "epoch": 0, "val_auc": 0.5}, {"fold": 2, "epoch": 1, "val_auc": 0.75}]


def a_tested_result() -> FoldResult:
  return FoldResult(
      fold=2, test_acc=0.8, balanced_acc=0.75, minority_precision=0.5, minority_recall=1.0,
      minority_f1=2 / 3, test_auc=0.9, test_loss=0.3, train_acc=0.95, balanced_train_acc=0.9,
      decision_threshold=0.4, argmax={"test_acc": 0.7}, focal_alpha=0.7, class_weights=(1.0, 2.0),
      linear_path={"C": 0.1}, best_epoch=1, best_val_auc=0.75, epochs_run=2, n_train=8, n_val=2,
      n_test=5, prediction_counts={"0": 3, "1": 2}, classification_report={"accuracy": 0.8},
      test_subjects=[0, 3, 5, 7, 9], test_p1=[0.1, 0.2, 0.7, 0.9, 0.4], confidence_mean=0.8,
      confidence_min=0.6, confidence_max=0.9, overconfident=0, brier=0.1, ece=0.05,
      history=HISTORY)


def test_a_tested_entry_has_results_json_keys_in_order_and_reads_back_equal():
  result = a_tested_result()
  entry = result.to_json()
  assert list(entry)[:11] == ["fold", "test_acc", "balanced_acc", "minority_precision",
                              "minority_recall", "minority_f1", "test_auc", "test_loss",
                              "train_acc", "balanced_train_acc", "decision_threshold"]
  assert "history" not in entry
  # Absent groups are left out, as results.json always did.
  assert "per_conversion_type" not in entry and "per_horizon" not in entry
  record = json.loads(json.dumps(result.to_record()))  # through the file format
  back = FoldResult.from_record(record, "fold_2/result.json")
  assert back.to_json() == json.loads(json.dumps(entry)) and back.history == HISTORY


def test_an_undefined_entry_leaves_out_what_only_a_tested_model_has():
  undefined = FoldResult(fold=0, best_epoch=-1, epochs_run=3, stopped="non-finite", n_test=4,
                         test_subjects=[1, 2, 3, 4])
  entry = undefined.to_json()
  assert entry["test_auc"] is None and entry["stopped"] == "non-finite"
  for key in ("argmax", "test_p1", "prediction_counts", "ece", "classification_report"):
    assert key not in entry
  assert FoldResult.from_json(entry, [], "x") == undefined


@pytest.mark.parametrize("record", [
    {"result": {"fold": 0}},  # no history
    {"result": {"fold": 0, "learning_rate": 3}, "history": []},  # a key no result has
    {"result": {"test_auc": 0.5}, "history": []},  # no fold
    [1, 2],
])
def test_a_foreign_file_is_named_not_misread(record):
  with pytest.raises(RunStateError, match="fold_0/result.json: not a fold result; delete it"):
    FoldResult.from_record(record, "fold_0/result.json")
