"""The CPU reference backend: snippets with onnxruntime, kernels with their numpy references."""

from .backend import CpuBackend
from .compiled import CpuCompiled

__all__ = ["CpuBackend", "CpuCompiled"]
