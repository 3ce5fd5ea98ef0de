"""The CPU reference backend: snippets with onnxruntime, kernels with their numpy references."""

from .backend import CpuBackend

__all__ = ["CpuBackend"]
