"""GPU tests of issue 13: instances sharing one compiled pipeline, thread safety in every mode, device
data in graph modes, release of everything on close/GC, and TensorRT's scratch alignment. Marked ``gpu``;
skipped when no GPU, driver or TensorRT is present (and only then)."""

from __future__ import annotations

import gc
import os
import resource
import threading

import numpy as np
import pytest
from conftest import ROOT
from cuts import odd_widths, write_cut
from hammer import hammer, make_inputs, pipeline, reference

from orchestrator import Orchestrator

pytestmark = pytest.mark.gpu


from orchestrator.backends.cuda import trt  # noqa: E402
from orchestrator.backends.cuda.driver import check, cu, memory_in_use  # noqa: E402

MODES = [False, "segments", True]
IDS = ["eager", "segments", "conditional"]
PAGE = 2 << 20  # cuMemGetInfo moves in 2 MiB pages


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return os.environ.get("ORCHESTRATOR_CACHE") or tmp_path_factory.mktemp("orchestrator-cache")


@pytest.fixture(scope="module")
def hammer_yaml(tmp_path_factory):
    return pipeline(tmp_path_factory.mktemp("hammer"))


def cuda_orch(path, cache, **options) -> Orchestrator:
    return Orchestrator.from_yaml(path, device="cuda", cache_dir=cache, **options)


# ---- concurrency ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES, ids=IDS)
@pytest.mark.parametrize("instances", [1, 4])
def test_eight_threads_each_get_their_own_outputs(hammer_yaml, cache, mode, instances):
    """Distinct values and branches per run, one shape (graphs are captured once per instance)."""
    with cuda_orch(hammer_yaml, cache, graphs=mode, instances=instances) as orch:
        assert hammer(orch, threads=8, runs=50, n=2) == []


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_eight_threads_with_shapes_changing_between_runs(hammer_yaml, cache, mode):
    """As above with 1 to 4 rows per run: each instance re-specialises, and in graph modes keeps one
    graph per shape and switches between them."""
    with cuda_orch(hammer_yaml, cache, graphs=mode, instances=4) as orch:
        assert hammer(orch, threads=8, runs=50) == []


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_cascade_from_eight_threads_matches_its_reference(cache, mode):
    path = ROOT / "pipelines/cascade.yaml"
    cpu = Orchestrator.from_yaml(path, device="cpu")
    rng = np.random.default_rng(0)
    cases = [{"image": rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8), "threshold": t}
             for t in (0.0, 1.01) for _ in range(4)]
    wants = [cpu.run(c)["probs"] for c in cases]
    failures: list[str] = []
    with cuda_orch(path, cache, graphs=mode, instances=3) as orch:
        def client(k: int) -> None:
            for i in range(20):
                j = (k + i) % len(cases)
                got = orch.run(cases[j])["probs"]
                if np.linalg.norm(got - wants[j]) > 1e-4 * np.linalg.norm(wants[j]):
                    failures.append(f"thread {k} run {i} case {j}")

        workers = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    assert failures == []


def test_engines_are_deserialised_once_per_device(hammer_yaml, cache, monkeypatch):
    calls = []
    original = trt.deserialize
    monkeypatch.setattr(trt, "deserialize", lambda data: calls.append(1) or original(data))
    with cuda_orch(hammer_yaml, cache, instances=4) as orch:
        assert len(calls) == 1  # one snippet
        engines = {id(i.backend.snippets["relu"].engine) for i in orch._pool.instances}
        assert len(engines) == 1


def test_one_stream_per_instance_when_given(hammer_yaml, cache, primary_context):
    handles = [check(cu.cuStreamCreate(0), "cuStreamCreate") for _ in range(2)]
    try:
        with cuda_orch(hammer_yaml, cache, instances=2, stream=[int(h) for h in handles]) as orch:
            assert [i.backend.stream.address for i in orch._pool.instances] == [int(h) for h in handles]
            assert hammer(orch, threads=4, runs=10) == []
    finally:
        for h in handles:
            check(cu.cuStreamDestroy(h), "cuStreamDestroy")


# ---- device data in every mode --------------------------------------------------------------------

class DeviceBuffer:
    """A device buffer with __cuda_array_interface__ (as PyTorch and CuPy tensors have)."""

    def __init__(self, shape, dtype):
        self.host = np.zeros(shape, dtype)
        self.ptr = check(cu.cuMemAlloc(max(self.host.nbytes, 1)), "cuMemAlloc")
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": self.host.dtype.str,
                                         "data": (int(self.ptr), False), "version": 3, "strides": None}

    def upload(self, array: np.ndarray) -> DeviceBuffer:
        check(cu.cuMemcpyHtoD(self.ptr, np.ascontiguousarray(array).ctypes.data, array.nbytes), "cuMemcpyHtoD")
        return self

    def free(self) -> None:
        check(cu.cuMemFree(self.ptr), "cuMemFree")


