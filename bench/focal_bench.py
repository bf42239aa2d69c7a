"""Benchmark: focal_jax.focal_loss against the seed's PyTorch FocalLoss.

Times, in one process, the forward pass and value-and-grad (w.r.t. the logits)
of

  * ``focal_jax.focal_loss`` under ``jax.jit``,
  * a direct JAX transcription of the seed's formula under ``jax.jit`` (what
    the formulation buys),
  * the seed's PyTorch formula in eager mode and under ``torch.compile``,

and one ``jnp.exp`` pass over the same logits, a floor for any softmax loss.
Prints medians (and, since a shared machine is noisy, minima) in milliseconds
and ratios as markdown tables, then checks the targets of issue 2.

  python -m bench.focal_bench              # full: batch 2^10, 2^14, 2^17, 2^20
  python -m bench.focal_bench --quick      # batch 2^10 and 2^14, fewer runs
  python -m bench.focal_bench --no-compile # skip torch.compile (slow start)

Run from the repository root after ``pip install -e .`` (or with
``PYTHONPATH=.``). This is a benchmark, not a test: its numbers depend on the
machine and on what else runs on it, so the load average is printed too.
"""

import argparse
import os
import platform
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

import focal_jax
from bench.torch_reference import SeedFocalLoss


def seed_transcription_jax(logits, labels, alpha, gamma, smoothing):
  """The seed's formula written directly in jax.numpy (one-hot, pow)."""
  num_classes = logits.shape[-1]
  one_hot = jax.nn.one_hot(labels, num_classes)
  targets = one_hot * (1 - smoothing) + smoothing / num_classes
  ce = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  pt = jnp.exp(-ce)
  alpha_t = jnp.where(labels == 1, alpha, 1 - alpha)
  return jnp.mean(alpha_t * (1 - pt) ** gamma * ce)


def block_times(
    timers: dict[str, Callable[[], object]], rounds: int, budget_s: float
) -> dict[str, np.ndarray]:
  """Seconds per call of each timer: `rounds` rounds of one block per timer.

  Each timer runs in a block of consecutive calls, after a pause that lets the
  other library's worker threads go idle: interleaving single calls of JAX and
  PyTorch makes each pay for the other's spinning thread pool (a 2^10 PyTorch
  step then takes tens of milliseconds). Several rounds spread bursts of load
  from other processes over all implementations. Two warm-up calls precede
  each block.
  """
  times = {name: [] for name in timers}
  per_block_s = budget_s / (rounds * len(timers))
  for _ in range(rounds):
    for name, fn in timers.items():
      time.sleep(0.02)
      fn()
      fn()
      start = time.perf_counter()
      while True:
        t = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - t)
        if time.perf_counter() - start > per_block_s and len(times[name]) >= 3:
          break
  return {name: np.array(t) for name, t in times.items()}


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


def fmt(ms: float | None) -> str:
  if ms is None:
    return "n/a"
  return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}"


def ratio(num: float | None, den: float | None) -> str:
  return "n/a" if num is None or den is None else f"{num / den:.1f}x"


IMPLEMENTATIONS = ("focal_jax", "JAX transcription", "torch eager",
                   "torch.compile")


