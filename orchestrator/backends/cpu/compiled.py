"""What the CPU backend builds once per pipeline: one onnxruntime session per snippet and the numpy
reference of each kernel, shared by every instance (``InferenceSession.run`` is thread-safe)."""

from __future__ import annotations

from typing import Any

from ...pipeline.ir import Pipeline
from ..base import CompiledPipeline
from .kernel import ReferenceKernel
from .snippet import OnnxRuntimeSnippet


class CpuCompiled(CompiledPipeline):
    name = "cpu"

    def __init__(self, pipeline: Pipeline):
        super().__init__(pipeline)
        self.snippets = {name: OnnxRuntimeSnippet(info) for name, info in pipeline.snippets.items()}
        self.kernels = {name: ReferenceKernel(info) for name, info in pipeline.kernels.items()}

    def instance(self, index: int = 0, stream: Any = None):
        from .backend import CpuBackend

        return CpuBackend(self)
