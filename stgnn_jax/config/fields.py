"""How a setting is declared: a dataclass field with its one default and its flag.

`setting` makes a config field that is also a flag of train.py: its default (the one default of
the setting, what `python train.py` runs), its help text, its group in `--help`, its choices,
the reference's value where it differs, whether a sweep may vary it, and a parser where the
field's type does not say how to read it. The flag's type comes from the field's annotation
(`typing.get_type_hints`, `flag_type`). This module imports no JAX.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

from stgnn_jax.errors import ConfigError

# The groups of train.py's --help, in order.
FLAG_GROUPS = ("data", "model", "training", "sweep")

_UNSET = object()
SettingsT = TypeVar("SettingsT", bound="Settings")


def setting(default: Any, help: str, *, group: str, choices: tuple | None = None,
            reference: Any = _UNSET, parse: Callable[[str], Any] | None = None,
            repeat: bool = False, sweep: bool = False) -> Any:
  """A config field that is also a flag of train.py (`--<field name>`).

  Args:
    default: the setting's default, train.py's (the recipe of the README).
    help: the flag's help text.
    group: its group in `--help`, one of `FLAG_GROUPS`.
    choices: the values the flag accepts.
    reference: the reference's value, where it differs from `default` (`presets`).
    parse: the flag's parser, where the field's type does not say it (e.g. "0.9" or "auto").
    repeat: the flag may be given several times; the field is the tuple of its values.
    sweep: `--sweep NAME=...` may vary it within one vmapped program per fold (a traced value
      of the loss or the optimiser, or the seed); a setting that changes shapes, the
      architecture, the data or the protocol may not.
  """
  if group not in FLAG_GROUPS:
    raise ValueError(f"setting: group {group!r} is not one of {FLAG_GROUPS}")
  metadata = {"help": help, "group": group, "choices": choices, "parse": parse,
              "repeat": repeat, "sweep": sweep}
  if reference is not _UNSET:
    metadata["reference"] = reference
  return dataclasses.field(default=default, metadata=metadata)


def flag_fields(config_class: type) -> Iterator[dataclasses.Field]:
  """The fields of a config class that are train.py flags, in declaration order."""
  return (f for f in dataclasses.fields(config_class) if "help" in f.metadata)


def reference_value(field: dataclasses.Field) -> Any:
  """The reference's value of a field: its `reference`, else its default."""
  return field.metadata.get("reference", field.default)


def flag_type(config_class: type, field: dataclasses.Field) -> type:
  """The type a flag's values have: the field's annotation without `None` (`int | None` ->
  int; a repeated flag's `tuple[str, ...]` -> str)."""
  hint = typing.get_type_hints(config_class)[field.name]
  if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
    hint = next(a for a in typing.get_args(hint) if a is not type(None))
  if typing.get_origin(hint) is tuple:
    hint = typing.get_args(hint)[0]
  return typing.get_origin(hint) or hint


def check_fields(config: Any, checks: list[tuple[str, bool, str]]) -> None:
  """Raises ConfigError naming the first failed check: "<Config>.<field>=<value> <problem>."."""
  for name, ok, problem in checks:
    if not ok:
      raise ConfigError(
          f"{type(config).__name__}.{name}={getattr(config, name)!r} {problem}.")


_warned: set[str] = set()


def warn_once(message: str) -> None:
  """A warning about a setting, once per process (a config is rebuilt, e.g. with the cohort's
  atlas size, without repeating it)."""
  if message not in _warned:
    _warned.add(message)
    warnings.warn(message, stacklevel=4)


def positive_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class Settings:
  """What the three config dataclasses share: the reference's values, and reading back a saved
  configuration."""

  # The value a field missing from a saved configuration had: configurations are saved with
  # every field, so a missing one was written before the field existed. ModelConfig's and
  # OptimConfig's fields all defaulted to the reference's values until train.py's recipe became
  # their defaults; RunConfig's defaults have always been train.py's.
  MISSING_FIELDS_ARE_REFERENCE: ClassVar[bool] = False

  @classmethod
  def reference(cls: type[SettingsT], **changes: Any) -> SettingsT:
    """The reference's values of every field (`reference_value`), with `changes`."""
    values = {f.name: reference_value(f) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{**values, **changes})

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)  # type: ignore[call-overload]

  @classmethod
  def from_dict(cls: type[SettingsT], values: dict[str, Any]) -> SettingsT:
    """A saved configuration (`to_dict`, config.json); raises ConfigError on unknown fields."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    known = {f.name for f in fields}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ConfigError(
          f"{cls.__name__}: unknown field(s) {unknown}; known fields are {sorted(known)}.")
    if cls.MISSING_FIELDS_ARE_REFERENCE:
      values = {**{f.name: reference_value(f) for f in fields}, **values}
    return cls(**values)
