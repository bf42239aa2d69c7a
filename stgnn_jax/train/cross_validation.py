"""Cross-validated training, the reference's protocol: `run_cross_validation`.

Stratified K-fold over subjects (seed `seed`), a stratified 80/20 train/validation split of each
fold's training subjects (seed `seed + fold`), each fold trained and tested by `train.loop`, the
classical baselines (`eval.baselines`) fitted on the same folds. Everything a run writes goes
under `out_dir` atomically, and the run can be resumed after a kill at any point with identical
results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from stgnn_jax import atomic
from stgnn_jax.config import ModelConfig, OptimConfig, RunConfig
from stgnn_jax.config.differences import RESULT_NEUTRAL, config_differences
from stgnn_jax.data.cohort import Cohort
from stgnn_jax.data.connectivity import Cleaning, TimeSeriesSettings
from stgnn_jax.data.fold_steps import FIT_FILE, FoldSteps
from stgnn_jax.data.reference_format import HarmonizeColumns, input_kind, load_cohort
from stgnn_jax.errors import ConfigError, RunStateError
from stgnn_jax.eval import metrics as metrics_lib
from stgnn_jax.eval.reports import format_summary, format_value, write_metrics_csv
from stgnn_jax.input_pipeline import FoldSplit, SubjectBatch, Subjects, make_folds
from stgnn_jax.train import sweep
from stgnn_jax.train.driver import train_fold
from stgnn_jax.train.fold_result import LAST_EPOCH, PATH_ALONE, FoldResult
from stgnn_jax.train.pretrain import check_pretrained_encoder
from stgnn_jax.train.processes import check_processes_agree
from stgnn_jax.train.sharding import Placement
from stgnn_jax.train.state import init_params

logger = logging.getLogger(__name__)


def load_data(run: RunConfig) -> Cohort:
  """The cohort on disk (`data_root`) or, without one, the built-in synthetic cohort; with
  `--scan_store memmap` its scans are memory-mapped from the cohort cache (the built-in cohort:
  from a store of this process in the user's cache folder, `cache.transient_store`)."""
  memory_map = run.scan_store == "memmap"
  if run.data_root is not None:
    return load_cohort(
        run.data_root, var_name=run.var_name, threshold=run.threshold,
        max_visits=run.max_visits, exclude_target_visit=run.exclude_target_visit,
        single_visit_horizon=run.single_visit_horizon, input=run.input,
        timeseries=timeseries_settings(run),
        harmonize=HarmonizeColumns(site=run.harmonize != "none",
                                   covariates=run.harmonize_covariates),
        memory_map=memory_map)
  from stgnn_jax.data import synthetic, synthetic_scans
  from stgnn_jax.data.cache import transient_store

  scans = synthetic.make_synthetic_cohort(
      num_subjects=run.synthetic_subjects, num_regions=run.synthetic_regions, seed=run.seed,
      threshold=run.threshold)
  with transient_store() if memory_map else contextlib.nullcontext() as store:
    return synthetic_scans.cohort_from_scans(
        scans, max_visits=run.max_visits, exclude_target_visit=run.exclude_target_visit,
        single_visit_horizon=run.single_visit_horizon, store=store)


@dataclasses.dataclass(frozen=True)
class RunSetup:
  """Everything a cross-validated run fixes before it trains (`prepare_run`).

  `model_config` has the cohort's input width, `run` its sizes (`size_by_data`); `members` is
  the sweep's members ([] for a single run); `first_batch` is the first fold's first training
  batch (the shapes that initialise a model).
  """

  cohort: Cohort
  model_config: ModelConfig
  optim_config: OptimConfig
  run: RunConfig
  placement: Placement
  subjects: Subjects
  folds: list[FoldSplit]
  members: list[sweep.Member]
  first_batch: SubjectBatch


def prepare_run(model_config: ModelConfig, optim_config: OptimConfig, run: RunConfig, *,
                cohort: Cohort | None = None) -> RunSetup:
  """The set-up of a cross-validated run, writing nothing: the sweep's members, the cohort
  (`load_data(run)` unless given), the placement over the devices, the sizes, the subjects'
  arrays and the folds; checks the processes and a pretrained encoder against them.

  Raises ConfigError (or the loaders' errors) for a run that cannot start, e.g. a schedule
  stage after the last epoch.
  """
  members = sweep.sweep_members(optim_config, run)
  optim_config.check_schedules(run.n_epochs)
  if cohort is None:
    cohort = load_data(run)
  logger.info(cohort.summary())
  # Every kind of node features has one entry per region: the input width is the atlas size.
  model_config = dataclasses.replace(model_config, input_dim=cohort.num_nodes)
  # A sweep spreads its members over the devices; a single run its batches.
  placement = Placement(run.num_devices, run.batch_size, run.eval_batch_size, run.graph_multiple,
                        member_devices=len(jax.devices()) if members else 1)
  if placement.data_devices > 1:
    logger.info("data parallel over %d devices", placement.data_devices)
  run = size_by_data(run, cohort, placement.data_devices)
  if run.harmonize != "none" and run.data_root is None:
    raise ConfigError("--harmonize needs sites: give --data_root a visit table with a Site "
                      "column (the built-in synthetic cohort has one site)")
  steps = FoldSteps.for_cohort(cohort, threshold=run.threshold, fisher_z=run.fisher_z,
                               harmonize=run.harmonize, covariates=run.harmonize_covariates)
  subjects = Subjects(cohort, run, model_config, steps)
  folds = make_folds(subjects.labels, run.num_folds, run.seed)
  if steps is not None:
    steps.check_folds(cohort, folds)
  first = next(subjects.batches(folds[0].train, run.batch_size, run))
  if run.pretrained:
    check_pretrained_encoder(run, model_config, first)
  return RunSetup(cohort=cohort, model_config=model_config, optim_config=optim_config, run=run,
                  placement=placement, subjects=subjects, folds=folds, members=members,
                  first_batch=first)


def timeseries_settings(run: RunConfig) -> TimeSeriesSettings:
  """How `run` turns time-series scans into graphs (its --connectivity and cleaning flags)."""
  return TimeSeriesSettings(
      kind=run.connectivity, fisher_z=run.fisher_z, t_r=run.t_r,
      cleaning=Cleaning(detrend=run.detrend, standardize=run.standardize,
                        high_pass=run.high_pass, low_pass=run.low_pass,
                        confounds=run.confounds))


def preprocessing_record(run: RunConfig, steps: FoldSteps | None) -> dict[str, Any]:
  """How the run turned its input into graphs, for results.json: the input kind, the
  measure and cleaning (time series), the harmonisation, and the steps fitted in each fold."""
  if run.data_root is None:
    record: dict[str, Any] = {"input": "synthetic"}
  else:
    record = {"input": input_kind(Path(run.data_root), run.input)}
  if record["input"] == "timeseries":
    settings = timeseries_settings(run)
    record.update(connectivity=settings.kind, fisher_z=settings.fisher_z, t_r=settings.t_r,
                  cleaning=dataclasses.asdict(settings.cleaning))
  record.update(threshold=run.threshold, harmonize=run.harmonize,
                harmonize_covariates=list(run.harmonize_covariates))
  fitted = ([] if steps is None else
            [name for name, on in (("tangent", steps.kind == "tangent"),
                                   (steps.harmonize, steps.harmonize != "none")) if on])
  record["fitted_in_each_fold"] = fitted
  if fitted:
    record["fit_files"] = f"fold_<k>/{FIT_FILE} (fitted on the fold's training subjects only)"
  return json.loads(json.dumps(record))


def run_cross_validation(model_config: ModelConfig, optim_config: OptimConfig, run: RunConfig,
                         out_dir: str, *, progress_bar: bool = True,
                         on_run_dir: Callable[[], None] = lambda: None) -> dict[str, Any]:
  """Runs (or resumes) the cross-validation in `out_dir`; returns the results dict.

  The protocol: set the run up (`prepare_run`: the cohort, the folds, every check), and, over
  several processes, check that they all run the same (`processes.check_processes_agree`);
  only then write the run folder (`prepare_run_dir`: the configuration and the cohort's
  fingerprint, or a check against the run being resumed); train and test each fold (a finished
  fold is read back), fit the baselines on the same folds, write results.json, metrics.csv and
  the plots.
  Messages go to the `stgnn_jax` loggers; `on_run_dir` is called once the run folder is
  recorded, before any training (train.py records its own outputs there).
  """
  setup = prepare_run(model_config, optim_config, run)
  check_processes_agree(config_record(setup.model_config, optim_config, setup.run),
                        setup.cohort.fingerprint())
  cohort, model_config, run = setup.cohort, setup.model_config, setup.run
  subjects, folds, members, placement = (setup.subjects, setup.folds, setup.members,
                                         setup.placement)
  first = setup.first_batch
  prepare_run_dir(out_dir, model_config, optim_config, run, cohort)
  on_run_dir()
  output: dict[str, Any] = {}
  if members:
    chunk_size, layout = sweep_layout(out_dir, folds[0], subjects, model_config, optim_config,
                                      run, placement, members, first)
    output["sweep"] = sweep.train_sweep(folds, subjects, model_config, optim_config, run,
                                        placement, out_dir, members, chunk_size,
                                        progress_bar=progress_bar)
    output["sweep"]["layout"] = layout
    selected = next(m for m in output["sweep"]["members"]
                    if m["name"] == output["sweep"]["selected"]["name"])
    results, histories = selected["folds"], selected["histories"]
  else:
    trained = train_folds(folds, subjects, model_config, optim_config, run, placement, out_dir,
                          progress_bar=progress_bar)
    results, histories = [r.to_json() for r in trained], [r.history for r in trained]

  summary = metrics_lib.summarize(results, metrics_lib.FOLD_SUMMARY_METRICS)
  last_epoch_folds = [r["fold"] for r in results if r.get("tested") == LAST_EPOCH]
  path_folds = [r["fold"] for r in results if r.get("tested") == PATH_ALONE]
  output = {"folds": results, "summary": summary,
            "folds_tested_at_last_epoch": last_epoch_folds,
            **({"folds_tested_on_the_path_alone": path_folds} if model_config.linear_path
               else {}),
            "cohort": cohort.summary(),
            # The folds' test_subjects index these (predict.py: who was in the run).
            "subject_ids": [s.subject_id for s in cohort.subjects],
            "preprocessing": preprocessing_record(run, subjects.steps), **output}
  if run.baselines:
    from stgnn_jax.eval import baselines

    # With preprocessing fitted inside the folds, each fold's baselines see its own matrices.
    fold_subjects = None if subjects.steps is None else [
        subjects.fit_fold(split.train, os.path.join(out_dir, f"fold_{k}"))
        for k, split in enumerate(folds)]
    output["baselines"] = baselines.run_baselines(
        subjects.last_fc, subjects.labels, folds, first_fc=subjects.first_fc,
        decision_threshold=run.decision_threshold,
        fold_fc=None if fold_subjects is None else [
            (fold.last_fc, fold.first_fc) for fold in fold_subjects])
  from stgnn_jax.eval import reports

  if members:
    sweep_histories = [dict(row, member=m["name"]) for m in output["sweep"]["members"]
                       for history in m["histories"] for row in history]
    write_metrics_csv(out_dir, [sweep_histories])
    reports.write_sweep_csv(out_dir, output["sweep"])
    reports.plot_sweep_heatmap(out_dir, output["sweep"], run.sweep_axes())
    for m in output["sweep"]["members"]:
      del m["histories"]  # in metrics.csv
  else:
    write_metrics_csv(out_dir, histories)
  atomic.write_json(os.path.join(out_dir, "results.json"), output)

  reports.plot_training_curves(out_dir, histories)
  reports.plot_roc_curves(out_dir, results, subjects.labels, output.get("baselines"))
  reports.plot_reliability(out_dir, results, subjects.labels)
  logger.info(format_summary(summary, output.get("baselines"),
                             last_epoch_folds=last_epoch_folds))
  return output


def size_by_data(run: RunConfig, cohort: Cohort, num_devices: int) -> RunConfig:
  """`run` with visit and batch slots no larger than the data needs: `max_visits` at most the
  longest subject's visits, the batch sizes at most the subjects (rounded up to a multiple of
  the devices). Padding slots never change a number, so the results are the same; the memory
  (and compile shapes) follow the data, not a flag far beyond it."""
  longest = max(subject.num_visits for subject in cohort.subjects)
  subjects = -(-len(cohort.subjects) // num_devices) * num_devices
  sized = {"max_visits": min(run.max_visits, longest),
           "batch_size": min(run.batch_size, subjects),
           "eval_batch_size": min(run.eval_batch_size, subjects)}
  changed: dict[str, Any] = {k: v for k, v in sized.items() if v != getattr(run, k)}
  for name, value in changed.items():
    logger.info("%s %d is more than the cohort needs: using %d", name, getattr(run, name), value)
  return dataclasses.replace(run, **changed)


def sweep_layout(out_dir: str, split: FoldSplit, subjects: Subjects, model_config: ModelConfig,
                 optim_config: OptimConfig, run: RunConfig, placement: Placement,
                 members: list[sweep.Member], first: Any) -> tuple[int, dict[str, Any]]:
  """How many members train together, and why: `--sweep_chunk`; else, when the sweep already
  started, the chunk size it recorded; else the faster of the chunk memory allows and one
  member at a time (`sweep.choose_chunk_size`), recorded in the run folder for a resume."""
  if run.sweep_chunk:
    return run.sweep_chunk, {"chunk_size": run.sweep_chunk, "chosen_by": "--sweep_chunk"}
  recorded = sweep.recorded_layout(out_dir)
  if recorded is not None:
    return int(recorded["chunk_size"]), recorded
  largest = sweep.auto_chunk_size(
      jax.eval_shape(init_params, model_config, first, jax.random.key(0)), model_config, run,
      len(members), placement.member_devices)
  size, layout = sweep.choose_chunk_size(os.path.join(out_dir, "fold_0"), split, subjects,
                                         model_config, optim_config, run, placement, members,
                                         largest)
  atomic.write_json(os.path.join(out_dir, sweep.LAYOUT_FILE), layout)
  return size, layout


def has_progress(out_dir: str) -> bool:
  """Whether a run folder holds a trained epoch (a fold's, or a sweep chunk's, progress or
  result)."""
  return any(sweep.holds_progress(directory)
             for where in ((), ("sweep", "chunk_*"))
             for directory in glob.glob(os.path.join(glob.escape(out_dir), "fold_*", *where)))


def config_record(model_config: ModelConfig, optim_config: OptimConfig,
                  run: RunConfig) -> dict[str, Any]:
  """A run's configuration as config.json holds it: {"model", "optim", "run"}, JSON values."""
  return json.loads(json.dumps(
      {"model": model_config.to_dict(), "optim": dataclasses.asdict(optim_config),
       "run": dataclasses.asdict(run)}))


def prepare_run_dir(out_dir: str, model_config: ModelConfig, optim_config: OptimConfig,
                    run: RunConfig, cohort: Cohort) -> None:
  """Writes `config.json` (this run's settings, also when it resumes) and `data.json` (the
  cohort's fingerprint), or, in a folder that already holds a trained epoch, checks that both
  match the run being resumed: every setting but those that do not change the results
  (`RESULT_NEUTRAL`); removes the temporary files a killed run left behind."""
  os.makedirs(out_dir, exist_ok=True)
  config_path = os.path.join(out_dir, "config.json")
  data_path = os.path.join(out_dir, "data.json")
  config = config_record(model_config, optim_config, run)
  data: dict[str, Any] = {"fingerprint": cohort.fingerprint(), "cohort": cohort.summary()}
  trained = has_progress(out_dir)
  if trained:
    saved = atomic.read_json(config_path)
    # A sweep of an earlier version finds its started chunks' members only with the chunk size
    # they were planned with.
    neutral = () if sweep.has_unrecorded_chunks(out_dir) else RESULT_NEUTRAL
    differences = (config_differences(saved, config, ("saved", "now"), ignore=neutral)
                   if isinstance(saved, dict) else ["not a configuration"])
    if differences:
      raise RunStateError(
          f"{config_path} holds a different configuration: {', '.join(differences)}; resume "
          "with the same settings (train.py --resume DIR reads them from there) or use a new "
          "--out_dir.")
    if os.path.exists(data_path):
      saved = atomic.read_json(data_path).get("fingerprint", {})
      changed = [part for part, digest in data["fingerprint"].items()
                 if saved.get(part) != digest]
      if changed:
        raise RunStateError(
            f"{out_dir}: the cohort differs from the one this run was trained on (its "
            f"{', '.join(changed)} changed; data.json holds the original's fingerprint): resume "
            "with the original data, or start a new --out_dir.")
    else:
      logger.warning("%s: no data.json (a run of an older version): the cohort cannot be "
                     "checked against the one its finished folds used", out_dir)
  for stale in glob.glob(os.path.join(glob.escape(out_dir), "**", atomic.TEMP_PREFIX + "*"),
                         recursive=True):
    atomic.remove(stale)  # the atomic writer's temporary file of a write that was killed
  atomic.write_json(config_path, config)
  if not os.path.exists(data_path) or not trained:
    atomic.write_json(data_path, data)


def train_folds(folds: list[FoldSplit], subjects: Subjects, model_config: ModelConfig,
                optim_config: OptimConfig, run: RunConfig, placement: Placement, out_dir: str, *,
                progress_bar: bool) -> list[FoldResult]:
  """Every fold's result (with its metrics history); a fold with `result.json` is read back."""
  from tqdm.auto import tqdm
  from tqdm.contrib.logging import logging_redirect_tqdm

  results: list[FoldResult] = []
  bar = tqdm(total=run.num_folds * run.n_epochs, disable=not progress_bar, unit="epoch",
             dynamic_ncols=True)
  with bar, logging_redirect_tqdm():
    for k, split in enumerate(folds):
      fold_dir = os.path.join(out_dir, f"fold_{k}")
      done_path = os.path.join(fold_dir, "result.json")
      if os.path.exists(done_path):
        results.append(FoldResult.from_record(atomic.read_json(done_path), done_path))
        bar.update(run.n_epochs)
        continue
      bar.set_description(f"fold {k + 1}/{run.num_folds}")

      def on_epoch(history):
        bar.update(1)
        bar.set_postfix(loss=f"{history[-1]['train_loss']:.4f}",
                        val_auc=format_value(history[-1]["val_auc"]))
        write_metrics_csv(out_dir, [r.history for r in results] + [history])

      os.makedirs(fold_dir, exist_ok=True)
      result = train_fold(k, split, subjects.fit_fold(split.train, fold_dir), model_config,
                          optim_config, run, placement, fold_dir, on_epoch=on_epoch)
      bar.update(run.n_epochs - len(result.history))  # epochs skipped by an early stop
      atomic.write_json(done_path, result.to_record())
      results.append(result)
      write_metrics_csv(out_dir, [r.history for r in results])
      logger.info("fold %d: test acc %s, balanced acc %s, AUC %s (%s)", k,
                  *map(format_value, (result.test_acc, result.balanced_acc, result.test_auc)),
                  "no epoch selected: the last epoch's model" if result.tested == LAST_EPOCH
                  else "the linear path alone" if result.tested == PATH_ALONE
                  else f"best epoch {result.best_epoch}")
  return results
