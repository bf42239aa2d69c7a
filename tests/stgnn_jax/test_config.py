"""Tests of `stgnn_jax.config` and the flags train.py builds from it."""

from __future__ import annotations

import dataclasses
import re

import pytest

import train
from stgnn_jax.config import (
  SWEEPABLE,
  ModelConfig,
  OptimConfig,
  RunConfig,
  flag_fields,
  parse_alpha,
  parse_bool,
  parse_sweep_axis,
  reference_flags,
  reference_overrides,
  reference_preset,
)
from stgnn_jax.config.cli import parse_flags
from stgnn_jax.errors import ConfigError
from tests.helpers import ROOT

# train.py's flags and defaults before the configuration was declared once (written down from
# the hand-written parser they replaced), plus those added since (--overwrite,
# --trust_checkpoint; --loss, --class_weights, --gamma_schedule, --smoothing_schedule; the
# sweep's and the processes' flags; --linear_path, --linear_path_change, --network_gate;
# time-series input's --input, --connectivity and cleaning flags): the generated parser must
# offer exactly these.
FLAGS_BEFORE = {
    "--data_root": None, "--var_name": "fc_matrix", "--threshold": 0.2, "--max_visits": 10,
    "--exclude_target_visit": False, "--time_normalization": "log",
    "--single_visit_horizon": 6.0, "--synthetic_subjects": 150, "--synthetic_regions": 100,
    "--scan_store": "memory",
    "--write_synthetic": None, "--node_features": "profile_change", "--layer_type": "GraphSAGE",
    "--gnn_hidden_dim": 256, "--gnn_num_layers": 1, "--gnn_activation": "elu",
    "--input_dropout": 0.5, "--graph_norm": False, "--use_topk_pooling": False,
    "--topk_ratio": 0.3, "--readout": "concat", "--readout_node_dim": 8,
    "--use_time_features": False, "--linear_path": True,
    "--linear_path_change": "evidence", "--network_gate": "evidence", "--model_type": "LSTM",
    "--lstm_hidden_dim": 64,
    "--lstm_num_layers": 1, "--lstm_bidirectional": None, "--freeze_encoder": False,
    "--n_epochs": 100, "--batch_size": 16, "--lr": 0.0003, "--weight_decay": 0.01,
    "--focal_alpha": "auto", "--focal_gamma": 3.0, "--label_smoothing": 0.05,
    "--minority_focus_epochs": 20, "--plateau_metric": "auc", "--decision_threshold": "val",
    "--calibrate": "temperature",
    "--selection": "auc_loss", "--early_stop_patience": 30, "--baselines": True,
    "--num_folds": 5, "--seed": 42, "--pretrain_encoder": False, "--pretrain_epochs": 100,
    "--pretrained": None, "--num_devices": None, "--graph_multiple": 32,
    "--eval_batch_size": 64, "--out_dir": None, "--save_path": None, "--resume": None,
    "--no_progress": False, "--compile_cache": "~/.cache/stgnn-jax/xla",
    "--overwrite": False, "--trust_checkpoint": False,
    "--loss": "focal", "--class_weights": None, "--gamma_schedule": None,
    "--smoothing_schedule": None, "--sweep": None, "--sweep_grid": None, "--sweep_chunk": None,
    "--coordinator_address": None, "--num_processes": None, "--process_id": None,
    "--process_timeout": 300, "--preset": None,
    "--input": None, "--connectivity": "correlation", "--fisher_z": False, "--t_r": None,
    "--high_pass": None, "--low_pass": None, "--detrend": True, "--standardize": "zscore_sample",
    "--confounds": (),
    "--harmonize": "none", "--harmonize_covariates": (),
}

