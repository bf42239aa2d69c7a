"""train.py's flags, generated from the configuration's fields (`fields.setting`).

A boolean takes `--x`, `--x true|false` and `--no-x`; a value is parsed by the field's `parse`
or by its annotated type (`fields.flag_type`); `--preset NAME` makes a named recipe's values the
defaults, which explicit flags still override.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from stgnn_jax.config.fields import FLAG_GROUPS, flag_fields, flag_type
from stgnn_jax.config.model import ModelConfig
from stgnn_jax.config.optim import OptimConfig
from stgnn_jax.config.parsing import parse_bool
from stgnn_jax.config.presets import PRESETS
from stgnn_jax.config.run import CONFIGS, SWEEPABLE, RunConfig

_Config = TypeVar("_Config", ModelConfig, OptimConfig, RunConfig)


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
  """`parse` with its ValueError turned into argparse's one-line usage error."""
  def convert(text: str) -> Any:
    try:
      return parse(text)
    except ValueError as error:
      raise argparse.ArgumentTypeError(str(error)) from None
  convert.__name__ = getattr(parse, "__name__", "value")
  return convert


def add_flag(group: argparse._ArgumentGroup, config_class: type,
             field: dataclasses.Field) -> None:
  """`--<field>` from a config field."""
  meta, kind = field.metadata, flag_type(config_class, field)
  help = meta["help"].replace("{sweepable}", ", ".join(SWEEPABLE))
  if kind is bool:
    group.add_argument(f"--{field.name}", nargs="?", const=True, default=field.default,
                       type=_argparse_type(parse_bool), metavar="true|false", help=help)
    group.add_argument(f"--no-{field.name}", dest=field.name, action="store_false",
                       default=field.default, help=argparse.SUPPRESS)
    return
  # argparse words the errors of int and float itself ("invalid int value: 'x'").
  parse = _argparse_type(meta["parse"]) if meta["parse"] else kind
  if meta["repeat"]:  # argparse appends to a list of its own; the config makes it a tuple
    group.add_argument(f"--{field.name}", action="append", default=None, type=parse,
                       metavar=field.name.upper(), help=help)
    return
  group.add_argument(f"--{field.name}", default=field.default, choices=meta["choices"],
                     type=parse, help=help)


def add_config_flags(parser: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
  """Adds `--preset` and a flag per setting, in `FLAG_GROUPS`; returns the groups."""
  groups = {name: parser.add_argument_group(name) for name in FLAG_GROUPS}
  groups["training"].add_argument(
      "--preset", choices=tuple(PRESETS), default=None,
      help="a named recipe as the defaults (explicit flags still apply): reference = the "
      "reference's architecture, optimiser and protocol, config.reference_flags()")
  for config_class in CONFIGS:
    for field in flag_fields(config_class):
      add_flag(groups[field.metadata["group"]], config_class, field)
  return groups


def _attach_dash_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
  """`argv` with `--flag VALUE` written `--flag=VALUE` where the flag takes one value and VALUE
  starts with a single "-" without being an option.

  argparse takes "-1,2", "-1@0" or "-1e-3" (not its negative-number pattern) for an option and
  stops with "expected one argument"; attached, the value reaches the setting's own check, which
  names what is wrong with it.
  """
  options = parser._option_string_actions
  out: list[str] = []
  for i, token in enumerate(argv):
    if token == "--":
      return out + list(argv[i:])
    action = options.get(out[-1]) if out else None
    if (action is not None and action.nargs is None and token.startswith("-")
        and not token.startswith("--") and token[:2] not in options):
      out[-1] = f"{out[-1]}={token}"
      continue
    out.append(token)
  return out


def parse_flags(parser: argparse.ArgumentParser,
                argv: Sequence[str] | None = None) -> argparse.Namespace:
  """`parser.parse_args(argv)` with `--preset`'s values as the defaults, and a value that starts
  with "-" (`--class_weights -1,2`) taken as the flag's value (`_attach_dash_values`)."""
  argv = _attach_dash_values(parser, sys.argv[1:] if argv is None else argv)
  presets = argparse.ArgumentParser(add_help=False)
  presets.add_argument("--preset", choices=tuple(PRESETS), default=None)
  known, _ = presets.parse_known_args(argv)
  if known.preset:
    parser.set_defaults(**PRESETS[known.preset]())
  return parser.parse_args(argv)


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, OptimConfig, RunConfig]:
  """The three configs from parsed flags (ModelConfig.input_dim is set from the cohort later)."""
  return (_config_from_args(ModelConfig, args), _config_from_args(OptimConfig, args),
          _config_from_args(RunConfig, args))


def _config_from_args(cls: type[_Config], args: argparse.Namespace) -> _Config:
  return cls(**{f.name: getattr(args, f.name) for f in flag_fields(cls)})
