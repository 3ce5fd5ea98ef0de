"""Graph surgery: optimise ONNX models (``orchestrator optimize``, a snippet's ``optimize: true``) and strip
their pre/post-processing (``optimize --strip-edges``)."""

from .cost import Cost, cost
from .edge_kernels import Suggestion, suggest
from .edges import EdgeReport, InputTransform, OutputOp, strip_edges, strip_edges_bytes
from .optimize import OptimizeError, OptimizeReport, PassReport, optimize_bytes, optimize_file, optimize_model
from .snippets import snippet_onnx_bytes

__all__ = ["Cost", "EdgeReport", "InputTransform", "OptimizeError", "OptimizeReport", "OutputOp", "PassReport",
           "Suggestion", "cost", "optimize_bytes", "optimize_file", "optimize_model", "snippet_onnx_bytes",
           "strip_edges", "strip_edges_bytes", "suggest"]
