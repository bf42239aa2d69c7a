"""The focal loss's behaviour, drawn from `focal_jax` itself (the seeds' "Behavior Analysis").

  python docs/plot_focal_behaviour.py     # writes docs/focal_behaviour.png

Left: cross-entropy against the focal loss (α = 0.25, γ = 2) over p_t, the probability of the
true class: easy examples (high p_t) lose almost all their loss, hard ones keep most of it.
Right: the effect of γ ∈ {0, 1, 2, 5} at α = 0.25 (γ = 0 is α-weighted cross-entropy).
Every curve is `focal_jax.focal_loss` / `focal_jax.cross_entropy` evaluated on two-class logits
whose softmax gives the true class (label 1, the converters) probability p_t.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import focal_jax  # noqa: E402

ALPHA = 0.25


def main(path: str | None = None) -> None:
  pt = jnp.linspace(0.01, 0.99, 197)
  logits = jnp.stack([jnp.zeros_like(pt), jnp.log(pt / (1 - pt))], axis=-1)  # softmax_1 = p_t
  labels = jnp.ones(pt.shape, jnp.int32)

  def focal(gamma: float):
    return focal_jax.focal_loss(logits, labels, ALPHA, gamma, reduction="none")

  cross_entropy = focal_jax.cross_entropy(logits, labels, reduction="none")
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
  left.plot(pt, cross_entropy, lw=2, label="cross-entropy")
  left.plot(pt, focal(2.0), lw=2, label=f"focal (α={ALPHA}, γ=2)")
  left.set_title("Focal loss vs cross-entropy")
  for gamma in (0.0, 1.0, 2.0, 5.0):
    right.plot(pt, focal(gamma), lw=2, label=f"γ={gamma:g}")
  right.set_title(f"Effect of γ (α={ALPHA})")
  for ax in (left, right):
    ax.set_xlabel("probability of the true class, p_t")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
  path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "focal_behaviour.png")
  fig.savefig(path, dpi=100)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