# The reference's flags and defaults (../shared/reference/original-stgnn.md) and its fixed
# settings that train.py exposes as flags. (Its copy of the checkpoints into ./model/ is an
# output location, not a setting: `--save_path ./model/`, README's table of differences.)
REFERENCE = {
    "layer_type": "GraphSAGE", "gnn_num_layers": 2, "gnn_hidden_dim": 256,
    "gnn_activation": "elu", "use_topk_pooling": True, "topk_ratio": 0.3, "graph_norm": True,
    "node_features": "onehot", "readout": "meanmax", "input_dropout": 0.0,
    "model_type": "LSTM", "lstm_hidden_dim": 64, "lstm_num_layers": 1,
    "lstm_bidirectional": None, "use_time_features": False, "freeze_encoder": True,
    "linear_path": False,
    "num_folds": 5, "seed": 42, "batch_size": 16, "n_epochs": 100, "focal_alpha": 0.9,
    "focal_gamma": 3.0, "label_smoothing": 0.05, "minority_focus_epochs": 20, "lr": 1e-3,
    "weight_decay": 1e-4, "plateau_metric": "balanced_acc", "decision_threshold": "argmax",
    "calibrate": "none",
    "selection": "auc", "early_stop_patience": 0,
    "time_normalization": "log", "single_visit_horizon": 6.0, "exclude_target_visit": False,
    "threshold": 0.2, "max_visits": 10, "var_name": "fc_matrix",
}


def parser_defaults(parser) -> dict:
  return {a.option_strings[0]: a.default for a in parser._actions
          if a.option_strings and a.dest != "help" and a.help != "==SUPPRESS=="}


def test_generated_flags_are_the_hand_written_ones():
  assert parser_defaults(train.build_parser()) == FLAGS_BEFORE


def test_every_flag_is_a_config_field_with_help():
  fields = {f.name: f for cls in train.CONFIGS for f in flag_fields(cls)}
  entry_point_only = {"--write_synthetic", "--out_dir", "--save_path", "--resume",
                      "--no_progress", "--compile_cache", "--overwrite",
                      "--coordinator_address", "--num_processes", "--process_id",
                      "--process_timeout", "--preset"}
  assert {"--" + name for name in fields} == set(FLAGS_BEFORE) - entry_point_only
  for f in fields.values():
    assert f.metadata["help"] and f.metadata["group"] in ("data", "model", "training", "sweep")


def test_reference_flags_give_the_reference():
  args = train.build_parser().parse_args(reference_flags())
  for name, value in REFERENCE.items():
    assert getattr(args, name) == value, name
  assert train.configs_from_args(args) == reference_preset()
  assert (reference_preset().run.decision_threshold, reference_preset().model.node_features) == (
      "argmax", "onehot")


def test_the_configs_defaults_are_what_train_py_runs():
  assert train.configs_from_args(train.build_parser().parse_args([])) == (
      ModelConfig(), OptimConfig(), RunConfig())


def test_the_reference_preset_is_the_long_flag_list_and_explicit_flags_still_apply():
  long_form = train.configs_from_args(train.build_parser().parse_args(reference_flags()))
  preset = train.configs_from_args(parse_flags(train.build_parser(), ["--preset", "reference"]))
  assert preset == long_form == reference_preset()
  for argv in (["--preset", "reference", "--lr", "0.01"],
               ["--lr", "0.01", "--preset", "reference"]):
    model, optim, _ = train.configs_from_args(parse_flags(train.build_parser(), argv))
    assert (optim.lr, optim.focal_alpha, model.node_features) == (0.01, 0.9, "onehot")


def test_flag_types_come_from_the_annotations():
  parser = train.build_parser()
  args = parser.parse_args(["--num_devices", "2", "--topk_ratio", "0.5", "--lstm_bidirectional",
                            "false", "--sweep_chunk", "3", "--class_weights", "1,3"])
  assert (args.num_devices, args.topk_ratio, args.lstm_bidirectional) == (2, 0.5, False)
  assert (args.sweep_chunk, args.class_weights) == (3, (1.0, 3.0))
  with pytest.raises(SystemExit):
    parser.parse_args(["--num_devices", "1.5"])


def test_sweepable_settings_are_declared_with_the_setting():
  declared = {f.name for cls in train.CONFIGS for f in flag_fields(cls) if f.metadata["sweep"]}
  assert set(SWEEPABLE) == declared == {
      "focal_alpha", "focal_gamma", "label_smoothing", "loss", "lr", "weight_decay",
      "minority_focus_epochs", "seed"}
  assert parse_sweep_axis("seed=1,2") == ("seed", (1, 2))
  assert parse_sweep_axis("focal_alpha=auto,0.5") == ("focal_alpha", ("auto", 0.5))
  with pytest.raises(ValueError, match="'hinge' is not one of focal, ce, weighted_ce"):
    parse_sweep_axis("loss=ce,hinge")
  with pytest.raises(ValueError, match="changes the model's architecture"):
    parse_sweep_axis("gnn_hidden_dim=8,16")


