"""Tests of bench/step_profile.py's reading of a trace: the arithmetic behind its tables."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import pytest

from bench import step_profile


def event(name: str, start: int, end: int) -> SimpleNamespace:
  return SimpleNamespace(name=name, start_ns=start, end_ns=end, duration_ns=end - start)


def test_self_time_removes_nested_operations_once():
  # A loop [0, 100) runs two body operations; one more operation follows; a repeated name adds.
  events = [event("while.1", 0, 100), event("fusion.2", 10, 30), event("dot.3", 40, 70),
            event("copy.4", 100, 120), event("fusion.2", 130, 135)]
  assert step_profile.self_times(events) == {"while.1": 50, "fusion.2": 25, "dot.3": 30,
                                             "copy.4": 20}


def test_coverage_counts_one_and_two_open_intervals_within_the_window():
  intervals = [(0, 10), (5, 15), (20, 30), (25, 40)]
  # At least one open: [0, 15) and [20, 35); two: [5, 10) and [25, 30); clipped at 35.
  assert step_profile.coverage(intervals, 0, 35) == (30, 10)


def test_union_merges_one_threads_nested_and_touching_events():
  # A loop with its body inside, an event touching its end, one apart.
  assert step_profile.union([(40, 70), (0, 100), (100, 120), (10, 30), (130, 135)]) == [
      (0, 120), (130, 135)]


@pytest.mark.parametrize("op_name, expected", [
    ("jit(train_step)/jvp(STGNN)/encoder/convs_0/dot_general", ("encoder/convs_0", "forward")),
    ("jit(train_step)/transpose(jvp(STGNN))/encoder/readout_projection/transpose",
     ("encoder/readout_projection", "backward")),
    ("jit(train_step)/jvp(STGNN)/encoder/jit(elu)/expm1", ("encoder", "forward")),
    ("jit(train_step)/jvp(STGNN)/classifier/rnn/while/body/closed_call/dot_general",
     ("classifier/rnn", "forward")),
    ("jit(train_step)/mul", ("outside the model (loss, clipping, Adam)", "update")),
    ("jit(train_step)/transpose(jvp())/add_any",
     ("outside the model (loss, clipping, Adam)", "backward")),
])
def test_layer_and_pass_of_op_names(op_name, expected):
  assert step_profile.layer_and_pass(op_name) == expected


def test_op_names_read_a_compiled_program():
  """The instructions of a real optimised program, named after the JAX operations they came
  from."""
  def f(x, w):
    return jnp.tanh(x @ w).sum()

  x = jnp.ones((8, 4))
  text = jax.jit(f).lower(x, jnp.ones((4, 3))).compile().as_text()
  names = step_profile.op_names([text])
  assert {"jit(f)/dot_general", "jit(f)/tanh"} <= set(names.values())