def download(view, shape, dtype) -> np.ndarray:
    host = np.empty(shape, dtype)
    check(cu.cuMemcpyDtoH(host.ctypes.data, view.__cuda_array_interface__["data"][0], host.nbytes), "cuMemcpyDtoH")
    return host


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_device_inputs_and_outputs_in_every_mode(hammer_yaml, cache, mode, primary_context):
    """Per thread: its own device input buffers, refilled before each run; outputs read as device views
    while the thread holds its instance."""
    failures: list[str] = []
    buffers = {k: (DeviceBuffer((1 + k % 4, 4), np.float32), DeviceBuffer((1, 1), np.float32)) for k in range(8)}
    with cuda_orch(hammer_yaml, cache, graphs=mode, instances=4) as orch:
        def client(k: int) -> None:
            try:
                runs(k)
            except Exception as exc:  # a thread's exception must fail the test, not just warn
                failures.append(f"thread {k}: {type(exc).__name__}: {exc}")

        def runs(k: int) -> None:
            orch.compiled.context.make_current()  # the caller's own copies need a context on its thread
            rng, (x, s) = np.random.default_rng(k), buffers[k]
            for i in range(20):
                inputs = make_inputs(rng)
                inputs["x"] = rng.standard_normal(x.host.shape).astype(np.float32)
                with orch.acquire() as instance:
                    out = instance.run({"x": x.upload(inputs["x"]), "s": s.upload(inputs["s"]),
                                        "mode": inputs["mode"]}, device_outputs=True)
                    got = {n: download(out[n], w.shape, np.float32) for n, w in reference(inputs).items()}
                for name, want in reference(inputs).items():
                    if not np.allclose(got[name], want, rtol=1e-6):
                        failures.append(f"thread {k} run {i}: '{name}' is wrong")

        workers = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    primary_context.make_current()  # closing the pipeline left this thread with no context of ours
    for x, s in buffers.values():
        x.free()
        s.free()
    assert failures == []


# ---- memory hygiene ---------------------------------------------------------------------------------

def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.device_memory
@pytest.mark.parametrize(("name", "mode", "closed"), [("cascade", False, True), ("cascade", True, False),
                                                      ("hammer", "segments", True)])
def test_hundred_load_run_close_cycles_leave_memory_flat(hammer_yaml, cache, name, mode, closed):
    path = hammer_yaml if name == "hammer" else ROOT / "pipelines/cascade.yaml"
    rng = np.random.default_rng(0)
    x = make_inputs(rng) if name == "hammer" else {
        "image": rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8), "threshold": 0.5}

    def cycle() -> None:
        orch = cuda_orch(path, cache, graphs=mode, instances=2)
        orch.run(x)
        orch.run(x)
        if closed:
            orch.close()
        del orch  # unclosed: released by garbage collection
        gc.collect()

    for _ in range(3):
        cycle()  # warm-up: the primary context, TensorRT's and NVRTC's lazily loaded libraries
    before, rss = memory_in_use(), _rss()
    growth = []  # MiB more in use every 10 cycles: a steady climb is a leak, one step a lazy load
    for i in range(100):
        cycle()
        if i % 10 == 9:
            growth.append(round((memory_in_use() - before) / 2**20, 1))
    assert memory_in_use() - before <= PAGE, f"MiB more in use every 10 cycles: {growth}"
    assert _rss() - rss <= 64 << 20, f"peak RSS grew {(_rss() - rss) / 2**20:.0f} MiB (device: {growth})"


@pytest.mark.device_memory
@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_ten_thousand_runs_leave_memory_flat(hammer_yaml, cache, mode):
    with cuda_orch(hammer_yaml, cache, graphs=mode, instances=2) as orch:
        rng = np.random.default_rng(1)
        cases = [make_inputs(rng) for _ in range(16)]
        for c in cases:
            orch.run(c)
        before = memory_in_use()
        for i in range(10_000):
            orch.run(cases[i % len(cases)])
        assert memory_in_use() == before


@pytest.mark.device_memory
def test_memory_per_extra_instance_is_its_arena(cache):
    """Engines and modules are shared: an extra instance costs its arena (pinned staging is host memory),
    plus the TensorRT contexts' small state."""
    path = ROOT / "pipelines/cascade.yaml"
    with cuda_orch(path, cache, instances=1) as one:
        arena, with_one = one.compiled.layout.total, memory_in_use()
    gc.collect()
    with cuda_orch(path, cache, instances=3):
        with_three = memory_in_use()
    per_instance = (with_three - with_one) / 2
    assert per_instance <= arena + 4 * PAGE, f"{per_instance / 2**20:.1f} MiB per instance, arena {arena / 2**20:.1f}"


# ---- alignment ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_multi_tensor_cuts_with_odd_sizes_run(tmp_path, cache, seed):
    """Two snippets whose cut carries 2-4 tensors of odd widths: TensorRT accepts the scratch (512-aligned)
    and every tensor (256-aligned), in eager and graph modes, on 2 instances."""
    rng = np.random.default_rng(seed)
    widths = odd_widths(rng)
    path = write_cut(tmp_path, widths, seed)
    cpu = Orchestrator.from_yaml(path, device="cpu")
    for mode in (False, True):
        with cuda_orch(path, cache, graphs=mode, instances=2) as orch:
            for instance in orch._pool.instances:
                backend = instance.backend
                assert backend.arena.address % 512 == 0
                assert (backend.arena.address + backend.layout.scratch_offset) % 512 == 0
                assert all(a % 256 == 0 for a in backend.address.values())
            for n in (1, 3, 5):
                x = {f"x{i}": rng.standard_normal((n, w)).astype(np.float32) for i, w in enumerate(widths)}
                got, want = orch.run(x), cpu.run(x)
                for key in want:
                    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)