def test_fields_missing_from_a_saved_configuration_take_the_values_of_their_time():
  # Saved before a field existed, when ModelConfig's and OptimConfig's defaults were the
  # reference's; RunConfig's defaults have always been train.py's.
  saved = ModelConfig.reference().to_dict()
  del saved["linear_path"], saved["readout"]
  assert ModelConfig.from_dict(saved) == ModelConfig.reference()
  optim = OptimConfig.reference().to_dict()
  del optim["plateau_metric"]
  assert OptimConfig.from_dict(optim) == OptimConfig.reference()
  run = RunConfig().to_dict()
  del run["selection"]
  assert RunConfig.from_dict(run) == RunConfig()
  with pytest.raises(ConfigError, match=r"unknown field\(s\) \['depth'\]"):
    ModelConfig.from_dict({"depth": 3})


def test_reference_overrides_are_exactly_the_defaults_that_differ():
  defaults = train.build_parser().parse_args([])
  differ = {name for name, value in REFERENCE.items()
            if hasattr(defaults, name) and getattr(defaults, name) != value}
  assert set(reference_overrides()) == differ


def test_every_default_that_differs_is_in_the_readme_table():
  readme = (ROOT / "README.md").read_text()
  table = readme.split("### Where this differs from the reference")[1].split("\n## ")[0]
  for name in reference_overrides():
    assert re.search(rf"--{name}\b", table), f"--{name} is missing from the README's table"


def test_boolean_flags_accept_every_form():
  parser = train.build_parser()
  assert parser.parse_args(["--use_topk_pooling", "false"]).use_topk_pooling is False
  assert parser.parse_args(["--no-use_topk_pooling"]).use_topk_pooling is False
  assert parser.parse_args(["--freeze_encoder"]).freeze_encoder is True
  assert parser.parse_args(["--freeze_encoder", "yes"]).freeze_encoder is True
  assert parser.parse_args(["--lstm_bidirectional", "off"]).lstm_bidirectional is False
  assert parser.parse_args([]).lstm_bidirectional is None


@pytest.mark.parametrize("args, message", [
    (["--freeze_encoder", "maybe"], "expected true or false, got 'maybe'"),
    (["--focal_alpha", "half"], "expected a number in [0, 1] or 'auto', got 'half'"),
    (["--n_epochs", "ten"], "invalid int value: 'ten'"),
    (["--readout", "sum"], "invalid choice: 'sum'"),
])
def test_bad_flag_values_are_one_line_usage_errors(args, message, capsys):
  with pytest.raises(SystemExit) as stop:
    train.build_parser().parse_args(args)
  assert stop.value.code == 2
  assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--loss", "weighted_ce", "--class_weights", "-1,2"],
     "OptimConfig.class_weights=(-1.0, 2.0) needs one finite weight >= 0 per class"),
    (["--gamma_schedule", "-1@0"], "OptimConfig.gamma_schedule='-1@0': value -1 outside [0, inf)"),
    (["--lr", "-1e-3"], "OptimConfig.lr=-0.001 must be positive"),
    (["--focal_gamma", "-inf"], "OptimConfig.focal_gamma=-inf must be finite and >= 0"),
])
def test_a_negative_value_reaches_the_settings_own_check(args, message):
  # argparse takes "-1,2" or "-1e-3" (not its negative-number pattern) for an option.
  with pytest.raises(ConfigError, match=re.escape(message)):
    train.configs_from_args(parse_flags(train.build_parser(), args))


def test_a_flag_followed_by_another_flag_still_lacks_its_value(capsys):
  with pytest.raises(SystemExit) as stop:
    parse_flags(train.build_parser(), ["--gamma_schedule", "--lr", "0.1"])
  assert stop.value.code == 2
  assert "argument --gamma_schedule: expected one argument" in capsys.readouterr().err


def test_parsers():
  assert parse_bool(" True ") is True and parse_bool("0") is False
  assert parse_alpha("AUTO") == "auto" and parse_alpha("0.25") == 0.25
  with pytest.raises(ValueError):
    parse_bool("2")


