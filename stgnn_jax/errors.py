"""The errors a user can fix: a setting, a data file, a checkpoint, a run folder.

Each is a `ValueError` whose message names the problem and the fix; `train.py` prints it as one
line (`error: ...`) and exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
  """Input the user can fix; the message names the input, the problem and the fix."""


class ConfigError(InputError):
  """A setting out of range or inconsistent with another (names the config field / flag)."""


class CohortError(InputError):
  """A cohort that cannot be read or used as given (names the file and the problem)."""


class CheckpointMismatchError(InputError):
  """A checkpoint that does not fit the configured architecture (names the parameter)."""


class RunStateError(InputError):
  """A run folder whose saved state cannot be resumed (names the file and the problem)."""


class InterruptedRun(Exception):
  """A run stopped by the user (Ctrl-C); the message says what was kept and how to continue.
  Not an input error: the command exits with 130, the shell's status for an interrupt."""
