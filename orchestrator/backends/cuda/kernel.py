"""NVRTC kernels on the GPU: the module is loaded once; each step's arguments are packed once into
fixed host buffers, and only patched in place when a value changes."""

from __future__ import annotations

import numpy as np

from ...kernels.nvrtc import CompiledKernel
from ...lazy import lazy_import
from ...pipeline.ir import KernelInfo
from .driver import check

cu = lazy_import("cuda.bindings.driver")

_SCALAR_TYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8,
                 "int32": np.int32, "int64": np.int64, "bool": np.bool_}


class LoadedKernel:
    def __init__(self, info: KernelInfo, compiled: CompiledKernel):
        self.info = info
        self.module = check(cu.cuModuleLoadData(compiled.image), f"cuModuleLoadData({info.name})")
        self.function = check(cu.cuModuleGetFunction(self.module, compiled.lowered_name.encode()),
                              f"cuModuleGetFunction({info.name})")

    def launch(self) -> KernelLaunch:
        return KernelLaunch(self)

    def unload(self) -> None:
        check(cu.cuModuleUnload(self.module), "cuModuleUnload")


class KernelLaunch:
    """The packed argument block of one kernel step: one small numpy array per parameter, and the array
    of their addresses that cuLaunchKernel reads. ``set`` patches one value in place."""

    def __init__(self, kernel: LoadedKernel):
        self.kernel = kernel
        self.values: dict[str, np.ndarray] = {}
        for arg in kernel.info.args:
            dtype = np.uint64 if arg.kind != "scalar" else _SCALAR_TYPES[arg.dtype]
            self.values[arg.name] = np.zeros(1, dtype)
        self.pointers = np.array([v.ctypes.data for v in self.values.values()], dtype=np.uint64)
        self.grid = [1, 1, 1]
        self.block = list(kernel.info.launch.block_dims)
        self.shared = kernel.info.launch.shared_bytes

    def set(self, arg: str, value: int | float) -> None:
        self.values[arg][0] = value

    def enqueue(self, stream: cu.CUstream) -> None:
        g, b = self.grid, self.block
        check(cu.cuLaunchKernel(self.kernel.function, g[0], g[1], g[2], b[0], b[1], b[2], self.shared, stream,
                                self.pointers.ctypes.data, 0), f"cuLaunchKernel({self.kernel.info.name})")

