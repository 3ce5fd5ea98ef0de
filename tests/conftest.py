"""Shared fixtures: a folder of tiny snippets, a kernel description, a reference and a constant file; and the
guard of ``gpu``-marked tests (skip only without an NVIDIA driver/device, fail when one is visible but the CUDA
backend cannot start)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import Phase, settings
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = ["pytester"]

# tests/mutation.py runs each mutant's tests with HYPOTHESIS_PROFILE=mutation: fixed examples, no shrinking
# (a failing example is enough to kill a mutant; shrinking it costs minutes on shared cores).
settings.register_profile("mutation", derandomize=True, phases=(Phase.explicit, Phase.generate), database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def require_gpu() -> None:
    """Skip when no NVIDIA driver or device is present; fail, naming why, when one is but the backend can't
    start (broken cuda-python, missing TensorRT, a driver error): that must never pass as one quiet skip."""
    from orchestrator.backends import cuda

    ok, why = cuda.available()
    if ok:
        return
    present, seen = cuda.device_present()
    if not present:
        pytest.skip(f"no NVIDIA GPU: {seen}")
    pytest.fail(f"{seen}, but the CUDA backend cannot start: {why}", pytrace=False)


@pytest.fixture(autouse=True)
def gpu(request: pytest.FixtureRequest) -> None:
    """Guards every test marked ``gpu`` (see ``require_gpu``); a no-op for the others."""
    if request.node.get_closest_marker("gpu") is not None:
        require_gpu()


@pytest.fixture(autouse=True)
def cold_memo_caches() -> None:
    """Process-wide memo caches start empty in every test: under mutation testing (tests/mutation.py) each
    mutant runs in a process forked after the tests ran once, and a warm cache would hide a mutant of the
    function it caches (the parsed shape expressions, pipeline/shapes.py)."""
    from orchestrator.pipeline import shapes

    shapes._parse.cache_clear()


@pytest.fixture
def primary_context():
    """Device 0's primary context, retained for the test and current on its thread: for a GPU test's own
    driver calls (buffers, streams) made before or after its pipelines. Without it such a call depends on
    what an earlier test in the same worker left current (run 9: CUDA_ERROR_INVALID_CONTEXT), and what it
    allocated dies with the context when the test's last pipeline closes."""
    from orchestrator.backends.cuda.driver import Context

    context = Context(0)
    yield context
    context.release()


def tiny_model(op: str, inputs: list[str], outputs: list[str], shape=("N", 4), dtype=TensorProto.FLOAT):
    graph = helper.make_graph(
        [helper.make_node(op, inputs, outputs)], f"tiny_{op}",
        [helper.make_tensor_value_info(n, dtype, list(shape)) for n in inputs],
        [helper.make_tensor_value_info(n, dtype, list(shape)) for n in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


KERNEL_YAML = """\
source: scale.cu
entry: scale
args:
  - {name: src, kind: in, dtype: float32, shape: [N, C]}
  - {name: dst, kind: out, dtype: float32, shape: [N, C]}
  - {name: factor, kind: scalar, dtype: float32}
  - {name: count, kind: scalar, dtype: int32, value: N * C}
launch: {threads: dst, block: 128}
reference: ref.py:scale
"""

KERNEL_CU = """\
extern "C" __global__ void scale(const float* src, float* dst, float factor, int count) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) dst[i] = src[i] * factor;
}
"""

REF_PY = """\
import numpy as np

def scale(src, factor):
    return (src * np.float32(factor)).astype(np.float32)

def halve_until(x):
    return (x * np.float32(0.5)).astype(np.float32)

def off_by_one(src, factor):
    return (src * np.float32(factor)).astype(np.float64)
"""

BASE = """\
inputs:
  x: {dtype: float32, shape: [N, 4]}
  flag: {dtype: int32, host: true}
outputs: [z]
snippets:
  relu: {onnx: relu.onnx}
  add: {onnx: add.onnx}
kernels:
  scale: scale.yaml
steps:
  - snippet: relu
    inputs: {x: x}
    outputs: {y: y}
  - kernel: scale
    args: {src: y, dst: z, factor: 2.0}
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with relu.onnx (x->y), add.onnx (a,b->c), half.onnx (fp16 x->y), scale.yaml/.cu, ref.py, w.npy."""
    onnx.save(tiny_model("Relu", ["x"], ["y"]), str(tmp_path / "relu.onnx"))
    onnx.save(tiny_model("Add", ["a", "b"], ["c"]), str(tmp_path / "add.onnx"))
    onnx.save(tiny_model("Relu", ["x"], ["y"], dtype=TensorProto.FLOAT16), str(tmp_path / "half.onnx"))
    (tmp_path / "scale.yaml").write_text(KERNEL_YAML)
    (tmp_path / "scale.cu").write_text(KERNEL_CU)
    (tmp_path / "ref.py").write_text(REF_PY)
    np.save(tmp_path / "w.npy", np.arange(4, dtype=np.float32))
    (tmp_path / "base.yaml").write_text(BASE)
    return tmp_path


def write(folder: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def pytest_runtest_logreport(report):
    """With $ORCHESTRATOR_FAILURE_LOG set, each failure is appended there as it happens, and every test's
    outcome to the same path + ".outcomes" (device sessions are cut off at a time limit, before pytest's
    own summary: bench/device/README.md). Under pytest-xdist only the worker that ran the test writes."""
    log = os.environ.get("ORCHESTRATOR_FAILURE_LOG")
    if not log or getattr(report, "node", None) is not None:  # ``node``: xdist's controller, a copy
        return
    if report.failed:
        with open(log, "a") as f:
            f.write(f"==== {report.nodeid} ({report.when})\n{report.longreprtext[-6000:]}\n")
    if report.when == "call" or report.outcome != "passed":
        with open(log + ".outcomes", "a") as f:
            f.write(f"{report.outcome} {report.when} {report.duration:.1f}s {report.nodeid}\n")
