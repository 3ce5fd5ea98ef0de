"""The CUDA backend's own logic on a simulated GPU (tests/fake_gpu.py), in CI: instances sharing one
compiled pipeline, thread safety, binding and staging, device inputs, release of everything, and the
alignment TensorRT requires. Graph modes need the real driver (tests/test_cuda_instances.py); only the
host-input staging of whole-graph mode is tested here."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from cuts import odd_widths, write_cut
from fake_gpu import FakeContext, FakeEngine, install
from hammer import hammer, make_inputs, pipeline, reference

from orchestrator import Orchestrator


@pytest.fixture
def fake(monkeypatch):
    gpu = install(monkeypatch)
    yield gpu
    gc.collect()


def cuda(path, tmp_path, **options) -> Orchestrator:
    return Orchestrator.from_yaml(path, device="cuda", cache_dir=tmp_path / "cache", **options)


@pytest.mark.parametrize("instances", [1, 4])
def test_eight_threads_each_get_their_own_outputs(fake, workdir, tmp_path, instances):
    with cuda(pipeline(workdir), tmp_path, instances=instances) as orch:
        assert orch.device == "cuda" and orch.instances == instances
        assert hammer(orch, threads=8, runs=15) == []
    assert fake.outstanding() == {}


def test_instances_share_engines_and_take_their_own_profiles(fake, workdir, tmp_path):
    """One deserialised engine; with dynamic shapes 4 instances take profiles 0..3 (the fake refuses a
    profile serving two contexts)."""
    with cuda(pipeline(workdir), tmp_path, instances=4) as orch:
        assert fake.deserialised == ["relu"]
        engine = orch.compiled.snippets["relu"].engine
        assert engine.num_optimization_profiles == 4
        assert sorted(c.profile for c in FakeContext.live if c.engine is engine) == [0, 1, 2, 3]
        assert hammer(orch, threads=4, runs=5) == []


def test_close_releases_everything(fake, workdir, tmp_path):
    orch = cuda(pipeline(workdir), tmp_path, instances=3)
    orch.run(make_inputs(np.random.default_rng(0)))
    assert fake.outstanding()  # arenas, staging, streams, the kernel module, the context
    orch.close()
    assert fake.outstanding() == {}
    assert not list(FakeContext.live) and not list(FakeEngine.live)  # even while `orch` is referenced


def test_garbage_collection_releases_an_unclosed_orchestrator(fake, workdir, tmp_path):
    for _ in range(3):
        orch = cuda(pipeline(workdir), tmp_path, instances=2)
        orch.run(make_inputs(np.random.default_rng(0)))
        del orch
        gc.collect()
        assert fake.outstanding() == {}


def test_a_failed_load_releases_what_it_made(fake, workdir, tmp_path, monkeypatch):
    from orchestrator.backends.cuda import backend

    calls = []

    def fail_on_third(self):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(backend.CudaBackend, "_upload_constants", fail_on_third)
    with pytest.raises(RuntimeError, match="simulated"):
        cuda(pipeline(workdir), tmp_path, instances=4)
    assert fake.outstanding() == {}


def test_device_inputs_are_used_zero_copy_in_eager_mode(fake, workdir, tmp_path):
    from orchestrator.backends.cuda.driver import DeviceAllocation, check, cu

    rng = np.random.default_rng(3)
    inputs = make_inputs(rng)
    buffers = {}
    for name in ("x", "s"):
        array = inputs[name]
        buffers[name] = DeviceAllocation(array.nbytes)
        check(cu.cuMemcpyHtoD(buffers[name].address, array.ctypes.data, array.nbytes), "cuMemcpyHtoD")

    class Device:
        def __init__(self, allocation, array):
            self.__cuda_array_interface__ = {"shape": array.shape, "typestr": array.dtype.str, "version": 3,
                                             "data": (allocation.address, False), "strides": None}

    with cuda(pipeline(workdir), tmp_path) as orch:
        device = {n: Device(buffers[n], inputs[n]) for n in buffers}
        got = orch.run({**device, "mode": inputs["mode"]})
        again = orch.run(inputs)  # numpy again: rebound to the arena
    for out in (got, again):
        for name, want in reference(inputs).items():
            np.testing.assert_allclose(out[name], want, rtol=1e-6)
    for allocation in buffers.values():
        allocation.free()
    assert fake.outstanding() == {}


@pytest.mark.parametrize("seed", range(3))
def test_multi_tensor_cuts_with_odd_sizes(fake, tmp_path, seed):
    """The fake's cuMemAlloc gives 256-but-not-512-aligned memory and its setDeviceMemory wants 512, as
    TensorRT 8.6's does: before the fix, a cut carrying several tensors failed here."""
    rng = np.random.default_rng(seed)
    widths = odd_widths(rng)
    path = write_cut(tmp_path, widths, seed)
    cpu = Orchestrator.from_yaml(path, device="cpu")
    with cuda(path, tmp_path, instances=2) as orch:
        for n in (1, 4):
            x = {f"x{i}": rng.standard_normal((n, w)).astype(np.float32) for i, w in enumerate(widths)}
            got, want = orch.run(x), cpu.run(x)
            for key in want:
                np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)
    assert fake.outstanding() == {}


