"""Graph mode, the parts that need no GPU: condition kernels compile with NVRTC for every block kind,
and asking for graphs on the CPU backend is a clear error."""

from __future__ import annotations

import pytest
from conftest import ROOT, write
from test_control_flow import SWITCH, WHILE

from orchestrator import MissingDependencyError, Orchestrator
from orchestrator.backends.cuda.graphs import condition_source
from orchestrator.kernels.nvrtc import compile_source
from orchestrator.pipeline.ir import IfBlock, SwitchBlock, WhileBlock, walk
from orchestrator.pipeline.load import load_pipeline


def blocks(pipeline):
    return [n for n in walk(pipeline.body) if isinstance(n, IfBlock | SwitchBlock | WhileBlock)]


@pytest.mark.parametrize("which", ["cascade", "switch", "while"])
def test_condition_kernels_compile(workdir, tmp_path, which):
    if which == "cascade":
        pipeline = load_pipeline(ROOT / "pipelines/cascade.yaml")
    else:
        text = SWITCH % "    default:\n      - kernel: scale\n        args: {src: x, dst: z, factor: -1.0}" \
            if which == "switch" else WHILE % 5
        pipeline = load_pipeline(write(workdir, text))
    found = blocks(pipeline)
    source = condition_source(pipeline, found)
    for block in found:
        assert f"cond_{block.id}(" in source
    compiled = compile_source("conditions", source, f"cond_{found[0].id}", "sm_90",
                              ["--gpu-architecture=sm_90", "-std=c++17"], "<conditions>", cache_root=tmp_path)
    assert compiled.image[:4] == b"\x7fELF"
    if which == "while":
        assert "counter[0] < 5" in source


@pytest.mark.parametrize("mode", [True, "segments"])
def test_graph_modes_need_the_cuda_backend(mode):
    with pytest.raises(MissingDependencyError, match="graph mode needs the CUDA backend"):
        Orchestrator.from_yaml(ROOT / "pipelines/cascade.yaml", device="cpu", graphs=mode)


def test_bad_graph_mode_value():
    with pytest.raises(ValueError, match="graphs must be"):
        Orchestrator.from_yaml(ROOT / "pipelines/cascade.yaml", device="cpu", graphs="sometimes")


def test_graph_mode_hands_device_inputs_to_the_backend(workdir):
    """Graph modes take device inputs (issue 13): the executor passes them on; the CUDA instance copies
    them into their arena slots, where the captured graphs read them."""
    import numpy as np

    from orchestrator.backends.cpu import CpuBackend
    from orchestrator.executor import Executor
    from orchestrator.inputs import DeviceArray

    class GraphCapable(CpuBackend):  # the CPU backend, standing in for a backend that supports graphs
        seen: list = []

        def _segment_runner_impl(self, steps, eager):
            return eager

        def _set_inputs_impl(self, inputs, dims):
            GraphCapable.seen.append(type(inputs["x"]))
            if isinstance(inputs["x"], DeviceArray):  # stand in for the device-to-device copy
                inputs = {**inputs, "x": np.ones((2, 4), np.float32)}
            super()._set_inputs_impl(inputs, dims)

    class FakeDevice:
        __cuda_array_interface__ = {"shape": (2, 4), "typestr": "<f4", "data": (1234, False), "version": 3}

    pipeline = load_pipeline(workdir / "base.yaml")
    executor = Executor(pipeline, GraphCapable(pipeline), graphs="segments")
    assert executor.run({"x": FakeDevice(), "flag": 0})["z"].shape == (2, 4)
    assert executor.run({"x": np.ones((2, 4), np.float32), "flag": 0})["z"].shape == (2, 4)
    assert GraphCapable.seen == [DeviceArray, np.ndarray]
