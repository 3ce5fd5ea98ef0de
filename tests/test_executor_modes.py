"""The executor's compiled forms without a GPU: a CPU backend that records what the graph modes hand it
(straight-line segments, the whole-graph request and its fallback), run-time checks, observer calls."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write
from test_control_flow import NESTED, SWITCH

from orchestrator.backends.cpu import CpuBackend
from orchestrator.errors import ExecutionError
from orchestrator.executor import Executor
from orchestrator.pipeline.load import load_pipeline

SEGMENTED = """\
inputs:
  x: {dtype: float32, shape: [1, 1]}
  flag: {dtype: int32, host: true}
outputs: [z]
kernels:
  scale: scale.yaml
steps:
  - kernel: scale
    name: a
    args: {src: x, dst: a1, factor: 2.0}
  - kernel: scale
    name: b
    args: {src: a1, dst: b1, factor: 3.0}
  - if: flag
    name: choose
    then:
      - kernel: scale
        name: c
        args: {src: b1, dst: c1, factor: 5.0}
      - kernel: scale
        name: d
        args: {src: c1, dst: y, factor: 7.0}
    else:
      - kernel: scale
        name: e
        args: {src: b1, dst: y, factor: -1.0}
  - kernel: scale
    name: f
    args: {src: y, dst: z, factor: 1.0}
"""


class Recording(CpuBackend):
    """The CPU backend, with graph-mode hooks that record what they are given and run it eagerly."""

    def __init__(self, pipeline, fall_back: bool = False):
        super().__init__(pipeline)
        self.segments, self.graph_requests, self.fall_back, self.dims = [], [], fall_back, []

    def _segment_runner_impl(self, steps, eager):
        self.segments.append(tuple(s.name for s in steps))
        return eager

    def _graph_runner_impl(self, body, eager, observer, fallback):
        self.graph_requests.append((tuple(n.name for n in body), observer))
        return fallback() if self.fall_back else eager

    def _set_inputs_impl(self, inputs, dims):
        self.dims.append(dict(dims))
        super()._set_inputs_impl(inputs, dims)


class Log:
    def __init__(self):
        self.steps, self.branches = [], []

    def step_done(self, step):
        self.steps.append(step.name)

    def branch_taken(self, block, label):
        self.branches.append((block.name, label))


@pytest.fixture
def segmented(workdir):
    return load_pipeline(write(workdir, SEGMENTED))


def x(value: float = 1.0):
    return np.array([[value]], np.float32)


def test_segments_are_the_straight_line_runs_between_blocks(segmented):
    backend = Recording(segmented)
    log = Log()
    executor = Executor(segmented, backend, log, graphs="segments")
    assert backend.segments == [("a", "b"), ("c", "d"), ("e",), ("f",)]
    assert executor.run({"x": x(), "flag": 1})["z"][0, 0] == 2 * 3 * 5 * 7
    assert executor.run({"x": x(), "flag": 0})["z"][0, 0] == -6
    assert log.steps == ["a", "b", "c", "d", "f", "a", "b", "e", "f"]
    assert log.branches == [("choose", "then"), ("choose", "else")]
    assert backend.dims == [{}, {}]  # no symbolic dimension in this pipeline


def test_whole_graph_gets_the_body_the_observer_and_a_segments_fallback(segmented):
    log = Log()
    backend = Recording(segmented)
    executor = Executor(segmented, backend, log, graphs=True)
    assert backend.graph_requests == [(("a", "b", "choose", "f"), log)] and backend.segments == []
    assert executor.graphs is True and executor.run({"x": x(), "flag": 1})["z"][0, 0] == 210
    falling = Recording(segmented, fall_back=True)
    executor = Executor(segmented, falling, None, graphs=True)
    assert executor.graphs == "segments" and falling.segments == [("a", "b"), ("c", "d"), ("e",), ("f",)]
    assert executor.run({"x": x(2.0), "flag": 0})["z"][0, 0] == -12


def test_eager_mode_asks_for_no_graphs(segmented):
    backend = Recording(segmented)
    executor = Executor(segmented, backend)
    assert executor.graphs is False and backend.segments == backend.graph_requests == []
    assert executor.run({"x": x(), "flag": 1}) == {"z": np.array([[210]], np.float32)}


@pytest.mark.parametrize("mode", [2, "segment", "true", None])
def test_unknown_graph_modes_are_refused(segmented, mode):
    with pytest.raises(ValueError, match=f"^graphs must be False, True or 'segments', not {mode!r}$"):
        Executor(segmented, CpuBackend(segmented), graphs=mode)


def test_dims_reach_the_backend(workdir):
    pipeline = load_pipeline(write(workdir, (workdir / "base.yaml").read_text()))
    backend = Recording(pipeline)
    Executor(pipeline, backend).run({"x": np.ones((3, 4), np.float32), "flag": 1})
    assert backend.dims == [{"N": 3}]


def test_switch_without_a_matching_case_names_value_and_cases(workdir):
    pipeline = load_pipeline(write(workdir, SWITCH % ""))
    executor = Executor(pipeline, CpuBackend(pipeline))
    with pytest.raises(ExecutionError, match=r"^switch '.+': 'mode' is 3, which matches no case \(0, 1\) and there "
                                             r"is no default$"):
        executor.run({"x": np.ones((2, 4), np.float32), "mode": 3})


def test_observer_is_told_which_block_decided(workdir):
    log = Log()
    pipeline = load_pipeline(write(workdir, NESTED))
    Executor(pipeline, CpuBackend(pipeline), log).run({"x": x(40.0), "mode": 0})
    blocks = [name for name, _ in log.branches]
    assert [label for _, label in log.branches] == ["case 0", "then", "then", "else", "else", "4 iterations"]
    switch, inner_if, loop = blocks[0], blocks[1], blocks[-1]
    assert len({switch, inner_if, loop}) == 3 and blocks[1:5] == [inner_if] * 4
