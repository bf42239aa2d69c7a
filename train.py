"""Cross-validated STGNN training: `python train.py` runs on the built-in synthetic cohort.

The flags are the fields of `stgnn_jax.config` (the reference's names and meanings; the defaults
are the recipe of the README, `--preset reference` is the reference's); the protocol is
`stgnn_jax.train.cross_validation.run_cross_validation`. `python train.py --help` lists them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import json
import logging
import os
import sys
import warnings

from stgnn_jax.command import run_command
from stgnn_jax.config import CONFIGS, ModelConfig, OptimConfig, RunConfig, flag_fields
from stgnn_jax.config.cli import add_config_flags, configs_from_args, parse_flags
from stgnn_jax.config.differences import RESULT_NEUTRAL
from stgnn_jax.errors import InputError, InterruptedRun, RunStateError

logger = logging.getLogger("stgnn_jax")

# The run folder's record of where train.py also copies the checkpoints (--save_path), read
# back by --resume; not a setting of the run (config.json), as it changes no result.
OUTPUTS_FILE = "outputs.json"


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  groups = add_config_flags(parser)
  groups["data"].add_argument(
      "--write_synthetic", metavar="DIR", default=None,
      help="write the synthetic cohort in the reference's on-disk format and exit")
  out = parser.add_argument_group("output")
  out.add_argument("--out_dir", default=None, help="default: ./runs/<timestamp>")
  out.add_argument("--save_path", default=None,
                   help="a folder where each fold's checkpoint is also copied (best_model_fold{k}"
                   ".msgpack; the reference: ./model/); default: only in the run folder, "
                   "fold_k/best.msgpack")
  out.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the run in DIR with its saved settings (and its --save_path)")
  out.add_argument("--overwrite", action="store_true",
                   help="replace the files of an earlier cohort (--write_synthetic) or of an "
                   "earlier run's checkpoints in --save_path")
  out.add_argument("--no_progress", action="store_true", help="no progress bar")
  out.add_argument("--compile_cache", default=os.path.join("~", ".cache", "stgnn-jax", "xla"),
                   help="JAX's persistent compilation cache, reused by later runs ('none': off)")
  hosts = parser.add_argument_group(
      "processes", "a sweep over several processes or hosts (jax.distributed.initialize): start "
      "the same command in each, with its --process_id; without these flags JAX's own "
      "environment variables (JAX_COORDINATOR_ADDRESS, ...) or cluster detection apply")
  hosts.add_argument("--coordinator_address", default=None, metavar="HOST:PORT",
                     help="address of process 0's coordinator")
  hosts.add_argument("--num_processes", type=int, default=None, help="processes in the run")
  hosts.add_argument("--process_id", type=int, default=None, help="this process's index")
  hosts.add_argument("--process_timeout", type=float, default=300, metavar="SECONDS",
                     help="how long a process waits for the others to connect before it stops")
  return parser


def configs_from_run_dir(run_dir: str) -> tuple[ModelConfig, OptimConfig, RunConfig]:
  path = os.path.join(run_dir, "config.json")
  if not os.path.isfile(path):
    raise InputError(f"--resume {run_dir}: no config.json there; is it a run folder?")
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    return (ModelConfig.from_dict(saved["model"]), OptimConfig.from_dict(saved["optim"]),
            RunConfig.from_dict(saved["run"]))
  except (ValueError, KeyError, TypeError) as error:  # JSON, UTF-8, missing or unknown fields
    raise RunStateError(f"{path}: not a readable run configuration ({type(error).__name__}: "
                        f"{error}); it is damaged, or from another program.") from None


def check_writable_folder(path: str, flag: str) -> None:
  """Raises InputError unless `path` is a folder that can be written, or can be created."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise InputError(f"{flag} {path}: exists and is not a folder; pass a folder.")
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
    raise InputError(f"{flag} {path}: {existing} is not a writable folder; pass another {flag}.")


def check_outputs(out_dir: str, save_path: str | None, overwrite: bool) -> None:
  """Every output location, checked before any work (nothing is created here)."""
  check_writable_folder(out_dir, "--out_dir")
  if save_path is None:
    return
  check_writable_folder(save_path, "--save_path")
  earlier = sorted(glob.glob(os.path.join(glob.escape(save_path), "best_model_fold*.msgpack")))
  if earlier and not overwrite:
    raise InputError(
        f"--save_path {save_path} already holds {os.path.basename(earlier[0])} (an earlier "
        "run's checkpoints); pass another --save_path, or --overwrite to replace them.")


def check_new_run_dir(out_dir: str) -> None:
  """A fresh run never continues or mixes with the run already in `out_dir`: that is
  `--resume`'s job, which reads the run's own settings."""
  from stgnn_jax.train.cross_validation import has_progress

  finished = os.path.isfile(os.path.join(out_dir, "results.json"))
  if not (finished or has_progress(out_dir)):
    return  # nothing trained there yet (a set-up that failed): the folder is reused
  folds = len(glob.glob(os.path.join(glob.escape(out_dir), "fold_*", "result.json")))
  state = ("a finished run" if finished
           else f"a run ({folds} fold(s) finished)")
  raise InputError(f"--out_dir {out_dir} already holds {state}; continue it with "
                   f"`python train.py --resume {out_dir}`, or pass a new --out_dir.")


def new_out_dir() -> str:
  """runs/<timestamp>, with a suffix when a run of the same second has it already."""
  stamp = os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
  out_dir, n = stamp, 1
  while os.path.exists(out_dir):
    out_dir, n = f"{stamp}-{n}", n + 1
  return out_dir


