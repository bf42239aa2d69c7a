"""The default recipe's training step (`train_step` on `ModelConfig()`, `OptimConfig()`) against
its PyTorch + PyG twin (bench/torch_default.py), from the same weights on the same batches."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax
import optax.tree_utils
import pytest
import torch

from bench.torch_default import TorchDefaultStep, TorchDefaultSTGNN, twin_state_dict
from bench.torch_reference import pyg_batch
from stgnn_jax.config import ModelConfig, OptimConfig, RunConfig
from stgnn_jax.data import synthetic, synthetic_scans
from stgnn_jax.input_pipeline import FoldSplit, Subjects
from stgnn_jax.nn.initializers import uniform
from stgnn_jax.train.engines import OneMember
from stgnn_jax.train.loop import setup_fold
from stgnn_jax.train.sharding import Placement
from stgnn_jax.train.step import train_step

REGIONS, SUBJECTS, BATCH = 12, 8, 3


def adam_moments(opt_state: optax.OptState, params: dict) -> tuple[dict, dict]:
  """Adam's first and second moments of every parameter (0 for the masked constants)."""
  def full(moment):
    return jax.tree.map(lambda p, m: np.zeros_like(p) if isinstance(m, optax.MaskedNode) else m,
                        params, moment)
  return (full(optax.tree_utils.tree_get(opt_state, "mu")),
          full(optax.tree_utils.tree_get(opt_state, "nu")))


def assert_state_dicts_close(got: dict, expected: dict, names, **tolerance) -> None:
  for name in names:
    np.testing.assert_allclose(got[name].numpy(), expected[name].numpy(), err_msg=name,
                               **tolerance)


def test_default_recipe_steps_equal_the_pytorch_twin():
  """Three steps of the default recipe, set up as train.py sets up a fold (input statistics and
  linear path of the training subjects, their cross-fitted offsets, α of their class balance),
  give the twin's losses, gradient norms, Adam moments and parameters.

  Dropout is off in both (rates 0): the two draw different masks. The classifier's last layer
  starts at zero in the recipe, which would leave every earlier layer without gradient in the
  first step; here it starts random, so each of the three steps checks every gradient. Step k
  runs at epoch k, so the minority forcing's weight changes between them. Tolerances (float32
  in both): losses rtol 1e-5, gradient norms rtol 1e-4, Adam moments rtol 1e-4 (atol 3e-9 /
  1e-12 for entries near 0), parameters rtol 1e-5, atol 3e-7 (an Adam update is ≈ lr = 3e-4).
  """
  # One graph bucket (batch_size * max_visits slots): train_step compiles once.
  run = RunConfig(batch_size=BATCH, graph_multiple=BATCH * 4, max_visits=4, seed=5)
  config = ModelConfig(input_dim=REGIONS, input_dropout=0.0, gnn_dropout=0.0,
                       classifier_dropout=0.0, lstm_dropout=0.0)
  optim = OptimConfig()
  scans = synthetic.make_synthetic_cohort(num_subjects=SUBJECTS, num_regions=REGIONS, seed=2,
                                          threshold=run.threshold)
  subjects = Subjects(synthetic_scans.cohort_from_scans(scans, max_visits=run.max_visits), run,
                      config)
  train_idx = np.arange(SUBJECTS)
  placement = Placement(None, run.batch_size, run.eval_batch_size, run.graph_multiple)
  fold, state = setup_fold(0, FoldSplit(train_idx, train_idx[:0], train_idx[:0]), subjects,
                           config, optim, run, placement, directory="")
  head = state.params["classifier"]["head_3"]
  assert not np.any(head["kernel"]) and np.any(state.params["linear_path"]["kernel"])
  head = {"kernel": uniform(0.125)(jax.random.key(7), head["kernel"].shape), "bias": head["bias"]}
  state = placement.replicate(state.replace(params=dict(
      state.params, classifier=dict(state.params["classifier"], head_3=head))))
  offsets = fold.subjects.offsets
  assert offsets is not None and np.any(offsets) and 0.5 < fold.focal_alpha < 1

  torch.manual_seed(0)
  model = TorchDefaultSTGNN(config).train()
  model.load_state_dict(twin_state_dict(state.params, config), strict=True)
  twin = TorchDefaultStep(model, optim, fold.focal_alpha)
  trainable = [name for name, _ in model.named_parameters()]
  assert "encoder.input_mean" not in trainable and "linear_path_weight" not in trainable

  order = np.random.default_rng(1).permutation(train_idx)
  batches = list(fold.subjects.batches(order, run.batch_size, run))
  groups = [order[s:s + BATCH] for s in range(0, SUBJECTS, BATCH)]
  assert len(batches) == len(groups) == 3 and len(groups[-1]) < BATCH  # a padded last batch
  for epoch, (batch, chosen) in enumerate(zip(batches, groups, strict=True)):
    state, metrics = train_step(OneMember(placement).stage(state, epoch), batch,
                                jax.random.key(epoch))
    expected = twin(pyg_batch([subjects.adjacency[i] for i in chosen],
                              features=[subjects.features[i] for i in chosen]),
                    torch.from_numpy(subjects.labels[chosen]).long(),
                    torch.from_numpy(offsets[chosen]), epoch)
    np.testing.assert_allclose(metrics["loss"], expected["loss"].numpy(), rtol=1e-5)
    np.testing.assert_allclose(metrics["grad_norm"], expected["grad_norm"].numpy(), rtol=1e-4)
    mu, nu = (twin_state_dict(m, config) for m in adam_moments(state.opt_state, state.params))
    adam = {name: twin.optimizer.state[p] for name, p in model.named_parameters()}
    assert_state_dicts_close(mu, {k: v["exp_avg"] for k, v in adam.items()}, trainable,
                             rtol=1e-4, atol=3e-9)
    assert_state_dicts_close(nu, {k: v["exp_avg_sq"] for k, v in adam.items()}, trainable,
                             rtol=1e-4, atol=1e-12)
    assert_state_dicts_close(twin_state_dict(state.params, config), model.state_dict(),
                             model.state_dict(), rtol=1e-5, atol=3e-7)


def test_the_twin_refuses_what_it_does_not_model():
  with pytest.raises(ValueError, match="graph_norm=True"):
    TorchDefaultSTGNN(dataclasses.replace(ModelConfig(), graph_norm=True))
  with pytest.raises(ValueError, match="onehot"):
    TorchDefaultSTGNN(ModelConfig.reference())
