"""Parsers of flag values that are not a plain number or word: booleans, focal α, schedules.

Each raises ValueError naming the accepted form; train.py turns it into a one-line usage error.
"""

from __future__ import annotations

import math

SCHEDULE_FORM = "VALUE@EPOCH pairs from epoch 0 on, epochs increasing, e.g. 1@0,2@20,3@60"


def parse_bool(text: str) -> bool:
  """"true"/"false" and their usual spellings, for boolean flags."""
  value = text.strip().lower()
  if value in ("true", "t", "yes", "y", "1", "on"):
    return True
  if value in ("false", "f", "no", "n", "0", "off"):
    return False
  raise ValueError(f"expected true or false, got {text!r}")


def parse_alpha(text: str) -> float | str:
  """A focal α: a number, or "auto"."""
  if text.strip().lower() == "auto":
    return "auto"
  try:
    return float(text)
  except ValueError:
    raise ValueError(f"expected a number in [0, 1] or 'auto', got {text!r}") from None


def parse_schedule(text: str) -> tuple[tuple[int, float], ...]:
  """"1@0,2@20,3@60" -> ((0, 1.0), (20, 2.0), (60, 3.0)): a value from each epoch (0-based) on.

  Raises ValueError, showing the accepted form, unless the stages start at epoch 0 and their
  epochs increase.
  """
  stages = []
  for part in text.split(","):
    value, at, epoch = part.strip().partition("@")
    try:
      stages.append((int(epoch), float(value)))
    except ValueError:
      raise ValueError(f"{text!r} is not a schedule; expected {SCHEDULE_FORM}") from None
    if not at or not math.isfinite(stages[-1][1]):
      raise ValueError(f"{text!r} is not a schedule; expected {SCHEDULE_FORM}")
  epochs = [epoch for epoch, _ in stages]
  if epochs[0] != 0 or any(b <= a for a, b in zip(epochs, epochs[1:], strict=False)):
    raise ValueError(f"{text!r}: the stages must start at epoch 0 and their epochs increase; "
                     f"expected {SCHEDULE_FORM}")
  return tuple(stages)


def schedule_value(schedule: tuple[tuple[int, float], ...], epoch: int) -> float:
  """The value of the last stage that has started by `epoch`."""
  return [value for start, value in schedule if start <= epoch][-1]


def parse_class_weights(text: str) -> tuple[float, ...]:
  """"1,3" -> (1.0, 3.0)."""
  try:
    return tuple(float(w) for w in text.split(","))
  except ValueError:
    raise ValueError(f"expected one weight per class, e.g. 1,3; got {text!r}") from None


def parse_columns(text: str) -> tuple[str, ...]:
  """"csf,white_matter" -> ("csf", "white_matter"): column names, comma-separated."""
  names = tuple(name.strip() for name in text.split(","))
  if not all(names):
    raise ValueError(f"expected column names separated by commas, got {text!r}")
  return names
