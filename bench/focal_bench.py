"""Benchmark: focal_jax.focal_loss against the seed's PyTorch FocalLoss.

Times, in one process, the forward pass and value-and-grad (w.r.t. the logits)
of

  * ``focal_jax.focal_loss`` under ``jax.jit``,
  * a direct JAX transcription of the seed's formula under ``jax.jit`` (what
    the formulation work buys),
  * the seed's PyTorch formula in eager mode and under ``torch.compile``,

and one ``jnp.exp`` pass over the same logits, a floor for any softmax loss.
Prints medians in milliseconds and ratios as a markdown table.

  python bench/focal_bench.py            # full: batch 2^10, 2^14, 2^17, 2^20
  python bench/focal_bench.py --quick    # batch 2^10, 2^14, fewer repeats
  python bench/focal_bench.py --no-compile   # skip torch.compile (slow start)

This is a benchmark, not a test: numbers depend on the machine and its load.
"""

import argparse
import os
import platform
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

import focal_jax


class SeedFocalLoss(torch.nn.Module):
  """The seed's FocalLoss.forward, transcribed from its documentation."""

  def __init__(self, alpha=0.25, gamma=2.0, reduction="mean",
               label_smoothing=0.0):
    super().__init__()
    self.alpha = alpha
    self.gamma = gamma
    self.reduction = reduction
    self.label_smoothing = label_smoothing

  def forward(self, inputs, targets):
    if self.label_smoothing > 0:
      targets_one_hot = F.one_hot(targets, num_classes=inputs.size(1)).float()
      targets_one_hot = (targets_one_hot * (1 - self.label_smoothing)
                         + self.label_smoothing / inputs.size(1))
      ce_loss = -torch.sum(targets_one_hot * F.log_softmax(inputs, dim=1),
                           dim=1)
    else:
      ce_loss = F.cross_entropy(inputs, targets, reduction="none")
    pt = torch.exp(-ce_loss)
    alpha_t = torch.where(targets == 1, self.alpha, 1 - self.alpha)
    focal_loss = alpha_t * (1 - pt) ** self.gamma * ce_loss
    if self.reduction == "mean":
      return focal_loss.mean()
    if self.reduction == "sum":
      return focal_loss.sum()
    return focal_loss


def seed_transcription_jax(logits, labels, alpha, gamma, smoothing):
  """The seed's formula written directly in jax.numpy (one-hot, pow)."""
  num_classes = logits.shape[-1]
  one_hot = jax.nn.one_hot(labels, num_classes)
  targets = one_hot * (1 - smoothing) + smoothing / num_classes
  ce = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  pt = jnp.exp(-ce)
  alpha_t = jnp.where(labels == 1, alpha, 1 - alpha)
  return jnp.mean(alpha_t * (1 - pt) ** gamma * ce)


def median_ms(fn: Callable[[], object], min_reps: int, budget_s: float) -> float:
  """Median wall time of fn() in ms, after two warm-up calls."""
  fn()
  fn()
  times = []
  start = time.perf_counter()
  while len(times) < min_reps or (
      time.perf_counter() - start < budget_s and len(times) < 200):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return 1e3 * statistics.median(times)


def jax_timers(fn, logits, labels):
  forward = jax.jit(fn)
  value_and_grad = jax.jit(jax.value_and_grad(fn))
  return (lambda: jax.block_until_ready(forward(logits, labels)),
          lambda: jax.block_until_ready(value_and_grad(logits, labels)))


def torch_timers(fn, logits, labels):
  def forward():
    with torch.no_grad():
      return fn(logits, labels)

  def value_and_grad():
    x = logits.detach().requires_grad_(True)
    loss = fn(x, labels)
    return loss, torch.autograd.grad(loss, x)

  return forward, value_and_grad


def fmt(ms):
  return "n/a" if ms is None else (f"{ms:.3f}" if ms < 1 else f"{ms:.2f}")


