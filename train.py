"""Cross-validated STGNN training: `python train.py` runs on the built-in synthetic cohort.

The flags are the fields of `stgnn_jax.config` (the reference's names and meanings; the defaults
are the recipe of the README, `config.reference_flags()` gives the reference's); the protocol is
`stgnn_jax.train.cross_validation.run_cross_validation`. `python train.py --help` lists them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import sys
import warnings

from stgnn_jax.config import (
    FLAG_GROUPS,
    ModelConfig,
    OptimConfig,
    RunConfig,
    cli_default,
    flag_fields,
    parse_bool,
)

CONFIGS = (ModelConfig, OptimConfig, RunConfig)
logger = logging.getLogger("stgnn_jax")


def _argparse_type(parse):
  """`parse` with its ValueError turned into argparse's one-line usage error."""
  def convert(text: str):
    try:
      return parse(text)
    except ValueError as error:
      raise argparse.ArgumentTypeError(str(error)) from None
  convert.__name__ = getattr(parse, "__name__", "value")
  return convert


def add_flag(group: argparse._ArgumentGroup, field: dataclasses.Field) -> None:
  """`--<field>` from a config field; a boolean takes `--x`, `--x true|false` and `--no-x`."""
  meta, default = field.metadata, cli_default(field)
  if field.type in ("bool", "bool | None"):
    group.add_argument(f"--{field.name}", nargs="?", const=True, default=default,
                       type=_argparse_type(parse_bool), metavar="true|false", help=meta["help"])
    group.add_argument(f"--no-{field.name}", dest=field.name, action="store_false",
                       help=argparse.SUPPRESS)
    return
  # argparse words the errors of int and float itself ("invalid int value: 'x'").
  parse = (_argparse_type(meta["parse"]) if meta["parse"]
           else {"int": int, "int | None": int, "float": float}.get(field.type, str))
  group.add_argument(f"--{field.name}", default=default, choices=meta["choices"], type=parse,
                     help=meta["help"])


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  groups = {name: parser.add_argument_group(name) for name in FLAG_GROUPS}
  for config_class in CONFIGS:
    for field in flag_fields(config_class):
      add_flag(groups[field.metadata["group"]], field)
  groups["data"].add_argument(
      "--write_synthetic", metavar="DIR", default=None,
      help="write the synthetic cohort in the reference's on-disk format and exit")
  out = parser.add_argument_group("output")
  out.add_argument("--out_dir", default=None, help="default: ./runs/<timestamp>")
  out.add_argument("--save_path", default="./model/",
                   help="where each fold's best checkpoint is also saved (best_model_fold{k})")
  out.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the run in DIR with its saved settings")
  out.add_argument("--no_progress", action="store_true", help="no progress bar")
  out.add_argument("--compile_cache", default=os.path.join("~", ".cache", "stgnn-jax", "xla"),
                   help="JAX's persistent compilation cache, reused by later runs ('none': off)")
  return parser


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, OptimConfig, RunConfig]:
  """The three configs from parsed flags (ModelConfig.input_dim is set from the cohort later)."""
  return tuple(cls(**{f.name: getattr(args, f.name) for f in flag_fields(cls)})
               for cls in CONFIGS)


def configs_from_run_dir(run_dir: str) -> tuple[ModelConfig, OptimConfig, RunConfig]:
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
  # The run's messages (stgnn_jax's loggers) on stdout; other libraries' only from warnings up.
  logging.basicConfig(format="%(message)s", stream=sys.stdout)
  logger.setLevel(logging.INFO)

  if args.write_synthetic:
    from stgnn_jax.data import synthetic

    synthetic.write_synthetic(args.write_synthetic, num_subjects=run.synthetic_subjects,
                              num_regions=run.synthetic_regions, seed=run.seed,
                              threshold=run.threshold, var_name=run.var_name)
    logger.info("wrote the synthetic cohort to %s", args.write_synthetic)
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

  from stgnn_jax.train.checkpoints import copy_checkpoint
  from stgnn_jax.train.cross_validation import run_cross_validation

  logger.info("writing to %s", out_dir)
  results = run_cross_validation(model, optim, run, out_dir, progress_bar=not args.no_progress)
  for fold in results["folds"]:
    best = os.path.join(out_dir, f"fold_{fold['fold']}", "best.msgpack")
    if os.path.exists(best):
      copy_checkpoint(best, os.path.join(args.save_path, f"best_model_fold{fold['fold']}.msgpack"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
