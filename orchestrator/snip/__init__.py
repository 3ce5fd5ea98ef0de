"""Cut one ONNX model into snippets and write a pipeline that chains them.

    orchestrator snip model.onnx --at t1,t2 -o DIR      # cut after t1 and after t2
    orchestrator snip model.onnx --pieces 4 -o DIR      # 4 pieces of balanced cost, at the cheapest cuts

Modules, in the order data flows: ``graph`` (constants vs activations, topological order, liveness),
``cuts`` (cost model, named and balanced cuts), ``write`` (pieces and pipeline), ``verify`` (CPU check
against onnxruntime), ``core`` (``snip``).
"""

from .core import SnipResult, snip
from .cuts import Cut
from .graph import Graph, SnipError, load_model

__all__ = ["Cut", "Graph", "SnipError", "SnipResult", "load_model", "snip"]
