"""The optimiser step, the plateau scheduler and the train step against PyTorch's definitions."""

from __future__ import annotations

import contextlib
import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from bench.torch_reference import SMALL, params_for, torch_model
from focal_jax import focal_loss
from stgnn_jax.config import RunConfig
from stgnn_jax.data import synthetic, synthetic_scans
from stgnn_jax.errors import CheckpointMismatchError, InputError
from stgnn_jax.inference import apply_model
from stgnn_jax.input_pipeline import (
  EmbeddedBatch,
  Subjects,
  iterate_batches,
  pack_subjects,
)
from stgnn_jax.train.checkpoints import save_checkpoint
from stgnn_jax.train.driver import train_epoch
from stgnn_jax.train.engines import OneMember
from stgnn_jax.train.loop import FrozenEncoderScans
from stgnn_jax.train.optimizer import (
  create_optimizer,
  plateau_scheduler,
  plateau_step,
  plateau_value,
  set_learning_rate,
)
from stgnn_jax.train.pretrain import pretrain_encoder, read_pretrained_encoder
from stgnn_jax.train.sharding import Placement
from stgnn_jax.train.state import (
  TrainState,
  auto_class_weights,
  auto_focal_alpha,
  replace_encoder,
)
from stgnn_jax.train.step import loss_terms, minority_weight, train_step
from tests.helpers import reference_model, reference_optim


@contextlib.contextmanager
def count_compilations(function_name: str):
  """Counts XLA compilations of `jit(function_name)` from JAX's compile log."""
  records = []

  class Collect(logging.Handler):
    def emit(self, record):
      if f"Compiling jit({function_name})" in record.getMessage():
        records.append(record)

  handler = Collect(level=logging.DEBUG)
  logger = logging.getLogger("jax")
  logger.addHandler(handler)
  try:
    with jax.log_compiles(True):
      yield lambda: len(records)
  finally:
    logger.removeHandler(handler)


