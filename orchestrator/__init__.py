"""orchestrator: GPU inference pipelines of TensorRT snippets and NVRTC kernels, on one CUDA stream,
in one planned memory pool, with branches chosen at run time.

    from orchestrator import Orchestrator
    outputs = Orchestrator.from_yaml("pipelines/classify.yaml").run({"image": image})
"""

from .api import Orchestrator
from .errors import (
    CompileError,
    ConfigError,
    ExecutionError,
    InputError,
    InternalError,
    MissingDependencyError,
    OrchestratorError,
)
from .options import RunOptions
from .pipeline.ir import Pipeline
from .pipeline.load import load_pipeline
from .pool import PoolTimeout

__version__ = "0.1.0"
__all__ = [
    "CompileError", "ConfigError", "ExecutionError", "InputError", "InternalError", "MissingDependencyError",
    "Orchestrator", "OrchestratorError", "Pipeline", "PoolTimeout", "RunOptions", "load_pipeline",
]
