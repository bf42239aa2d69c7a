"""A run over several processes or hosts (`jax.distributed`): checking its flags before
connecting, and that its processes run the same thing.

Every process of a sweep computes the same values on the same data and process 0 writes them
(`atomic.set_writer`), so the processes must be started alike: `check_processes_agree` compares
their configurations and data fingerprints before any work and stops every process with one
line naming what differs. `check_processes_flags` checks the flags before connecting.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from stgnn_jax.config.differences import config_differences
from stgnn_jax.errors import ConfigError, InputError

# HOST:PORT, the host a name, an IPv4 address or an IPv6 address in brackets.
_ADDRESS = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+):(?P<port>[0-9]+)")


def check_address(address: str, source: str) -> None:
  """Raises InputError unless `address` is HOST:PORT with a port in 1-65535; `source` names
  where it came from (the flag or JAX's variable)."""
  match = _ADDRESS.fullmatch(address)
  if not match or not 1 <= int(match["port"]) <= 65535:
    raise InputError(f"{source} {address}: not an address; expected HOST:PORT with a port in "
                     "1-65535 (an IPv6 host in brackets, [::1]:1234), e.g. 10.0.0.1:1234.")


def check_processes_flags(address: str | None) -> None:
  """The processes flags as given, checked before connecting: the address's form (the flag's,
  or else JAX's variable's). Raises InputError naming where the address came from."""
  if address is not None:
    check_address(address, "--coordinator_address")
  elif os.environ.get("JAX_COORDINATOR_ADDRESS"):
    check_address(os.environ["JAX_COORDINATOR_ADDRESS"], "JAX_COORDINATOR_ADDRESS")


def check_processes_agree(config: dict[str, Any], fingerprint: dict[str, str]) -> None:
  """Raises ConfigError in every process unless all the run's processes have the same
  configuration (config.json's {"model", "optim", "run"}) and the same data fingerprint
  (`Cohort.fingerprint`): one line naming each setting that differs, with process 0's value
  and the other's, or the parts of the data that differ. A no-op in a run of one process.

  Every process must call it at the same point (it is a collective), before any work.
  """
  if jax.process_count() == 1:
    return
  # --data_root may be another path on another host: the fingerprint compares what it holds.
  mine = {"config": {**config, "run": {k: v for k, v in config["run"].items()
                                        if k != "data_root"}},
          "fingerprint": fingerprint}
  everyone = [json.loads(text) for text in gather_text(json.dumps(mine, sort_keys=True))]
  first = everyone[0]
  problems = []
  for index, other in enumerate(everyone[1:], start=1):
    problems += config_differences(first["config"], other["config"],
                                   ("process 0", f"process {index}"))
    changed = [part for part in dict.fromkeys([*first["fingerprint"], *other["fingerprint"]])
               if first["fingerprint"].get(part) != other["fingerprint"].get(part)]
    if changed:
      problems.append(f"process {index}'s data differ from process 0's (its "
                      f"{', '.join(changed)} differ)")
  if problems:
    raise ConfigError(f"the run's {len(everyone)} processes were not started alike: "
                      f"{', '.join(problems)}; start every process with the same flags and "
                      "data.")


def gather_text(text: str) -> list[str]:
  """Every process's `text`, in process order (a collective: every process calls it)."""
  data = np.frombuffer(text.encode(), dtype=np.uint8)
  # Gathered arrays must have one shape: the lengths first, then the texts padded to the
  # longest.
  lengths = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32)))
  longest = int(lengths.max())
  padded = np.zeros(longest, np.uint8)
  padded[:data.size] = data
  texts = np.asarray(multihost_utils.process_allgather(padded))
  return [bytes(texts[i, :int(lengths[i, 0])]).decode() for i in range(len(lengths))]
