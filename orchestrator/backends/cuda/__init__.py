"""The CUDA backend: TensorRT snippets and NVRTC kernels on one stream, in one planned device arena.

Importing this package needs no GPU library; ``available()`` says whether the backend can run here,
``device_present()`` whether an NVIDIA driver and device are visible at all (so a machine with a GPU
but a broken install can be told from one without a GPU), and ``CudaBackend`` is imported on first use.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from typing import Any

_LIBCUDA = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")
# cuInit statuses that mean "no GPU here", not "a GPU we cannot use": no device visible (including
# CUDA_VISIBLE_DEVICES=""), or the toolkit's stub libcuda instead of a driver.
_NO_DEVICE = {100: "CUDA_ERROR_NO_DEVICE", 34: "CUDA_ERROR_STUB_LIBRARY"}


@lru_cache(maxsize=1)
def device_present() -> tuple[bool, str]:
    """(True, what) when an NVIDIA driver sees a device, else (False, why not).

    Asks libcuda directly through ctypes, not through cuda-python: broken or missing Python bindings
    must not look like a machine without a GPU."""
    lib = _load_libcuda()
    if lib is None:
        return False, "no NVIDIA driver: libcuda cannot be loaded"
    status = lib.cuInit(0)
    if status in _NO_DEVICE:
        return False, f"the NVIDIA driver sees no device (cuInit: {_NO_DEVICE[status]})"
    if status != 0:
        return True, f"an NVIDIA driver is installed but cuInit fails with status {status}"
    count = ctypes.c_int(0)
    status = lib.cuDeviceGetCount(ctypes.byref(count))
    if status == 0 and count.value == 0:
        return False, "the NVIDIA driver sees no device"
    return True, f"{count.value} NVIDIA device(s) visible" if status == 0 else f"cuDeviceGetCount: status {status}"


def _load_libcuda() -> Any:
    for name in _LIBCUDA:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


@lru_cache(maxsize=1)
def available() -> tuple[bool, str]:
    """(True, "") when a CUDA driver with a GPU and TensorRT are present, else (False, why not)."""
    try:
        from cuda.bindings import driver
    except ImportError as exc:
        return False, f"cuda-python cannot be imported ({exc}); pip install cuda-python"
    try:
        (err,) = driver.cuInit(0)
    except Exception as exc:  # libcuda missing raises from inside the bindings; say what it was
        return False, f"the CUDA driver cannot be initialised through cuda-python ({type(exc).__name__}: {exc})"
    if err != driver.CUresult.CUDA_SUCCESS:
        return False, f"no usable CUDA driver or GPU (cuInit: {err.name})"
    err, count = driver.cuDeviceGetCount()
    if err != driver.CUresult.CUDA_SUCCESS or count == 0:
        return False, f"no CUDA GPU found (cuDeviceGetCount: {err.name}, {count} devices)"
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return False, f"TensorRT cannot be imported ({exc}); pip install 'orchestrator[tensorrt]'"
    return True, ""


def __getattr__(name: str) -> Any:
    if name == "CudaBackend":
        from .backend import CudaBackend

        return CudaBackend
    if name == "CudaCompiled":
        from .compiled import CudaCompiled

        return CudaCompiled
    raise AttributeError(name)
