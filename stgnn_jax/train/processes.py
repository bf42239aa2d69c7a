"""A run over several processes or hosts (`jax.distributed`): joining it, and checking that its
processes run the same thing.

Every process holds the same host values: a single run's batches are split over the devices of
every process (each process puts its own devices' share), a sweep's members are; the results
are gathered to every process and process 0 writes them (`atomic.set_writer`). The processes
must therefore be started alike: `check_processes_agree` compares
their configurations and data fingerprints before any work and stops every process with one
line naming what differs. `join` connects a process to the others, saying whom it waits for and
giving up after a timeout with one line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from stgnn_jax.config.differences import config_differences
from stgnn_jax.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

# How long a process waits for the others by default: jax.distributed.initialize's own default.
DEFAULT_TIMEOUT = 300
# JAX's own deadline, this much after ours. Reached, it ends the process from C++ (SIGABRT with
# a stack trace: jax 0.10.2 on CPU, "Terminating process because the JAX distributed service
# detected fatal errors ... DEADLINE_EXCEEDED"), which Python cannot catch; `join`'s watchdog
# stops the process first with one line.
JAX_DEADLINE_MARGIN = 30
# HOST:PORT, the host a name, an IPv4 address or an IPv6 address in brackets.
_ADDRESS = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+):(?P<port>[0-9]+)")


def check_address(address: str, source: str) -> None:
  """Raises InputError unless `address` is HOST:PORT with a port in 1-65535; `source` names
  where it came from (the flag or JAX's variable)."""
  match = _ADDRESS.fullmatch(address)
  if not match or not 1 <= int(match["port"]) <= 65535:
    raise InputError(f"{source} {address}: not an address; expected HOST:PORT with a port in "
                     "1-65535 (an IPv6 host in brackets, [::1]:1234), e.g. 10.0.0.1:1234.")


def check_processes_flags(address: str | None, num_processes: int | None,
                          process_id: int | None, timeout: float) -> None:
  """The processes flags as given, checked before connecting: the address's form and the
  counts. Raises InputError naming the flag."""
  if address is not None:
    check_address(address, "--coordinator_address")
  elif os.environ.get("JAX_COORDINATOR_ADDRESS"):
    check_address(os.environ["JAX_COORDINATOR_ADDRESS"], "JAX_COORDINATOR_ADDRESS")
  if num_processes is not None and num_processes < 1:
    raise InputError(f"--num_processes {num_processes}: must be >= 1.")
  if process_id is not None and (process_id < 0 or (num_processes is not None
                                                    and process_id >= num_processes)):
    raise InputError(f"--process_id {process_id}: must lie in 0..num_processes - 1"
                     + (f" ({num_processes - 1})." if num_processes else "."))
  if not timeout > 0:
    raise InputError(f"--process_timeout {timeout:g}: must be a positive number of seconds.")


def join(address: str | None, num_processes: int | None, process_id: int | None,
         timeout: float, prog: str) -> None:
  """Connects this process to the run's others (`jax.distributed.initialize`), waiting at most
  `timeout` seconds for all of them to come.

  JAX's own timeout ends the process from C++ with a stack trace, so a watchdog thread ends it
  first: one line on stderr ("<prog>: error: ...", naming the address, the processes expected
  and the flag that allows longer) and exit status 2, as for any error the user can fix.
  Raises InputError when JAX refuses the flags or cannot start (e.g. the port is taken).
  """
  where = address or os.environ.get("JAX_COORDINATOR_ADDRESS") or "the detected coordinator"
  who = (f"process {process_id} of {num_processes}"
         if process_id is not None and num_processes is not None else "this process")
  logger.info("%s: waiting for the others at %s (up to %g s, --process_timeout)", who, where,
              timeout)
  expected = f"all {num_processes} processes" if num_processes else "all the processes"
  message = (f"--coordinator_address {where}: not {expected} (--num_processes) connected "
             f"within {timeout:g} s; start the same command in each, with its --process_id, "
             "or allow longer with --process_timeout.")

  def give_up() -> None:
    sys.stdout.flush()
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    os._exit(2)  # the main thread is inside JAX's C++ connect, which no exception reaches

  watchdog = threading.Timer(timeout, give_up)
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(coordinator_address=address, num_processes=num_processes,
                               process_id=process_id,
                               initialization_timeout=int(timeout) + JAX_DEADLINE_MARGIN)
  except (RuntimeError, ValueError) as error:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise InputError(f"--coordinator_address/--num_processes/--process_id: the processes "
                     f"could not connect ({first}); check the address and that every process "
                     "was started with the same flags.") from None
  finally:
    watchdog.cancel()


def check_processes_agree(config: dict[str, Any], fingerprint: dict[str, str]) -> None:
  """Raises ConfigError in every process unless all the run's processes have the same
  configuration (config.json's {"model", "optim", "run"}) and the same data fingerprint
  (`Cohort.fingerprint`): one line naming each setting that differs, with process 0's value
  and the other's, or the parts of the data that differ. A no-op in a run of one process.

  Every process must call it at the same point (it is a collective), before any work.
  """
  if jax.process_count() == 1:
    return
  mine = {"config": config, "fingerprint": fingerprint}
  everyone = [json.loads(text) for text in gather_text(json.dumps(mine, sort_keys=True))]
  first = everyone[0]
  problems = []
  for index, other in enumerate(everyone[1:], start=1):
    # --data_root may be another path on another host: the fingerprint compares what it holds.
    problems += config_differences(first["config"], other["config"],
                                   ("process 0", f"process {index}"), ignore=("data_root",))
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
