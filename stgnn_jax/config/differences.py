"""What differs between two run configurations, in the words of train.py's flags.

A run folder refuses to go on under other settings (`train.cross_validation.prepare_run_dir`),
and the processes of one run refuse to start under different ones (`train.processes`); both
name every setting that differs with both values, e.g. `--lr: 0.001 (saved) vs 0.01 (now)`,
from the configurations as config.json holds them: {"model": ..., "optim": ..., "run": ...}.
Nothing here imports JAX.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from stgnn_jax.config.fields import flag_fields
from stgnn_jax.config.run import CONFIGS

# Settings that change how a run is computed but not its results: a resumed run takes their new
# values (train.py --resume DIR --sweep_chunk 4). `sweep_chunk` is how many members train
# together in one vmapped program: a member never sees the others beside it, but a program of
# another width may sum in another order, so its numbers agree to float32 rounding (measured:
# test probabilities within ~3e-8 relative after 2 epochs, the same selection and best epochs;
# a sweep's members agree with their standalone runs only to 1e-5 anyway), and a fold's chunks
# that have started keep their members (`train.sweep.fold_chunks`). Not here, though they
# change only the order of float sums too: `num_devices` (a single run's data parallelism: its
# results agree with one device's to 1e-4 only), `eval_batch_size` and `graph_multiple`
# (nothing measures them); a resume refuses a change of these. `scan_store` only says where the
# same scans are read from (tested: the same batches and losses).
RESULT_NEUTRAL = ("sweep_chunk", "scan_store")

# config.json's sections and the classes whose fields they hold.
SECTIONS = dict(zip(("model", "optim", "run"), CONFIGS, strict=True))
_FLAGS = {f.name for config_class in CONFIGS for f in flag_fields(config_class)}
_ABSENT = object()


def setting_name(section: str, name: str) -> str:
  """How a message names a field of config.json's `section`: its flag (`--lr`), or, for a
  field that is no flag, its class and name (`ModelConfig.input_dim`)."""
  if name in _FLAGS:
    return f"--{name}"
  config_class = SECTIONS.get(section)
  return f"{config_class.__name__ if config_class else section}.{name}"


def show(value: Any) -> str:
  """A value as a message shows it: strings bare, None as "unset", lists as JSON."""
  if value is _ABSENT:
    return "absent"
  if value is None:
    return "unset"
  if isinstance(value, str):
    return value
  return json.dumps(value)


def config_differences(first: dict[str, Any], second: dict[str, Any], labels: tuple[str, str],
                       ignore: Iterable[str] = ()) -> list[str]:
  """Every setting whose value differs between two configurations (config.json's dicts), as
  "--lr: 0.001 (saved) vs 0.01 (now)" with `labels` ("saved", "now"), in config.json's order;
  a field one side lacks (another version's configuration) shows as "absent". Settings named
  in `ignore` are left out.

  >>> config_differences({"optim": {"lr": 0.001}}, {"optim": {"lr": 0.01}}, ("saved", "now"))
  ['--lr: 0.001 (saved) vs 0.01 (now)']
  """
  skipped = set(ignore)
  differences = []
  for section in dict.fromkeys([*first, *second]):
    a, b = first.get(section, {}), second.get(section, {})
    for name in dict.fromkeys([*a, *b]):
      value_a, value_b = a.get(name, _ABSENT), b.get(name, _ABSENT)
      if name in skipped or value_a == value_b:
        continue
      differences.append(f"{setting_name(section, name)}: {show(value_a)} ({labels[0]}) vs "
                         f"{show(value_b)} ({labels[1]})")
  return differences
