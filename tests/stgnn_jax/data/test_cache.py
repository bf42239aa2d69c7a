"""Tests of `stgnn_jax.data.cache`: the stored cohort, and the memory-mapped scan store that
`--scan_store memmap` trains from, against the same cohort in memory (the cohort, a fold's
batches and statistics, a fold's training)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import train
from stgnn_jax.config import ModelConfig, OptimConfig, RunConfig
from stgnn_jax.data import FC_DIR, CohortError, load_cohort, synthetic
from stgnn_jax.data.cache import transient_store
from stgnn_jax.data.reference_format import HarmonizeColumns, scan_file_name
from stgnn_jax.data.synthetic_scans import cohort_from_scans
from stgnn_jax.data.writer import write_visit_tables
from stgnn_jax.input_pipeline import Subjects, make_folds
from stgnn_jax.train import cross_validation
from stgnn_jax.train.loop import setup_fold
from stgnn_jax.train.state import input_statistics
from stgnn_jax.train.step import train_step

SMALL = dict(num_subjects=24, num_regions=12, max_visits=4, seed=5)


def write_with_sites(root):
  """The synthetic cohort SMALL in the reference's format, with a Site column (so that a load
  with site harmonisation keeps each scan's whole measure: a third scan array)."""
  scans = synthetic.write_synthetic(root, **SMALL)
  write_visit_tables(root, scans, {"Site": ["A" if i % 2 else "B"
                                            for i in range(len(scans.subject_ids))]})
  return scans


def scan_arrays(cohort):
  return [a for s in cohort.subjects for a in (s.adjacency, s.fc, s.measure) if a is not None]


def test_a_memory_mapped_cohort_equals_the_one_in_memory(tmp_path):
  write_with_sites(tmp_path)
  sites = HarmonizeColumns(site=True)
  in_memory = load_cohort(tmp_path, harmonize=sites, use_cache=False)
  first = load_cohort(tmp_path, harmonize=sites, memory_map=True)  # built into the store
  again = load_cohort(tmp_path, harmonize=sites, memory_map=True)  # read from it
  loaded = load_cohort(tmp_path, harmonize=sites)  # the same store, read whole
  assert in_memory.measure_kind == "fc"
  for cohort in (first, again, loaded):
    assert cohort == in_memory
    assert cohort.fingerprint() == in_memory.fingerprint()
  (entry,) = (tmp_path / ".stgnn_cache").iterdir()
  assert sorted(p.name for p in entry.iterdir()) == [
      "adjacency.npy", "cohort.npz", "fc.npy", "measures.npy"]
  np.testing.assert_array_equal(np.load(entry / "fc.npy"),
                                np.concatenate([s.fc for s in in_memory.subjects]))
  for array in scan_arrays(first) + scan_arrays(again):
    assert isinstance(array, np.memmap) and not array.flags.writeable
  for array in scan_arrays(loaded):
    assert not isinstance(array, np.memmap) and not array.flags.writeable
  # Views of one array read whole, not a copy per subject.
  assert np.shares_memory(loaded.subjects[0].fc.base, loaded.subjects[1].fc)


def test_a_fold_gives_the_same_batches_and_statistics_from_either_store(tmp_path):
  synthetic.write_synthetic(tmp_path, **SMALL)
  run = RunConfig(data_root=str(tmp_path), batch_size=5, graph_multiple=4, max_visits=4)
  model = ModelConfig()  # profile_change node features, computed batch by batch
  memory = Subjects(load_cohort(tmp_path, use_cache=False), run, model)
  mapped = Subjects(load_cohort(tmp_path, memory_map=True), run, model)
  fold = make_folds(memory.labels, 3, seed=0)[0]
  for indices in fold:
    for a, b in zip(memory.batches(indices, run.batch_size, run),
                    mapped.batches(indices, run.batch_size, run), strict=True):
      assert jax.tree.structure(a) == jax.tree.structure(b)
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
  stats = input_statistics(mapped.features.subset(fold.train))
  # Streamed subject by subject, yet numpy's mean and std of the concatenated scans to the bit.
  stacked = np.concatenate([np.asarray(memory.features[i], np.float64) for i in fold.train])
  np.testing.assert_array_equal(stats["mean"], stacked.mean(axis=0).astype(np.float32))
  std = stacked.std(axis=0)
  np.testing.assert_array_equal(
      stats["scale"], np.where(std > 1e-6, 1 / np.maximum(std, 1e-6), 0).astype(np.float32))
  np.testing.assert_array_equal(mapped.last_fc, memory.last_fc)
  np.testing.assert_array_equal(mapped.first_fc, memory.first_fc)


def test_a_training_step_of_the_default_recipe_is_the_same_from_either_store(tmp_path,
                                                                              monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  model = ModelConfig(gnn_hidden_dim=8, output_dim=8, lstm_hidden_dim=4)  # linear path on
  run = RunConfig(synthetic_subjects=40, synthetic_regions=12, num_folds=2, batch_size=8,
                  graph_multiple=32)
  steps = []
  for store in ("memory", "memmap"):
    setup = cross_validation.prepare_run(model, OptimConfig(),
                                         dataclasses.replace(run, scan_store=store))
    assert isinstance(setup.cohort.subjects[0].fc, np.memmap) == (store == "memmap")
    # The fold's statistics, linear path (cross-fitted offsets) and initial state, then a step.
    fold, state = setup_fold(0, setup.folds[0], setup.subjects, setup.model_config,
                             setup.optim_config, setup.run, setup.placement, str(tmp_path))
    batch = next(fold.subjects.batches(fold.train_idx, run.batch_size, setup.run))
    state, metrics = train_step(state, batch, jax.random.key(0))
    steps.append(jax.device_get((state.params, metrics)))
  assert np.isfinite(steps[0][1]["loss"])
  for a, b in zip(jax.tree.leaves(steps[0]), jax.tree.leaves(steps[1]), strict=True):
    np.testing.assert_array_equal(a, b)
  # The built-in cohort's store lives only as long as the process maps it: no folder is left.
  assert not list((tmp_path / "cache" / "stgnn_jax").iterdir())


def test_a_store_built_from_scans_in_memory_equals_the_cohort_in_memory(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  scans = synthetic.make_synthetic_cohort(**SMALL)
  with transient_store() as store:
    mapped = cohort_from_scans(scans, max_visits=2, store=store)
  assert mapped == cohort_from_scans(scans, max_visits=2)
  assert all(isinstance(s.fc, np.memmap) for s in mapped.subjects)
  assert not list((tmp_path / "stgnn_jax").iterdir())  # deleted once mapped


def test_a_failed_load_leaves_no_store_and_an_unwritable_store_is_named(tmp_path):
  scans = synthetic.write_synthetic(tmp_path / "data", **SMALL)
  np.savez(tmp_path / "data" / FC_DIR / scan_file_name(scans.subject_ids[-1], 1),
           fc_matrix=np.full((12, 12), np.nan))
  with pytest.raises(CohortError, match="non-finite"):
    load_cohort(tmp_path / "data", memory_map=True)
  assert not list((tmp_path / "data" / ".stgnn_cache").iterdir())
  (tmp_path / "blocker").write_text("")
  with pytest.raises(CohortError, match="no writable folder for the memory-mapped scan store.*"
                                        "--scan_store memory"):
    load_cohort(tmp_path / "data", memory_map=True, cache_dir=tmp_path / "blocker" / "cache")
  with pytest.raises(SystemExit):
    train.build_parser().parse_args(["--scan_store", "disk"])
