"""What the command lines (train.py, predict.py, explain.py) share: how they report.

Messages go to stdout through the `stgnn_jax` loggers, warnings are one line each, an error the
user can fix (`errors.InputError`, a missing or unwritable file) is one line and exit status 2,
a failure of the machine (any other OSError, e.g. a full disk) one line and status 1, and
Ctrl-C one line (what was kept, when the command says) and status 130. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable

from stgnn_jax.errors import InputError, InterruptedRun

logger = logging.getLogger("stgnn_jax")

INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C (128 + SIGINT)
USER_ERRORS = (InputError, FileExistsError, FileNotFoundError, NotADirectoryError,
               IsADirectoryError, PermissionError)


def one_line_warnings(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, line: str | None = None) -> str:
  """`warnings.formatwarning` as one line: "warning: <message>"."""
  return f"warning: {message}\n"


def run_command(prog: str, body: Callable[[], int]) -> int:
  """`body()`'s exit status, with the commands' logging, warnings and error lines."""
  logging.basicConfig(format="%(message)s", stream=sys.stdout)
  logger.setLevel(logging.INFO)
  warnings.formatwarning = one_line_warnings
  try:
    return body()
  except USER_ERRORS as error:  # what the user gave cannot be used
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2
  except OSError as error:  # the machine failed the run
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 1
  except InterruptedRun as error:
    print(f"{prog}: {error}", file=sys.stderr)
    return INTERRUPTED
  except KeyboardInterrupt:
    print(f"{prog}: interrupted", file=sys.stderr)
    return INTERRUPTED
