"""Suite-wide settings: reproducible property tests (the same examples on every run and in CI),
and the compilation cache the train.py subprocesses of a test module share."""

import hypothesis
import pytest

hypothesis.settings.register_profile("stgnn", derandomize=True, deadline=None,
                                     print_blob=True)
hypothesis.settings.load_profile("stgnn")


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  """A JAX compilation cache for the train.py subprocesses of one test module."""
  return str(tmp_path_factory.mktemp("xla_cache"))
