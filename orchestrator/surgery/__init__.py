"""Graph surgery: optimise ONNX models (``orchestrator optimize``, a snippet's ``optimize: true``)."""

from .cost import Cost, cost
from .optimize import OptimizeError, OptimizeReport, PassReport, optimize_bytes, optimize_file, optimize_model
from .snippets import snippet_onnx_bytes

__all__ = ["Cost", "OptimizeError", "OptimizeReport", "PassReport", "cost", "optimize_bytes", "optimize_file",
           "optimize_model", "snippet_onnx_bytes"]
