"""Cross-validated STGNN training: `python train.py` runs on the built-in synthetic cohort.

Flags keep the reference's names, meanings and defaults; the logic lives in `stgnn_jax`
(`experiment.run_cross_validation`). `python train.py --help` lists them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import warnings

from stgnn_jax.config import (
    ACTIVATIONS,
    DECISION_THRESHOLDS,
    LAYER_TYPES,
    MODEL_TYPES,
    NODE_FEATURES,
    PLATEAU_METRICS,
    READOUTS,
    SELECTION_RULES,
    ModelConfig,
)


def parse_bool(text: str) -> bool:
  value = text.strip().lower()
  if value in ("true", "t", "yes", "y", "1", "on"):
    return True
  if value in ("false", "f", "no", "n", "0", "off"):
    return False
  raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_alpha(text: str) -> float | str:
  if text.strip().lower() == "auto":
    return "auto"
  try:
    return float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected a number in [0, 1] or 'auto', got {text!r}") from None


def add_bool(parser: argparse.ArgumentParser, name: str, default: bool | None, help: str) -> None:
  """`--name`, `--name true|false` and `--no-name`."""
  parser.add_argument(f"--{name}", nargs="?", const=True, default=default, type=parse_bool,
                      metavar="true|false", help=f"{help} (default: {default})")
  parser.add_argument(f"--no-{name}", dest=name, action="store_false", help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  data = p.add_argument_group("data")
  data.add_argument("--data_root", default=None,
                    help="folder with FC_Matrices/ and TADPOLE_TEMPORAL.csv; without it the "
                    "built-in synthetic cohort is used")
  data.add_argument("--var_name", default="fc_matrix", help="array key inside each .npz")
  data.add_argument("--threshold", type=float, default=0.2, help="|FC| below it is no edge")
  data.add_argument("--max_visits", type=int, default=10, help="keep the last N visits")
  add_bool(data, "exclude_target_visit", False,
           "predict the last visit's label from the visits before it")
  data.add_argument("--time_normalization", default="log",
                    choices=("log", "minmax", "buckets", "raw"))
  data.add_argument("--single_visit_horizon", type=float, default=6.0,
                    help="months to predict for a subject with one visit")
  data.add_argument("--synthetic_subjects", type=int, default=150,
                    help="subjects of the built-in synthetic cohort (300: the scale of the "
                    "reference's synthetic measurements, about twice the run time)")
  data.add_argument("--synthetic_regions", type=int, default=100,
                    help="regions (nodes) per scan of the built-in synthetic cohort")
  data.add_argument("--write_synthetic", metavar="DIR", default=None,
                    help="write the synthetic cohort in the reference's on-disk format and exit")

  model = p.add_argument_group("model")
  model.add_argument("--node_features", default="profile_change", choices=NODE_FEATURES,
                     help="profile_change: each region's row of thresholded FC values beside its "
                     "change since the subject's first visit; connection_profile: the row only; "
                     "onehot: the region index (the reference: only which edges exist)")
  model.add_argument("--layer_type", default="GraphSAGE", choices=LAYER_TYPES)
  model.add_argument("--gnn_hidden_dim", type=int, default=256)
  model.add_argument("--gnn_num_layers", type=int, default=1,
                     help="graph convolution blocks (the reference: 2)")
  model.add_argument("--gnn_activation", default="elu", choices=ACTIVATIONS)
  model.add_argument("--input_dropout", type=float, default=0.5,
                     help="dropout on the standardised connection-profile entries before the "
                     "first graph layer (the reference: 0)")
  add_bool(model, "graph_norm", False,
           "GraphNorm after each graph convolution (the reference: true; it rescales every "
           "feature per graph, dividing out changes in connection strength)")
  add_bool(model, "use_topk_pooling", False,
           "TopK pooling after each graph layer (the reference: true)")
  model.add_argument("--topk_ratio", type=float, default=0.3,
                     help="fraction of nodes kept by TopK (clamped to [0.3, 1] as in the reference)")
  model.add_argument("--readout", default="concat", choices=READOUTS,
                     help="graph embedding: every region's projected features in atlas order "
                     "(needs --no-use_topk_pooling) or mean ‖ max over nodes (the reference)")
  model.add_argument("--readout_node_dim", type=int, default=8,
                     help="per-region width of the concat readout")
  add_bool(model, "use_time_features", False, "fuse the time-to-predict into the embeddings")
  model.add_argument("--model_type", default="LSTM", choices=MODEL_TYPES)
  model.add_argument("--lstm_hidden_dim", type=int, default=64)
  model.add_argument("--lstm_num_layers", type=int, default=1)
  add_bool(model, "lstm_bidirectional", None,
           "bidirectional recurrence; unset = the reference (LSTM bidirectional, GRU/RNN not)")
  add_bool(model, "freeze_encoder", False,
           "the reference's behaviour: graph embeddings without gradient (the encoder never "
           "learns unless pretrained); by default the encoder trains end to end")

  train = p.add_argument_group("training")
  train.add_argument("--n_epochs", type=int, default=100)
  train.add_argument("--batch_size", type=int, default=16)
  train.add_argument("--lr", type=float, default=1e-3)
  train.add_argument("--weight_decay", type=float, default=1e-2,
                     help="L2 penalty added to the gradient before Adam (torch Adam's "
                     "weight_decay; the reference: 1e-4)")
  train.add_argument("--focal_alpha", type=parse_alpha, default="auto",
                     help="focal α of the converter class, or 'auto': the share of stable "
                     "subjects in each fold's training split (weights the minority class up; "
                     "the reference: 0.9)")
  train.add_argument("--focal_gamma", type=float, default=3.0)
  train.add_argument("--label_smoothing", type=float, default=0.05)
  train.add_argument("--minority_focus_epochs", type=int, default=20)
  train.add_argument("--plateau_metric", default="auc", choices=PLATEAU_METRICS,
                     help="validation metric the learning-rate plateau watches (the reference: "
                     "balanced_acc)")
  train.add_argument("--decision_threshold", default="val", choices=DECISION_THRESHOLDS,
                     help="val: the threshold on p(converter) that maximises validation balanced "
                     "accuracy, chosen with the best epoch and applied to the test fold; argmax: "
                     "the reference")
  train.add_argument("--selection", default="auc_loss", choices=SELECTION_RULES,
                     help="best epoch: highest validation AUC, ties by lower validation loss "
                     "(auc_loss) or the first (auc, the reference)")
  train.add_argument("--early_stop_patience", type=int, default=30,
                     help="stop a fold this many epochs after its best epoch (0: never, the "
                     "reference)")
  add_bool(train, "baselines", True,
           "fit logistic-regression baselines on the last scan of the same folds")
  train.add_argument("--num_folds", type=int, default=5)
  train.add_argument("--seed", type=int, default=42)
  add_bool(train, "pretrain_encoder", False,
           "supervised encoder pretraining on each fold's training subjects first")
  train.add_argument("--pretrain_epochs", type=int, default=100)
  train.add_argument("--pretrained", default=None,
                     help="encoder to start from: a stgnn-jax checkpoint or a reference .pth")
  train.add_argument("--num_devices", type=int, default=None,
                     help="JAX devices for data parallelism (default: all)")
  train.add_argument("--graph_multiple", type=int, default=32,
                     help="graph slots per batch are rounded up to this multiple (fewer "
                     "distinct shapes = fewer compilations, more padding)")
  train.add_argument("--eval_batch_size", type=int, default=64,
                     help="subjects per evaluation batch")

  out = p.add_argument_group("output")
  out.add_argument("--out_dir", default=None, help="default: ./runs/<timestamp>")
  out.add_argument("--save_path", default="./model/",
                   help="where each fold's best checkpoint is also saved (best_model_fold{k})")
  out.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the run in DIR with its saved settings")
  out.add_argument("--no_progress", action="store_true", help="no progress bar")
  out.add_argument("--compile_cache", default=os.path.join("~", ".cache", "stgnn-jax", "xla"),
                   help="JAX's persistent compilation cache, reused by later runs ('none': off)")
  return p


def configs_from_args(args: argparse.Namespace):
  from stgnn_jax.experiment import RunConfig
  from stgnn_jax.training import OptimConfig

  # input_dim is the atlas size, set from the cohort when it is loaded.
  model = ModelConfig(
      node_features=args.node_features, layer_type=args.layer_type, graph_norm=args.graph_norm,
      input_dropout=args.input_dropout, gnn_hidden_dim=args.gnn_hidden_dim,
      gnn_num_layers=args.gnn_num_layers, gnn_activation=args.gnn_activation,
      use_topk_pooling=args.use_topk_pooling, topk_ratio=args.topk_ratio,
      readout=args.readout, readout_node_dim=args.readout_node_dim,
      use_time_features=args.use_time_features, model_type=args.model_type,
      lstm_hidden_dim=args.lstm_hidden_dim, lstm_num_layers=args.lstm_num_layers,
      lstm_bidirectional=args.lstm_bidirectional, freeze_encoder=args.freeze_encoder)
  optim = OptimConfig(
      lr=args.lr, focal_alpha=args.focal_alpha, focal_gamma=args.focal_gamma,
      label_smoothing=args.label_smoothing, minority_focus_epochs=args.minority_focus_epochs,
      plateau_metric=args.plateau_metric, weight_decay=args.weight_decay)
  run = RunConfig(
      n_epochs=args.n_epochs, batch_size=args.batch_size, num_folds=args.num_folds,
      seed=args.seed, max_visits=args.max_visits, data_root=args.data_root,
      var_name=args.var_name, threshold=args.threshold,
      exclude_target_visit=args.exclude_target_visit,
      time_normalization=args.time_normalization,
      single_visit_horizon=args.single_visit_horizon,
      synthetic_subjects=args.synthetic_subjects, synthetic_regions=args.synthetic_regions,
      pretrain_encoder=args.pretrain_encoder,
      pretrain_epochs=args.pretrain_epochs, pretrained=args.pretrained,
      num_devices=args.num_devices, graph_multiple=args.graph_multiple,
      eval_batch_size=args.eval_batch_size, decision_threshold=args.decision_threshold,
      selection=args.selection, early_stop_patience=args.early_stop_patience,
      baselines=args.baselines)
  return model, optim, run


def configs_from_run_dir(run_dir: str):
  from stgnn_jax.experiment import RunConfig
  from stgnn_jax.training import OptimConfig

  path = os.path.join(run_dir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--resume {run_dir}: no config.json there; is it a run folder?")
  with open(path) as f:
    saved = json.load(f)
  return (ModelConfig.from_dict(saved["model"]), OptimConfig(**saved["optim"]),
          RunConfig(**saved["run"]))


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    if args.resume:
      model, optim, run = configs_from_run_dir(args.resume)
      out_dir = args.resume
    else:
      model, optim, run = configs_from_args(args)
      stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
      out_dir = args.out_dir or os.path.join("runs", stamp)
  except (ValueError, FileNotFoundError) as error:
    parser.error(str(error))

  if args.write_synthetic:
    from stgnn_jax import synthetic

    synthetic.write_synthetic(args.write_synthetic, num_subjects=run.synthetic_subjects,
                              num_regions=run.synthetic_regions, seed=run.seed,
                              threshold=run.threshold, var_name=run.var_name)
    print(f"wrote the synthetic cohort to {args.write_synthetic}")
    return 0

  reference_encoder = os.path.join(args.save_path, "pretrained_gnn_encoder.pth")
  if not run.pretrained and os.path.exists(reference_encoder):
    warnings.warn(f"{reference_encoder} exists but is not loaded (the reference loads it "
                  "silently); pass --pretrained to start from it.")

  if args.compile_cache.lower() != "none":
    import jax

    # Compiling the train step takes seconds on a CPU; a second run with the same shapes
    # reads the executables back from disk instead.
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(args.compile_cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

  from stgnn_jax.checkpoints import atomic_write_bytes
  from stgnn_jax.experiment import run_cross_validation

  print(f"writing to {out_dir}")
  results = run_cross_validation(model, optim, run, out_dir, progress_bar=not args.no_progress)
  for fold in results["folds"]:
    best = os.path.join(out_dir, f"fold_{fold['fold']}", "best.msgpack")
    if os.path.exists(best):
      with open(best, "rb") as f:
        atomic_write_bytes(os.path.join(args.save_path, f"best_model_fold{fold['fold']}.msgpack"),
                           f.read())
  return 0


if __name__ == "__main__":
  sys.exit(main())
