"""The CUDA driver through cuda-python: one status checker, the context, streams and memory.

Every driver call goes through ``check``, which raises ``CudaError`` naming the call and the driver's
error string.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ...errors import ExecutionError, InputError
from ...lazy import lazy_import

cu = lazy_import("cuda.bindings.driver")


class CudaError(ExecutionError):
    """A CUDA driver call failed."""


def check(result: Any, call: str) -> Any:
    """Unwrap a cuda.bindings result tuple ``(status, *values)``; raise CudaError on failure."""
    status, *values = result if isinstance(result, tuple) else (result,)
    if status != cu.CUresult.CUDA_SUCCESS:
        _, text = cu.cuGetErrorString(status)
        detail = text.decode() if isinstance(text, bytes) else str(text)
        raise CudaError(f"{call} failed: {status.name}: {detail}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class DeviceInfo:
    ordinal: int
    name: str
    compute_capability: tuple[int, int]

    @property
    def arch(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


_current = threading.local()  # the context this module last made current on each thread


class Context:
    """The device's primary context, made current on this thread (shared with TensorRT, PyTorch...)."""

    def __init__(self, ordinal: int = 0):
        check(cu.cuInit(0), "cuInit")
        self.device = check(cu.cuDeviceGet(ordinal), "cuDeviceGet")
        self.handle = check(cu.cuDevicePrimaryCtxRetain(self.device), "cuDevicePrimaryCtxRetain")
        self.address = int(self.handle)
        self.ordinal = ordinal
        self.make_current()
        attr = cu.CUdevice_attribute
        major = check(cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, self.device), "cuDeviceGetAttribute")
        minor = check(cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, self.device), "cuDeviceGetAttribute")
        name = check(cu.cuDeviceGetName(256, self.device), "cuDeviceGetName")
        self.info = DeviceInfo(ordinal, name.split(b"\0", 1)[0].decode(), (major, minor))

    def make_current(self) -> None:
        check(cu.cuCtxSetCurrent(self.handle), "cuCtxSetCurrent")
        _current.address = self.address

    def bind_thread(self) -> None:
        """Make the context current on the calling thread, once per thread (runs call this first; a
        thread that switches contexts behind our back must call ``make_current`` itself)."""
        if getattr(_current, "address", None) != self.address:
            self.make_current()

    def release(self) -> None:
        """Drop our retain of the primary context (once); the last release frees what it holds."""
        if self.handle is not None:
            self.handle = None
            if getattr(_current, "address", None) is not None:
                _current.address = None  # this thread must set a context again before its next run
            check(cu.cuDevicePrimaryCtxRelease(self.device), "cuDevicePrimaryCtxRelease")


def memory_in_use() -> int:
    free, total = check(cu.cuMemGetInfo(), "cuMemGetInfo")
    return int(total) - int(free)


class Stream:
    """The one stream a pipeline runs on: created here, or borrowed from the caller."""

    def __init__(self, external: Any = None):
        self.owned = external is None
        if self.owned:
            self.handle = check(cu.cuStreamCreate(cu.CUstream_flags.CU_STREAM_NON_BLOCKING), "cuStreamCreate")
        else:
            self.handle = cu.CUstream(stream_handle(external))
        self.address = int(self.handle)

    def synchronize(self) -> None:
        check(cu.cuStreamSynchronize(self.handle), "cuStreamSynchronize")

    def destroy(self) -> None:
        if self.owned:
            self.owned = False
            check(cu.cuStreamDestroy(self.handle), "cuStreamDestroy")


def stream_handle(obj: Any) -> int:
    """A raw CUstream address from an int, a ``__cuda_stream__`` object (cuda.core, CuPy...) or a
    PyTorch stream (``cuda_stream`` attribute)."""
    if isinstance(obj, int):
        return obj
    if hasattr(obj, "__cuda_stream__"):
        _, handle = obj.__cuda_stream__()
        return int(handle)
    if hasattr(obj, "cuda_stream"):
        return int(obj.cuda_stream)
    raise InputError(f"stream must be an int handle or an object with __cuda_stream__, not {type(obj).__name__}")


class DeviceAllocation:
    """One cuMemAlloc block (the arena) whose ``address`` is a multiple of ``alignment`` (cuMemAlloc
    promises 256 bytes; TensorRT's scratch needs 512, so a larger alignment over-allocates)."""

    def __init__(self, nbytes: int, alignment: int = 256):
        self.nbytes = max(nbytes, 1)
        extra = alignment - 256 if alignment > 256 else 0
        self.handle = check(cu.cuMemAlloc(self.nbytes + extra), "cuMemAlloc")
        self.address = -(-int(self.handle) // alignment) * alignment
        self.freed = False

    def free(self) -> None:
        if not self.freed:
            self.freed = True
            check(cu.cuMemFree(self.handle), "cuMemFree")


class PinnedAllocation:
    """Page-locked host memory, exposed as a numpy byte array for staging copies."""

    def __init__(self, nbytes: int):
        import numpy as np

        self.nbytes = max(nbytes, 1)
        self.address = int(check(cu.cuMemHostAlloc(self.nbytes, 0), "cuMemHostAlloc"))
        import ctypes

        self.array = np.ctypeslib.as_array((ctypes.c_uint8 * self.nbytes).from_address(self.address))

    def free(self) -> None:
        if self.array is not None:
            self.array = None  # views of it must not outlive the memory
            check(cu.cuMemFreeHost(self.address), "cuMemFreeHost")