def test_optimizer_steps_match_torch_adam_with_l2_and_clipping():
  rng = np.random.default_rng(0)
  shapes = {"w": (5, 3), "b": (3,), "v": (7,)}
  params = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  grads_per_step = [{k: (rng.normal(size=s) * scale).astype(np.float32)
                     for k, s in shapes.items()} for scale in (3.0, 0.1, 2.0)]
  cfg = reference_optim(lr=1e-2)

  torch_params = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in params.items()}
  opt = torch.optim.Adam(torch_params.values(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                         weight_decay=1e-4)
  tx = create_optimizer(cfg)
  state = tx.init(params)
  ours = {k: jnp.asarray(v) for k, v in params.items()}
  for step, grads in enumerate(grads_per_step):
    opt.zero_grad()
    for k, p in torch_params.items():
      p.grad = torch.from_numpy(grads[k].copy())
    torch.nn.utils.clip_grad_norm_(torch_params.values(), 1.0)
    opt.step()
    updates, state = tx.update({k: jnp.asarray(v) for k, v in grads.items()}, state, ours)
    ours = optax.apply_updates(ours, updates)
    for k in shapes:
      np.testing.assert_allclose(np.asarray(ours[k]), torch_params[k].detach().numpy(),
                                 rtol=1e-5, atol=1e-6, err_msg=f"{k} after step {step}")


def test_learning_rate_change_matches_torch_param_group_change():
  params = {"w": np.linspace(-1, 1, 6).astype(np.float32)}
  grad = {"w": np.linspace(0.3, -0.2, 6).astype(np.float32)}
  p = torch.nn.Parameter(torch.from_numpy(params["w"].copy()))
  opt = torch.optim.Adam([p], lr=1e-3, weight_decay=1e-4)
  tx = create_optimizer(reference_optim())
  state, ours = tx.init(params), {"w": jnp.asarray(params["w"])}
  for lr in (1e-3, 5e-4, 2.5e-4):
    for group in opt.param_groups:
      group["lr"] = lr
    state = set_learning_rate(state, lr)
    p.grad = torch.from_numpy(grad["w"].copy())
    torch.nn.utils.clip_grad_norm_([p], 1.0)
    opt.step()
    updates, state = tx.update(grad, state, ours)
    ours = optax.apply_updates(ours, updates)
  np.testing.assert_allclose(np.asarray(ours["w"]), p.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_plateau_scheduler_matches_torch_reduce_lr_on_plateau():
  cfg = reference_optim(lr=1e-3, plateau_patience=3, min_lr=2e-4)
  balanced_acc = [0.5, 0.6, 0.6, 0.55, 0.6, 0.59, 0.7, 0.7, 0.7, 0.7, 0.7, 0.65, 0.6, 0.6, 0.6,
                  0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
  p = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.Adam([p], lr=cfg.lr)
  sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
      opt, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience,
      min_lr=cfg.min_lr)
  plateau = plateau_scheduler(cfg)
  state = plateau.init(jnp.zeros(()))
  for value in balanced_acc:
    sched.step(value)
    _, state = plateau.update(updates=jnp.zeros(()), state=state, value=jnp.asarray(-value))
    np.testing.assert_allclose(cfg.lr * float(state.scale), opt.param_groups[0]["lr"],
                               rtol=1e-6)
  assert opt.param_groups[0]["lr"] < cfg.lr  # the sequence did trigger reductions


@pytest.mark.parametrize("metric, mode", [("loss", "min"), ("auc", "max")])
def test_plateau_on_validation_loss_or_auc_matches_torch(metric, mode):
  cfg = reference_optim(lr=1e-3, plateau_patience=2, min_lr=1e-4, plateau_metric=metric)
  if metric == "loss":  # improvements smaller than PyTorch's relative 1e-4 do not count
    values = [0.5, 0.4, 0.39999, 0.39998, 0.3999, 0.41, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]
  else:
    values = [0.5, 0.6, 0.6, 0.60005, 0.59, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
  p = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.Adam([p], lr=cfg.lr)
  # PyTorch's threshold: relative 1e-4 for the loss, absolute 1e-4 for the AUC (see the docs of
  # plateau_scheduler).
  sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
      opt, mode=mode, factor=cfg.plateau_factor, patience=cfg.plateau_patience,
      min_lr=cfg.min_lr, threshold=1e-4, threshold_mode="rel" if metric == "loss" else "abs")
  state = plateau_scheduler(cfg).init(jnp.zeros(()))
  for value in values:
    sched.step(value)
    val = {"loss": value, "auc": value, "balanced_accuracy": 0.5}
    state = plateau_step(cfg, state, plateau_value(cfg, val))
    np.testing.assert_allclose(cfg.lr * float(state.scale), opt.param_groups[0]["lr"],
                               rtol=1e-6)
  assert opt.param_groups[0]["lr"] < cfg.lr
  assert plateau_value(reference_optim(plateau_metric="auc"), {"auc": None}) == -0.5


def test_auto_focal_alpha_is_the_stable_share_and_a_traced_value():
  assert auto_focal_alpha(np.array([0, 0, 0, 1])) == 0.75
  assert auto_focal_alpha(np.array([1, 1, 0])) == pytest.approx(1 / 3)
  with pytest.raises(ValueError, match="training labels"):
    auto_focal_alpha(np.array([], int))
  config = reference_model(input_dim=12, gnn_hidden_dim=8, output_dim=8, lstm_hidden_dim=4,
                       gnn_dropout=0.0, lstm_dropout=0.0, classifier_dropout=0.0)
  with pytest.raises(ValueError, match="auto"):
    TrainState.create({}, config, reference_optim(focal_alpha="auto"))
  with pytest.raises(ValueError, match="focal_alpha"):
    reference_optim(focal_alpha="half")
  rng = np.random.default_rng(4)
  batch = pack_subjects([rng.random((n, 12, 12)) < 0.4 for n in (1, 2, 3, 2)],
                        labels=[0, 1, 0, 0])

  params = params_for(config)
  train_step.clear_cache()
  losses = {}
  with count_compilations("train_step") as compiled:
    for alpha in (0.75, 0.6, 0.9):
      state = TrainState.create(params, config, reference_optim(focal_alpha="auto"),
                                focal_alpha=alpha)
      _, metrics = train_step(state, batch, jax.random.key(0))
      losses[alpha] = float(metrics["criterion"])
  assert compiled() == 1  # one fold's alpha or another's: the same executable
  # The focal loss is linear in alpha_t: 1 converter (weight alpha) and 3 stable (1 - alpha).
  fixed = {alpha: float(train_step(TrainState.create(params, config, reference_optim(
      focal_alpha=alpha)), batch, jax.random.key(0))[1]["criterion"]) for alpha in losses}
  for alpha in losses:
    assert losses[alpha] == pytest.approx(fixed[alpha], rel=1e-6)
  assert losses[0.9] != pytest.approx(losses[0.6])


def test_minority_forcing_weight_and_loss_terms():
  assert float(minority_weight(jnp.asarray(0), 20)) == pytest.approx(0.1)
  assert float(minority_weight(jnp.asarray(10), 20)) == pytest.approx(0.05)
  assert float(minority_weight(jnp.asarray(20), 20)) == 0.0
  assert float(minority_weight(jnp.asarray(35), 20)) == 0.0
  assert float(minority_weight(jnp.asarray(0), 0)) == 0.0

  logits = np.array([[2.0, -1.0], [0.3, 0.1], [-1.0, 0.5], [0.0, 4.0], [9.0, 9.0]], np.float32)
  labels = np.array([0, 1, 1, 0, 1], np.int32)
  mask = np.array([True, True, True, True, False])  # the last row is padding

  class Batch:  # loss_terms reads only these fields
    pass

  batch = Batch()
  batch.labels, batch.subject_mask = jnp.asarray(labels), jnp.asarray(mask)
  state = TrainState.create({}, reference_model(), reference_optim()).at_epoch(5)
  terms = loss_terms(jnp.asarray(logits), batch, state)
  t_logits, t_labels = torch.from_numpy(logits[:4]), torch.from_numpy(labels[:4]).long()
  # The seed's focal loss (smoothing branch), written out for the 4 real rows.
  q = torch.nn.functional.one_hot(t_labels, 2).float() * (1 - 0.05) + 0.05 / 2
  ce = -(q * torch.log_softmax(t_logits, 1)).sum(1)
  alpha_t = torch.where(t_labels == 1, 0.9, 0.1)
  focal = (alpha_t * (1 - torch.exp(-ce)) ** 3.0 * ce).mean()
  converters = t_labels == 1
  forcing = torch.nn.functional.cross_entropy(t_logits[converters], t_labels[converters])
  expected = focal + 0.1 * (20 - 5) / 20 * forcing
  np.testing.assert_allclose(float(terms["criterion"]), float(focal), rtol=1e-5)
  np.testing.assert_allclose(float(terms["forcing_ce"]), float(forcing), rtol=1e-5)
  np.testing.assert_allclose(float(terms["loss"]), float(expected), rtol=1e-5)


def test_train_step_compiles_once_per_bucket_across_epochs():
  config = reference_model(input_dim=12, gnn_hidden_dim=8, output_dim=8, lstm_hidden_dim=4)
  rng = np.random.default_rng(2)
  lengths = rng.integers(1, 4, size=40)
  adjacency = [rng.random((n, 12, 12)) < 0.4 for n in lengths]
  labels = rng.integers(0, 2, size=40)

  def epoch_batches(epoch):
    order = np.random.default_rng([0, epoch]).permutation(40)
    return list(iterate_batches(adjacency, labels, None, batch_size=8, max_visits=3,
                                graph_multiple=8, order=order))


  state = TrainState.create(params_for(config), config, reference_optim())
  train_step.clear_cache()
  shapes = set()
  with count_compilations("train_step") as compiled:
    for epoch in range(2):
      for b, batch in enumerate(epoch_batches(epoch)):
        shapes.add(batch.graphs.adjacency.shape)
        state, metrics = train_step(state.replace(epoch=jnp.asarray(epoch, jnp.int32)), batch,
                                    jax.random.key(b))
        assert np.isfinite(float(metrics["loss"]))
  assert len(shapes) == 2  # the data does hit two graph buckets
  assert compiled() == len(shapes)
  assert int(state.step) == 10


def test_train_step_reduces_the_loss_on_a_fixed_batch():
  config = reference_model(input_dim=12, gnn_hidden_dim=8, output_dim=8, lstm_hidden_dim=4,
                       gnn_dropout=0.0, lstm_dropout=0.0, classifier_dropout=0.0)
  rng = np.random.default_rng(3)
  adjacency = [rng.random((n, 12, 12)) < 0.4 for n in (1, 2, 3, 2)]
  batch = pack_subjects(adjacency, labels=[0, 1, 0, 1])

  state = TrainState.create(params_for(config), config, reference_optim(lr=1e-2))
  losses = []
  for i in range(30):
    state, metrics = train_step(state, batch, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.5 * losses[0]


def test_encoder_pretraining_uses_only_the_given_subjects_and_returns_encoder_params(caplog):
  config = reference_model(input_dim=12, gnn_hidden_dim=8, output_dim=8, lstm_hidden_dim=4)
  rng = np.random.default_rng(5)
  adjacency = [rng.random((n, 12, 12)) < 0.4 for n in rng.integers(1, 4, size=30)]
  labels = np.array([i % 2 for i in range(30)])
  training_subjects = np.arange(20)  # subjects 20..29 play the test fold: never seen
  with caplog.at_level(logging.INFO, logger="stgnn_jax.train.pretrain"):
    encoder = pretrain_encoder(config, adjacency, labels, None, training_subjects, epochs=2,
                               seed=0, key=jax.random.key(0))
  expected = jax.tree.map(np.shape, params_for(config)["encoder"])
  assert jax.tree.map(np.shape, encoder) == expected
  scans = sum(len(adjacency[i]) for i in training_subjects)
  held_out = int(np.ceil(0.2 * scans))  # scikit-learn rounds the test share up
  assert f"{scans - held_out} training / {held_out} validation scans" in caplog.text


def test_pretrained_encoder_from_a_reference_pth_file(tmp_path):
  config = reference_model(**SMALL)
  model = torch_model(config, seed=1)
  path = tmp_path / "pretrained_gnn_encoder.pth"
  torch.save(model.encoder.state_dict(), path)
  encoder = read_pretrained_encoder(str(path), config)
  np.testing.assert_array_equal(
      encoder["convs_0"]["lin_l"]["kernel"],
      model.encoder.state_dict()["convs.0.lin_l.weight"].numpy().T)


def test_frozen_encoder_parameters_never_move():
  config = reference_model(input_dim=12, gnn_hidden_dim=8, output_dim=8, lstm_hidden_dim=4,
                       freeze_encoder=True)
  rng = np.random.default_rng(6)
  batch = pack_subjects([rng.random((n, 12, 12)) < 0.4 for n in (1, 2, 3, 2)],
                        labels=[0, 1, 0, 1])
  start = TrainState.create(params_for(config), config, reference_optim(lr=1e-2))
  state = start
  for i in range(3):
    state, _ = train_step(state, batch, jax.random.key(i))
  # Weight decay must not reach the encoder either (torch's Adam skips grad-less parameters).
  jax.tree.map(np.testing.assert_array_equal, state.params["encoder"], start.params["encoder"])
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), state.params["classifier"],
                       start.params["classifier"])
  assert all(jax.tree.leaves(moved))


def _small_cohort_subjects(num_subjects: int, seed: int):
  """A `Subjects` of a tiny synthetic cohort (24 regions) and its RunConfig."""

  run = RunConfig(batch_size=8, graph_multiple=8, max_visits=4)
  scans = synthetic.make_synthetic_cohort(num_subjects=num_subjects, num_regions=24, seed=seed)
  cohort = synthetic_scans.cohort_from_scans(scans, max_visits=run.max_visits)
  return synthetic, run, Subjects(cohort, run, reference_model(input_dim=24))  # one-hot features


def test_frozen_encoder_epoch_on_precomputed_embeddings_equals_the_graph_batches():
  """Embedding every scan once per epoch and stepping on `EmbeddedBatch`es gives the same
  training as running the frozen encoder inside each step (dropout off, so both paths see the
  same numbers); it compiles train_step once instead of once per graph bucket."""

  _, run, subjects = _small_cohort_subjects(40, seed=3)
  config = reference_model(input_dim=24, gnn_hidden_dim=16, output_dim=16, lstm_hidden_dim=8,
                       freeze_encoder=True, gnn_dropout=0.0, lstm_dropout=0.0,
                       classifier_dropout=0.0)
  train_idx = np.arange(3, 40, 2)  # 19 subjects: the last batch is padded
  placement = Placement(None, run.batch_size, run.eval_batch_size, run.graph_multiple)
  start = placement.replicate(TrainState.create(params_for(config), config, reference_optim()))
  frozen_scans = FrozenEncoderScans(subjects, train_idx, run, placement)
  orders = [np.random.default_rng([1, epoch]).permutation(train_idx) for epoch in range(2)]
  graph_buckets = {b.graphs.adjacency.shape[0]
                   for order in orders for b in subjects.batches(order, run.batch_size, run)}
  results = {}
  for name, scans in (("graphs", None), ("embeddings", frozen_scans)):
    state, losses = start, []
    train_step.clear_cache()
    with count_compilations("train_step") as compiled:
      for epoch in range(2):
        state, metrics = train_epoch(OneMember(placement), state, epoch, subjects,
                                     orders[epoch], run, placement, jax.random.key(epoch), scans)
        losses += [float(m["loss"]) for m in metrics]
    results[name] = (state, losses, compiled())
  (graph_state, graph_losses, graph_compiles), (emb_state, emb_losses, emb_compiles) = (
      results["graphs"], results["embeddings"])
  np.testing.assert_allclose(emb_losses, graph_losses, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               emb_state.params, graph_state.params)
  assert emb_compiles == 1 and graph_compiles == len(graph_buckets) >= 2
  # Every scan of the training subjects is embedded exactly once per epoch.
  table = frozen_scans.table
  assert sum(len(time) for _, time in table.chunks) == -(-int(table.lengths.sum()) // 8) * 8


def test_train_step_refuses_embeddings_when_the_encoder_is_trained():
  config = reference_model(input_dim=12, gnn_hidden_dim=8, output_dim=8, lstm_hidden_dim=4)
  state = TrainState.create(params_for(config), config, reference_optim())
  batch = EmbeddedBatch(embeddings=np.zeros((4, 16), np.float32),
                        visit_index=np.zeros((2, 3), np.int32), lengths=np.array([1, 2]),
                        labels=np.array([0, 1]), subject_mask=np.array([True, True]))
  with pytest.raises(ValueError, match="carry no gradient to the encoder"):
    train_step(state, batch, jax.random.key(0))


def test_a_pretrained_encoder_of_another_architecture_names_the_parameter(tmp_path):
  config = reference_model(**SMALL)
  params = params_for(config)
  wider = params_for(dataclasses.replace(config, gnn_hidden_dim=32))
  with pytest.raises(CheckpointMismatchError,
                     match=r"has 'convs_0/lin_l/bias' of shape \(32,\), this model needs "
                     r"\(16,\)"):
    replace_encoder(params, wider["encoder"])
  # A checkpoint trained with other (shape-neutral) settings loads, with a warning naming them.
  path = tmp_path / "encoder.msgpack"
  save_checkpoint(path, {"encoder": params["encoder"]},
                  dataclasses.replace(config, gnn_activation="relu"))
  with pytest.warns(UserWarning, match=r"gnn_activation='relu' \(this run: 'elu'\)"):
    encoder = read_pretrained_encoder(str(path), config)
  assert jax.tree.structure(encoder) == jax.tree.structure(params["encoder"])


class NotATensor:
  """Something `torch.load(weights_only=True)` refuses to unpickle."""


def test_an_untrusted_pth_file_is_refused_with_the_flag_that_allows_it(tmp_path):
  path = tmp_path / "odd.pth"
  torch.save({"encoder": {}, "extra": NotATensor()}, path)
  with pytest.raises(InputError, match=r"--trust_checkpoint \(trust_checkpoint=True in Python\)"):
    read_pretrained_encoder(str(path), reference_model(**SMALL))


def test_schedules_change_gamma_and_smoothing_without_compiling_again():
  config = reference_model(input_dim=12, gnn_hidden_dim=8, output_dim=8, lstm_hidden_dim=4,
                       gnn_dropout=0.0, lstm_dropout=0.0, classifier_dropout=0.0)
  optim = reference_optim(lr=1e-9, min_lr=0.0, gamma_schedule="1@0,2@2,5@3",
                      smoothing_schedule="0@0,0.2@3",
                      minority_focus_epochs=0)
  assert [optim.gamma_at(e) for e in range(5)] == [1.0, 1.0, 2.0, 5.0, 5.0]
  assert [optim.smoothing_at(e) for e in range(5)] == [0.0, 0.0, 0.0, 0.2, 0.2]
  rng = np.random.default_rng(4)
  batch = pack_subjects([rng.random((n, 12, 12)) < 0.4 for n in (1, 2, 3, 2)],
                        labels=[0, 1, 0, 0])
  state = TrainState.create(params_for(config), config, optim)
  train_step.clear_cache()
  with count_compilations("train_step") as compiled:
    for epoch in range(5):
      staged = state.at_epoch(epoch)
      _, metrics = train_step(staged, batch, jax.random.key(0))
      logits = apply_model(state.params, config, batch)
      expected = focal_loss(logits, batch.labels, 0.9, optim.gamma_at(epoch),
                            optim.smoothing_at(epoch), where=batch.subject_mask)
      np.testing.assert_allclose(float(metrics["criterion"]), float(expected), rtol=1e-5)
  assert compiled() == 1  # every stage runs the same executable


@pytest.mark.parametrize("loss", ["ce", "weighted_ce"])
def test_cross_entropy_losses_in_the_train_step(loss):
  config = reference_model(input_dim=12, gnn_hidden_dim=8, output_dim=8, lstm_hidden_dim=4,
                       gnn_dropout=0.0, lstm_dropout=0.0, classifier_dropout=0.0)
  labels = np.array([0, 1, 0, 0])
  optim = reference_optim(loss=loss, minority_focus_epochs=0)
  if loss == "weighted_ce":
    with pytest.raises(ValueError, match="auto_class_weights"):
      TrainState.create({}, config, optim)
  weights = auto_class_weights(labels)
  assert weights == pytest.approx((4 / 6, 4 / 2))  # n / (2 n_c)
  rng = np.random.default_rng(5)
  batch = pack_subjects([rng.random((n, 12, 12)) < 0.4 for n in (1, 2, 3, 2)], labels=labels)
  params = params_for(config)
  state = TrainState.create(params, config, optim, class_weights=weights)
  _, metrics = train_step(state, batch, jax.random.key(0))
  logits = torch.from_numpy(np.asarray(apply_model(params, config, batch))[:4]).double()
  expected = torch.nn.functional.cross_entropy(
      logits, torch.from_numpy(labels), label_smoothing=0.05,
      weight=torch.tensor(weights, dtype=torch.float64) if loss == "weighted_ce" else None)
  np.testing.assert_allclose(float(metrics["criterion"]), float(expected), rtol=1e-5)
  with pytest.raises(ValueError, match="has no training subject"):
    auto_class_weights(np.zeros(5, int))
