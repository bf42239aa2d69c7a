"""The examples in the packages' docstrings run, and give what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import focal_jax
import stgnn_jax


def modules_with_examples() -> list[str]:
  names = []
  for package in (focal_jax, stgnn_jax):
    for name in [package.__name__] + [
        info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]:
      tests = doctest.DocTestFinder().find(importlib.import_module(name))
      if any(test.examples for test in tests):
        names.append(name)
  return names


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples(name):
  result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
  assert result.attempted and not result.failed
