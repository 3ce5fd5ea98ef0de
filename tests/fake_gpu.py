"""A simulated GPU for CPU tests of the CUDA backend's own logic (instances, binding, staging, release,
alignment): the CUDA driver calls the backend makes, TensorRT engines run by onnxruntime, and the test
kernel ``scale``, all on host memory standing in for device memory. Work runs when it is enqueued.

It is strict where the real stack is: device copies and engine I/O must stay inside one allocation, a
TensorRT scratch must be 512-aligned (8.6's ``setDeviceMemory``), a dynamic-shape optimisation profile
serves one context, freeing unknown memory fails; and cuMemAlloc returns addresses that are 256 but not
512 aligned (all that the driver promises). ``outstanding()`` lists what was not released.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
import weakref
from typing import Any

import numpy as np

from orchestrator import dtypes
from orchestrator.kernels.nvrtc import CompiledKernel


def _view(address: int, nbytes: int) -> np.ndarray:
    return np.ctypeslib.as_array((ctypes.c_uint8 * max(nbytes, 1)).from_address(address))[:nbytes]


class FakeDriver:
    def __init__(self, cu: Any):
        self.cu, self.ok = cu, cu.CUresult.CUDA_SUCCESS
        self.lock = threading.Lock()
        self.device: dict[int, tuple[int, np.ndarray]] = {}  # address -> (nbytes, backing array)
        self.host: dict[int, np.ndarray] = {}
        self.modules: dict[int, str] = {}
        self.functions: dict[int, str] = {}
        self.streams: set[int] = set()
        self.events: set[int] = set()
        self.retains = 0
        self.handles = itertools.count(0x1000)

    # -- bookkeeping ----------------------------------------------------------------------------
    def outstanding(self) -> dict[str, int]:
        found = {"device allocations": len(self.device), "pinned allocations": len(self.host),
                 "modules": len(self.modules), "streams": len(self.streams), "events": len(self.events),
                 "context retains": self.retains}
        return {k: v for k, v in found.items() if v}

    def in_device(self, address: int, nbytes: int) -> bool:
        with self.lock:
            return any(base <= address and address + nbytes <= base + size for base, (size, _) in self.device.items())

    def _device_range(self, address: int, nbytes: int, what: str) -> None:
        if not self.in_device(int(address), nbytes):
            raise AssertionError(f"{what}: {nbytes} bytes at {int(address):#x} are outside every device allocation")

    # -- the driver API ---------------------------------------------------------------------------
    def calls(self) -> dict[str, Any]:
        ok, err = self.ok, self.cu.CUresult
        attrs = self.cu.CUdevice_attribute

        def alloc(nbytes):
            backing = np.zeros(int(nbytes) + 1024, np.uint8)
            base = -(-backing.ctypes.data // 256) * 256
            address = base if base % 512 == 256 else base + 256  # 256-aligned, never 512-aligned
            with self.lock:
                self.device[address] = (int(nbytes), backing)
            return ok, address

        def free(address):
            with self.lock:
                return (ok,) if self.device.pop(int(address), None) is not None else (err.CUDA_ERROR_INVALID_VALUE,)

        def host_alloc(nbytes, flags):
            backing = np.zeros(int(nbytes), np.uint8)
            with self.lock:
                self.host[backing.ctypes.data] = backing
            return ok, backing.ctypes.data

        def host_free(address):
            with self.lock:
                return (ok,) if self.host.pop(int(address), None) is not None else (err.CUDA_ERROR_INVALID_VALUE,)

        def copy(kind):
            def run(dst, src, nbytes, *stream):
                if kind[0] == "D":
                    self._device_range(src, nbytes, "copy source")
                if kind[-1] == "D":
                    self._device_range(dst, nbytes, "copy destination")
                ctypes.memmove(int(dst), int(src), int(nbytes))
                return (ok,)
            return run

        def memset(dtype, pattern):
            def run(address, value, count, stream):
                self._device_range(address, count * np.dtype(dtype).itemsize, "memset")
                _view(int(address), count * np.dtype(dtype).itemsize).view(dtype)[:] = value
                return (ok,)
            return run

        def new(registry, value=None):
            handle = next(self.handles)
            with self.lock:
                if isinstance(registry, set):
                    registry.add(handle)
                else:
                    registry[handle] = value
            return handle

        def discard(registry):
            def run(handle):
                with self.lock:
                    registry.discard(int(handle))
                return (ok,)
            return run

        def retain(device):
            with self.lock:
                self.retains += 1
            return ok, 0xC0FFEE

        def release(device):
            with self.lock:
                self.retains -= 1
            return (ok,)

        def attribute(attr, device):
            return ok, 9 if attr == attrs.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR else 0

        return {
            "cuInit": lambda flags: (ok,), "cuDeviceGetCount": lambda: (ok, 1),
            "cuDeviceGet": lambda n: (ok, n) if n == 0 else (err.CUDA_ERROR_INVALID_DEVICE,),
            "cuDevicePrimaryCtxRetain": retain, "cuDevicePrimaryCtxRelease": release,
            "cuCtxSetCurrent": lambda ctx: (ok,), "cuDeviceGetAttribute": attribute,
            "cuDeviceGetName": lambda n, d: (ok, b"Fake GPU\0"),
            "cuGetErrorString": lambda status: (ok, b"fake driver error"),
            "cuStreamCreate": lambda flags: (ok, new(self.streams)),
            "cuStreamSynchronize": lambda s: (ok,),
            "cuStreamDestroy": discard(self.streams),
            "cuMemAlloc": alloc, "cuMemFree": free, "cuMemHostAlloc": host_alloc, "cuMemFreeHost": host_free,
            "cuMemcpyHtoD": copy("HtoD"), "cuMemcpyHtoDAsync": copy("HtoD"), "cuMemcpyDtoH": copy("DtoH"),
            "cuMemcpyDtoHAsync": copy("DtoH"), "cuMemcpyDtoDAsync": copy("DtoD"),
            "cuMemsetD32Async": memset(np.uint32, 0), "cuMemsetD16Async": memset(np.uint16, 0),
            "cuMemsetD8Async": memset(np.uint8, 0),
            "cuModuleLoadData": lambda image: (ok, new(self.modules, bytes(image).decode())),
            "cuModuleGetFunction": lambda m, name: (ok, new(self.functions, self.modules[m])),
            "cuModuleUnload": lambda m: (ok,) if self.modules.pop(m, None) else (err.CUDA_ERROR_INVALID_VALUE,),
            "cuLaunchKernel": self.launch,
            "cuEventCreate": lambda flags: (ok, new(self.events)),
            "cuEventRecord": lambda e, s: (ok,), "cuEventSynchronize": lambda e: (ok,),
            "cuEventElapsedTime": lambda a, b: (ok, 0.0),
            "cuEventDestroy": discard(self.events),
        }

    def launch(self, function, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        """Only the test kernel ``scale(src, dst, factor, count)``: dst[:count] = src[:count] * factor."""
        if self.functions[function] != "scale":
            raise AssertionError(f"the fake GPU has no kernel '{self.functions[function]}'")
        pointers = _view(int(params), 32).view(np.uint64)
        src, dst = (int(_view(int(p), 8).view(np.uint64)[0]) for p in pointers[:2])
        factor = _view(int(pointers[2]), 4).view(np.float32)[0]
        count = int(_view(int(pointers[3]), 4).view(np.int32)[0])
        self._device_range(src, 4 * count, "scale: src")
        self._device_range(dst, 4 * count, "scale: dst")
        _view(dst, 4 * count).view(np.float32)[:] = _view(src, 4 * count).view(np.float32) * factor
        return (self.ok,)


class FakeEngine:
    """A TensorRT engine stand-in: onnxruntime computes; profiles and scratch behave as in TensorRT 8.6."""

    live: weakref.WeakSet = weakref.WeakSet()

    def __init__(self, info: Any, profile: dict, copies: int, driver: FakeDriver):
        import onnxruntime as ort

        from orchestrator.errors import CompileError

        if not profile and any(not isinstance(d, int) for spec in info.inputs.values() for d in spec.shape):
            raise CompileError(f"TensorRT failed to build snippet '{info.name}': Network has dynamic or shape "
                               f"inputs, but no optimization profile has been defined.")  # as TensorRT 8.6 does
        self.info, self.driver = info, driver
        self.session = ort.InferenceSession(str(info.onnx_path), providers=["CPUExecutionProvider"])
        self.num_optimization_profiles = copies if profile else 1
        self.dynamic = bool(profile)
        self.taken: dict[int, Any] = {}  # profile -> its context (weakly: a dead context frees it)
        FakeEngine.live.add(self)

    def context(self) -> FakeContext:
        return FakeContext(self)


class FakeContext:
    live: weakref.WeakSet = weakref.WeakSet()

    def __init__(self, engine: FakeEngine):
        self.engine, self.addresses, self.shapes = engine, {}, {}
        self.scratch: int | None = None
        self.profile = 0
        FakeContext.live.add(self)

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        self.profile = index
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = int(address)
        return True

    def set_input_shape(self, name: str, shape) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._run(dry=True)[name].shape)

    def execute_async_v3(self, stream: int) -> bool:
        engine = self.engine
        if engine.dynamic:
            ref = engine.taken.get(self.profile)
            owner = ref() if ref is not None else None
            if owner is None:
                engine.taken[self.profile] = weakref.ref(self)
            elif owner is not self:
                raise AssertionError(f"profile {self.profile} of '{engine.info.name}' serves two contexts")
        if self.scratch is None:
            raise AssertionError("no scratch memory set")
        for name, array in self._run(dry=False).items():
            self.engine.driver._device_range(self.addresses[name], array.nbytes, f"engine output '{name}'")
            _view(self.addresses[name], array.nbytes)[:] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        return True

    def _run(self, dry: bool) -> dict[str, np.ndarray]:
        info, feeds = self.engine.info, {}
        for port, spec in info.inputs.items():
            dtype, shape = dtypes.to_numpy(spec.dtype), self.shapes[port]
            nbytes = int(np.prod(shape)) * dtype.itemsize
            if dry:
                feeds[port] = np.zeros(shape, dtype)
                continue
            self.engine.driver._device_range(self.addresses[port], nbytes, f"engine input '{port}'")
            feeds[port] = _view(self.addresses[port], nbytes).view(dtype).reshape(shape).copy()
        results = self.engine.session.run(list(info.outputs), feeds)
        return dict(zip(info.outputs, results, strict=True))


def install(monkeypatch) -> FakeDriver:
    """Put the fake under the CUDA backend for one test; returns it (for ``outstanding()``)."""
    from orchestrator import api
    from orchestrator.backends.cuda import compiled, kernel, trt
    from orchestrator.backends.cuda.driver import cu
    from orchestrator.backends.cuda.snippet import EngineCache

    fake = FakeDriver(cu)
    for module in (cu, kernel.cu):  # each lazy module holds its own copy of the driver's names
        module.CUresult  # noqa: B018 (load it, so that its names can be replaced)
        for name, function in fake.calls().items():
            monkeypatch.setattr(module, name, function)
    monkeypatch.setattr(api, "cuda_backend_status", lambda: (True, ""))
    monkeypatch.setattr(compiled, "compile_kernel", lambda info, arch, root: CompiledKernel(
        info.name.encode(), "cubin", info.name, arch))
    monkeypatch.setattr(trt, "version", lambda: "8.6.1")
    fake.deserialised = []
    monkeypatch.setattr(EngineCache, "engines", lambda self, requests, jobs=None: {
        name: fake.deserialised.append(name) or FakeEngine(r.info, r.profile, r.copies, fake)
        for name, r in requests.items()})
    monkeypatch.setattr(trt, "scratch_bytes", lambda engine: 1000)  # odd, as real sizes can be
    monkeypatch.setattr(trt, "io_tensors", lambda engine: (list(engine.info.inputs), list(engine.info.outputs)))
    monkeypatch.setattr(trt, "tensor_layout", lambda engine, name: "linear")
    monkeypatch.setattr(trt, "context_without_memory", lambda engine: engine.context())

    def set_scratch(context, address, nbytes):
        if address % 512:
            raise AssertionError(f"setDeviceMemory: memory must be aligned on 512 byte boundary ({address:#x})")
        fake._device_range(address, nbytes, "scratch")
        context.scratch = address

    monkeypatch.setattr(trt, "set_scratch", set_scratch)
    return fake
