"""Branches and loops on the CPU reference backend: which branch runs, loop counts, carried values."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write

from orchestrator import ExecutionError, Orchestrator

SWITCH = """\
inputs:
  x: {dtype: float32, shape: [N, 4]}
  mode: {dtype: int32, host: true}
outputs: [z]
kernels:
  scale: scale.yaml
steps:
  - switch: mode
    cases:
      0:
        - kernel: scale
          args: {src: x, dst: z, factor: 2.0}
      1:
        - kernel: scale
          args: {src: x, dst: t, factor: 3.0}
        - kernel: scale
          args: {src: t, dst: z, factor: 5.0}
%s
"""

WHILE = """\
inputs:
  x: {dtype: float32, shape: [1, 1]}
  limit: {dtype: float32, host: true}
outputs: [x_final]
kernels:
  scale: scale.yaml
steps:
  - kernel: scale
    args: {src: x, dst: state, factor: 1.0}
  - while: state > limit
    max_iterations: %d
    carry: {state: halved}
    body:
      - kernel: scale
        args: {src: state, dst: halved, factor: 0.5}
  - kernel: scale
    args: {src: state, dst: x_final, factor: 1.0}
"""


class Log:
    def __init__(self):
        self.branches = []

    def step_done(self, step):
        pass

    def branch_taken(self, block, taken):
        self.branches.append(taken)


@pytest.fixture
def x():
    return np.arange(8, dtype=np.float32).reshape(2, 4)


def test_switch_runs_the_matching_case(workdir, x):
    default = "    default:\n      - kernel: scale\n        args: {src: x, dst: z, factor: -1.0}"
    log = Log()
    orch = Orchestrator(write(workdir, SWITCH % default), device="cpu", observer=log)
    np.testing.assert_allclose(orch.run({"x": x, "mode": 0})["z"], x * 2)
    np.testing.assert_allclose(orch.run({"x": x, "mode": 1})["z"], x * 15)
    np.testing.assert_allclose(orch.run({"x": x, "mode": 7})["z"], -x)
    assert log.branches == ["case 0", "case 1", "default"]


def test_switch_without_default_rejects_unknown_value(workdir, x):
    orch = Orchestrator(write(workdir, SWITCH % ""), device="cpu")
    with pytest.raises(ExecutionError, match="matches no case"):
        orch.run({"x": x, "mode": 3})


@pytest.mark.parametrize(("start", "limit", "iterations"), [(16.0, 1.0, 4), (0.5, 1.0, 0), (1000.0, 1.0, 6)])
def test_while_loop_carries_state_and_stops_at_max_iterations(workdir, start, limit, iterations):
    log = Log()
    orch = Orchestrator(write(workdir, WHILE % 6), device="cpu", observer=log)
    out = orch.run({"x": np.array([[start]], np.float32), "limit": limit})
    assert log.branches == [f"{iterations} iterations" + (" (max_iterations reached)" if iterations == 6 else "")]
    np.testing.assert_allclose(out["x_final"], [[start / 2**iterations]])


def test_if_on_device_tensor_and_host_input(workdir):
    text = """\
inputs:
  x: {dtype: float32, shape: [1, 1]}
  gain: {dtype: float32, host: true}
outputs: [z]
kernels:
  scale: scale.yaml
steps:
  - if: not x
    then:
      - kernel: scale
        args: {src: x, dst: z, factor: 0.0}
    else:
      - kernel: scale
        args: {src: x, dst: z, factor: gain}
"""
    orch = Orchestrator(write(workdir, text), device="cpu")
    np.testing.assert_allclose(orch.run({"x": np.array([[3]], np.float32), "gain": 4.0})["z"], [[12.0]])
    np.testing.assert_allclose(orch.run({"x": np.array([[0]], np.float32), "gain": 4.0})["z"], [[0.0]])


NESTED = """\
inputs:
  x: {dtype: float32, shape: [1, 1]}
  mode: {dtype: int32, host: true}
outputs: [z]
kernels:
  scale: scale.yaml
steps:
  - kernel: scale
    args: {src: x, dst: state, factor: 1.0}
  - switch: mode
    cases:
      0:
        - while: state > 1.0
          max_iterations: 10
          carry: {state: shrunk}
          body:
            - if: state > 8.0
              then:
                - kernel: scale
                  args: {src: state, dst: shrunk, factor: 0.25}
              else:
                - kernel: scale
                  args: {src: state, dst: shrunk, factor: 0.5}
        - kernel: scale
          args: {src: state, dst: z, factor: 1.0}
      1:
        - kernel: scale
          args: {src: state, dst: z, factor: -1.0}
"""


def test_nested_blocks(workdir):
    log = Log()
    orch = Orchestrator(write(workdir, NESTED), device="cpu", observer=log)
    assert orch.run({"x": np.array([[40.0]], np.float32), "mode": 0})["z"][0, 0] == 0.625
    assert log.branches == ["case 0", "then", "then", "else", "else", "4 iterations"]
    assert orch.run({"x": np.array([[40.0]], np.float32), "mode": 1})["z"][0, 0] == -40.0


def test_constants_from_npy_npz_and_safetensors(workdir):
    from safetensors.numpy import save_file

    np.savez(workdir / "w.npz", a=np.full((1, 4), 2, np.float32), b=np.zeros(1, np.float32))
    save_file({"bias": np.full((1, 4), 3, np.float32)}, str(workdir / "w.safetensors"))
    np.save(workdir / "w4.npy", np.full((1, 4), 5, np.float32))
    text = """\
inputs:
  x: {dtype: float32, shape: [1, 4]}
outputs: [z]
constants:
  two: {file: w.npz, key: a}
  three: {file: w.safetensors}
  five: {file: w4.npy, dtype: float32}
  seven: {value: [[7, 7, 7, 7]], dtype: float32}
snippets:
  add: {onnx: add.onnx}
steps:
  - snippet: add
    inputs: {a: two, b: three}
    outputs: {c: s1}
  - snippet: add
    inputs: {a: s1, b: five}
    outputs: {c: s2}
  - snippet: add
    inputs: {a: s2, b: seven}
    outputs: {c: s3}
  - snippet: add
    inputs: {a: s3, b: x}
    outputs: {c: z}
"""
    out = Orchestrator(write(workdir, text), device="cpu").run({"x": np.ones((1, 4), np.float32)})
    np.testing.assert_array_equal(out["z"], np.full((1, 4), 18, np.float32))