def ratio(num, den):
  return "n/a" if num is None or den is None else f"{num / den:.1f}x"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="batch 2^10 and 2^14 only, fewer repeats")
  parser.add_argument("--no-compile", action="store_true",
                      help="skip torch.compile")
  parser.add_argument("--log2-batches", type=int, nargs="+",
                      help="override the batch sizes, as powers of 2")
  parser.add_argument("--classes", type=int, nargs="+", default=[2, 10])
  parser.add_argument("--alpha", type=float, default=0.25)
  parser.add_argument("--gamma", type=float, default=2.0)
  parser.add_argument("--smoothing", type=float, default=0.0)
  args = parser.parse_args()

  cores = os.cpu_count() or 1
  torch.set_num_threads(cores)
  batches = [2**10, 2**14] if args.quick else [2**10, 2**14, 2**17, 2**20]
  if args.log2_batches:
    batches = [2**b for b in args.log2_batches]
  classes = args.classes
  min_reps, budget_s = (5, 0.2) if args.quick else (10, 0.6)
  hyper = dict(alpha=args.alpha, gamma=args.gamma, smoothing=args.smoothing)

  print(f"# focal loss benchmark ({'quick' if args.quick else 'full'})\n")
  print(f"- machine: {platform.processor() or platform.machine()}, "
        f"{cores} CPU cores, JAX devices {jax.devices()}")
  print(f"- torch {torch.__version__}, torch.set_num_threads({cores}) so both "
        f"libraries may use all {cores} cores; jax {jax.__version__}")
  print(f"- alpha={args.alpha}, gamma={args.gamma}, smoothing={args.smoothing},"
        " reduction='mean', float32, logits ~ 2 N(0, 1); median of >= "
        f"{min_reps} runs after 2 warm-ups")
  print("- value-and-grad is w.r.t. the logits; 'exp floor' is one jnp.exp "
        "over the same logits\n")

  seed = SeedFocalLoss(args.alpha, args.gamma, "mean", args.smoothing)
  compiled, compile_error = None, None
  if not args.no_compile:
    try:
      compiled = torch.compile(seed)
    except Exception as e:  # pylint: disable=broad-except
      compile_error = f"{type(e).__name__}: {e}"

  def ours(z, y):
    return focal_jax.focal_loss(z, y, **hyper)

  def transcription(z, y):
    return seed_transcription_jax(z, y, **hyper)

  rows = []
  rng = np.random.default_rng(0)
  for num_classes in classes:
    for batch in batches:
      z_np = (2 * rng.standard_normal((batch, num_classes))).astype(np.float32)
      p = [0.7, 0.3] if num_classes == 2 else None
      y_np = rng.choice(num_classes, size=batch, p=p).astype(np.int32)
      z, y = jnp.asarray(z_np), jnp.asarray(y_np)
      zt, yt = torch.from_numpy(z_np), torch.from_numpy(y_np).long()

      exp = jax.jit(jnp.exp)
      floor = median_ms(lambda: jax.block_until_ready(exp(z)), min_reps,
                        budget_s)
      times = {}
      for name, timers in (
          ("focal_jax", jax_timers(ours, z, y)),
          ("jax transcription", jax_timers(transcription, z, y)),
          ("torch eager", torch_timers(seed, zt, yt)),
      ):
        times[name] = [median_ms(t, min_reps, budget_s) for t in timers]
      times["torch.compile"] = [None, None]
      if compiled is not None:
        try:
          times["torch.compile"] = [
              median_ms(t, min_reps, budget_s)
              for t in torch_timers(compiled, zt, yt)]
        except Exception as e:  # pylint: disable=broad-except
          compile_error = f"{type(e).__name__}: {str(e).splitlines()[0]}"
          compiled = None
      for i, pass_name in enumerate(("forward", "value+grad")):
        t = {k: v[i] for k, v in times.items()}
        rows.append(
            f"| 2^{int(np.log2(batch))} | {num_classes} | {pass_name} "
            f"| {fmt(t['focal_jax'])} | {fmt(t['jax transcription'])} "
            f"| {fmt(t['torch eager'])} | {fmt(t['torch.compile'])} "
            f"| {fmt(floor)} "
            f"| {ratio(t['torch eager'], t['focal_jax'])} "
            f"| {ratio(t['torch.compile'], t['focal_jax'])} "
            f"| {ratio(t['jax transcription'], t['focal_jax'])} "
            f"| {ratio(t['focal_jax'], floor)} |")
      print(f"done: batch 2^{int(np.log2(batch))}, C={num_classes}",
            flush=True)

  print("\n| batch | C | pass | focal_jax ms | JAX transcription ms "
        "| torch eager ms | torch.compile ms | exp floor ms "
        "| eager / focal_jax | compile / focal_jax "
        "| transcription / focal_jax | focal_jax / exp floor |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  print("\n".join(rows))
  if args.no_compile:
    print("\ntorch.compile: n/a (skipped with --no-compile)")
  elif compile_error:
    print(f"\ntorch.compile: n/a ({compile_error})")


if __name__ == "__main__":
  main()
