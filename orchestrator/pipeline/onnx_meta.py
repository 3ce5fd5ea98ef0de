"""Read a snippet's interface (input/output names, dtypes, shapes) from its ONNX file with ``onnx``."""

from __future__ import annotations

import re
from pathlib import Path

from .. import dtypes
from .ir import Port

_NON_IDENT = re.compile(r"\W")


class OnnxReadError(ValueError):
    """The file is not a readable ONNX model, or uses a dtype the orchestrator does not handle."""


def symbol_for(dim_param: str) -> str:
    """ONNX dim_params may be any string; shape expressions need identifiers."""
    name = _NON_IDENT.sub("_", dim_param)
    return f"_{name}" if not name or name[0].isdigit() else name


def read_ports(path: Path) -> tuple[dict[str, Port], dict[str, Port]]:
    """The graph inputs (initializers excluded) and outputs of an ONNX model, in graph order."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for broken files
        raise OnnxReadError(f"cannot read ONNX model {path.name}: {str(exc).splitlines()[0]}") from None
    if not model.graph.output or any(not o.type.tensor_type.HasField("shape") for o in model.graph.output):
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception as exc:
            raise OnnxReadError(f"shape inference failed on {path.name}: {str(exc).splitlines()[0]}") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = [_port(v, "input") for v in model.graph.input if v.name not in initializers]
    outputs = [_port(v, "output") for v in model.graph.output]
    if not outputs:
        raise OnnxReadError(f"ONNX model {path.name} has no outputs")
    return {p.name: p for p in inputs}, {p.name: p for p in outputs}


def _port(value, role: str) -> Port:
    tensor = value.type.tensor_type
    dtype = dtypes.from_onnx(tensor.elem_type)
    if dtype is None:
        raise OnnxReadError(f"{role} '{value.name}' has an unsupported ONNX element type {tensor.elem_type} "
                            f"(supported: {', '.join(dtypes.DTYPES)})")
    shape = []
    for axis, dim in enumerate(tensor.shape.dim):
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        elif dim.dim_param:
            shape.append(symbol_for(dim.dim_param))
        else:
            shape.append(f"{symbol_for(value.name)}_dim{axis}")
    return Port(value.name, dtype, tuple(shape))


def onnx_op_types_and_nodes(path: Path) -> tuple[set[str], set[str]]:
    """The op types and node names of an ONNX model's main graph (for ``keep_fp32``)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {n.op_type for n in graph.node}, {n.name for n in graph.node if n.name}