def table(results, statistic: str) -> str:
  """Markdown table of one statistic ("median" or "min") over all results."""
  lines = [
      "| batch | C | pass | focal_jax ms | JAX transcription ms "
      "| torch eager ms | torch.compile ms | exp floor ms "
      "| eager / focal_jax | compile / focal_jax "
      "| transcription / focal_jax | focal_jax / exp floor |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for (log2_batch, num_classes, pass_name), stats in results.items():
    t = {k: (None if v is None else v[statistic]) for k, v in stats.items()}
    lines.append(
        f"| 2^{log2_batch} | {num_classes} | {pass_name} "
        f"| {fmt(t['focal_jax'])} | {fmt(t['JAX transcription'])} "
        f"| {fmt(t['torch eager'])} | {fmt(t['torch.compile'])} "
        f"| {fmt(t['exp floor'])} "
        f"| {ratio(t['torch eager'], t['focal_jax'])} "
        f"| {ratio(t['torch.compile'], t['focal_jax'])} "
        f"| {ratio(t['JAX transcription'], t['focal_jax'])} "
        f"| {ratio(t['focal_jax'], t['exp floor'])} |")
  return "\n".join(lines)


def check_targets(results, statistic: str) -> list[str]:
  """Issue 2's targets for value-and-grad, under one statistic."""
  targets = [
      ("eager / focal_jax at 2^20 x 2 >= 10", (20, 2), "torch eager", 10.0),
      ("eager / focal_jax at 2^10 x 2 >= 5", (10, 2), "torch eager", 5.0),
      ("eager / focal_jax at 2^20 x 10 >= 3", (20, 10), "torch eager", 3.0),
      ("focal_jax / exp floor at 2^20 x 2 <= 3 (aim)", (20, 2), "exp floor",
       3.0),
  ]
  lines = []
  for text, (log2_batch, num_classes), other, bound in targets:
    stats = results.get((log2_batch, num_classes, "value+grad"))
    if stats is None:
      continue
    ours, theirs = stats["focal_jax"][statistic], stats[other][statistic]
    if other == "exp floor":
      value, met = ours / theirs, ours / theirs <= bound
    else:
      value, met = theirs / ours, theirs / ours >= bound
    lines.append(f"- {text}: {value:.1f}x, {'met' if met else 'NOT met'}")
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="batch 2^10 and 2^14 only, fewer runs")
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
  log2_batches = [10, 14] if args.quick else [10, 14, 17, 20]
  if args.log2_batches:
    log2_batches = args.log2_batches
  rounds, budget_s = (2, 0.5) if args.quick else (3, 3.0)
  hyper = dict(alpha=args.alpha, gamma=args.gamma, smoothing=args.smoothing)

  print(f"# focal loss benchmark ({'quick' if args.quick else 'full'})\n")
  print(f"- machine: {platform.machine()} {platform.processor()}, {cores} CPU "
        f"cores, JAX devices {jax.devices()}")
  print(f"- torch {torch.__version__} with torch.set_num_threads({cores}) and "
        f"XLA's default thread pool, so both may use all {cores} cores; "
        f"jax {jax.__version__}")
  print(f"- alpha={args.alpha}, gamma={args.gamma}, smoothing={args.smoothing},"
        " reduction='mean', float32 logits ~ 2 N(0, 1)")
  print("- value+grad is w.r.t. the logits; the exp floor is one jnp.exp over "
        "the same logits")
  print(f"- each implementation timed in {rounds} rounds of blocks of calls "
        f"(about {budget_s / rounds:.1f} s per round for all); torch.compile's "
        "compilation is in its warm-up")
  print(f"- load average at start: {os.getloadavg()[0]:.2f}\n", flush=True)

  seed = SeedFocalLoss(args.alpha, args.gamma, "mean", args.smoothing)
  compiled, compile_error = None, None
  if args.no_compile:
    compile_error = "skipped with --no-compile"
  else:
    try:
      compiled = torch.compile(seed)
    except Exception as e:  # pylint: disable=broad-except
      compile_error = f"{type(e).__name__}: {e}"

  def ours(z, y):
    return focal_jax.focal_loss(z, y, **hyper)

  def transcription(z, y):
    return seed_transcription_jax(z, y, **hyper)

  exp = jax.jit(jnp.exp)
  results = {}
  rng = np.random.default_rng(0)
  for num_classes in args.classes:
    for log2_batch in log2_batches:
      batch = 2**log2_batch
      z_np = (2 * rng.standard_normal((batch, num_classes))).astype(np.float32)
      p = [0.7, 0.3] if num_classes == 2 else None
      y_np = rng.choice(num_classes, size=batch, p=p).astype(np.int32)
      z, y = jnp.asarray(z_np), jnp.asarray(y_np)
      zt, yt = torch.from_numpy(z_np), torch.from_numpy(y_np).long()

      pairs = {
          "focal_jax": jax_timers(ours, z, y),
          "JAX transcription": jax_timers(transcription, z, y),
          "torch eager": torch_timers(seed, zt, yt),
      }
      if compiled is not None:
        try:
          started = time.perf_counter()
          timers = torch_timers(compiled, zt, yt)
          for fn in timers:
            fn()
          print(f"  torch.compile warm-up (compilation) for 2^{log2_batch} x "
                f"{num_classes}: {time.perf_counter() - started:.1f} s",
                flush=True)
          pairs["torch.compile"] = timers
        except Exception as e:  # pylint: disable=broad-except
          compile_error = f"{type(e).__name__}: {str(e).splitlines()[0]}"
          compiled = None
      timers = {"exp floor": lambda z=z: jax.block_until_ready(exp(z))}
      for name, (forward, value_and_grad) in pairs.items():
        timers[f"{name}|forward"] = forward
        timers[f"{name}|value+grad"] = value_and_grad
      times = block_times(timers, rounds, budget_s)

      def stats(key, times=times):
        if key not in times:
          return None
        return {"median": 1e3 * np.median(times[key]),
                "min": 1e3 * np.min(times[key])}

      for pass_name in ("forward", "value+grad"):
        results[log2_batch, num_classes, pass_name] = {
            "exp floor": stats("exp floor"),
            **{name: stats(f"{name}|{pass_name}") for name in IMPLEMENTATIONS},
        }
      print(f"done: batch 2^{log2_batch}, C={num_classes} "
            f"({min(len(t) for t in times.values())}+ calls each)", flush=True)

  print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
  print("\n## Medians\n")
  print(table(results, "median"))
  print("\n## Minima (less sensitive to other processes)\n")
  print(table(results, "min"))
  if compile_error:
    print(f"\ntorch.compile: n/a ({compile_error})")
  print("\n## Targets (value+grad)\n")
  for statistic in ("median", "min"):
    print(f"by {statistic}:")
    print("\n".join(check_targets(results, statistic)) or "- not measured")


if __name__ == "__main__":
  main()