def test_a_snippet_no_step_runs_is_not_built(fake, workdir, tmp_path):
    """base.yaml declares 'add' (dynamic N) but no step runs it: there is no shape to build its profile
    from, and TensorRT refuses a dynamic network without one (seen on the H100), so it is not built."""
    from conftest import write

    path = write(workdir, "dims:\n  N: {min: 1, opt: 2, max: 4}\n" + (workdir / "base.yaml").read_text(), "b.yaml")
    with cuda(path, tmp_path) as orch:
        assert fake.deserialised == ["relu"]
        x = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
        got = orch.run({"x": x, "flag": 0})
    np.testing.assert_array_equal(got["z"], np.maximum(x, 0) * 2)


def test_graph_host_slots_are_copied_only_when_their_values_change(fake, monkeypatch):
    """Whole-graph mode: the host inputs that conditions read go to the device before a launch only when
    they differ from what the slots hold (a constant threshold costs no copy per run); a copy rewrites
    every slot, whatever the decisions read-back left in the shared staging."""
    import ctypes
    import types

    from orchestrator.backends.cuda import graphs
    from orchestrator.backends.cuda.driver import cu

    control = graphs.ControlBlock(["mode", "threshold"], [])
    values = {"mode": np.asarray(1, np.int32), "threshold": np.asarray(0.5, np.float32)}
    compiler = object.__new__(graphs.GraphCompiler)
    compiler.control = control
    compiler.backend = types.SimpleNamespace(host_value=values.__getitem__, stream=types.SimpleNamespace(handle=0))
    copies = []
    real = cu.cuMemcpyHtoDAsync
    monkeypatch.setattr(cu, "cuMemcpyHtoDAsync", lambda *args: copies.append(args) or real(*args))

    def stage() -> tuple[int, float]:
        compiler._stage_host_inputs(["mode", "threshold"])
        raw = ctypes.string_at(control.device.address, 16)
        return int(np.frombuffer(raw[:4], np.int32)[0]), float(np.frombuffer(raw[8:12], np.float32)[0])

    assert stage() == (1, 0.5) and len(copies) == 1
    assert stage() == (1, 0.5) and len(copies) == 1  # unchanged: no copy
    values["threshold"] = np.asarray(0.75, np.float32)
    assert stage() == (1, 0.75) and len(copies) == 2
    control.staging.array[:8] = 0xFF  # what a decisions read-back leaves in the shared staging
    values["mode"] = np.asarray(2, np.int32)
    assert stage() == (2, 0.75) and len(copies) == 3
    control.free()
    assert fake.outstanding() == {}


def test_shapes_seen_before_reuse_their_derived_settings(fake, workdir, tmp_path, monkeypatch):
    """Input shapes that change between runs re-specialise the instance (TensorRT input shapes, kernel
    grids, sizes); settings derived for shapes seen before are re-applied, not derived again, and the
    outputs stay right."""
    from orchestrator.backends.cuda import backend as cuda_backend

    derived = []
    real = cuda_backend.CudaBackend._derive
    monkeypatch.setattr(cuda_backend.CudaBackend, "_derive",
                        lambda self, shapes: derived.append(shapes["x"]) or real(self, shapes))
    rng = np.random.default_rng(3)
    with cuda(pipeline(workdir), tmp_path) as orch:
        for n in (1, 3, 1, 3, 2, 1, 3, 2):
            inputs = make_inputs(rng, n)
            got = orch.run(inputs)
            for name, want in reference(inputs).items():
                np.testing.assert_allclose(got[name], want, rtol=1e-6)
    assert derived == [(1, 4), (3, 4), (2, 4)]
