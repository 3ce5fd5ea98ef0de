"""The CUDA backend: TensorRT snippets and NVRTC kernels on one stream, in one planned device arena.

Importing this package needs no GPU library; ``available()`` says whether the backend can run here, and
``CudaBackend`` is imported on first use.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def available() -> tuple[bool, str]:
    """(True, "") when a CUDA driver with a GPU and TensorRT are present, else (False, why not)."""
    try:
        from cuda.bindings import driver
    except ImportError:
        return False, "cuda-python is not installed (pip install cuda-python)"
    try:
        (err,) = driver.cuInit(0)
        if err != driver.CUresult.CUDA_SUCCESS:
            return False, f"no usable CUDA driver ({err.name})"
        err, count = driver.cuDeviceGetCount()
        if err != driver.CUresult.CUDA_SUCCESS or count == 0:
            return False, "no CUDA GPU found"
    except Exception:  # libcuda.so missing raises from inside the bindings
        return False, "no CUDA driver found (libcuda.so)"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "TensorRT is not installed (pip install 'orchestrator[tensorrt]')"
    return True, ""


def __getattr__(name: str) -> Any:
    if name == "CudaBackend":
        from .backend import CudaBackend

        return CudaBackend
    if name == "CudaCompiled":
        from .compiled import CudaCompiled

        return CudaCompiled
    raise AttributeError(name)
