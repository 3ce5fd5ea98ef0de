"""What the CUDA backend builds once per pipeline (interim: one instance, built with it)."""

from __future__ import annotations

from typing import Any

from ...errors import MissingDependencyError
from ...options import RunOptions
from ...pipeline.ir import Pipeline
from ..base import Backend, CompiledPipeline


class CudaCompiled(CompiledPipeline):
    name = "cuda"

    def __init__(self, pipeline: Pipeline, options: RunOptions):
        super().__init__(pipeline)
        if options.instances > 1:
            raise MissingDependencyError("instances > 1 is not yet supported by the CUDA backend")
        self.options = options

    def instance(self, index: int = 0, stream: Any = None) -> Backend:
        from .backend import CudaBackend

        return CudaBackend(self.pipeline, stream=stream, cache_dir=self.options.cache_dir,
                           device_index=self.options.device_index)