def saved_save_path(run_dir: str) -> str | None:
  """The --save_path the run in `run_dir` was started with (None: none, or an older run)."""
  path = os.path.join(run_dir, OUTPUTS_FILE)
  if not os.path.isfile(path):
    return None
  from stgnn_jax import atomic

  try:
    return atomic.read_json(path)["save_path"]
  except (ValueError, KeyError, TypeError) as error:
    raise RunStateError(f"{path}: not a readable record of the run's outputs ({error}); "
                        "delete it and pass --save_path again.") from None


def given_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
  """The settings whose flags were given a value other than their default."""
  return [f.name for cls in CONFIGS for f in flag_fields(cls)
          if getattr(args, f.name) != parser.get_default(f.name)]


def with_resume_flags(parser: argparse.ArgumentParser, args: argparse.Namespace,
                      run: RunConfig) -> RunConfig:
  """A resumed run's settings (`run`, from its config.json) with the flags given now that do
  not change its results (`RESULT_NEUTRAL`, e.g. --sweep_chunk): they take effect."""
  return dataclasses.replace(run, **{name: getattr(args, name)
                                     for name in given_settings(parser, args)
                                     if name in RESULT_NEUTRAL})


def warn_about_ignored_flags(parser: argparse.ArgumentParser, args: argparse.Namespace,
                             model: ModelConfig, run: RunConfig) -> None:
  """Flags that change nothing as given deserve a warning: a resumed run reads the settings
  that change its results from its folder."""
  given = [name for name in given_settings(parser, args)
           if not (args.resume and name in RESULT_NEUTRAL)]
  if args.preset:
    given.insert(0, "preset")
  if args.resume and given:
    warnings.warn(f"--resume {args.resume} reads every setting from its config.json; ignoring "
                  + ", ".join(f"--{name}" for name in given) + ".", stacklevel=2)
  elif "time_normalization" in given and not model.use_time_features:
    warnings.warn("--time_normalization has no effect without --use_time_features.",
                  stacklevel=2)


def start_processes(args: argparse.Namespace, prog: str) -> None:
  """Joins a run over several processes (`processes.join`) when the flags or JAX's environment
  ask for one; only process 0 writes files and prints the run's messages. The flags are
  checked first, without connecting (the address's form, the counts)."""
  if not (args.coordinator_address or args.num_processes or args.process_id is not None
          or os.environ.get("JAX_COORDINATOR_ADDRESS")):
    return
  import jax

  from stgnn_jax import atomic
  from stgnn_jax.train import processes

  processes.check_processes_flags(args.coordinator_address, args.num_processes,
                                  args.process_id, args.process_timeout)
  processes.join(args.coordinator_address, args.num_processes, args.process_id,
                 args.process_timeout, prog)
  atomic.set_writer(jax.process_index() == 0)
  if jax.process_index():
    logger.setLevel(logging.WARNING)
    args.no_progress = True


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parse_flags(parser, argv)
  return run_command(parser.prog, lambda: train(parser, args))


def train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
  if args.resume:
    model, optim, run = configs_from_run_dir(args.resume)
    run = with_resume_flags(parser, args, run)
    out_dir = args.resume
    save_path = args.save_path or saved_save_path(out_dir)
    if os.path.isfile(os.path.join(out_dir, "results.json")):
      logger.info("%s is a finished run: its folds are read back and reported again", out_dir)
  else:
    model, optim, run = configs_from_args(args)
    out_dir = args.out_dir or new_out_dir()
    save_path = args.save_path
  warn_about_ignored_flags(parser, args, model, run)

  if args.write_synthetic:
    from stgnn_jax.data import synthetic

    synthetic.write_synthetic(args.write_synthetic, num_subjects=run.synthetic_subjects,
                              num_regions=run.synthetic_regions, seed=run.seed,
                              threshold=run.threshold, var_name=run.var_name,
                              overwrite=args.overwrite)
    logger.info("wrote the synthetic cohort to %s", args.write_synthetic)
    return 0
  if not args.resume:
    check_new_run_dir(out_dir)
  check_outputs(out_dir, save_path, args.overwrite and not args.resume)

  reference_encoder = os.path.join(save_path or "./model/", "pretrained_gnn_encoder.pth")
  if not run.pretrained and os.path.exists(reference_encoder):
    warnings.warn(f"{reference_encoder} exists but is not loaded (the reference loads it "
                  "silently); pass --pretrained to start from it.", stacklevel=2)

  start_processes(args, parser.prog)
  if args.compile_cache.lower() != "none":
    import jax

    # Compiling the train step takes seconds on a CPU; a second run with the same shapes
    # reads the executables back from disk instead.
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(args.compile_cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

  from stgnn_jax import atomic
  from stgnn_jax.train.checkpoints import copy_checkpoint
  from stgnn_jax.train.cross_validation import run_cross_validation

  logger.info("writing to %s", out_dir)
  try:
    results = run_cross_validation(model, optim, run, out_dir, progress_bar=not args.no_progress,
                                   on_run_dir=lambda: atomic.write_json(
                                       os.path.join(out_dir, OUTPUTS_FILE),
                                       {"save_path": save_path}))
  except KeyboardInterrupt:
    raise InterruptedRun(
        f"interrupted: {out_dir} keeps every finished fold and the last saved epoch; continue "
        f"with `python train.py --resume {out_dir}`") from None
  if save_path is not None:
    for fold in results["folds"]:
      best = os.path.join(out_dir, f"fold_{fold['fold']}", "best.msgpack")
      if os.path.exists(best):
        copy_checkpoint(best, os.path.join(save_path, f"best_model_fold{fold['fold']}.msgpack"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
