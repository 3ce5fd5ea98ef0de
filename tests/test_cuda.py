"""GPU tests: the CUDA backend against the CPU reference. Marked ``gpu``: skipped when no NVIDIA driver or
device is present (and only then); when one is but the backend cannot start, they fail (conftest's guard)."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from orchestrator import Orchestrator
from orchestrator.backends.cuda.driver import check, cu, memory_in_use

pytestmark = pytest.mark.gpu

FP32, FP16 = 1e-4, 1e-2


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """$ORCHESTRATOR_CACHE when set (engines survive between test sessions on one machine), else a temp dir."""
    import os

    return os.environ.get("ORCHESTRATOR_CACHE") or tmp_path_factory.mktemp("orchestrator-cache")


def pair(name: str, cache_dir, **options):
    path = ROOT / f"pipelines/{name}.yaml"
    return (Orchestrator.from_yaml(path, device="cuda", cache_dir=cache_dir, **options),
            Orchestrator.from_yaml(path, device="cpu"))


def inputs(name: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    if name == "classify":
        return {"image": rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)}
    if name == "cascade":
        return {"image": rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8), "threshold": 0.5}
    return {"image": rng.integers(0, 256, (1, 160, 224, 3), dtype=np.uint8),
            "trimap": rng.integers(0, 256, (1, 160, 224), dtype=np.uint8)}


def test_classify_matches_reference_fp32(cache_dir):
    gpu, cpu = pair("classify", cache_dir)
    assert gpu.device == "cuda"
    for seed in range(2):
        x = inputs("classify", seed)
        got, want = gpu.run(x), cpu.run(x)
        assert rel_l2(got["probs"], want["probs"]) <= FP32
        np.testing.assert_array_equal(got["top5_index"][:, :3], want["top5_index"][:, :3])
    batch1 = {"image": x["image"][:1]}  # a new shape re-specialises without re-planning
    assert rel_l2(gpu.run(batch1)["probs"], cpu.run(batch1)["probs"]) <= FP32


@pytest.mark.parametrize(("threshold", "branch"), [(0.0, "else"), (1.01, "then")])
def test_cascade_each_branch_matches_reference(cache_dir, threshold, branch):
    log = BranchLog()
    gpu, cpu = pair("cascade", cache_dir, observer=log)
    x = {**inputs("cascade", 4), "threshold": threshold}
    assert rel_l2(gpu.run(x)["probs"], cpu.run(x)["probs"]) <= FP32
    assert log.taken == [branch]


def test_matting_fp16_matches_reference(cache_dir):
    gpu, cpu = pair("matting", cache_dir)
    x = inputs("matting", 1)
    assert rel_l2(gpu.run(x)["alpha"], cpu.run(x)["alpha"]) <= FP16


@pytest.mark.device_memory
def test_thousand_runs_leave_device_memory_unchanged(cache_dir):
    gpu, _ = pair("cascade", cache_dir)
    x = inputs("cascade", 2)
    gpu.run(x)
    before = memory_in_use()
    for i in range(1000):
        gpu.run({**x, "threshold": float(i % 2)})
    assert memory_in_use() == before


class RawDeviceArray:
    """A device buffer exposing __cuda_array_interface__, as PyTorch and CuPy tensors do."""

    def __init__(self, host: np.ndarray):
        self.host = np.ascontiguousarray(host)
        self.ptr = check(cu.cuMemAlloc(self.host.nbytes), "cuMemAlloc")
        check(cu.cuMemcpyHtoD(self.ptr, self.host.ctypes.data, self.host.nbytes), "cuMemcpyHtoD")
        self.__cuda_array_interface__ = {"shape": self.host.shape, "typestr": self.host.dtype.str,
                                         "data": (int(self.ptr), False), "version": 3, "strides": None}

    def free(self):
        check(cu.cuMemFree(self.ptr), "cuMemFree")


def test_zero_copy_device_inputs_give_the_same_outputs(cache_dir, primary_context):
    gpu, _ = pair("matting", cache_dir)
    x = inputs("matting", 7)
    want = gpu.run(x)["alpha"]
    image, trimap = RawDeviceArray(x["image"]), RawDeviceArray(x["trimap"])
    try:
        got = gpu.run({"image": image, "trimap": trimap})["alpha"]
        np.testing.assert_array_equal(got, want)
        again = gpu.run(x)["alpha"]  # back to staged numpy inputs: rebinds to the arena
        np.testing.assert_array_equal(again, want)
    finally:
        image.free()
        trimap.free()


def test_external_stream_is_used(cache_dir, primary_context):
    handle = check(cu.cuStreamCreate(0), "cuStreamCreate")
    try:
        gpu, cpu = pair("classify", cache_dir, stream=int(handle))
        assert gpu.backend.stream.address == int(handle)
        x = inputs("classify", 3)
        assert rel_l2(gpu.run(x)["probs"], cpu.run(x)["probs"]) <= FP32
        gpu.close()
    finally:
        check(cu.cuStreamDestroy(handle), "cuStreamDestroy")


SECOND_PROCESS = """
import sys
from orchestrator import Orchestrator
orch = Orchestrator.from_yaml(sys.argv[1], device="cuda", cache_dir=sys.argv[2])
print("BUILDS", orch.compiled.engine_cache.builds)
"""


def test_second_process_uses_the_engine_cache(tmp_path):
    path = str(ROOT / "pipelines/matting.yaml")
    runs = [subprocess.run([sys.executable, "-c", SECOND_PROCESS, path, str(tmp_path)], capture_output=True,
                           text=True) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert "BUILDS 2" in runs[0].stdout and "BUILDS 0" in runs[1].stdout


def test_corrupt_engine_is_rebuilt_with_a_warning(tmp_path, caplog):
    Orchestrator.from_yaml(ROOT / "pipelines/matting.yaml", device="cuda", cache_dir=tmp_path).close()
    engines = sorted((tmp_path / "engines").glob("*.engine"))
    engines[0].write_bytes(b"not an engine at all")
    with caplog.at_level(logging.WARNING, logger="orchestrator"):
        orch = Orchestrator.from_yaml(ROOT / "pipelines/matting.yaml", device="cuda", cache_dir=tmp_path)
    assert orch.compiled.engine_cache.builds == 1
    assert "corrupt or incompatible" in caplog.text
    x = inputs("matting", 1)
    cpu = Orchestrator.from_yaml(ROOT / "pipelines/matting.yaml", device="cpu")
    assert rel_l2(orch.run(x)["alpha"], cpu.run(x)["alpha"]) <= FP16


def test_memory_plan_holds_scratch_and_meets_target(cache_dir):
    for name in ("classify", "cascade", "matting"):
        gpu, _ = pair(name, cache_dir)
        summary = gpu.backend.memory_summary()
        assert summary["arena_bytes"] <= 1.05 * summary["lower_bound_bytes"]
        assert summary["arena_total_bytes"] >= summary["arena_bytes"] + summary["tensorrt_scratch_bytes"]
        gpu.close()


# ---- graph modes --------------------------------------------------------------------------------

MODES = [False, "segments", True]


class BranchLog:
    def __init__(self):
        self.taken = []

    def step_done(self, step):
        pass

    def branch_taken(self, block, label):
        self.taken.append(label)


@pytest.mark.parametrize("mode", MODES, ids=["eager", "segments", "conditional"])
@pytest.mark.parametrize("name", ["classify", "matting"])
def test_examples_in_every_mode(cache_dir, name, mode):
    gpu, cpu = pair(name, cache_dir, graphs=mode)
    tolerance = FP16 if name == "matting" else FP32
    for seed in range(3):  # run 1 warms up and captures; runs 2 and 3 replay the graph
        x = inputs(name, seed)
        got, want = gpu.run(x), cpu.run(x)
        assert set(got) == set(want)
        for key in want:  # every output, integers included (top-5 indices: the first 3, as in eager tests)
            assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
            if np.issubdtype(want[key].dtype, np.floating):
                assert rel_l2(got[key], want[key]) <= tolerance, (key, seed)
            else:
                np.testing.assert_array_equal(got[key][..., :3], want[key][..., :3], err_msg=f"{key} seed {seed}")


@pytest.mark.parametrize("mode", MODES, ids=["eager", "segments", "conditional"])
def test_cascade_runs_both_paths_without_recapture(cache_dir, mode):
    log = BranchLog()
    gpu, cpu = pair("cascade", cache_dir, graphs=mode, observer=log)
    x = inputs("cascade", 4)
    plan = [(0.0, "else"), (1.01, "then"), (0.0, "else"), (1.01, "then"), (0.0, "else")]
    captured = None
    for i, (threshold, branch) in enumerate(plan):
        run = {**x, "threshold": threshold}
        assert rel_l2(gpu.run(run)["probs"], cpu.run(run)["probs"]) <= FP32
        assert log.taken[-1] == branch
        if mode is not False and i == 2:
            captured = len(gpu.backend._graph_compiler.graphs)
    if mode is True:
        assert captured == 1 and len(gpu.backend._graph_compiler.graphs) == 1  # one graph, both paths
    elif mode == "segments":
        assert len(gpu.backend._graph_compiler.graphs) == captured  # nothing captured after both paths ran


@pytest.mark.parametrize("mode", MODES, ids=["eager", "segments", "conditional"])
def test_switch_and_while_on_the_gpu(workdir, mode):
    from conftest import write
    from test_control_flow import SWITCH, WHILE

    default = "    default:\n      - kernel: scale\n        args: {src: x, dst: z, factor: -1.0}"
    log = BranchLog()
    bounded = "dims:\n  N: {min: 1, opt: 2, max: 4}\n" + SWITCH % default
    switch = Orchestrator(write(workdir, bounded, "switch.yaml"), device="cuda", graphs=mode,
                          observer=log, cache_dir=workdir / "cache")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    for _ in range(2):
        for mode_value, factor, label in ((0, 2, "case 0"), (1, 15, "case 1"), (7, -1, "default")):
            np.testing.assert_allclose(switch.run({"x": x, "mode": mode_value})["z"], x * factor)
            assert log.taken[-1] == label
    loop = Orchestrator(write(workdir, WHILE % 6, "while.yaml"), device="cuda", graphs=mode, observer=log,
                        cache_dir=workdir / "cache")
    for _ in range(2):
        for start, iterations in ((16.0, 4), (0.5, 0), (1000.0, 6)):
            out = loop.run({"x": np.array([[start]], np.float32), "limit": 1.0})
            np.testing.assert_allclose(out["x_final"], [[start / 2**iterations]])
            assert log.taken[-1] == f"{iterations} iterations" + (" (max_iterations reached)" if iterations == 6 else "")


# ---- debug mode and profiling on the GPU ----------------------------------------------------------


def test_debug_names_off_by_one_cuda_kernel(workdir):
    from test_debug import inputs as debug_inputs
    from test_debug import make, off_by_one

    bad = make(workdir, "bad.yaml", kernel=off_by_one(workdir, in_reference=False))  # the CUDA source is wrong
    orch = Orchestrator(bad, device="cuda", debug=True, cache_dir=workdir / "cache")
    report = orch.debug_run(debug_inputs(), compare="reference")
    assert report.first_divergence.record.name == "amplify"
    assert "the step itself is wrong" in report.isolated


def test_debug_names_swapped_binding_on_gpu(workdir):
    from test_debug import inputs as debug_inputs
    from test_debug import make

    good, bad = make(workdir, "good.yaml"), make(workdir, "bad.yaml", swap=True)
    orch = Orchestrator(bad, device="cuda", debug=True, cache_dir=workdir / "cache")
    report = orch.debug_run(debug_inputs(1), compare=str(good))
    assert report.first_divergence.record.name == "difference"


def test_debug_sentinel_names_fp16_overflow_on_gpu(workdir):
    from test_debug import make

    orch = Orchestrator(make(workdir, "overflow.yaml", precision="fp16", factor=1e6), device="cuda", debug=True,
                        cache_dir=workdir / "cache")
    big = {"x": np.full((1, 4), 10, np.float32), "y": np.full((1, 4), -10, np.float32)}
    with pytest.raises(Exception, match="sentinel: step 'clip'"):
        orch.debug_run(big, sentinels=True)


def test_debug_poisons_dead_tensors_and_steps_through_on_gpu(workdir):
    from test_debug import inputs as debug_inputs
    from test_debug import make

    orch = Orchestrator(make(workdir, "good.yaml"), device="cuda", debug=True, cache_dir=workdir / "cache")
    reference = Orchestrator(make(workdir, "good.yaml"), device="cpu").run(debug_inputs())["out"]
    np.testing.assert_allclose(orch.run(debug_inputs())["out"], reference, rtol=1e-5)
    assert np.isnan(orch.backend.fetch("rx")).all()
    names = [r.name for r in orch.step_through(debug_inputs())]
    assert names == ["rectify", "difference", "amplify", "clip"]


def test_debug_compare_reference_on_examples(cache_dir):
    orch = Orchestrator.from_yaml(ROOT / "pipelines/classify.yaml", device="cuda", debug=True, cache_dir=cache_dir)
    report = orch.debug_run(inputs("classify", 1), compare="reference", atol=1e-3, rtol=1e-3)
    assert report.first_divergence is None, report.table()


def test_profile_on_gpu(cache_dir):
    from orchestrator.profile import profile_pipeline

    with np.load(ROOT / "pipelines/inputs/classify.npz") as data:
        given = {k: data[k] for k in data.files}
    result = profile_pipeline(str(ROOT / "pipelines/classify.yaml"), given, iterations=20, device="cuda",
                              cache_dir=cache_dir)
    assert result.device == "cuda" and [s.name for s in result.steps][:2] == ["preprocess", "stem"]
    assert all(s.median_ms > 0 for s in result.steps) and abs(sum(s.share for s in result.steps) - 1) < 1e-6
    assert result.memory["tensorrt_scratch_bytes"] > 0


@pytest.mark.parametrize("mode", MODES, ids=["eager", "segments", "conditional"])
def test_nested_blocks_on_the_gpu(workdir, mode):
    from conftest import write
    from test_control_flow import NESTED

    log = BranchLog()
    orch = Orchestrator(write(workdir, NESTED, "nested.yaml"), device="cuda", graphs=mode, observer=log,
                        cache_dir=workdir / "cache")
    for _ in range(3):
        for x, selector, want in ((40.0, 0, 0.625), (40.0, 1, -40.0), (3.0, 0, 0.75)):
            assert orch.run({"x": np.array([[x]], np.float32), "mode": selector})["z"][0, 0] == want


def test_conditional_graph_falls_back_to_segments_and_says_why(cache_dir, monkeypatch, caplog):
    from orchestrator.backends.cuda.graphs import GraphCompiler

    def cannot_capture(self, *args):
        raise RuntimeError("this step cannot live in a conditional body")

    monkeypatch.setattr(GraphCompiler, "_launch_condition", cannot_capture)  # used only by whole-graph capture
    gpu, cpu = pair("cascade", cache_dir, graphs=True)
    x = inputs("cascade", 4)
    with caplog.at_level(logging.WARNING, logger="orchestrator"):
        for threshold in (0.0, 1.01, 0.0):
            run = {**x, "threshold": threshold}
            assert rel_l2(gpu.run(run)["probs"], cpu.run(run)["probs"]) <= FP32
    assert "cannot run as one CUDA graph" in caplog.text and "cannot live in a conditional body" in caplog.text


def test_device_outputs_and_caller_buffers(cache_dir):
    gpu, cpu = pair("classify", cache_dir)
    x = inputs("classify", 5)
    want = cpu.run(x)["probs"]
    view = gpu.run(x, device_outputs=True)["probs"].__cuda_array_interface__
    assert view["shape"] == want.shape and view["typestr"] == "<f4"
    host = np.empty(want.shape, np.float32)
    check(cu.cuMemcpyDtoH(host.ctypes.data, view["data"][0], host.nbytes), "cuMemcpyDtoH")
    assert rel_l2(host, want) <= FP32
    device_buffer = RawDeviceArray(np.zeros(want.shape, np.float32))
    numpy_buffer = np.zeros((2, 5), np.int32)
    try:
        result = gpu.run(x, out={"probs": device_buffer, "top5_index": numpy_buffer})
        assert result["probs"] is device_buffer and result["top5_index"] is numpy_buffer
        check(cu.cuMemcpyDtoH(host.ctypes.data, device_buffer.ptr, host.nbytes), "cuMemcpyDtoH")
        assert rel_l2(host, want) <= FP32
        np.testing.assert_array_equal(numpy_buffer[:, :3], cpu.run(x)["top5_index"][:, :3])
    finally:
        device_buffer.free()


def test_dlpack_device_inputs_give_the_same_outputs(cache_dir):
    from cuda.core import Device
    from cuda.core.utils import StridedMemoryView

    gpu, _ = pair("matting", cache_dir)
    x = inputs("matting", 7)
    want = gpu.run(x)["alpha"]
    device = Device()
    device.set_current()
    views = {}
    buffers = []
    for name, array in x.items():
        buffer = device.allocate(array.nbytes, stream=device.default_stream)
        buffers.append(buffer)
        check(cu.cuMemcpyHtoD(int(buffer.handle), array.ctypes.data, array.nbytes), "cuMemcpyHtoD")
        views[name] = StridedMemoryView.from_buffer(buffer, array.shape, dtype=array.dtype)
    device.default_stream.sync()
    np.testing.assert_array_equal(gpu.run(views)["alpha"], want)


@pytest.mark.parametrize("mode", [False, True], ids=["eager", "graph"])
def test_hwc8_boundaries_between_fp16_snippets(cache_dir, tmp_path, mode):
    """Tensors between snippets stay in TensorRT's FP16 HWC8 format: engines are built with those I/O
    formats (checked at load), results match the CPU reference, and debug fetches give logical NCHW."""
    sys.path.insert(0, str(ROOT / "snippets"))
    import generate
    import onnx

    from orchestrator.snip import snip

    model = tmp_path / "classify.onnx"
    onnx.save(generate.full_model("classify"), str(model))
    pipeline = snip(model, tmp_path / "hwc8", at="s1,s3", dims={"N": 2}, precision="fp16",
                    boundary_format="hwc8").pipeline
    gpu = Orchestrator.from_yaml(pipeline, device="cuda", cache_dir=cache_dir, graphs=mode)
    cpu = Orchestrator.from_yaml(pipeline, device="cpu")
    x = {"x": np.random.default_rng(3).standard_normal((2, 3, 224, 224)).astype(np.float32)}
    assert rel_l2(gpu.run(x)["logits"], cpu.run(x)["logits"]) <= FP16
    debug = Orchestrator.from_yaml(pipeline, device="cuda", cache_dir=cache_dir, debug=True)
    report = debug.debug_run(x, compare="reference", atol=5e-2, rtol=2e-2)  # FP16 compute, elementwise
    assert report.first_divergence is None, report.table()
    s1 = report.records[0].outputs["s1"]  # recorded when written: later steps reuse its memory
    assert s1.dtype == np.float16 and s1.shape == (2, 16, 56, 56)
    assert rel_l2(s1, report.records[1].inputs["s1"]) == 0 and s1.min() >= 0  # a ReLU output, in NCHW
    assert gpu.backend.layout.capacity["s1"] == 2 * 56 * 56 * 16 * 2
    gpu.close()