@pytest.mark.parametrize("make, message", [
    (lambda: ModelConfig(layer_type="GIN"), "ModelConfig.layer_type='GIN' is not a graph layer"),
    (lambda: ModelConfig(use_topk_pooling=True),
     "ModelConfig.readout='concat' needs every region"),
    (lambda: ModelConfig(gnn_hidden_dim=0), "ModelConfig.gnn_hidden_dim=0 must be a positive"),
    (lambda: ModelConfig(lstm_dropout=1.0), "ModelConfig.lstm_dropout=1.0 is a dropout rate"),
    (lambda: ModelConfig(node_features="onehot", linear_path=False),
     "ModelConfig.input_dropout=0.5 drops node-feature"),
    (lambda: ModelConfig(node_features="connection_profile", linear_path_change="always"),
     "ModelConfig.linear_path_change='always' needs profile_change node features"),
    (lambda: OptimConfig(lr=0), "OptimConfig.lr=0 must be positive"),
    (lambda: OptimConfig(focal_alpha=1.5), "OptimConfig.focal_alpha=1.5 must lie in [0, 1]"),
    (lambda: RunConfig(num_folds=1), "RunConfig.num_folds=1 must be >= 2"),
    (lambda: RunConfig(synthetic_subjects=1), "RunConfig.synthetic_subjects=1 must be >= 2"),
    (lambda: RunConfig(synthetic_regions=5), "RunConfig.synthetic_regions=5 must be >= 6"),
    (lambda: RunConfig(selection="first"), "RunConfig.selection='first' must be one of"),
    (lambda: OptimConfig(lr=float("nan")), "OptimConfig.lr=nan must be positive and finite"),
    (lambda: OptimConfig(weight_decay=float("inf")), "OptimConfig.weight_decay=inf must be"),
    (lambda: RunConfig(threshold=float("inf")), "RunConfig.threshold=inf must be finite"),
    (lambda: RunConfig(single_visit_horizon=float("inf")),
     "RunConfig.single_visit_horizon=inf must be positive and finite"),
])
def test_invalid_settings_name_the_config_and_the_field(make, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    make()


def test_the_built_in_cohorts_bounds_are_the_generators():
  """RunConfig refuses exactly what the generator cannot make: one subject fewer, one region
  fewer than its smallest cohort."""
  from stgnn_jax.data.synthetic import make_synthetic_cohort

  smallest = make_synthetic_cohort(num_subjects=2, num_regions=6, seed=0)
  assert sorted(smallest.labels) == [0, 1] and smallest.fc[0].shape[-1] == 6
  RunConfig(synthetic_subjects=2, synthetic_regions=6)
  for subjects, regions in ((1, 6), (2, 5)):
    with pytest.raises(ValueError):
      make_synthetic_cohort(num_subjects=subjects, num_regions=regions, seed=0)
    with pytest.raises(ConfigError):
      RunConfig(synthetic_subjects=subjects, synthetic_regions=regions)


def test_help_states_each_default_once():
  text = train.build_parser().format_help()
  assert "(default: False) (default: False)" not in text
  assert text.count("(default: profile_change)") == 1


def test_a_clamped_topk_ratio_is_warned_about_once(recwarn):
  config = ModelConfig.reference(topk_ratio=0.123)
  dataclasses.replace(config, input_dim=50)  # rebuilt with the cohort's atlas size
  assert [str(w.message) for w in recwarn].count(
      "topk_ratio=0.123 is clamped to 0.3 as in the reference (TopK keeps between 30% and 100% "
      "of the nodes).") == 1


def test_settings_that_change_nothing_are_warned_about():
  with pytest.warns(UserWarning, match="the pretrained encoder is used and no pretraining runs"):
    RunConfig(pretrained="encoder.msgpack", pretrain_encoder=True)
  parser = train.build_parser()
  args = parser.parse_args(["--time_normalization", "minmax"])
  model, _, run = train.configs_from_args(args)
  with pytest.warns(UserWarning, match="--time_normalization has no effect without "
                    "--use_time_features"):
    train.warn_about_ignored_flags(parser, args, model, run)
