"""Concrete shapes of every tensor for given dimension values (e.g. every dim at its max bound).

Inputs take the dims' values; snippet outputs come from ONNX shape inference on the snippet with concrete
input shapes (falling back to one onnxruntime run on zeros when inference cannot tell); kernel outputs
come from the kernels' shape rules. Pure CPU work, done once when a pipeline is planned.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from .. import dtypes
from ..errors import ConfigError, Problem
from ..kernels.signature import bind_symbols, out_shapes
from ..layouts import storage_bytes
from ..pipeline import shapes
from ..pipeline.ir import KernelCall, Pipeline, SnippetCall, walk
from ..pipeline.source import display_name

Concrete = tuple[int, ...]


def dims_at(pipeline: Pipeline, which: str = "max") -> dict[str, int]:
    """The value of every declared dimension at its ``min``, ``opt`` or ``max`` bound."""
    return {name: getattr(bounds, which) for name, bounds in pipeline.dims.items()}


def concrete_shapes(pipeline: Pipeline, dims: Mapping[str, int]) -> dict[str, Concrete]:
    result: dict[str, Concrete] = {}
    for name, info in pipeline.inputs.items():
        shape = shapes.evaluate_shape(info.shape, dims)
        if not all(isinstance(d, int) for d in shape):
            free = sorted(set().union(*(shapes.symbols(d) for d in shape if isinstance(d, str))))
            raise ConfigError([Problem(_where(pipeline, "inputs", name),
                                       f"dimension {', '.join(free)} has no bounds; add dims.{free[0]}: "
                                       f"{{min: .., opt: .., max: ..}} so that device memory can be planned")])
        result[name] = shape  # type: ignore[assignment]
    for name, array in pipeline.constants.items():
        result[name] = array.shape
    for node in walk(pipeline.body):
        if isinstance(node, SnippetCall):
            info = pipeline.snippets[node.snippet]
            ins = tuple((port, result[t]) for port, t in node.inputs.items())
            outs = snippet_output_shapes(info.onnx_path, ins)
            result.update({t: outs[port] for port, t in node.outputs.items()})
        elif isinstance(node, KernelCall):
            kernel = pipeline.kernels[node.kernel]
            env = bind_symbols(kernel, {a: result[node.tensors[a]] for a in node.in_args})
            result.update({node.tensors[a]: s for a, s in out_shapes(kernel, env).items()})
    return result


def tensor_bytes(pipeline: Pipeline, shape_of: Mapping[str, Concrete]) -> dict[str, int]:
    """Bytes each tensor takes in memory (its layout's padding included)."""
    return {name: storage_bytes(shape_of[name], info.dtype, info.layout)
            for name, info in pipeline.tensors.items() if name in shape_of}


def _where(pipeline: Pipeline, *path):
    from ..errors import Location
    from ..pipeline.source import format_path

    return Location(display_name(pipeline.file), None, None, format_path(path))


@lru_cache(maxsize=256)
def snippet_output_shapes(onnx_path: Path, inputs: tuple[tuple[str, Concrete], ...]) -> dict[str, Concrete]:
    """Output shapes of an ONNX model for concrete input shapes."""
    import onnx

    model = onnx.load(str(onnx_path))
    given = dict(inputs)
    for value in model.graph.input:
        if value.name in given:
            for dim, size in zip(value.type.tensor_type.shape.dim, given[value.name], strict=True):
                dim.Clear()
                dim.dim_value = size
    for value in model.graph.output:
        value.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    result = {}
    for value in inferred.graph.output:
        dims = value.type.tensor_type.shape.dim
        if not dims or not all(d.HasField("dim_value") for d in dims):
            return _shapes_by_running(onnx_path, given)
        result[value.name] = tuple(int(d.dim_value) for d in dims)
    return result


def _shapes_by_running(onnx_path: Path, given: dict[str, Concrete]) -> dict[str, Concrete]:
    import numpy as np
    import onnxruntime as ort

    from ..pipeline.onnx_meta import read_ports

    ports, _ = read_ports(onnx_path)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {n: np.zeros(given[n], dtypes.to_numpy(p.dtype)) for n, p in ports.items()}
    names = [o.name for o in session.get_outputs()]
    return {n: tuple(a.shape) for n, a in zip(names, session.run(names, feeds), strict=True)}


__all__ = ["concrete_shapes", "dims_at", "snippet_output_shapes", "tensor_bytes"]
