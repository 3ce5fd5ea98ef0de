"""Read a snippet's interface (input/output names, dtypes, shapes) from its ONNX file with ``onnx``."""

from __future__ import annotations

import re
from pathlib import Path

from .. import cache, dtypes
from .ir import Port
from .source import FileReadError, read_bytes

_NON_IDENT = re.compile(r"\W")
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
# onnxruntime's C++ origin of a message: "/onnxruntime_src/.../model_load_utils.h:46 void onnxruntime::F(...) "
_ORT_ORIGIN = re.compile(r"^\s*/?[\w./-]+\.(?:h|cc|cpp):\d+ [^(]*\([^)]*\)(?: const)? ")
MAX_COMPLAINT = 500
MAX_ONNX_BYTES = (2 << 30) - 1  # protobuf's limit; larger models keep their weights as external data
_runtime_checked: dict[str, str | None] = {}  # content + folder digest -> onnxruntime's complaint, if any


class OnnxReadError(ValueError):
    """The file is not a readable ONNX model, or uses a dtype the orchestrator does not handle."""


def symbol_for(dim_param: str) -> str:
    """ONNX dim_params may be any string; shape expressions need identifiers."""
    name = _NON_IDENT.sub("_", dim_param)
    return f"_{name}" if not name or name[0].isdigit() else name


def read_ports(path: Path) -> tuple[dict[str, Port], dict[str, Port]]:
    """The graph inputs (initializers excluded) and outputs of an ONNX model, in graph order; the model
    must also load in onnxruntime (known ops and opsets, IR version, external data present)."""
    import onnx

    try:
        data = read_bytes(path, MAX_ONNX_BYTES)
    except FileReadError as exc:
        raise OnnxReadError(str(exc)) from None
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # onnx raises DecodeError, ... for broken files
        raise OnnxReadError(f"cannot read ONNX model {path.name}: {_first_line(exc)}") from None
    check_runtime(path, data)
    if not model.graph.output or any(not o.type.tensor_type.HasField("shape") for o in model.graph.output):
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception as exc:
            raise OnnxReadError(f"shape inference failed on {path.name}: {_first_line(exc)}") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = [_port(v, "input") for v in model.graph.input if v.name not in initializers]
    outputs = [_port(v, "output") for v in model.graph.output]
    if not outputs:
        raise OnnxReadError(f"ONNX model {path.name} has no outputs")
    return {p.name: p for p in inputs}, {p.name: p for p in outputs}


def _text(value: str | bytes, what: str) -> str:
    """A string field of the model (protobuf hands back bytes when they are not valid UTF-8)."""
    if isinstance(value, bytes):
        raise OnnxReadError(f"{what} {value[:40]!r} is not valid UTF-8 (is the file damaged?)")
    return value


def _port(value, role: str) -> Port:
    name = _text(value.name, f"an {role} name")
    tensor = value.type.tensor_type
    dtype = dtypes.from_onnx(tensor.elem_type)
    if dtype is None:
        raise OnnxReadError(f"{role} '{name}' has an unsupported ONNX element type {tensor.elem_type} "
                            f"(supported: {', '.join(dtypes.DTYPES)})")
    shape = []
    for axis, dim in enumerate(tensor.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value >= 0:
            shape.append(int(dim.dim_value))
        elif dim.dim_param:
            shape.append(symbol_for(_text(dim.dim_param, f"a dimension name of {role} '{name}'")))
        else:  # no size, or a negative one (some exporters write -1): a dynamic dimension
            shape.append(f"{symbol_for(name)}_dim{axis}")
    return Port(name, dtype, tuple(shape))


def onnx_op_types_and_nodes(path: Path) -> tuple[set[str], set[str]]:
    """The op types and node names of an ONNX model's main graph (for ``keep_fp32``)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {n.op_type for n in graph.node}, {n.name for n in graph.node if n.name}


def check_runtime(path: Path, data: bytes) -> None:
    """Open the model in onnxruntime once per content (and folder, for external data): an op it does not
    know, an opset or IR version it does not support, or a dangling input fail here, at validation, rather
    than when the pipeline runs."""
    key = cache.digest(data, str(path.parent))
    if key not in _runtime_checked:
        _runtime_checked[key] = _runtime_complaint(path)
    complaint = _runtime_checked[key]
    if complaint is not None:
        raise OnnxReadError(f"onnxruntime cannot load {path.name}: {complaint}")


def _runtime_complaint(path: Path) -> str | None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... classes
        text = _ORT_PREFIX.sub("", _first_line(exc)).replace(f"Load model from {path} failed:", "")
        text = _ORT_ORIGIN.sub("", text).strip()
        return text if len(text) <= MAX_COMPLAINT else text[:MAX_COMPLAINT - 3] + "..."
    return None


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
